"""``synthetic[:SEED]``: the arcade world as a capture source.

By default it is *live*: frames come at 30 per second of wall-clock time (the source sleeps until
each frame is due; after a stall it re-anchors its clock instead of bursting to catch up).  With
``realtime=False`` it yields frames as fast as they can be rendered (``live`` is then False).
It is endless unless given a ``duration`` in seconds.

Besides the frame, each :meth:`~SyntheticSource.read` exposes the ground truth that belongs to it:
:attr:`~SyntheticSource.last_audio` (the world's own (2, 1600) float32 sound for that frame) and
:attr:`~SyntheticSource.last_events` (the events that became visible on it).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from audio.contract import CONTRACT
from capture.base import CaptureError, Frame, FrameSource, SourceSpecError
from capture.synthetic.world import MIN_SIZE, SyntheticEvent, World

log = logging.getLogger(__name__)

DEFAULT_SIZE = (640, 360)
MAX_SIZE = (7680, 4320)  # 8K: a frame of it is 100 MB; larger is a typo, refused before any allocation


def parse_size(size: str | tuple[int, int] | list[int] | None, *, what: str = "size") -> tuple[int, int]:
    """``"640x360"`` or ``(640, 360)`` → ``(width, height)``; ``None`` → :data:`DEFAULT_SIZE`."""
    if size is None:
        return DEFAULT_SIZE
    try:
        if isinstance(size, str):
            w_s, _, h_s = size.lower().partition("x")
            w, h = int(w_s), int(h_s)
        else:
            w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise SourceSpecError(f"bad {what} {size!r}; give WIDTHxHEIGHT, e.g. 640x360") from None
    if w < MIN_SIZE or h < MIN_SIZE:
        raise SourceSpecError(f"{what} {w}x{h} is too small; use at least {MIN_SIZE}x{MIN_SIZE}, e.g. 640x360")
    if w > MAX_SIZE[0] or h > MAX_SIZE[1]:
        raise SourceSpecError(
            f"{what} {w}x{h} is too large; use at most {MAX_SIZE[0]}x{MAX_SIZE[1]} (8K), e.g. 640x360")
    return w, h


class SyntheticSource(FrameSource):
    """Frames of a seeded :class:`~capture.synthetic.world.World` (see the module docstring)."""

    def __init__(
        self,
        *,
        seed: int = 0,
        size: tuple[int, int] = DEFAULT_SIZE,
        realtime: bool = True,
        duration: float | None = None,
    ) -> None:
        if duration is not None and duration <= 0:
            raise CaptureError(f"synthetic source duration must be positive, got {duration!r} s")
        self.seed = int(seed)
        self.name = f"synthetic:{self.seed}"
        self.fps = float(CONTRACT.fps)
        self.size = (int(size[0]), int(size[1]))
        self.live = bool(realtime)
        self.duration = duration
        self._max_frames = None if duration is None else int(round(duration * CONTRACT.fps))
        self.world: World | None = None
        self.last_audio = np.zeros((CONTRACT.channels, CONTRACT.hop), np.float32)
        self.last_events: list[SyntheticEvent] = []
        self.late_frames = 0  # live mode: frames that were due more than one frame ago
        self._t0 = 0.0
        self._n = 0

    def open(self) -> None:
        w, h = self.size
        # an endless live source must not grow a log without bound
        self.world = World(self.seed, width=w, height=h, keep_log=self._max_frames is not None)
        self._n = 0
        self._t0 = time.monotonic()
        log.info("opened %s (%s scene, %dx%d)", self.name, self.world.style.scene, w, h)

    def read(self) -> Frame | None:
        if self.world is None:
            raise CaptureError(f"{self.name} is not open; call open() or use it in a `with` block")
        if self._max_frames is not None and self._n >= self._max_frames:
            return None
        image, audio, events = self.world.step()
        index = self._n
        self._n += 1
        if self.live:
            due = self._t0 + index / self.fps
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > 1.0 / self.fps:  # stalled: re-anchor rather than burst
                self.late_frames += 1
                self._t0 = now - index / self.fps
        self.last_audio, self.last_events = audio, events
        return Frame(image=image, index=index, pts=index / self.fps, captured_at=time.monotonic())

    def close(self) -> None:
        self.world = None


_OPTIONS = ("size", "realtime", "duration")


def open_synthetic(arg: str | None, **options) -> SyntheticSource:
    """Factory for ``synthetic[:SEED]`` (see :mod:`capture.registry`).  Options: ``size``
    (``(w, h)`` or ``"WxH"``, default 640x360), ``realtime`` (default True), ``duration`` (s)."""
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise CaptureError(f"synthetic source got unknown option(s) {unknown}; valid: {', '.join(_OPTIONS)}")
    seed_text = (arg or "").strip()
    try:
        seed = int(seed_text) if seed_text else 0
    except ValueError:
        seed = -1
    if seed < 0:
        raise CaptureError(
            f"bad synthetic seed {arg!r}; use 'synthetic' or 'synthetic:SEED' with a non-negative integer"
        )
    return SyntheticSource(
        seed=seed,
        size=parse_size(options.get("size")),
        realtime=bool(options.get("realtime", True)),
        duration=options.get("duration"),
    )
