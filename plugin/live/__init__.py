"""The live runtime: capture → vision → audio path → sinks, one 1600-sample chunk per 30-fps slot.

- :mod:`plugin.live.engine` — :class:`LiveEngine`: the worker's slot loop, the device-ring ledger,
  controls and metrics (its docstring is the design of the whole runtime)
- :mod:`plugin.live.policy` — the degradation ladder and the policy that climbs it
- :mod:`plugin.live.config` — :class:`EngineConfig`, :class:`PolicyConfig`, :class:`EngineError`
- :mod:`plugin.live.vision` — the vision thread and the worker's inbox of frames
- :mod:`plugin.live.metrics` — preallocated per-chunk rings (flat memory over hours)
"""

from plugin.live.config import EngineConfig, EngineError, PolicyConfig
from plugin.live.engine import LiveEngine
from plugin.live.policy import DegradationPolicy, Rung, build_ladder

__all__ = ["DegradationPolicy", "EngineConfig", "EngineError", "LiveEngine", "PolicyConfig", "Rung",
           "build_ladder"]
