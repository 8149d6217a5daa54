"""Frame-rate conversion by timestamp: any frame stream → the model's rate (``CONTRACT.fps`` = 30).

The rule
    Output frame ``k`` stands for the instant ``T_k = origin + k / fps`` (``origin`` = the first
    source frame's ``pts`` unless given) and shows the **most recent source frame whose
    ``pts <= T_k + tolerance``**.  Source frames that no slot picks are *dropped*; a source frame
    picked by more than one slot is *repeated*.  Slots before the first source frame (only
    possible with an explicit, earlier ``origin``) show the first source frame.

The tolerance (:data:`DEFAULT_TOLERANCE` = 0.1 output frame = 3.3 ms at 30 fps)
    absorbs timestamp rounding — millisecond time bases, 1/90000 clocks, 29.97 vs 30 fps — so a
    30-fps source maps 1:1 instead of dropping and repeating at random.  It is deliberately much
    smaller than half a frame: half an output frame (16.7 ms) would tie exactly with the frame
    grid of 60-fps sources (33.3 + 16.7 = 50 ms = source frame 3) and would pick frames up to
    16.7 ms "from the future".  0.1 frame coincides with no grid of the common rates (24, 25, 30,
    48, 50, 60, 120 fps), never selects a frame more than 3.3 ms ahead of its slot, and is below
    half the frame interval of any source up to 150 fps.

How many output frames a finite stream has
    A stream whose last picture stops being shown at ``end`` (for a file: its duration) has
    ``n = max(1, ceil((end - origin) * fps - tolerance))`` output frames: slot ``k`` exists iff it
    starts more than ``tolerance`` before the end (:func:`output_frame_count`).  So ``n / fps``
    covers the whole video and exceeds it by less than one output frame; the offline generator
    makes ``n`` audio frames (``n * CONTRACT.hop`` samples) and trims the tail to the video's
    exact duration.  A 1.000 s clip gives 30 frames at any source rate.

Two ways to use it
    * offline: :func:`resample` wraps any iterable of :class:`~capture.base.Frame` (a finite
      source) and yields the 30-fps frames;
    * live / incrementally: :class:`FrameResampler` — :meth:`~FrameResampler.push` each source
      frame as it arrives and get back the output frames that are now decided;
      :meth:`~FrameResampler.advance` emits the slots whose time has passed on a wall clock
      (a live source cannot deliver an older frame later, so waiting for the next frame would
      only add latency); :meth:`~FrameResampler.finish` flushes the tail at the end of a file.

Output frames share the source frame's ``image`` array (a repeat is the same object, not a
copy) and keep its ``captured_at`` (so latency is measured from when the shown picture was
captured); their ``index`` is ``k`` and their ``pts`` is ``k / fps`` (seconds since ``origin``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

from audio.contract import CONTRACT
from capture.base import Frame

DEFAULT_TOLERANCE = 0.1
"""Timestamp tolerance in output frames (see the module docstring for why 0.1)."""


def output_frame_count(duration: float, *, fps: float = CONTRACT.fps,
                       tolerance: float = DEFAULT_TOLERANCE) -> int:
    """Number of ``fps`` output frames for a stream of ``duration`` seconds (0 if ``duration <= 0``).

    ``max(1, ceil(duration * fps - tolerance))``: every instant of the stream is covered, and the
    output is longer than the stream by less than one frame.
    """
    if duration <= 0:
        return 0
    return max(1, math.ceil(duration * fps - tolerance))


class FrameResampler:
    """Incremental timestamp resampler (see the module docstring for the rule).

    Feed source frames in presentation order with :meth:`push`; collect the output frames it
    returns.  Counters: ``received`` source frames, ``emitted`` output frames, ``repeated`` output
    frames that show the same source frame as the previous output, ``dropped`` source frames no
    slot showed.
    """

    def __init__(self, *, fps: float = CONTRACT.fps, tolerance: float = DEFAULT_TOLERANCE,
                 origin: float | None = None) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if not 0 <= tolerance < 0.5:
            raise ValueError(f"tolerance is in output frames and must be in [0, 0.5), got {tolerance}")
        self.fps = float(fps)
        self.tolerance = float(tolerance)
        self.origin = origin
        self._tol_s = tolerance / fps
        self._next = 0                      # index k of the next slot to emit
        self._held: Frame | None = None     # most recent source frame (candidate for the next slot)
        self._held_shown = False
        self._prev_pts: float | None = None  # pts of the source frame before ``_held``
        self.received = 0
        self.emitted = 0
        self.repeated = 0
        self.dropped = 0

    # -- timing helpers -------------------------------------------------------------------------
    def slot_time(self, k: int) -> float:
        """Source-clock instant of output slot ``k`` (requires the origin to be known)."""
        assert self.origin is not None
        return self.origin + k / self.fps

    @property
    def held_pts(self) -> float | None:
        """pts of the most recent source frame (the one the next slot would show), if any."""
        return None if self._held is None else self._held.pts

    @property
    def next_index(self) -> int:
        """Index of the next output frame that will be emitted."""
        return self._next

    def _emit(self) -> Frame:
        held = self._held
        assert held is not None
        if self._held_shown:
            self.repeated += 1
        self._held_shown = True
        k = self._next
        self._next += 1
        self.emitted += 1
        return Frame(image=held.image, index=k, pts=k / self.fps, captured_at=held.captured_at)

    def _replace_held(self, frame: Frame) -> None:
        if self._held is not None:
            if not self._held_shown:
                self.dropped += 1
            self._prev_pts = self._held.pts
        self._held = frame
        self._held_shown = False

    # -- feeding --------------------------------------------------------------------------------
    def push(self, frame: Frame) -> list[Frame]:
        """Take one source frame; return the output frames decided by its arrival.

        Slot ``k`` is decided once a frame with ``pts > T_k + tolerance`` arrives (frames come in
        presentation order, so nothing later can belong to slot ``k``).  A frame whose pts does
        not increase replaces the held one (the later-delivered picture wins).
        """
        self.received += 1
        if self.origin is None:
            self.origin = frame.pts
        if self._held is None:
            # Slots before the first source frame (explicit earlier origin) show the first frame.
            self._held = frame
            self._held_shown = False
        out: list[Frame] = []
        while self.slot_time(self._next) + self._tol_s < frame.pts:
            out.append(self._emit())
        if self._held is not frame:
            self._replace_held(frame)
        return out

    def advance(self, now: float) -> list[Frame]:
        """Emit every slot with ``T_k + tolerance <= now`` using the held frame.

        ``now`` is on the source's pts clock.  For live sources only: it asserts that no frame
        with ``pts <= now`` is still to come.  Does nothing before the first frame.
        """
        out: list[Frame] = []
        if self._held is None:
            return out
        while self.slot_time(self._next) + self._tol_s <= now:
            out.append(self._emit())
        return out

    def finish(self, end: float | None = None) -> list[Frame]:
        """The stream ended: emit the remaining slots up to ``end`` (source clock).

        The total number of output frames becomes ``output_frame_count(end - origin)``.  Without
        ``end``, the last frame is taken to last one source-frame interval (its distance to the
        previous frame, or one output frame for a single-frame stream).
        """
        if self._held is None:
            return []
        assert self.origin is not None
        if end is None:
            interval = self._held.pts - self._prev_pts if self._prev_pts is not None else 0.0
            end = self._held.pts + (interval if interval > 0 else 1.0 / self.fps)
        total = output_frame_count(end - self.origin, fps=self.fps, tolerance=self.tolerance)
        out = [self._emit() for _ in range(max(0, total - self._next))]
        if not self._held_shown:
            self.dropped += 1
            self._held_shown = True  # counted once, even if finish() is called again
        return out

    def stats(self) -> dict[str, int]:
        return {"received": self.received, "emitted": self.emitted, "repeated": self.repeated,
                "dropped": self.dropped}


def resample(frames: Iterable[Frame], *, fps: float = CONTRACT.fps, tolerance: float = DEFAULT_TOLERANCE,
             origin: float | None = None,
             end: float | Callable[[], float | None] | None = None) -> Iterator[Frame]:
    """Resample a finite frame stream offline; yields the ``fps`` output frames in order.

    ``end`` is when the last source frame stops being shown (e.g. a file's duration), or a
    callable asked once the input is exhausted (a :class:`~capture.file.FileSource` knows its
    end only after decoding it: pass ``lambda: source.end_pts``).
    """
    resampler = FrameResampler(fps=fps, tolerance=tolerance, origin=origin)
    for frame in frames:
        yield from resampler.push(frame)
    yield from resampler.finish(end() if callable(end) else end)
