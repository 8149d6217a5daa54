"""The device ring's level control: keep the audio queued ahead of the sound card near a cushion.

A live stream writes one hop (1600 samples) per 30-fps slot into a sound device that plays at its
own clock.  The level of its ring changes for good only through discrete events, which the
:class:`RingLedger` counts exactly: a skipped slot takes a hop out (its chunk was never written),
an underrun puts the device's inserted silence in (the audio after it is that much later).  A
deficit of half a hop or more is made good by a *fill-in* (one more chunk, written right after the
slot's own); a surplus of ¾ hop by a *trim* (the next slot is not generated at all, so the
waveform stays continuous).  A trim needs the measured level to agree (an underrun caused by
slower writes leaves no surplus); a deficit beyond two hops is forgiven (re-creating a long stall's
audio would only load a late worker).  Every ``drift_window`` slots the median measured level is
looked at: a hop above the aim (cushion + half a block) books a surplus (slow clock drift between
capture and sound card, a shifted write phase); with ``cut`` on, a smaller surplus (over one block)
is taken out of the next chunk itself (:func:`shorten`: up to half a hop, joined by a crossfade, and
never below the cushion at the window's lowest level) — a rung that writes earlier in the frame
keeps its sound no later than it needs to be.  Before the writes move *later* in the frame (a
pipelined rung gives way to one that waits for vision), :meth:`RingLedger.top_up` says how much
to write ahead so the first late writes still find the cushion.  A ring running dry at the writes (median of the last
8 under half a block: the device plays faster than the frames come) books a deficit at once.

The decisions are pure (numbers in, an :class:`Action` or a count out): the engine feeds what the
device reports, and the tests drive it with a simulated device clock.  The engine's use of it:
``docs/live-engine.md``.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass

import numpy as np

FADE = 240
"""Samples (5 ms) over which :func:`shorten` crossfades."""
RECENT = 8
"""Writes that say where the ring stands now (a ring running dry, what a top-up must lift)."""


class Action(enum.Enum):
    """What to do after a slot's chunk was written."""

    NOTHING = "nothing"
    FILL_IN = "fill-in"  # write one more chunk now (from the same token)


@dataclass(frozen=True)
class LevelTarget:
    """Sizes in samples: ``cushion`` queued ahead of the first chunk, ``hop`` per slot, the device's
    ``blocksize`` (the level at a write wanders over one block), ``drift_window`` slots per drift
    check."""

    cushion: int
    hop: int
    blocksize: int
    drift_window: int = 60

    def __post_init__(self) -> None:
        if self.hop <= 0 or self.cushion < 0 or self.blocksize < 0 or self.drift_window < 2:
            raise ValueError(f"bad ring target {self}: hop > 0, cushion and blocksize >= 0, drift_window >= 2")


