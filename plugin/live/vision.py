"""The threads around the live worker: the vision thread (pipelined rungs) and the inbox of frames from
the dispatcher.  Both hand over the *freshest* frame: lag never grows."""

from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager


class VisionThread:
    """The vision encoder on its own thread, always working on the freshest frame it was offered.

    :meth:`offer` replaces a frame that is still waiting (the stalest is dropped, counted in
    ``replaced``); the thread encodes one frame at a time with ``session.encode`` and publishes
    ``(token, frame)``; :meth:`newest` returns what was last published.  It serves the pipelined
    rungs; on the waiting rungs the worker encodes itself, holding :attr:`encoding` as this thread
    does, so that two encodes never overlap.  :meth:`paused` lets the encode in flight finish, drops
    the waiting frame and starts no encode until its block is left: a reset or a model swap never
    runs concurrently with an encode, and no frame offered meanwhile is encoded with a session
    being closed."""

    def __init__(self, *, threads: int | None, on_encoded) -> None:
        self._cond = threading.Condition()
        self._threads = threads
        self._on_encoded = on_encoded
        self._session = None
        self._pending = None
        self._busy = False
        self._paused = False
        self._closed = False
        self._token = None
        self._frame = None
        self._error: BaseException | None = None
        self.replaced = 0
        self.encoding = threading.Lock()  # held by whoever encodes: this thread or the worker
        self._thread = threading.Thread(target=self._run, name="livefoley-vision", daemon=True)
        self._thread.start()

    def set_session(self, session) -> None:
        """Encode for ``session`` from now on (a new stream: the published token is forgotten)."""
        self.quiesce()
        with self._cond:
            self._session = session
            self._token = self._frame = None

    def offer(self, frame) -> None:
        with self._cond:
            if self._pending is not None:
                self.replaced += 1
            self._pending = frame
            self._cond.notify_all()

    def newest(self):
        """``(token, frame)`` last published (``(None, None)`` before the first); raises the error
        that ended the thread."""
        with self._cond:
            if self._error is not None:
                raise self._error
            return self._token, self._frame

    def quiesce(self) -> None:
        with self._cond:
            self._pending = None
            self._cond.wait_for(lambda: not self._busy)

    @contextmanager
    def paused(self):
        with self._cond:
            self._paused = True
        try:
            self.quiesce()
            yield
        finally:
            with self._cond:
                self._paused = False
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        if self._threads is not None:
            set_thread_torch_threads(self._threads)
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._closed or (self._pending is not None and self._session is not None
                                             and not self._paused))
                if self._closed:
                    return
                frame, self._pending = self._pending, None
                session = self._session
                self._busy = True
            try:
                with self.encoding:
                    t0 = time.perf_counter()
                    token = session.encode(frame)
                    ms = (time.perf_counter() - t0) * 1000
            except BaseException as err:  # noqa: BLE001 - handed to the worker by newest()
                with self._cond:
                    self._error = err
                    self._busy = False
                    self._cond.notify_all()
                return
            with self._cond:
                self._token, self._frame = token, frame
                self._busy = False
                self._cond.notify_all()
            self._on_encoded(ms)


class Inbox:
    """Frames from the dispatcher to the worker.  Live sources: the worker takes the freshest frame
    and the older ones are skipped (at most ``_LIVE_KEEP`` wait); finite, non-live sources: every
    frame is handed over, at most two waiting (back-pressure on the capture thread)."""

    _LIVE_KEEP = 8

    def __init__(self, *, live: bool) -> None:
        self.live = live
        self._cond = threading.Condition()
        self._items: deque = deque()
        self._closed = False
        self._error: BaseException | None = None

    def put(self, frame) -> None:
        with self._cond:
            if not self.live:
                self._cond.wait_for(lambda: len(self._items) < 2 or self._closed)
            if self._closed:
                return
            self._items.append(frame)
            if len(self._items) > self._LIVE_KEEP:
                self._items.popleft()
            self._cond.notify_all()

    def get(self, stop: threading.Event):
        """The next frame (live: the freshest), or None once closed / stopped; raises the capture error."""
        with self._cond:
            while True:
                if self._items:
                    if self.live:
                        frame = self._items[-1]
                        self._items.clear()
                    else:
                        frame = self._items.popleft()
                    self._cond.notify_all()
                    return frame
                if self._error is not None:
                    raise self._error
                if self._closed or stop.is_set():
                    return None
                self._cond.wait(0.25)

    def fail(self, err: BaseException) -> None:
        with self._cond:
            self._error = err
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def set_thread_torch_threads(n: int) -> None:
    """Torch's CPU thread count for the *calling* thread.  With OpenMP the count is per thread: each
    thread takes the global value at its first parallel op (a thread-local lazy init) and keeps it.
    ``get_num_threads`` runs that lazy init now, so a later change of the global value by another
    thread (the vision thread's own setting) leaves this thread's count alone."""
    import torch

    torch.set_num_threads(n)
    torch.get_num_threads()
