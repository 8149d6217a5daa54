"""The degradation ladder and its policy: what the engine sheds, in which order, when it falls behind.

The rungs, the signal that moves between them and why they come in this order (with the
measurements behind it): ``docs/live-engine.md``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from audio.contract import CONTRACT
from plugin.live.config import PolicyConfig


@dataclass(frozen=True)
class Rung:
    """One step of the degradation ladder (``None``: the configured value)."""

    name: str
    wait_for_vision: bool
    nfe: int | None = None
    guidance: float | None = None
    vision_every: int = 1


def build_ladder(*, nfe: int, guidance: float, valid_nfe: tuple[int, ...]) -> list[Rung]:
    """The rungs for a model configured with ``nfe`` / ``guidance`` ω (docs/live-engine.md: the ladder);
    rungs that would change nothing are left out."""
    rungs = [Rung("full", True)]
    low_nfe: int | None = None
    if valid_nfe and nfe > min(valid_nfe):
        low_nfe = min(valid_nfe)
        rungs.append(Rung(f"nfe-{low_nfe}", True, nfe=low_nfe))
    no_guidance = 1.0 if guidance != 1.0 else None
    if no_guidance is not None:
        rungs.append(Rung("cfg-off", True, nfe=low_nfe, guidance=no_guidance))
    rungs.append(Rung("no-wait", False, nfe=low_nfe, guidance=no_guidance))
    for k in (2, 4, 8):
        rungs.append(Rung(f"vision/{k}", True, nfe=low_nfe, guidance=no_guidance, vision_every=k))
    for k in (4, 8):
        rungs.append(Rung(f"no-wait/{k}", False, nfe=low_nfe, guidance=no_guidance, vision_every=k))
    return rungs


def predict_ms(rung: Rung, *, vision: float, audio: float, prefeed: float = 0.0,
               encode_slot_limit: float = math.inf) -> float:
    """Expected compute per slot on ``rung`` (ms): the audio path and the prefeed plus, on rungs
    that wait for vision, the vision time spread over ``vision_every`` slots (NFE / ω changes are
    not modelled); ``inf`` for a waiting rung whose encode slot (``vision + audio``) reaches
    ``encode_slot_limit`` (:attr:`EngineConfig.encode_slot_limit_ms`): it could never be waited
    for, however cheap the slots between."""
    if not rung.wait_for_vision:
        return audio + prefeed
    if vision + audio >= encode_slot_limit:
        return math.inf
    return audio + prefeed + vision / rung.vision_every


class DegradationPolicy:
    """The ladder with hysteresis (docs/live-engine.md).  Pure logic, no clock of its own:
    the worker calls :meth:`observe` once per slot with that slot's compute time."""

    def __init__(self, *, config: PolicyConfig, rungs: list[Rung]) -> None:
        self.config = config
        self.rungs: list[Rung] = []
        self.slots_at: list[int] = []
        self.level = 0
        self.set_rungs(rungs)
        self.level = min(config.start_rung, self.top)
        self.ewma: float | None = None
        self._recent: deque[float] = deque(maxlen=config.settle_slots)  # the last judged slots
        self.hold = config.hold_slots
        self.changes = 0
        self._slot = 0
        self._since_change = 0
        self._below = 0
        self._entered_at_slot = 0
        self._entered_down = False

    @property
    def rung(self) -> Rung:
        return self.rungs[self.level]

    @property
    def slots_on_rung(self) -> int:
        """Slots since the last change of rung."""
        return self._since_change

    def set_rungs(self, rungs: list[Rung]) -> None:
        """A new ladder (the base NFE or ω changed): the top and the level stay within it."""
        if not rungs:
            raise ValueError("a ladder needs at least one rung")
        self.rungs = rungs
        top = len(rungs) - 1
        self.top = top if self.config.max_rung is None else min(top, self.config.max_rung)
        self.level = min(self.level, self.top)
        self.slots_at += [0] * (len(rungs) - len(self.slots_at))

    def start_at(self, level: int) -> None:
        """Start on ``level`` (before the first slot, chosen from a warm-up measurement: not a change)."""
        self.level = min(max(level, 0), self.top)

    def observe(self, compute_ms: float, *, late: bool = False, predict=None) -> Rung | None:
        """Feed one slot; returns the new rung when the level changed, else None.

        ``predict(rung) -> ms | None``: the expected compute per slot on a rung (from the measured
        vision and audio-path times); a step down is taken only when the rung below is predicted to
        fit (< ``high`` × T), so a rung that cannot work is not tried again and again.  A rung that
        can never work (``inf``: it waits for vision that cannot finish in time) is stepped over,
        climbing and descending."""
        c = self.config
        self._slot += 1
        self._since_change += 1
        self.slots_at[self.level] += 1
        value = max(compute_ms, c.late_penalty * CONTRACT.frame_ms) if late else compute_ms
        if self._slot <= c.startup_slots:
            self._since_change = c.settle_slots // 2  # the device's start and the first slow steps
            return None
        if self._since_change <= c.settle_slots // 2:
            # settling: the change itself (thread counts, the vision thread starting or stopping,
            # the ring's phase) is not held against the new rung; one slow slot seeding the EWMA
            # could otherwise push the engine up the ladder a rung per settle period
            return None
        self.ewma = value if self.ewma is None else (1 - c.alpha) * self.ewma + c.alpha * value
        self._recent.append(value)
        if not c.enabled:
            return None
        if self._over():
            self._below = 0
            if self.level < self.top:
                flapped = self._entered_down and self._slot - self._entered_at_slot < c.flap_s * CONTRACT.fps
                if flapped:
                    self.hold = min(2 * self.hold, c.max_hold_slots)
                return self._move(self._possible(self.level + 1, +1, predict) - self.level)
            return None
        if self.ewma < c.low * CONTRACT.frame_ms:
            self._below += 1
        else:
            self._below = 0
        if self._entered_down and self._slot - self._entered_at_slot > 30 * CONTRACT.fps:
            self.hold = c.hold_slots  # a step down that held for 30 s resets the back-off
        roomy = self._below >= self.hold
        # a rung that fits without room to spare (the last settle_slots all on time) tries the one
        # below now and then: its cost was predicted from times measured on this rung, which on a
        # pipelined rung are not its own; leaving it again within flap_s doubles the hold, and so
        # the time to the next try
        probe = (self._since_change >= c.probe_holds * self.hold
                 and max(self._recent) <= c.high * CONTRACT.frame_ms)
        if self.level == 0 or not (roomy or probe):
            return None
        target = self._possible(self.level - 1, -1, predict)
        expected = None if predict is None else predict(self.rungs[target])
        if roomy:
            if expected is not None and expected >= c.high * CONTRACT.frame_ms:
                return None  # the rung below would not fit
            return self._move(target - self.level)
        return self._move(target - self.level) if expected != math.inf else None

    def _over(self) -> bool:
        """Most of the last ``settle_slots`` judged slots took longer than ``high`` × T (a late slot
        counts as ``late_penalty`` × T): the rung does not fit.  One slow slot (another process
        woke up) does not decide it, as it would an average."""
        recent = self._recent
        if len(recent) < recent.maxlen:
            return False
        return sorted(recent)[(len(recent) - 1) // 2] > self.config.high * CONTRACT.frame_ms

    def _possible(self, level: int, step: int, predict) -> int:
        """From ``level`` on, in the direction of ``step``, the first rung not predicted ``inf`` (one
        that could never work); the end of the ladder at the latest."""
        end = self.top if step > 0 else 0
        while level != end and predict is not None and predict(self.rungs[level]) == math.inf:
            level += step
        return level

    def jump(self, level: int) -> Rung:
        """Go straight to ``level`` (counted as one change, with the same back-off as a climb)."""
        return self._move(min(level, self.top) - self.level)

    def _move(self, step: int) -> Rung:
        self.level += step
        self.changes += 1
        self.ewma = None  # judge the new rung by its own slots only
        self._recent.clear()
        self._since_change = 0
        self._below = 0
        self._entered_at_slot = self._slot
        self._entered_down = step < 0
        return self.rung