class RingLedger:
    """Counts the device ring's level changes and decides fill-ins and trims.

    Per slot: :meth:`account` (what the device reported, the slots skipped since the last one),
    then :meth:`trim_now` (True: generate nothing for this slot), else :meth:`cut_now` (samples to
    take out of this slot's chunk: :func:`shorten`), write the chunk and call :meth:`after_write`
    with the level measured before it (FILL_IN: write one more)."""

    def __init__(self, target: LevelTarget, *, fill_in: bool = True, cut: bool = False) -> None:
        self.target = target
        self.fill_in = fill_in
        self.cut = cut
        self._cut_next = 0  # samples to take out of the next chunk
        self.ledger = 0  # samples above the level the stream started with
        self._levels: collections.deque[int] = collections.deque(maxlen=target.drift_window)
        self._n_levels = 0
        self._trim_next: str | None = None  # "ledger" (a counted surplus) or "level" (measured far too high)
        self._trimmed_at = -(10**9)  # _n_levels at the last level trim
        self._dry_at = -(10**9)  # _n_levels at the last fill-in for a ring running dry
        self._filled_at = -(10**9)  # _n_levels at the last fill-in
        self._underrun_samples_seen = 0

    def account(self, *, underrun_samples: int, skipped: int) -> None:
        """``underrun_samples``: the device's running total of inserted silence; ``skipped``: slots
        whose chunk was never written since the last call."""
        hop = self.target.hop
        fresh = underrun_samples - self._underrun_samples_seen
        self._underrun_samples_seen = underrun_samples
        self.ledger = max(self.ledger + fresh - skipped * hop, -2 * hop)

    def trim_now(self) -> bool:
        """Whether this slot is the one a trim skips (decided after the previous write)."""
        if self._trim_next is None:
            return False
        if self._trim_next == "ledger":
            self.ledger -= self.target.hop
        self._trim_next = None
        return True

    def cut_now(self) -> int:
        """Samples to take out of this slot's chunk (0: none), decided after the previous write."""
        n, self._cut_next = self._cut_next, 0
        return n

    def top_up(self, later: int) -> int:
        """Samples to write now, before the writes move ``later`` samples later in their slot (a
        pipelined rung gives way to one that waits for vision: each chunk then comes after the
        encode): enough that the lowest of the last :data:`RECENT` writes, moved that much later, still finds
        the cushion ahead — 0 when the ring holds that already, never more than a hop, never less
        than :data:`FADE` (an extra chunk is cut to length by :func:`shorten`).  Without it the
        first slots of the slower phase ran the ring dry (measured: every underrun after start-up of
        a 5-minute run came 2–4 slots after such a step)."""
        t = self.target
        if later <= 0 or not self._levels:
            return 0
        n = t.cushion + later - min(self._recent())
        if n < t.blocksize // 2:
            return 0
        return int(min(max(n, FADE), t.hop))

    def _recent(self) -> list[int]:
        return list(self._levels)[-RECENT:]

    def after_write(self, level: int) -> Action:
        """``level``: the samples queued ahead of the chunk just written, measured at hand-over."""
        t, hop = self.target, self.target.hop
        self._levels.append(level)
        self._n_levels += 1
        recent = self._recent()
        # slow drifts: the median level of the last window a hop above the aim is trimmed below
        if self._n_levels % t.drift_window == 0:
            excess = float(np.median(self._levels)) - (t.cushion + t.blocksize / 2)
            if excess > hop:
                self.ledger += hop
            elif (self.cut and excess > max(t.blocksize, hop // 8)
                  and self._n_levels - self._filled_at >= 5 * t.drift_window):
                # less than a hop too high (a write phase moved earlier): take it out of the next
                # chunk, half a block short of it (the level wanders over a block), and no more than
                # keeps the lowest level of the window at the cushion (late writes, a jittery rung,
                # need that room). Not within five windows of a fill-in: a device that plays fast
                # eats that surplus by itself
                n = int(min(excess - t.blocksize / 2, min(self._levels) - t.cushion, hop // 2))
                if n >= t.blocksize // 2:
                    self._cut_next = n
        dry = len(recent) == RECENT and float(np.median(recent)) < t.blocksize / 2
        if dry and self._n_levels - self._dry_at >= RECENT:
            # running dry at the writes (the device plays faster than the frames come): a fill-in now,
            # rather than feeding it underruns (silence)
            self.ledger, self._dry_at = min(self.ledger, 0) - hop, self._n_levels
        if self.fill_in and self.ledger <= -hop // 2 and level < t.cushion + hop:
            self.ledger += hop
            self._filled_at = self._n_levels
            return Action.FILL_IN
        if self.ledger >= (3 * hop) // 4:
            # An underrun raised the level only if the writes kept their pace; when it came from
            # slower writes (a heavier step), the ring is not high at all: no trim then.
            if len(recent) == RECENT and min(recent) > t.cushion + hop // 2:
                self._trim_next = "ledger"
            else:
                self.ledger = 0
        elif self._n_levels - self._trimmed_at >= RECENT and min(recent) > t.cushion + 2 * hop:
            # far too full for 8 slots on end (start-up, a burst of frames): down a hop now, rather
            # than a hop per drift window
            self._trim_next, self._trimmed_at = "level", self._n_levels
        return Action.NOTHING


def shorten(chunk: np.ndarray, n: int, *, fade: int = FADE) -> np.ndarray:
    """``chunk`` (channels, samples) with ``n`` samples taken out of its middle, the two sides joined
    by a raised-cosine crossfade over ``fade`` samples (5 ms at 48 kHz): no gap, no click."""
    length = chunk.shape[-1]
    if n <= 0:
        return chunk
    if n + fade > length:
        raise ValueError(f"cannot take {n} samples out of a {length}-sample chunk with a {fade}-sample fade")
    a = (length - n - fade) // 2
    w = (0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, fade, dtype=np.float32))).astype(chunk.dtype)
    joined = chunk[..., a:a + fade] * w + chunk[..., a + n:a + n + fade] * (1 - w)
    return np.concatenate([chunk[..., :a], joined, chunk[..., a + n + fade:]], axis=-1)
