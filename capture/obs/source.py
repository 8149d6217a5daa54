"""An OBS source or scene as a live frame source: ``obs:NAME``.

Each frame is one obs-websocket ``GetSourceScreenshot`` — OBS renders the source *now* and returns
it as JPEG — asked for at the model's input size (only the width, or only the height, so OBS keeps
the aspect ratio and the model's letterbox has nothing to shrink), decoded with OpenCV to RGB.
A small JPEG costs a few milliseconds per call (its ``stats()`` report them), so OBS serves far
more than the nominal 30 fps; the source paces itself to ``fps`` like the screen
grabber (tick ``n`` is due at ``first + n / fps``; late ticks are skipped, never queued), with
``pts`` = tick time and ``captured_at`` = when the request was sent.

**Size.**  The first screenshot is asked for at the model's input width; if the picture then comes
out taller than the input height (a source narrower than the model's aspect), later ones are asked
for at the input height instead: the picture always fits inside ``input_size`` (h, w).

**OBS going away.**  If OBS stops answering (crash, restart, a request timeout), the source keeps
delivering the last picture at the tick rate (``captured_at`` = now, so the live clock stays right)
while it reconnects with exponential backoff (``reconnect_min_s`` … ``reconnect_max_s``; a refused
connection costs nothing, a hung OBS one request timeout, so ``read`` always returns well within the
capture thread's stall limit).  The gap is logged when it starts and when it ends, and counted in
:meth:`ObsSource.stats` (``gaps``, ``gap_s``, ``repeated``).  After ``max_gap_s`` without OBS the
source fails with a :class:`~capture.base.CaptureError` that says so (the live engine then stops
and finalises its recording).  A source that does not exist (at open, or deleted while running)
is an error listing the sources that do.

Options (``open_source("obs:NAME", **options)``): ``target`` (an :class:`~capture.obs.client.ObsTarget`:
where OBS is and its password; the application resolves it — ``livefoley live`` with
:func:`plugin.obs.target.resolve_target` — and the source refuses to guess), ``input_size`` ((h, w)
the screenshots must fit in; the caller passes its model's, default 224×392), ``fps``, ``quality``
(JPEG 1–100), ``timeout`` (per request), ``max_gap_s``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from audio.contract import CONTRACT
from capture.base import CaptureError, Frame, FrameSource
from capture.obs.client import NOT_FOUND, REQUEST_FAILED, ObsClient, ObsConnectionError, ObsRequestError, ObsTarget

log = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = (224, 392)  # the `base` preset's (h, w); callers pass their model's


class ObsSource(FrameSource):
    """Frames of OBS source/scene ``source`` (see the module docstring).  Frames are (h, w, 3) uint8
    RGB fitting inside ``input_size`` = (h, w)."""

    def __init__(self, *, source: str, target=None, input_size: tuple[int, int] | None = None,
                 fps: float = CONTRACT.fps, quality: int = 85, timeout: float = 1.0,
                 reconnect_min_s: float = 0.1, reconnect_max_s: float = 2.0, max_gap_s: float = 60.0) -> None:
        if not source:
            raise CaptureError("obs: needs a source name, e.g. obs:Game; list them with `livefoley obs sources`")
        if not isinstance(target, ObsTarget):
            raise CaptureError(f"obs:{source}: needs target=ObsTarget(host, port, password) — where OBS is "
                               "(plugin.obs.target.resolve_target finds it as `livefoley live` does)")
        if not fps > 0:
            raise CaptureError(f"obs:{source}: fps must be > 0; got {fps}")
        if not 1 <= int(quality) <= 100:
            raise CaptureError(f"obs:{source}: JPEG quality must be 1–100; got {quality}")
        self.source = source
        self.name = f"obs:{source}"
        self.fps = float(fps)
        self.live = True
        self.quality = int(quality)
        self.timeout = float(timeout)
        self.reconnect_min_s = float(reconnect_min_s)
        self.reconnect_max_s = float(reconnect_max_s)
        self.max_gap_s = float(max_gap_s)
        self._target = target
        self.input_size = tuple(int(v) for v in (input_size or DEFAULT_INPUT_SIZE))
        self._client = None
        self._ask: dict[str, int] = {"width": self.input_size[1]}
        self._first: float | None = None
        self._tick = 0
        self._index = 0
        self._last: np.ndarray | None = None
        self._gap_start: float | None = None
        self._next_try = 0.0
        self._backoff = self.reconnect_min_s
        self.counts = {"frames": 0, "screenshots": 0, "repeated": 0, "gaps": 0, "reconnects": 0,
                       "skipped_ticks": 0}
        self._gap_total = 0.0
        self._grab_ms: list[float] = []

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        self._client = ObsClient(target=self._target, timeout=max(self.timeout, 2.0))
        self._client.connect()  # a clear ObsError (not reachable / password) propagates as is
        try:
            image = self._grab()
        except ObsRequestError as err:
            raise self._missing(err) from None
        h, w = image.shape[:2]
        if h > self.input_size[0]:
            self._ask = {"height": self.input_size[0]}
            image = self._grab()
            h, w = image.shape[:2]
        self.size = (w, h)
        self._last = image
        self._client.timeout = self.timeout
        log.info("%s: %dx%d JPEG screenshots from OBS at %s", self.name, w, h, self._target.address)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._gap_start is not None:
            self._gap_total += time.monotonic() - self._gap_start
            self._gap_start = None

    # -- frames ----------------------------------------------------------------------------------------
    def _grab(self) -> np.ndarray:
        import cv2

        t0 = time.perf_counter()
        data = self._client.screenshot(self.source, fmt="jpg", quality=self.quality, **self._ask)
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CaptureError(f"{self.name}: OBS sent an image OpenCV cannot decode ({len(data)} bytes)")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self.counts["screenshots"] += 1
        if len(self._grab_ms) < 100_000:
            self._grab_ms.append(1000 * (time.perf_counter() - t0))
        return rgb

    def _missing(self, err) -> CaptureError:
        try:
            names = self._client.source_names()
        except Exception:  # noqa: BLE001 - listing is best effort
            names = []
        listing = ", ".join(repr(n) for n in names) or "(none)"
        return CaptureError(f"OBS has no source or scene named {self.source!r} ({err}); available: {listing}. "
                            "Use obs:NAME with one of these (`livefoley obs sources` lists them)")

    def read(self) -> Frame | None:

        if self._client is None:
            raise CaptureError(f"{self.name}: read() before open()")
        now = time.monotonic()
        if self._first is None:
            self._first = now
        due = self._first + self._tick / self.fps
        if now < due:
            time.sleep(due - now)
        else:
            late = int((now - due) * self.fps)
            if late:
                self._tick += late
                self.counts["skipped_ticks"] += late
        pts = self._tick / self.fps
        self._tick += 1
        captured_at = time.monotonic()
        image = None
        if self._gap_start is None or captured_at >= self._next_try:
            try:
                image = self._grab()
            except ObsRequestError as err:
                if err.code == NOT_FOUND:  # the source vanished while running
                    raise self._missing(err) from None
                if err.code != REQUEST_FAILED:
                    raise CaptureError(f"{self.name}: {err}") from None
                # OBS could not render this screenshot (seen on a busy machine, and while a media
                # source seeks): a gap like a lost connection — bounded by max_gap_s
                self._on_failure(err)
            except ObsConnectionError as err:
                self._on_failure(err)
        if image is None:
            if self._gap_start is not None and time.monotonic() - self._gap_start > self.max_gap_s:
                raise CaptureError(f"{self.name}: lost OBS at {self._target.address} for more than "
                                   f"{self.max_gap_s:g} s; start OBS (with its WebSocket server on) and run again")
            image = self._last
            self.counts["repeated"] += 1
        else:
            if self._gap_start is not None:
                gap = time.monotonic() - self._gap_start
                self._gap_total += gap
                self._gap_start = None
                self.counts["reconnects"] += 1
                log.warning("%s: OBS is back after a %.2f s gap (%d repeated frames so far)",
                            self.name, gap, self.counts["repeated"])
            self._last = image
        frame = Frame(image=image, index=self._index, pts=pts, captured_at=captured_at)
        self._index += 1
        self.counts["frames"] += 1
        return frame

    def _on_failure(self, err: Exception) -> None:
        now = time.monotonic()
        if self._gap_start is None:
            self._gap_start = now
            self._backoff = self.reconnect_min_s
            self.counts["gaps"] += 1
            log.warning("%s: %s — repeating the last picture while reconnecting", self.name, err)
        else:
            self._backoff = min(2 * self._backoff, self.reconnect_max_s)
        self._next_try = now + self._backoff

    # -- reporting -------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters (frames, screenshots, repeated, gaps, reconnects, skipped ticks), total gap
        seconds, and per-screenshot cost (request + decode) p50/p95 in ms."""
        gap = self._gap_total + (time.monotonic() - self._gap_start if self._gap_start is not None else 0.0)
        ms = np.asarray(self._grab_ms) if self._grab_ms else None
        return {
            "source": self.name, **self.counts, "gap_s": round(gap, 3),
            "size": list(self.size), "in_gap": self._gap_start is not None,
            "screenshot_ms": None if ms is None else {
                "p50": round(float(np.percentile(ms, 50)), 2), "p95": round(float(np.percentile(ms, 95)), 2),
                "mean": round(float(ms.mean()), 2), "n": int(ms.size)},
        }


def from_spec(arg: str | None, **options: Any) -> ObsSource:
    """``obs:NAME`` → an unopened :class:`ObsSource` (options: see the module docstring)."""
    if not arg:
        raise CaptureError("obs: needs a source name, e.g. obs:Game; list them with `livefoley obs sources`")
    known = {"target", "input_size", "fps", "quality", "timeout", "reconnect_min_s", "reconnect_max_s", "max_gap_s"}
    unknown = set(options) - known
    if unknown:
        raise CaptureError(f"obs:{arg}: unknown option(s) {', '.join(sorted(unknown))}; valid: "
                           f"{', '.join(sorted(known))}")
    return ObsSource(source=arg, **options)


__all__ = ["DEFAULT_INPUT_SIZE", "ObsSource", "from_spec"]
