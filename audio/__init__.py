"""Audio: the codecs (causal streaming VAE, spectral codec), sinks and devices, media I/O, audio
metrics — and the shared core every package imports.

**The shared core lives here** (the names are fixed; new code imports them from these modules):
:mod:`audio.contract` (the timing contract: 48 kHz, 30 fps, 1600 samples per latent),
:mod:`audio.errors` (:class:`LivefoleyError`, the root of every anticipated error),
:mod:`audio.checkpoint` (reading weights files, int8 storage, strict comparison),
:mod:`audio.files` (complete-or-absent outputs) and :mod:`audio.measure` (latency and memory
figures).  The layers above: ``capture`` (frame sources) → ``model`` (tokens → latents) →
``plugin`` (commands, live engine, OBS); each imports only from the ones before it and from here.

Importing this package is cheap (no torch); heavy modules are imported where used.
"""

from audio.contract import CONTRACT, TimingContract
from audio.errors import LivefoleyError

__all__ = ["CONTRACT", "LivefoleyError", "TimingContract"]
