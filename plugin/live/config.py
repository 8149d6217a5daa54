"""The live engine's settings: :class:`EngineConfig` (what to run, where the sound goes, the device
ring) and :class:`PolicyConfig` (the thresholds of the degradation ladder, :mod:`plugin.live.policy`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from audio.contract import CONTRACT
from audio.errors import LivefoleyError


class EngineError(LivefoleyError):
    """The live engine could not start, or stopped because a part failed (the message says which)."""


@dataclass(frozen=True)
class PolicyConfig:
    """Thresholds of the :class:`DegradationPolicy` (fractions of the frame period T)."""

    enabled: bool = True
    alpha: float = 0.2
    high: float = 0.95
    low: float = 0.5
    late_penalty: float = 1.5
    settle_slots: int = 8
    hold_slots: int = 60
    max_hold_slots: int = 32 * CONTRACT.fps
    flap_s: float = 10.0
    probe_holds: int = 10  # on a rung that fits without room to spare, try the one below every 10 holds
    start_rung: int = 0
    max_rung: int | None = None  # None: the whole ladder
    startup_slots: int = 15  # the first slots (device start, first steps) are not judged
    auto_start: bool = True  # start on the first rung the warm-up step predicts to fit
    deadline_fraction: float = 1.9  # of T, from taking the frame: a vision slot may overrun one frame
    miss_alpha: float = 0.25  # EWMA of vision-deadline misses; above miss_limit: go to no-wait
    miss_limit: float = 0.75

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise EngineError(f"policy alpha must be in (0, 1]; got {self.alpha}")
        if not 0 < self.low < self.high:
            raise EngineError(f"policy thresholds need 0 < low < high; got low {self.low}, high {self.high}")
        if self.settle_slots < 1 or self.hold_slots < 1 or self.max_hold_slots < self.hold_slots:
            raise EngineError("policy needs settle_slots ≥ 1, hold_slots ≥ 1 and max_hold_slots ≥ hold_slots")
        if self.start_rung < 0 or (self.max_rung is not None and self.max_rung < self.start_rung):
            raise EngineError(f"policy start_rung {self.start_rung} must be in 0 … {self.max_rung}")


@dataclass(frozen=True)
class EngineConfig:
    """Everything a :class:`LiveEngine` needs.

    - ``source``: a source string (``screen``, ``file:PATH``, ``synthetic[:SEED]``, …);
      ``source_options`` go to the source's factory (e.g. ``{"realtime": False}`` for a file or the
      synthetic world decoded as fast as possible — then the engine is paced by the device, or not at
      all with only null / file sinks).
    - ``sinks`` (sink strings) and ``record`` (a .wav/.flac path): where the audio goes.
    - ``duration_s``: stop after this much stream time (None: until stopped / the source ends).
    - ``model`` / ``device`` / ``dinov2_weights`` / ``threads``: the generator (``dinov2_weights``: a
      local DINOv2 file for a model whose vision weights come from the hub); ``threads``: CPU
      threads in all (None: one per idle core), see *Threads* in :mod:`plugin.live.engine`;
      ``nfe`` / ``guidance`` ω (None: the model's defaults; ``--cfg`` on the command line); ``seed``;
      ``optimize``: DINOv2 compiled for the thread counts the engine uses, in int8 or bf16,
      whichever this CPU runs fastest (:mod:`model.optimize`; compiled and measured before the first
      sound the first time on a CPU, ~35 s per count on two cores; later the kept library is loaded,
      well under a second).
    - Device sink: ``blocksize`` samples per callback (the reported output latency follows it:
      PulseAudio reports two blocks), ``cushion_ms`` of silence written ahead of the first chunk
      (the ring level kept ahead of each new chunk), ``capacity_frames`` of ring.
    - ``queue_size``: capture queue (the stalest frame is dropped beyond it).
    - ``warmup_steps``: model steps on a blank frame before capture starts (first steps are slow).
    - ``history_s``: how much per-chunk history the percentiles cover.
    """

    source: str = "synthetic"
    source_options: dict = field(default_factory=dict)
    sinks: tuple[str, ...] = ("device",)
    record: str | None = None
    duration_s: float | None = None
    model: str = "default"
    device: str = "auto"
    dinov2_weights: str | None = None
    threads: int | None = None
    optimize: bool = False
    nfe: int | None = None
    guidance: float | None = None
    volume: float = 1.0
    seed: int = 0
    blocksize: int = 400
    cushion_ms: float = 20.0
    capacity_frames: int = 6
    queue_size: int = 2
    stall_timeout_s: float = 5.0
    warmup_steps: int = 3
    fill_in: bool = True
    drift_window: int = 2 * CONTRACT.fps
    history_s: float = 600.0
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sinks", tuple(self.sinks))
        if self.duration_s is not None and not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise EngineError(f"duration must be a positive number of seconds; got {self.duration_s}")
        if self.threads is not None and self.threads < 1:
            raise EngineError(f"threads must be ≥ 1; got {self.threads}")
        if self.guidance is not None and not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise EngineError(f"the guidance ω must be a finite number ≥ 0 (1 = no guidance); got {self.guidance}")
        if not 0 <= self.cushion_ms <= 500:
            raise EngineError(f"cushion_ms must be between 0 and 500; got {self.cushion_ms}")
        if self.queue_size < 1 or self.drift_window < 2 or self.warmup_steps < 0:
            raise EngineError("queue_size ≥ 1, drift_window ≥ 2 and warmup_steps ≥ 0 are required")
        if not self.sinks and not self.record:
            raise EngineError("no sink given: pass --sink device, --sink null or --record OUT.flac")

    @property
    def cushion_samples(self) -> int:
        return round(self.cushion_ms * CONTRACT.sample_rate / 1000)

    @property
    def encode_slot_limit_ms(self) -> float:
        """How long a slot that waits for vision (its encode and its audio path) may take and still
        be waited for: until the vision deadline (``deadline_fraction`` × T), and, playing to a sound
        device, no longer than a frame plus what the ring holds beyond one device block (the
        cushion) — longer, and the device runs dry on every encode however cheap the slots between."""
        limit = self.policy.deadline_fraction * CONTRACT.frame_ms
        if any(s.strip().partition(":")[0] == "device" for s in self.sinks):
            room_ms = (self.cushion_samples - self.blocksize) / CONTRACT.sample_rate * 1000
            limit = min(limit, CONTRACT.frame_ms + room_ms)
        return limit
