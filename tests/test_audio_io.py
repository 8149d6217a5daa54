"""Audio I/O at the edges: real files encoded here with soundfile and PyAV (FFmpeg)."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from audio.contract import CONTRACT
from audio.errors import LivefoleyError
from audio.io import AudioReadError, AudioWriteError, NoAudioTrackError, read_audio, write_audio

SR = CONTRACT.sample_rate


def sine(freq: float, n: int, rate: int, amp: float = 1.0) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def encode_media(
    path: Path,
    *,
    audio: np.ndarray | None = None,
    rate: int = 44100,
    layout: str = "stereo",
    codec: str = "aac",
    video_frames: int = 0,
) -> Path:
    """Write a real media file with PyAV: optional video (mpeg4, 64×48) and/or audio ``(C, N)``."""
    with av.open(str(path), "w") as out:
        vstream = astream = None
        if video_frames:
            vstream = out.add_stream("mpeg4", rate=30)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
        if audio is not None:
            astream = out.add_stream(codec, rate=rate)
            astream.layout = layout
        for i in range(video_frames):
            img = np.full((48, 64, 3), (i * 20) % 255, dtype=np.uint8)
            for packet in vstream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        if vstream is not None:
            for packet in vstream.encode(None):
                out.mux(packet)
        if astream is not None:
            block = 1024
            for start in range(0, audio.shape[1], block):
                chunk = np.ascontiguousarray(audio[:, start : start + block], dtype=np.float32)
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                frame.sample_rate, frame.pts = rate, start
                for packet in astream.encode(frame):
                    out.mux(packet)
            for packet in astream.encode(None):
                out.mux(packet)
    return path


def surround_51(n: int, rate: int) -> np.ndarray:
    """FL, FR, FC, LFE, BL, BR with a different tone in each (FR silent)."""
    return np.stack(
        [
            sine(440, n, rate, 0.3),
            np.zeros(n, np.float32),
            sine(660, n, rate, 0.2),
            sine(50, n, rate, 0.5),
            sine(880, n, rate, 0.2),
            sine(1100, n, rate, 0.2),
        ]
    )


def expected_51_downmix(n: int) -> np.ndarray:
    """ITU downmix of :func:`surround_51`, synthesised directly at 48 kHz (LFE dropped)."""
    g = math.sqrt(0.5)
    left = sine(440, n, SR, 0.3) + g * sine(660, n, SR, 0.2) + g * sine(880, n, SR, 0.2)
    right = g * sine(660, n, SR, 0.2) + g * sine(1100, n, SR, 0.2)
    return np.stack([left, right])


# ---- reading -----------------------------------------------------------------------------------


def test_mono_wav_at_44k1_becomes_stereo_48k(tmp_path):
    sf.write(tmp_path / "mono.wav", sine(1000, 44100, 44100, 0.5), 44100, subtype="FLOAT")
    wav = read_audio(tmp_path / "mono.wav")
    assert wav.dtype == np.float32 and wav.shape == (2, SR)
    np.testing.assert_array_equal(wav[0], wav[1])
    inner = slice(200, SR - 200)  # the resampling filter's edges
    np.testing.assert_allclose(wav[0, inner], sine(1000, SR, SR, 0.5)[inner], atol=2e-3)


def test_stereo_flac_at_48k_reads_back_exactly(tmp_path):
    data = np.stack([sine(300, 4800, SR, 0.4), sine(500, 4800, SR, -0.25)])
    sf.write(tmp_path / "st.flac", data.T, SR, subtype="PCM_24")
    wav = read_audio(tmp_path / "st.flac")
    np.testing.assert_allclose(wav, data, atol=2**-22)


def test_51_wav_at_44k1_gets_the_itu_downmix(tmp_path):
    n = 44100
    sf.write(tmp_path / "surround.wav", surround_51(n, 44100).T, 44100, subtype="FLOAT")
    wav = read_audio(tmp_path / "surround.wav")
    assert wav.shape == (2, SR)
    inner = slice(300, SR - 300)
    np.testing.assert_allclose(wav[:, inner], expected_51_downmix(SR)[:, inner], atol=3e-3)


def test_51_flac_in_matroska_via_ffmpeg_gets_the_itu_downmix(tmp_path):
    n = 44100
    path = encode_media(tmp_path / "surround.mka", audio=surround_51(n, 44100), layout="5.1", codec="flac")
    wav = read_audio(path)
    assert wav.shape == (2, SR)
    inner = slice(300, SR - 300)
    np.testing.assert_allclose(wav[:, inner], expected_51_downmix(SR)[:, inner], atol=3e-3)


def test_loud_surround_downmix_is_clip_safe(tmp_path):
    loud = np.tile(sine(440, 4410, 44100, 0.9), (6, 1))
    sf.write(tmp_path / "loud.wav", loud.T, 44100, subtype="FLOAT")
    wav = read_audio(tmp_path / "loud.wav")
    assert np.abs(wav).max() <= 1.0 + 1e-3
    assert np.abs(wav).max() > 0.9  # scaled to the limit, not muted


def test_audio_track_of_a_video_with_aac(tmp_path):
    n = 2 * 44100
    audio = np.stack([sine(440, n, 44100, 0.5), sine(440, n, 44100, 0.5)])
    path = encode_media(tmp_path / "clip.mp4", audio=audio, video_frames=60)
    wav = read_audio(path)
    assert wav.shape[0] == 2 and abs(wav.shape[1] - 2 * SR) < 4096  # AAC adds priming / padding
    mid = wav[:, SR // 2 : SR + SR // 2]
    assert abs(dominant_hz(mid[0], SR) - 440) < 2
    rms = float(np.sqrt((mid**2).mean()))
    assert abs(rms - 0.5 / math.sqrt(2)) < 0.03


def test_mono_output_is_the_mean_of_the_stereo_mix(tmp_path):
    data = np.stack([sine(300, 4800, SR, 0.4), np.zeros(4800, np.float32)])
    sf.write(tmp_path / "st.wav", data.T, SR, subtype="FLOAT")
    wav = read_audio(tmp_path / "st.wav", channels=1)
    np.testing.assert_allclose(wav[0], 0.5 * data[0], atol=1e-6)


def test_video_without_audio_says_no_audio_track(tmp_path):
    path = encode_media(tmp_path / "silent.mp4", video_frames=10)
    with pytest.raises(NoAudioTrackError, match="no audio track") as err:
        read_audio(path)
    assert "silent.mp4" in str(err.value) and "video" in str(err.value)


@pytest.mark.parametrize("name", ["broken.mp4", "broken.wav", "notes.txt"])
def test_corrupt_or_non_media_file_says_so(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioReadError) as err:
        read_audio(path)
    assert name in str(err.value)
    assert not isinstance(err.value, NoAudioTrackError)


def test_missing_file(tmp_path):
    with pytest.raises(AudioReadError, match="no such file"):
        read_audio(tmp_path / "nope.wav")


def test_nan_samples_are_rejected(tmp_path):
    data = np.zeros((100, 2), np.float32)
    data[10, 1] = np.nan
    sf.write(tmp_path / "nan.wav", data, SR, subtype="FLOAT")
    with pytest.raises(LivefoleyError, match="NaN"):
        read_audio(tmp_path / "nan.wav")


# ---- writing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ext, atol", [(".wav", 2**-15), (".flac", 2**-23)])
def test_write_then_read_round_trip(tmp_path, ext, atol):
    data = np.stack([sine(300, 4800, SR, 0.4), sine(700, 4800, SR, 0.3)])
    out = write_audio(tmp_path / "sub" / f"out{ext}", torch.from_numpy(data), SR)
    assert out.exists() and sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp left
    np.testing.assert_allclose(read_audio(out), data, atol=atol)


def test_write_clips_pcm_and_keeps_float_when_asked(tmp_path):
    data = np.full((2, 100), 1.5, np.float32)
    np.testing.assert_allclose(read_audio(write_audio(tmp_path / "c.wav", data)), 1.0, atol=1e-4)
    np.testing.assert_allclose(read_audio(write_audio(tmp_path / "f.wav", data, subtype="FLOAT")), 1.5)


@pytest.mark.parametrize(
    "name, data, words",
    [
        ("a.mp3", np.zeros((2, 10), np.float32), ".wav or .flac"),
        ("a.wav", np.full((2, 10), np.nan, np.float32), "NaN"),
        ("a.wav", np.zeros((10,), np.float32), "(channels, N)"),
    ],
)
def test_bad_writes_fail_and_write_nothing(tmp_path, name, data, words):
    with pytest.raises(AudioWriteError) as err:
        write_audio(tmp_path / name, data)
    assert words in str(err.value)
    assert list(tmp_path.iterdir()) == []
