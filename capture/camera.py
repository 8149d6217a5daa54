"""Webcams and virtual cameras (OBS's "Start Virtual Camera") as live frame sources, via OpenCV.

``camera:N`` opens OpenCV device N: on Linux ``/dev/videoN`` through V4L2 (OBS's virtual camera
is a v4l2loopback device there, so it is one of these numbers), on Windows DirectShow device N
("OBS Virtual Camera" is listed among the webcams), on macOS AVFoundation device N.

Cameras deliver frames at their own pace; ``read`` blocks until the next one arrives.  A frame's
``pts`` is its arrival time on the monotonic clock relative to the first frame (webcam driver
timestamps are not reliable across backends), ``captured_at`` the arrival instant.  The frame
rate the driver reports (``fps``) is nominal; the 30-fps resampler works from the timestamps.

A camera that is absent, busy or not permitted raises :class:`~capture.base.CaptureError` at
:meth:`CameraSource.open`; one that stops delivering (unplugged) raises from :meth:`read`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from audio.contract import CONTRACT
from capture.base import CaptureError, Frame, FrameSource

log = logging.getLogger(__name__)


def _backend(cv2: Any) -> int:
    """The OpenCV capture API that serves device indices (and virtual cameras) on this platform."""
    if sys.platform.startswith("linux"):
        return cv2.CAP_V4L2
    if sys.platform == "win32":
        return cv2.CAP_DSHOW  # OBS Virtual Camera registers as a DirectShow device
    if sys.platform == "darwin":
        return cv2.CAP_AVFOUNDATION
    return cv2.CAP_ANY


class CameraSource(FrameSource):
    """Live frames from OpenCV camera ``index``; ``width``/``height``/``fps`` are requests to the
    driver (it may pick the nearest mode it supports; ``size`` and ``fps`` report what it chose)."""

    live = True

    def __init__(self, index: int, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None) -> None:
        if index < 0:
            raise CaptureError(f"camera index must be >= 0, got {index}")
        self.index = int(index)
        self.name = f"camera:{self.index}"
        self._request = (width, height, fps)
        self._cap: Any = None
        self._cv2: Any = None
        self._origin: float | None = None
        self._pending: Any = None
        self._index = 0

    def _hint(self) -> str:
        if sys.platform.startswith("linux"):
            where = (f"/dev/video{self.index} must exist and be readable by you (group 'video'); "
                     "for OBS's virtual camera load v4l2loopback and press 'Start Virtual Camera'")
        else:
            where = ("allow camera access for this app in the system privacy settings; "
                     "for OBS press 'Start Virtual Camera'")
        return f"check that the camera is connected and not in use by another program; {where}"

    def open(self) -> None:
        self.close()
        import cv2

        self._cv2 = cv2
        # OpenCV prints its own warnings for a camera it cannot open; ours below says what to do
        quiet = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            cap = cv2.VideoCapture(self.index, _backend(cv2))
        finally:
            cv2.utils.logging.setLogLevel(quiet)
        if not cap.isOpened():
            cap.release()
            raise CaptureError(f"{self.name}: no camera could be opened at index {self.index}; "
                               f"{self._hint()}")
        width, height, fps = self._request
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        ok, bgr = cap.read()  # first frame now: a camera that opens but never delivers fails here
        if not ok or bgr is None:
            cap.release()
            raise CaptureError(f"{self.name}: the camera opened but delivered no picture; {self._hint()}")
        self._cap = cap
        self._pending = (time.monotonic(), bgr)
        self.size = (int(bgr.shape[1]), int(bgr.shape[0]))
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or float(CONTRACT.fps)
        self._origin = None
        self._index = 0
        log.debug("opened %s: %dx%d at %.3g fps", self.name, *self.size, self.fps)

    def read(self) -> Frame:
        if self._cap is None:
            raise CaptureError(f"{self.name}: read() before open(); use `with source:` or call open()")
        if self._pending is not None:
            arrived, bgr = self._pending
            self._pending = None
        else:
            ok, bgr = self._cap.read()
            arrived = time.monotonic()
            if not ok or bgr is None:
                raise CaptureError(f"{self.name}: the camera stopped delivering frames (unplugged, or "
                                   f"taken by another program?); {self._hint()}")
        if self._origin is None:
            self._origin = arrived
        image = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)  # (H, W, 3) uint8 RGB
        frame = Frame(image=image, index=self._index, pts=arrived - self._origin, captured_at=arrived)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = None
        self._pending = None


def from_spec(arg: str | None, **options: Any) -> CameraSource:
    """Registry factory for ``camera:N`` (N defaults to 0)."""
    text = "0" if arg is None or not arg.strip() else arg.strip()
    try:
        index = int(text)
    except ValueError:
        raise CaptureError(f"camera source 'camera:{arg}' needs a device number, e.g. 'camera:0' "
                           "(OBS's virtual camera is one of the numbered devices)") from None
    return CameraSource(index, **options)


__all__ = ["CameraSource", "from_spec"]
