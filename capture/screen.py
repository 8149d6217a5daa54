"""The desktop (or a rectangle of it) as a live frame source, grabbed with ``mss``.

Source strings: ``screen`` (the primary monitor), ``screen:N`` (monitor N, 1-based as mss
numbers them; ``screen:0`` = the bounding box of all monitors), ``screen:X,Y,W,H`` (a region in
virtual-desktop pixels, e.g. a game window's client area).

Why mss: it is pure Python over ctypes (no compiler, no Pillow, no ffmpeg device setup), works on
Linux/X11, Windows and macOS with one API, and is fast where it matters — on X11 it uses the MIT
shared-memory extension (XShmGetImage: well under a millisecond for 720p), on Windows GDI
BitBlt, on macOS CoreGraphics.  Alternatives cost more: PIL.ImageGrab / pyautogui are slower and
pull in Pillow, dxcam (Desktop Duplication) is Windows-only, FFmpeg's x11grab/gdigrab via PyAV is
per-platform device plumbing.  On Wayland sessions mss sees only XWayland windows — capture through OBS
(``obs:NAME``) there.  The BGRA → RGB swap is done by OpenCV (already a dependency for cameras;
an order of magnitude faster than a NumPy channel shuffle).

The source paces itself to ``fps`` (default ``CONTRACT.fps``): tick ``n`` is due at
``first_grab + n / fps``; ``read`` sleeps until the next due tick (skipping ticks it is already
late for, so lag never accumulates) and grabs.  A frame's ``pts`` is its tick time (exact
multiples of ``1/fps``, so the 30-fps resampler maps a 30-fps grab 1:1 despite scheduling
jitter); ``captured_at`` is when the grab actually started.

The mss handle is thread-affine on some platforms: open, read and close from one thread (the
capture thread does).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import numpy as np

from audio.contract import CONTRACT
from capture.base import CaptureError, Frame, FrameSource

log = logging.getLogger(__name__)

_FORMS = "'screen', 'screen:N' (monitor N, 0 = all monitors) or 'screen:X,Y,W,H' (a region in pixels)"


def parse_screen_spec(arg: str | None) -> tuple[int | None, tuple[int, int, int, int] | None]:
    """``None`` → primary monitor; ``"N"`` → monitor N; ``"X,Y,W,H"`` → region.

    Returns ``(monitor, region)`` with exactly one of them set, or both ``None`` for the primary.
    """
    if arg is None or arg.strip() == "":
        return None, None
    parts = [p.strip() for p in arg.split(",")]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise CaptureError(f"screen source 'screen:{arg}' is not understood; use {_FORMS}") from None
    if len(numbers) == 1:
        if numbers[0] < 0:
            raise CaptureError(f"monitor index must be >= 0 in 'screen:{arg}'; use {_FORMS}")
        return numbers[0], None
    if len(numbers) == 4:
        x, y, w, h = numbers
        if w <= 0 or h <= 0:
            raise CaptureError(f"region 'screen:{arg}' has width/height <= 0; use 'screen:X,Y,W,H' "
                               "with W and H positive")
        return None, (x, y, w, h)
    raise CaptureError(f"screen source 'screen:{arg}' has {len(numbers)} numbers; use {_FORMS}")


def _describe(monitors: list[dict[str, Any]]) -> str:
    rows = [f"{i} = {m['width']}x{m['height']} at ({m['left']},{m['top']})" for i, m in enumerate(monitors)]
    return "; ".join(rows[1:] + [rows[0].replace("0 =", "0 (all) =", 1)])


class ScreenSource(FrameSource):
    """Live frames of a monitor or a screen region (see the module docstring).

    ``monitor``: mss monitor index (0 = all, 1.. = each; None = primary); ``region``:
    ``(x, y, w, h)`` in virtual-desktop pixels (overrides ``monitor``); ``display``: X display
    name (Linux only; default ``$DISPLAY``); ``with_cursor``: draw the pointer (Linux only).
    Frames are ``(h, w, 3)`` uint8 RGB of the monitor/region size.
    """

    live = True

    def __init__(self, *, monitor: int | None = None, region: tuple[int, int, int, int] | None = None,
                 fps: float = CONTRACT.fps, display: str | None = None, with_cursor: bool = False) -> None:
        if fps <= 0:
            raise CaptureError(f"screen capture rate must be > 0 fps, got {fps}")
        self.monitor = monitor
        self.region = None if region is None else tuple(int(v) for v in region)
        self.fps = float(fps)
        self.display = display
        self.with_cursor = with_cursor
        if self.region is not None:
            self.name = "screen:" + ",".join(str(v) for v in self.region)
        elif monitor is not None:
            self.name = f"screen:{monitor}"
        else:
            self.name = "screen"
        self._sct: Any = None
        self._box: dict[str, int] | None = None
        self._cv2: Any = None
        self._origin: float | None = None
        self._tick = 0
        self._index = 0

    def open(self) -> None:
        self.close()
        import cv2
        import mss

        self._cv2 = cv2
        kwargs: dict[str, Any] = {}
        if sys.platform.startswith("linux"):
            display = self.display or os.environ.get("DISPLAY")
            if not display:
                raise CaptureError(
                    f"{self.name}: no X display to capture (DISPLAY is not set). Run livefoley inside "
                    "your desktop session or set DISPLAY (e.g. DISPLAY=:0); on a Wayland desktop "
                    "capture the game through OBS instead (--source obs:NAME)"
                )
            kwargs = {"display": display, "with_cursor": self.with_cursor}
        # mss >= 10.2 spells the constructor mss.MSS (mss.mss is deprecated there); older: mss.mss.
        make = mss.MSS if hasattr(mss, "MSS") else mss.mss
        try:
            sct = make(**kwargs)
        except mss.ScreenShotError as err:
            where = f" {kwargs['display']!r}" if "display" in kwargs else ""
            raise CaptureError(
                f"{self.name}: cannot connect to the display{where} ({err}); check that the X server "
                "is running and DISPLAY points at it (and that you may access it: xhost / XAUTHORITY)"
            ) from err
        try:
            self._box = self._resolve(sct.monitors)
            shot = sct.grab(self._box)  # one grab now, so that failures surface at open
        except mss.ScreenShotError as err:
            sct.close()
            raise CaptureError(f"{self.name}: screen grab failed ({err}); {_FORMS}") from err
        except BaseException:
            sct.close()
            raise
        self._sct = sct
        self.size = (shot.width, shot.height)
        self._origin = None
        self._tick = 0
        self._index = 0
        log.debug("opened %s: box %s", self.name, self._box)

    def _resolve(self, monitors: list[dict[str, Any]]) -> dict[str, int]:
        """The mss box to grab, validated against the monitors mss reports."""
        if len(monitors) < 2:
            raise CaptureError(f"{self.name}: the display reports no monitor")
        if self.region is not None:
            x, y, w, h = self.region
            desk = monitors[0]
            if (x < desk["left"] or y < desk["top"] or x + w > desk["left"] + desk["width"]
                    or y + h > desk["top"] + desk["height"]):
                raise CaptureError(
                    f"{self.name}: region {w}x{h} at ({x},{y}) lies outside the desktop "
                    f"({desk['width']}x{desk['height']} at ({desk['left']},{desk['top']})); monitors: "
                    f"{_describe(monitors)}"
                )
            return {"left": x, "top": y, "width": w, "height": h}
        if self.monitor is None:  # primary monitor, or the first one if none is marked
            chosen = next((m for m in monitors[1:] if m.get("is_primary")), monitors[1])
        elif self.monitor < len(monitors):
            chosen = monitors[self.monitor]
        else:
            raise CaptureError(
                f"{self.name}: there is no monitor {self.monitor}; this display has monitors "
                f"{_describe(monitors)}. Use 'screen:N' with one of those numbers"
            )
        return {k: int(chosen[k]) for k in ("left", "top", "width", "height")}

    def read(self) -> Frame:
        if self._sct is None or self._box is None:
            raise CaptureError(f"{self.name}: read() before open(); use `with source:` or call open()")
        import mss

        now = time.monotonic()
        if self._origin is None:
            self._origin = now
        else:
            due = self._origin + self._tick / self.fps
            if due > now:
                time.sleep(due - now)
            else:  # late: jump to the latest tick that is already due instead of bursting
                self._tick = int((now - self._origin) * self.fps)
        tick = self._tick
        self._tick += 1
        started = time.monotonic()
        try:
            shot = self._sct.grab(self._box)
        except mss.ScreenShotError as err:
            raise CaptureError(f"{self.name}: screen grab failed ({err}); was the display closed "
                               "or its resolution changed?") from err
        bgra = np.frombuffer(shot.raw, dtype=np.uint8).reshape(shot.height, shot.width, 4)
        image = self._cv2.cvtColor(bgra, self._cv2.COLOR_BGRA2RGB)  # (H, W, 3) uint8, a fresh array
        frame = Frame(image=image, index=self._index, pts=tick / self.fps, captured_at=started)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._sct is not None:
            self._sct.close()
        self._sct = None


def from_spec(arg: str | None, **options: Any) -> ScreenSource:
    """Registry factory for ``screen`` / ``screen:N`` / ``screen:X,Y,W,H``."""
    monitor, region = parse_screen_spec(arg)
    return ScreenSource(monitor=monitor, region=region, **options)


__all__ = ["ScreenSource", "from_spec", "parse_screen_spec"]
