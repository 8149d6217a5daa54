"""Video files as sources: real H.264 mp4s encoded here with PyAV at 24/30/60 fps and with variable
frame rate; the 30-fps output must have the right count and show the right source frame at every
index.  Each picture carries its source frame index as 8 black/white stripes (bit b of the index
→ stripe b), which survives compression."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from capture import CaptureError, FileSource, iter_frames_30fps, open_source, output_frame_count, probe_video
from capture.resample import DEFAULT_TOLERANCE

W, H = 128, 96
BITS = 8


def pattern(index: int, width: int = W, height: int = H) -> np.ndarray:
    """(H, W, 3) uint8: stripe b (of 8 equal vertical stripes) is white iff bit b of ``index`` is set."""
    img = np.zeros((height, width, 3), np.uint8)
    step = width // BITS
    for b in range(BITS):
        if index >> b & 1:
            img[:, b * step:(b + 1) * step] = 255
    return img


def read_index(img: np.ndarray) -> int:
    """Inverse of :func:`pattern` (reads each stripe's centre; tolerant of codec noise)."""
    h, w, _ = img.shape
    step = w // BITS
    value = 0
    for b in range(BITS):
        centre = img[h // 4:3 * h // 4, b * step + step // 4:(b + 1) * step - step // 4]
        if centre.mean() > 127:
            value |= 1 << b
    return value


def encode_video(path: Path, *, fps: int = 30, n: int | None = None, pts_ms: list[int] | None = None,
                 size: tuple[int, int] = (W, H), bframes: bool = True, rotation: int | None = None,
                 pix_fmt: str = "yuv420p", audio: bool = False, frames=None, faststart: bool = False) -> Path:
    """Encode an H.264 mp4 with PyAV.  CFR at ``fps`` with ``n`` frames, or VFR with explicit
    presentation times ``pts_ms`` (milliseconds).  Frame i shows ``pattern(i)`` unless ``frames``
    (a callable i → image) is given."""
    width, height = size
    make = frames or (lambda i: pattern(i, width, height))
    count = len(pts_ms) if pts_ms is not None else n
    assert count is not None
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.options = {"preset": "ultrafast", **({} if bframes else {"bf": "0"})}
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        astream = None
        if audio:
            astream = container.add_stream("aac", rate=48000)
            astream.layout = "stereo"
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(make(i), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if astream is not None:
            samples = int(48000 * count / fps)
            for start in range(0, samples, 1024):
                chunk = np.zeros((2, min(1024, samples - start)), np.float32)
                aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                aframe.sample_rate = 48000
                for packet in astream.encode(aframe):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return path


def expected_sources(times: list[float], n_out: int, *, start: float = 0.0) -> list[int]:
    """The resampling rule, written out: slot k shows the last source frame with t <= start + k/30 + tol."""
    tol = DEFAULT_TOLERANCE / 30
    out = []
    for k in range(n_out):
        slot = start + k / 30 + tol
        out.append(max(j for j, t in enumerate(times) if t <= slot + 1e-9))
    return out


@pytest.mark.parametrize(("fps", "n"), [(24, 24), (30, 30), (60, 60), (24, 25), (60, 61)])
def test_cfr_to_30fps_count_and_frames(tmp_path, fps, n):
    path = encode_video(tmp_path / f"cfr{fps}_{n}.mp4", fps=fps, n=n)
    info = probe_video(path)
    assert info.fps == pytest.approx(fps)
    assert info.n_frames == n
    assert info.duration == pytest.approx(n / fps, abs=1e-6)
    assert (info.width, info.height) == (W, H)
    assert not info.has_audio
    frames = list(iter_frames_30fps(path))
    expected_count = {(24, 24): 30, (30, 30): 30, (60, 60): 30, (24, 25): 32, (60, 61): 31}[(fps, n)]
    assert len(frames) == expected_count == info.n_frames_30fps == output_frame_count(n / fps)
    assert [f.index for f in frames] == list(range(expected_count))
    assert [f.pts for f in frames] == pytest.approx([k / 30 for k in range(expected_count)])
    shown = [read_index(f.image) for f in frames]
    assert shown == expected_sources([j / fps for j in range(n)], expected_count)
    if fps == 24:   # 6 of every 30 outputs repeat; nothing is dropped
        assert len(set(shown)) == n
    if fps == 60:   # every other source frame is dropped
        assert shown[:5] == [0, 2, 4, 6, 8]
    assert all(f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 for f in frames)


@pytest.mark.parametrize("bframes", [False, True])
def test_variable_frame_rate_by_pts(tmp_path, bframes):
    pts_ms = [0, 20, 100, 110, 300, 310, 320, 400, 533, 700]
    path = encode_video(tmp_path / "vfr.mp4", pts_ms=pts_ms, bframes=bframes)
    info = probe_video(path)
    assert 0.7 < info.duration <= 0.8
    frames = list(iter_frames_30fps(path))
    assert len(frames) == info.n_frames_30fps == output_frame_count(info.duration)
    shown = [read_index(f.image) for f in frames]
    assert shown == expected_sources([t / 1000 for t in pts_ms], len(frames))
    # 310 ms is superseded by 320 ms before slot 10 (336.7 ms); 110 ms holds slots 4-8 (a long gap).
    assert 5 not in shown and shown[4:10] == [3, 3, 3, 3, 3, 4] and shown[10] == 6


def test_timestamps_in_millisecond_timebase_map_one_to_one(tmp_path):
    # 30 fps stored with ms rounding (0, 33, 67, 100, ...): the tolerance keeps it 1:1.
    pts_ms = [round(i * 1000 / 30) for i in range(30)]
    path = encode_video(tmp_path / "ms.mp4", pts_ms=pts_ms, bframes=False)
    shown = [read_index(f.image) for f in iter_frames_30fps(path)]
    assert shown == list(range(30))


def test_window_and_resize(tmp_path):
    path = encode_video(tmp_path / "w24.mp4", fps=24, n=48)
    frames = list(iter_frames_30fps(path, start=0.5, duration=0.25, size=(64, 48)))
    assert len(frames) == output_frame_count(0.25) == 8
    assert all(f.image.shape == (48, 64, 3) for f in frames)
    assert [f.pts for f in frames] == pytest.approx([k / 30 for k in range(8)])
    shown = [read_index(f.image) for f in frames]
    assert shown == expected_sources([j / 24 for j in range(48)], 8, start=0.5)
    tail = list(iter_frames_30fps(path, start=1.5))  # to the end: 0.5 s left
    assert len(tail) == 15
    assert read_index(tail[-1].image) == 47


def test_rotation_and_odd_size(tmp_path):
    def top_white(i):
        img = np.zeros((H, W, 3), np.uint8)
        img[: H // 2] = 255
        return img

    rotated = encode_video(tmp_path / "rot.mp4", n=3, rotation=90, frames=top_white)
    info = probe_video(rotated)
    assert (info.width, info.height, info.rotation) == (H, W, 90)
    img = next(iter_frames_30fps(rotated)).image
    assert img.shape == (W, H, 3)  # displayed upright: 96 wide, 128 tall
    # 90° counter-clockwise (FFmpeg's display-matrix convention): the white top becomes the left half.
    assert img[:, : H // 2 - 4].mean() > 240 and img[:, H // 2 + 4:].mean() < 15

    odd = encode_video(tmp_path / "odd.mp4", n=4, size=(67, 51), pix_fmt="yuv444p",
                       frames=lambda i: np.full((51, 67, 3), 40 * (i + 1), np.uint8))
    frames = list(iter_frames_30fps(odd))
    assert len(frames) == 4
    assert all(f.image.shape == (51, 67, 3) for f in frames)
    assert [int(np.median(f.image)) for f in frames] == pytest.approx([40, 80, 120, 160], abs=3)


def test_probe_sees_audio(tmp_path):
    path = encode_video(tmp_path / "av.mp4", fps=30, n=15, audio=True)
    info = probe_video(path)
    assert info.has_audio and info.n_frames == 15 and info.duration == pytest.approx(0.5)
    assert info.start_time == pytest.approx(0.0)


def test_paced_replay_follows_the_wall_clock(tmp_path):
    path = encode_video(tmp_path / "p30.mp4", fps=30, n=30)
    source = FileSource(path, realtime=True)
    assert source.live
    t0 = time.monotonic()
    with source:
        frames = list(source)
    elapsed = time.monotonic() - t0
    pts = [f.pts for f in frames]
    assert len(frames) == 30 and pts == sorted(pts) and len(set(pts)) == 30
    assert pts[-1] == pytest.approx(29 / 30)
    # Paced: frame i is not handed out before first_read + pts_i, so the replay cannot be faster
    # than its own timeline (and certainly not 10x faster).
    assert elapsed >= pts[-1] - 0.005
    arrivals = [f.captured_at - frames[0].captured_at for f in frames]
    assert all(a >= p - 0.005 for a, p in zip(arrivals, pts, strict=True))
    assert source.end_pts == pytest.approx(1.0)

    fast = FileSource(path, realtime=False)
    t0 = time.monotonic()
    with fast:
        assert len(list(fast)) == 30
    assert not fast.live and time.monotonic() - t0 < 0.9


def test_registry_builds_file_sources(tmp_path):
    path = encode_video(tmp_path / "reg.mp4", fps=30, n=6)
    for spec in (f"file:{path}", str(path)):
        source = open_source(spec, realtime=False)
        assert isinstance(source, FileSource) and not source.live
        with source:
            assert source.size == (W, H) and source.fps == pytest.approx(30)
            assert [read_index(f.image) for f in source] == list(range(6))
    with pytest.raises(CaptureError, match="needs a path"):
        open_source("file:")


# -- bad input ----------------------------------------------------------------------------------

def _open_and_drain(path) -> None:
    with FileSource(path, realtime=False) as source:
        for _ in source:
            pass


def test_missing_and_non_video_files(tmp_path):
    with pytest.raises(CaptureError, match="does not exist") as err:
        _open_and_drain(tmp_path / "nope.mp4")
    assert "nope.mp4" in str(err.value)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(CaptureError, match="not a video") as err:
        _open_and_drain(text)
    assert "notes.mp4" in str(err.value)
    with pytest.raises(CaptureError, match="not a video"):
        probe_video(text)
    with pytest.raises(CaptureError, match="directory"):
        _open_and_drain(tmp_path)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=48000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 48000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(CaptureError, match="no video stream") as err:
        _open_and_drain(path)
    assert "tone.wav" in str(err.value)


def test_zero_frame_files(tmp_path):
    # A Matroska file whose video track has no frames (an audio track keeps the file valid).
    mkv = tmp_path / "empty_video.mkv"
    with av.open(str(mkv), "w") as container:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        aframe = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
        aframe.sample_rate = 48000
        for packet in [*audio.encode(aframe), *audio.encode()]:
            container.mux(packet)
    with pytest.raises(CaptureError, match="no frames") as err:
        _open_and_drain(mkv)
    assert "empty_video.mkv" in str(err.value)
    with pytest.raises(CaptureError, match="no frames"):
        probe_video(mkv)
    # An mp4 with a video stream that never got a frame (the muxer then writes no track at all).
    mp4 = tmp_path / "empty.mp4"
    container = av.open(str(mp4), "w")
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    container.start_encoding()
    container.close()
    with pytest.raises(CaptureError, match="empty.mp4"):
        _open_and_drain(mp4)


@pytest.mark.parametrize("faststart", [False, True])
@pytest.mark.parametrize("keep", [0.3, 0.9, 0.995])
def test_truncated_files(tmp_path, faststart, keep):
    noise = np.random.default_rng(0)

    def busy(i):  # noisy pictures so that the bytes are spread over many frames
        return noise.integers(0, 256, (H, W, 3), dtype=np.uint8)

    whole = encode_video(tmp_path / "whole.mp4", fps=30, n=60, faststart=faststart, frames=busy)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CaptureError, match="truncated") as err:
        list(iter_frames_30fps(cut))
    assert "cut.mp4" in str(err.value)
    with pytest.raises(CaptureError, match="truncated"):
        probe_video(cut)


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_file_without_sample_index(tmp_path, keep):
    # Matroska has no per-sample index: the cut shows as decoding that ends before the declared end.
    noise = np.random.default_rng(0)
    whole = encode_video(tmp_path / "whole.mkv", fps=30, n=60,
                         frames=lambda i: noise.integers(0, 256, (H, W, 3), dtype=np.uint8))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * keep)])
    with pytest.raises(CaptureError, match="truncated") as err:
        list(iter_frames_30fps(cut))
    assert "cut.mkv" in str(err.value)
    assert len(list(iter_frames_30fps(whole))) == 60  # the intact file is fine


def test_corrupt_middle_is_reported(tmp_path):
    noise = np.random.default_rng(0)
    whole = encode_video(tmp_path / "whole.mp4", fps=30, n=60,
                         frames=lambda i: noise.integers(0, 256, (H, W, 3), dtype=np.uint8))
    data = bytearray(whole.read_bytes())
    a, b = int(len(data) * 0.3), int(len(data) * 0.5)
    data[a:b] = np.random.default_rng(1).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    bad = tmp_path / "scrambled.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match="truncated or corrupt") as err:
        list(iter_frames_30fps(bad))
    assert "scrambled.mp4" in str(err.value)
