"""The capture thread: any source → 30-fps frames in a small queue that never lets lag grow.

::

    source.read() ──► FrameResampler (by pts, to CONTRACT.fps) ──► bounded queue ──► get()
    (own thread)        drops / repeats source frames                  drops the stalest
                                                                       frame when full

* The thread opens, reads and closes the source itself (screen grabbers and cameras may be
  bound to the thread that opened them); :meth:`CaptureThread.start` waits for the open and
  re-raises its error, so a bad source fails at start, in the caller's thread.
* **Live sources** (``source.live``): the queue holds at most ``queue_size`` frames; when the
  consumer is slower than 30 fps the *oldest* queued frame is discarded (counted in
  ``dropped_queue``) so the consumer always gets the freshest pictures and its lag stays bounded
  by ``queue_size`` frames.  Live ``pts`` run on the capture clock, so a 30-fps slot is handed
  out as soon as its time has come and its picture is certain (normally on the arrival of that
  picture), never early; when the source is slower than 30 fps or hiccups, the consumer's
  ``get`` repeats the last picture as each slot falls due (at most one frame late), so the
  consumer keeps receiving a steady 30 fps until the source is declared stalled.
* **Finite, non-live sources** (a file with ``realtime=False``): nothing may be lost, so a full
  queue makes the thread wait instead (back-pressure); the tail is flushed to the file's end
  (``source.end_pts`` when the source has one) and ``get`` then returns ``None``.
* **Failure is never a hang.**  If ``read`` raises, the thread records the reason and ends; if a
  ``read`` (or the open) has not returned for ``stall_timeout`` seconds the source is declared
  stalled.  Either way ``get`` first hands out what is already queued, then raises
  :class:`~capture.base.CaptureError` with the reason.  A stalled ``read`` cannot be interrupted
  from Python: the thread is a daemon, exits when the read returns, and :meth:`stop` does not wait
  for it longer than its timeout.

``stats()`` reports counts (source frames captured, 30-fps frames emitted / delivered, drops in
the resampler and in the queue, repeats) and rates (``source_fps``, ``achieved_fps`` = 30-fps
frames produced per wall-clock second, ``delivered_fps``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from audio.contract import CONTRACT
from capture.base import CaptureError, Frame, FrameSource
from capture.resample import DEFAULT_TOLERANCE, FrameResampler

log = logging.getLogger(__name__)

class CaptureThread:
    """Read ``source`` on a thread, resample to ``fps`` by timestamp, hand frames out via :meth:`get`.

    ``source``: an unopened :class:`FrameSource` or a source string (``open_source``).
    ``queue_size``: frames kept for the consumer (live: the stalest is dropped beyond it).
    ``stall_timeout``: seconds a single ``read`` (or the open) may take before the source counts as
    stalled.  Use as a context manager (start/stop) or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, source: FrameSource | str, *, fps: float = CONTRACT.fps, queue_size: int = 2,
                 stall_timeout: float = 5.0, tolerance: float = DEFAULT_TOLERANCE) -> None:
        if isinstance(source, str):
            from capture.registry import open_source

            source = open_source(source)
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if stall_timeout <= 0:
            raise ValueError(f"stall_timeout must be > 0 s, got {stall_timeout}")
        self.source = source
        self.fps = float(fps)
        self.queue_size = int(queue_size)
        self.stall_timeout = float(stall_timeout)
        self._resampler = FrameResampler(fps=fps, tolerance=tolerance)
        self._queue: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "new"
        self._reason: str | None = None
        self._busy_since: float | None = None  # when the pending open()/read() started
        self._live = bool(source.live)
        self._source_fps = float(fps)  # the source's nominal rate, known once it is open
        self._clock_offset: float | None = None  # live: min(captured_at - pts), source clock → monotonic
        self._captured = 0
        self._delivered = 0
        self._dropped_queue = 0
        self._queue_max = 0
        self._started_at: float | None = None
        self._first_frame_at: float | None = None
        self._ended_at: float | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> CaptureThread:
        """Start the thread and wait (≤ ``stall_timeout``) until the source is open.

        Raises :class:`CaptureError` if the source cannot be opened or its open does not return.
        """
        if self._thread is not None:
            raise RuntimeError("CaptureThread.start() called twice; make a new CaptureThread")
        with self._cond:
            self._state = "opening"
            self._started_at = time.monotonic()
            self._busy_since = self._started_at
        self._thread = threading.Thread(target=self._run, name=f"capture[{self.source.name}]", daemon=True)
        self._thread.start()
        if not self._opened.wait(self.stall_timeout):
            self._finish("stalled", f"{self.source.name}: the source did not open within "
                         f"{self.stall_timeout:g} s; check that it is reachable and not in use")
            self._stop.set()
        with self._cond:
            if self._state in ("failed", "stalled"):
                raise CaptureError(self._reason or f"{self.source.name}: capture failed")
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to end and wait up to ``timeout`` s for it (it closes the source)."""
        self._stop.set()
        self._finish("stopped", "stopped by the consumer")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("capture thread for %s is still blocked in the source after %.1f s; "
                            "leaving it (daemon) to exit when the source returns", self.source.name, timeout)

    def __enter__(self) -> CaptureThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def state(self) -> str:
        """One of new, opening, running, ended, failed, stalled, stopped."""
        return self._state

    @property
    def reason(self) -> str | None:
        """Why the thread ended (None while it runs)."""
        return self._reason

    def _finish(self, state: str, reason: str) -> None:
        """Record the first terminal state and wake every waiter."""
        with self._cond:
            if self._state in ("ended", "failed", "stalled", "stopped"):
                return
            self._state = state
            self._reason = reason
            self._ended_at = time.monotonic()
            self._cond.notify_all()

    # -- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        source = self.source
        try:
            source.open()
        except Exception as err:  # noqa: BLE001 - any failure to open is reported to start()
            self._finish("failed", _describe(source, err, "could not be opened"))
            self._opened.set()
            return
        with self._cond:
            self._busy_since = None
            if source.fps and source.fps > 0:
                self._source_fps = float(source.fps)
            if self._state == "opening":
                self._state = "running"
        self._opened.set()
        try:
            while not self._stop.is_set():
                with self._cond:
                    self._busy_since = time.monotonic()
                frame = source.read()
                now = time.monotonic()
                with self._cond:
                    self._busy_since = None
                if self._stop.is_set():
                    break
                if frame is None:
                    # A finite source knows when its last frame stops being shown (FileSource.end_pts).
                    end = getattr(source, "end_pts", None)
                    with self._cond:
                        out = self._resampler.finish(end)
                    self._put_all(out)
                    self._finish("ended", f"{source.name}: end of stream")
                    break
                with self._cond:  # the resampler's counters are read by stats() from other threads
                    self._captured += 1
                    if self._first_frame_at is None:
                        self._first_frame_at = now
                    out = self._resampler.push(frame)
                    if self._live:
                        # Live pts run on the capture clock (offset = the smallest capture delay seen).
                        offset = frame.captured_at - frame.pts
                        if self._clock_offset is None or offset < self._clock_offset:
                            self._clock_offset = offset
                        for item in out + self._resampler.advance(self._live_horizon(time.monotonic())):
                            self._enqueue_live(item)
                        out = []
                self._put_all(out)
        except Exception as err:  # noqa: BLE001 - the reason goes to the consumer via get()
            log.debug("capture from %s failed", source.name, exc_info=True)
            self._finish("failed", _describe(source, err, "failed while capturing"))
        finally:
            try:
                source.close()
            except Exception:  # noqa: BLE001 - closing a dead source must not mask the reason
                log.warning("closing %s failed", source.name, exc_info=True)

    def _enqueue_live(self, frame: Frame) -> None:
        """Queue a frame, dropping the stalest one when full (caller holds ``_cond``)."""
        if len(self._queue) >= self.queue_size:
            self._queue.popleft()  # the stalest frame goes; lag never grows
            self._dropped_queue += 1
        self._queue.append(frame)
        self._queue_max = max(self._queue_max, len(self._queue))
        self._cond.notify_all()

    def _put_all(self, frames: list[Frame]) -> None:
        """Queue frames; live: drop-stalest, otherwise wait for room (lossless back-pressure)."""
        for frame in frames:
            with self._cond:
                if self._live:
                    self._enqueue_live(frame)
                    continue
                while len(self._queue) >= self.queue_size and not self._stop.is_set():
                    self._cond.wait(0.1)
                if self._stop.is_set():
                    return
                self._queue.append(frame)
                self._queue_max = max(self._queue_max, len(self._queue))
                self._cond.notify_all()

    def _live_horizon(self, now: float) -> float:
        """Live sources: the source-clock time up to which output slots are final (caller holds
        ``_cond``; needs the first frame).

        A slot ``k`` is emitted once its time has come (``T_k <= now``) and no picture that is
        still to come can belong to it — either because the next source frame cannot be earlier
        than half a nominal source interval after the held one, or because the slot is a full
        output frame overdue (room for a picture that is being read right now).  Never early,
        and at most one frame late when the source hiccups; a source slower than 30 fps is
        repeated slot by slot as the clock runs instead of in a burst when its next frame comes.
        """
        assert self._clock_offset is not None
        now_pts = now - self._clock_offset
        tol = self._resampler.tolerance / self.fps
        held = self._resampler.held_pts
        earliest_next = -float("inf") if held is None else held + 0.5 / self._source_fps
        return max(now_pts - 1.0 / self.fps, min(now_pts + tol, earliest_next))

    def _repeat_due(self, now: float) -> float | None:
        """Consumer side, between source frames: emit the slots that have become final by the
        clock (:meth:`_live_horizon`).  Returns the wall-clock time at which the next slot becomes
        final if no new frame arrives first.  Caller holds ``_cond``."""
        if not self._live or self._clock_offset is None or self._state != "running":
            return None
        for item in self._resampler.advance(self._live_horizon(now)):
            self._enqueue_live(item)
        next_slot = self._resampler.slot_time(self._resampler.next_index)
        tol = self._resampler.tolerance / self.fps
        held = self._resampler.held_pts
        if held is not None and held + 0.5 / self._source_fps >= next_slot + tol:
            return self._clock_offset + next_slot  # final as soon as its time comes
        return self._clock_offset + next_slot + tol + 1.0 / self.fps

    # -- the consumer ---------------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> Frame | None:
        """The next 30-fps frame (oldest queued first).

        Returns ``None`` once a finite source has ended and every frame was handed out (or after
        :meth:`stop`).  Raises :class:`CaptureError` with the reason when the source failed or
        stalled (after the frames queued before that), and ``TimeoutError`` if ``timeout`` seconds
        pass while the source is healthy but has nothing new.  Never blocks longer than
        ``stall_timeout`` past a stuck read.
        """
        if self._thread is None:
            raise RuntimeError("CaptureThread.get() before start(); use `with CaptureThread(...) as cap:`")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._queue:
                    frame = self._queue.popleft()
                    self._delivered += 1
                    self._cond.notify_all()
                    return frame
                if self._state in ("ended", "stopped"):
                    return None
                if self._state in ("failed", "stalled"):
                    raise CaptureError(self._reason or f"{self.source.name}: capture failed")
                now = time.monotonic()
                wait = 0.1
                due = self._repeat_due(now)
                if self._queue:
                    continue
                if due is not None:
                    wait = min(wait, due - now)
                if self._busy_since is not None:
                    stuck = now - self._busy_since
                    if stuck >= self.stall_timeout:
                        what = "open" if self._state == "opening" else "deliver a frame"
                        self._state, self._ended_at = "stalled", now
                        self._reason = (f"{self.source.name} stalled: it did not {what} for {stuck:.1f} s "
                                        f"(limit {self.stall_timeout:g} s); check that the source is still "
                                        "alive (window open, camera plugged in, file readable) and restart")
                        self._stop.set()
                        self._cond.notify_all()
                        raise CaptureError(self._reason)
                    wait = min(wait, self.stall_timeout - stuck)
                if deadline is not None:
                    if now >= deadline:
                        raise TimeoutError(f"no frame from {self.source.name} within {timeout:g} s")
                    wait = min(wait, deadline - now)
                self._cond.wait(max(wait, 0.001))

    def __iter__(self):
        while (frame := self.get()) is not None:
            yield frame

    def stats(self) -> dict[str, Any]:
        """Counters and rates so far (a snapshot; safe to call from any thread)."""
        source_stats = self.source.stats()  # the source's own lock, not the frame queue's
        with self._cond:
            rs = self._resampler.stats()
            start = self._first_frame_at
            stop = self._ended_at if self._ended_at is not None else time.monotonic()
            elapsed = max(stop - start, 1e-9) if start is not None else 0.0

            def rate(n: int) -> float:
                return n / elapsed if elapsed > 0 else 0.0

            return {
                "source": self.source.name,
                "source_stats": source_stats,
                "state": self._state,
                "reason": self._reason,
                "live": self._live,
                "fps": self.fps,
                "captured": self._captured,
                "emitted": rs["emitted"],
                "delivered": self._delivered,
                "repeated": rs["repeated"],
                "dropped": rs["dropped"] + self._dropped_queue,
                "dropped_resample": rs["dropped"],
                "dropped_queue": self._dropped_queue,
                "queued": len(self._queue),
                "queue_size": self.queue_size,
                "queue_max": self._queue_max,
                "elapsed_s": elapsed,
                "source_fps": rate(self._captured),
                "achieved_fps": rate(rs["emitted"]),
                "delivered_fps": rate(self._delivered),
            }


def _describe(source: FrameSource, err: BaseException, what: str) -> str:
    """A CaptureError's own message (it already names the source), else name + exception."""
    if isinstance(err, CaptureError):
        return str(err)
    return f"{source.name} {what}: {type(err).__name__}: {err}; check the source and restart capture"


__all__ = ["CaptureThread"]
