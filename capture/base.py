"""The frame-source interface every capture backend implements.

A source is opened, read frame by frame, and closed (or used as a context manager).  Frames carry
an RGB uint8 image, an index, the media time ``pts`` (seconds since the first frame) and the
``captured_at`` wall-clock instant (``time.monotonic()``) used for glass-to-ear latency.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from audio.errors import LivefoleyError, UsageError


class CaptureError(LivefoleyError):
    """A source could not be opened or died; the message names the source."""


class SourceSpecError(CaptureError, UsageError):
    """A source string or frame size that means nothing (exit 2: nothing was opened)."""


@dataclass(frozen=True)
class Frame:
    """One captured picture.  ``image`` is (H, W, 3) uint8 RGB."""

    image: np.ndarray
    index: int
    pts: float
    captured_at: float = field(default_factory=time.monotonic)


class FrameSource(ABC):
    """Open / read / close.  ``read`` returns ``None`` at the end of a finite stream.

    Subclasses set ``name`` (the source string), ``fps`` (nominal rate) and ``size``
    ((width, height) of the frames they return) by the time :meth:`open` returns, and ``live``
    (True when frames arrive in wall-clock time, so a consumer must keep up).
    """

    name: str = "?"
    fps: float = 0.0
    size: tuple[int, int] = (0, 0)
    live: bool = True

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def read(self) -> Frame | None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self):
        while (frame := self.read()) is not None:
            yield frame

    def stats(self) -> dict | None:
        """The source's own counters (e.g. OBS's gaps), or None when it keeps none."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, fps={self.fps:g}, size={self.size})"
