"""Audio: the causal streaming VAE, sinks, media I/O and audio metrics.

Importing this package is cheap (no torch); heavy modules are imported where used.
"""

from audio.contract import CONTRACT, TimingContract
from audio.errors import LivefoleyError

__all__ = ["CONTRACT", "LivefoleyError", "TimingContract"]
