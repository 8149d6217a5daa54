"""audio.media.write_video: real H.264 + AAC files written with PyAV and decoded back."""

from __future__ import annotations

import av
import numpy as np
import pytest

from audio.media import MediaError, write_video

SR = 48_000


def gradient_frames(n: int, w: int = 64, h: int = 48):
    """Smooth moving gradients (compress well, so decoded pixels stay close to the originals)."""
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        r = (xx * 255 // max(w - 1, 1) + 4 * i) % 256
        g = yy * 255 // max(h - 1, 1)
        b = np.full_like(r, (40 + 6 * i) % 256)
        yield np.stack([r, g, b], axis=-1).astype(np.uint8)


def tone(seconds: float, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    left = 0.4 * np.sin(2 * np.pi * 440 * t)
    right = 0.2 * np.sin(2 * np.pi * 660 * t)
    return np.stack([left, right][:channels]).astype(np.float32)


def decode(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {
            "codec": v.codec_context.name,
            "pix_fmt": v.codec_context.pix_fmt,
            "rate": v.average_rate,
            "size": (v.width, v.height),
            "audio": [(a.codec_context.name, a.rate, a.channels) for a in c.streams.audio],
        }
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    audio = None
    if info["audio"]:
        with av.open(str(path)) as c:
            audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    return info, frames, audio


def test_writes_h264_with_stereo_aac_that_decodes_back(tmp_path):
    path = tmp_path / "clip.mp4"
    audio = tone(2.0)
    assert write_video(path, gradient_frames(60), fps=30, audio=audio) == path
    info, frames, decoded = decode(path)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["rate"] == 30 and info["size"] == (64, 48)
    assert info["audio"] == [("aac", SR, 2)]
    assert len(frames) == 60
    originals = list(gradient_frames(60))
    assert np.abs(frames[31].astype(int) - originals[31]).mean() < 6
    assert decoded.shape[0] == 2 and abs(decoded.shape[1] / SR - 2.0) < 0.03
    seg = slice(SR // 2, 3 * SR // 2)  # the channels stay apart and in time (no priming offset)
    for ch in range(2):
        assert np.corrcoef(decoded[ch, seg], audio[ch, seg])[0, 1] > 0.99
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_video_only_mono_audio_and_odd_sizes(tmp_path):
    silent = tmp_path / "silent.mp4"
    write_video(silent, gradient_frames(10), fps=25)
    info, frames, audio = decode(silent)
    assert info["audio"] == [] and audio is None and len(frames) == 10 and info["rate"] == 25

    mono = tmp_path / "mono.mov"
    write_video(mono, gradient_frames(15, w=33, h=21), fps=30, audio=tone(0.5, channels=1)[0])
    info, frames, audio = decode(mono)
    assert info["size"] == (34, 22)  # padded to even for yuv420p
    assert info["audio"] == [("aac", SR, 1)] and abs(audio.shape[1] / SR - 0.5) < 0.03


def test_nothing_is_left_behind_when_writing_fails_midway(tmp_path):
    path = tmp_path / "broken.mp4"

    def frames():
        yield from gradient_frames(5)
        raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError, match="camera unplugged"):
        write_video(path, frames(), fps=30, audio=tone(1.0))
    assert list(tmp_path.iterdir()) == []

    # a bad frame in the middle: the same, and an existing file at the path is left untouched
    path.write_bytes(b"previous")
    bad = [*gradient_frames(3), np.zeros((10, 10, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 3"):
        write_video(path, bad, fps=30)
    assert path.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["broken.mp4"]


def test_bad_requests_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(MediaError, match=r"unknown container '\.avi'"):
        write_video(tmp_path / "x.avi", gradient_frames(2), fps=30)
    with pytest.raises(MediaError, match="does not exist; create it first"):
        write_video(tmp_path / "missing" / "x.mp4", gradient_frames(2), fps=30)
    with pytest.raises(MediaError, match="no video frames"):
        write_video(tmp_path / "x.mp4", [], fps=30)
    with pytest.raises(MediaError, match="audio codec 'nope' is unavailable"):
        write_video(tmp_path / "x.mp4", gradient_frames(2), fps=30, audio=tone(0.1), audio_codec="nope")
    with pytest.raises(ValueError, match="1 or 2 channels"):
        write_video(tmp_path / "x.mp4", gradient_frames(2), fps=30, audio=np.zeros((6, 100), np.float32))
    assert list(tmp_path.iterdir()) == []
