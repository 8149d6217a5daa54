"""The 30-fps resampler and the capture thread: drop/repeat by timestamp, the bounded queue that
drops the stalest frame under a slow consumer, and failures (raise, stall) that end the thread
with a reason instead of hanging.  Sources here are test doubles of the *source* (small
FrameSource subclasses) plus real PyAV-encoded files."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from capture import (
    CaptureError,
    CaptureThread,
    FileSource,
    Frame,
    FrameResampler,
    FrameSource,
    output_frame_count,
)
from capture.resample import resample
from tests.test_capture_file import encode_video, read_index


def tagged(i: int, pts: float, captured_at: float | None = None) -> Frame:
    """A tiny frame whose pixel (0, 0) carries its source index."""
    image = np.zeros((4, 4, 3), np.uint8)
    image[0, 0, 0], image[0, 0, 1] = i % 256, i // 256
    kwargs = {} if captured_at is None else {"captured_at": captured_at}
    return Frame(image=image, index=i, pts=pts, **kwargs)


def source_index(frame: Frame) -> int:
    return int(frame.image[0, 0, 0]) + 256 * int(frame.image[0, 0, 1])


class TickSource(FrameSource):
    """Live test double: ``rate`` frames/s paced on the monotonic clock, pts = tick time.  Optionally
    raises ``fail_with`` or blocks (stalls) after ``after`` frames."""

    live = True

    def __init__(self, *, rate: float = 240.0, after: int | None = None, fail_with: Exception | None = None,
                 stall: bool = False) -> None:
        self.name = f"test:tick{rate:g}"
        self.fps = rate
        self.size = (4, 4)
        self.after, self.fail_with, self.stall = after, fail_with, stall
        self.release = threading.Event()
        self.opened = self.closed = False
        self.n = 0

    def open(self) -> None:
        self.opened, self.t0 = True, time.monotonic()

    def read(self) -> Frame:
        if self.after is not None and self.n >= self.after:
            if self.fail_with is not None:
                raise self.fail_with
            if self.stall:
                self.release.wait(20)  # blocks like a dead device; the test releases it at the end
                raise RuntimeError("released")
        due = self.t0 + self.n / self.fps
        time.sleep(max(0.0, due - time.monotonic()))
        frame = tagged(self.n, self.n / self.fps, captured_at=time.monotonic())
        self.n += 1
        return frame

    def close(self) -> None:
        self.closed = True


class ListSource(FrameSource):
    """Finite, non-live test double over given pts; ``end_pts`` like a file."""

    live = False

    def __init__(self, pts: list[float], end: float | None = None) -> None:
        self.name, self.fps, self.size = "test:list", 30.0, (4, 4)
        self.pts, self.end_pts, self._end = pts, None, end

    def open(self) -> None:
        self.i = 0

    def read(self) -> Frame | None:
        if self.i == len(self.pts):
            self.end_pts = self._end
            return None
        self.i += 1
        return tagged(self.i - 1, self.pts[self.i - 1])

    def close(self) -> None:
        pass


# -- the resampler ------------------------------------------------------------------------------

def test_output_frame_count():
    assert output_frame_count(1.0) == 30
    assert output_frame_count(1.0 + 1e-9) == 30       # rounding noise does not add a frame
    assert output_frame_count(61 / 60) == 31          # a real extra 16.7 ms does
    assert output_frame_count(0.001) == 1             # any picture gives at least one frame
    assert output_frame_count(0.0) == 0
    assert output_frame_count(2.0, fps=25) == 50


@pytest.mark.parametrize("rate", [24, 25, 30, 50, 60, 120])
def test_resample_regular_rates(rate):
    frames = [tagged(j, j / rate) for j in range(2 * rate)]          # 2 s
    out = list(resample(frames, end=2.0))
    assert len(out) == 60
    assert [f.index for f in out] == list(range(60))
    expected = [int(np.floor(k * rate / 30 + 0.1 * rate / 30 + 1e-9)) for k in range(60)]
    assert [source_index(f) for f in out] == expected
    resampler = FrameResampler()
    for f in frames:
        resampler.push(f)
    resampler.finish(2.0)
    stats = resampler.stats()
    assert stats["emitted"] == 60
    assert stats["repeated"] == max(0, 60 - 2 * rate)
    assert stats["dropped"] == max(0, 2 * rate - 60)


def test_resample_jittered_30fps_is_one_to_one():
    rng = np.random.default_rng(0)
    pts = [j / 30 + rng.uniform(-0.002, 0.002) for j in range(90)]    # ±2 ms capture jitter
    pts[0] = 0.0
    out = list(resample([tagged(j, p) for j, p in enumerate(pts)], end=3.0))
    assert [source_index(f) for f in out] == list(range(90))


def test_incremental_equals_offline_and_advance_is_causal():
    pts = [0.0, 0.021, 0.1, 0.11, 0.3, 0.31, 0.32, 0.4, 0.533, 0.7]
    frames = [tagged(j, p) for j, p in enumerate(pts)]
    offline = list(resample(frames, end=0.75))
    live = FrameResampler()
    got: list[Frame] = []
    for j, frame in enumerate(frames):
        got += live.push(frame)
        # On a live clock, "now" is just before the next frame's arrival: advance emits only slots
        # that no later frame can claim.
        nxt = pts[j + 1] if j + 1 < len(pts) else 0.75
        got += live.advance(nxt - 1e-4)
    got += live.finish(0.75)
    assert [(f.index, source_index(f)) for f in got] == [(f.index, source_index(f)) for f in offline]
    assert len(offline) == output_frame_count(0.75)


def test_resample_repeats_share_the_array_and_keep_capture_time():
    frames = [tagged(0, 0.0, captured_at=10.0), tagged(1, 0.1, captured_at=10.1)]
    out = list(resample(frames, end=0.2))
    assert len(out) == 6 and out[0].image is out[1].image is out[2].image
    assert [f.captured_at for f in out] == [10.0, 10.0, 10.0, 10.1, 10.1, 10.1]
    assert [f.pts for f in out] == pytest.approx([k / 30 for k in range(6)])


# -- the thread: queue policy -------------------------------------------------------------------

def test_slow_consumer_gets_the_freshest_frames_and_lag_does_not_grow():
    source = TickSource(rate=240)
    lags, gaps = [], []
    with CaptureThread(source, queue_size=2) as capture:
        for _ in range(25):
            frame = capture.get(timeout=5)
            newest = capture.stats()["emitted"] - 1
            gaps.append(newest - frame.index)                  # how far behind the newest 30-fps frame
            lags.append(time.monotonic() - frame.captured_at)  # wall-clock age of the picture
            time.sleep(0.07)                                   # a consumer at ~14 fps, slower than 30
        stats = capture.stats()
    assert stats["queue_max"] <= 2 and stats["queue_size"] == 2
    assert stats["dropped_queue"] > 10 and stats["dropped"] >= stats["dropped_queue"]
    assert stats["dropped_resample"] > 0                        # 240 → 30 fps drops 7 of 8 by timestamp
    assert stats["delivered"] == 25
    # Freshest: the consumer is never more than the queue's depth behind the newest frame
    # (+1 for a frame emitted between get() and stats()), and the age of what it sees stays flat.
    assert max(gaps[2:]) <= 3
    assert np.mean(lags[-8:]) < 0.2 and np.mean(lags[-8:]) < np.mean(lags[2:10]) + 0.1
    assert source.closed
    assert 20 < stats["achieved_fps"] < 40 and stats["source_fps"] > 100


def test_fast_consumer_misses_nothing_at_30fps():
    source = TickSource(rate=30)
    with CaptureThread(source, queue_size=2) as capture:
        frames = [capture.get(timeout=5) for _ in range(20)]
        stats = capture.stats()
    assert [f.index for f in frames] == list(range(20))
    assert stats["dropped_queue"] == 0


def test_offline_source_is_lossless_with_back_pressure():
    pts = [j / 24 for j in range(48)]
    with CaptureThread(ListSource(pts, end=2.0), queue_size=2) as capture:
        got = []
        while (frame := capture.get(timeout=5)) is not None:
            got.append(frame)
            time.sleep(0.002)
        assert capture.get(timeout=1) is None                 # stays ended
        stats = capture.stats()
    assert len(got) == 60 and [f.index for f in got] == list(range(60))
    assert stats["dropped"] == 0 and stats["repeated"] == 12 and stats["state"] == "ended"


def test_real_file_offline_through_the_thread(tmp_path):
    path = encode_video(tmp_path / "t24.mp4", fps=24, n=24)
    with CaptureThread(FileSource(path, realtime=False)) as capture:
        frames = list(capture)
        stats = capture.stats()
    assert len(frames) == 30
    assert [read_index(f.image) for f in frames] == [int((k + 0.1) * 24 / 30) for k in range(30)]
    assert stats["captured"] == 24 and stats["repeated"] == 6 and stats["dropped"] == 0


def test_real_file_live_replay_through_the_thread(tmp_path):
    path = encode_video(tmp_path / "t60.mp4", fps=60, n=30)                 # 0.5 s
    t0 = time.monotonic()
    with CaptureThread(FileSource(path, realtime=True), queue_size=4) as capture:
        frames = list(capture)
        stats = capture.stats()
    assert time.monotonic() - t0 >= 29 / 60 - 0.01                          # paced, not instant
    assert stats["captured"] == 30 and stats["state"] == "ended"
    assert 14 <= stats["emitted"] <= 16 and stats["dropped_resample"] >= 14
    shown = [read_index(f.image) for f in frames]
    assert shown == sorted(shown) and all(s % 2 == 0 for s in shown[:10])  # every other 60-fps frame


# -- the thread: failures -----------------------------------------------------------------------

def test_source_that_raises_mid_stream():
    source = TickSource(rate=120, after=12, fail_with=RuntimeError("sensor unplugged"))
    capture = CaptureThread(source).start()
    got = 0
    t0 = time.monotonic()
    with pytest.raises(CaptureError, match="sensor unplugged") as err:
        while True:
            capture.get(timeout=5)
            got += 1
    assert "test:tick120" in str(err.value) and time.monotonic() - t0 < 3
    assert 0 < got <= 6 and capture.state == "failed" and "sensor unplugged" in capture.reason
    with pytest.raises(CaptureError):
        capture.get(timeout=1)                                               # stays failed
    capture.stop()
    assert source.closed and capture.stats()["state"] == "failed"


def test_source_that_stalls():
    source = TickSource(rate=60, after=6, stall=True)
    capture = CaptureThread(source, stall_timeout=0.5).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(CaptureError, match="stalled") as err:
            while True:
                capture.get()                                                # no timeout: must not hang
        waited = time.monotonic() - t0
        assert 0.4 < waited < 3 and "test:tick60" in str(err.value)
        assert capture.state == "stalled"
    finally:
        source.release.set()
        capture.stop(timeout=5)
    assert source.closed and not capture._thread.is_alive()


def test_open_failure_and_open_that_hangs():
    class Broken(TickSource):
        def open(self):
            raise CaptureError("test:broken: the device is gone; plug it in")

    with pytest.raises(CaptureError, match="device is gone"):
        CaptureThread(Broken()).start()

    class Hanging(TickSource):
        def open(self):
            self.release.wait(20)

    hanging = Hanging()
    t0 = time.monotonic()
    with pytest.raises(CaptureError, match="did not open within"):
        CaptureThread(hanging, stall_timeout=0.4).start()
    assert time.monotonic() - t0 < 3
    hanging.release.set()


def test_slow_source_is_repeated_on_the_clock():
    # A 5-fps live source still yields a steady 30-fps stream: the held picture is repeated as
    # each slot falls due, not in a burst when the next picture arrives.
    with CaptureThread(TickSource(rate=5), queue_size=2) as capture:
        t0 = time.monotonic()
        frames = [capture.get(timeout=2) for _ in range(24)]
        elapsed = time.monotonic() - t0
        stats = capture.stats()
    assert [f.index for f in frames] == list(range(24))          # nothing dropped, nothing skipped
    assert [source_index(f) for f in frames] == [k // 6 for k in range(24)]
    assert stats["repeated"] >= 18 and stats["dropped_queue"] == 0
    assert elapsed > 0.6                                           # paced: 24 frames ≈ 0.8 s


def test_timeout_stop_and_misuse():
    waiting = TickSource(after=0, stall=True)                     # healthy but no picture yet
    with CaptureThread(waiting, stall_timeout=5) as capture:
        with pytest.raises(TimeoutError):
            capture.get(timeout=0.05)
        waiting.release.set()
    running = TickSource(rate=60)
    with CaptureThread(running) as capture:
        assert capture.get(timeout=2) is not None
        capture.stop()
        assert capture.get(timeout=1) is None and capture.state == "stopped"
    assert running.closed
    with pytest.raises(RuntimeError, match="before start"):
        CaptureThread(TickSource()).get()
    with pytest.raises(ValueError, match="queue_size"):
        CaptureThread(TickSource(), queue_size=0)
