"""audio.mux.mux_audio / plan_mux: the original video stream copied packet for packet next to a
generated track, in mp4/mov/mkv/webm/avi, with the original audio kept or mixed.

Every input is a real file encoded here with PyAV (:func:`make_video`, also used by
tests/test_generate.py): H.264, MPEG-4 Part 2 and VP9 video at 24/30/60 fps or variable rate, odd
sizes, mono/stereo/5.1 AAC/Opus/PCM audio or none.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from audio.contract import CONTRACT
from audio.media import MediaError
from audio.mux import mix_tracks, mux_audio, plan_mux, read_audio_window

SR = CONTRACT.sample_rate
HOP = CONTRACT.hop

#: default video codec per container suffix (what each container holds natively)
VIDEO_CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9",
                ".avi": "mpeg4"}
AUDIO_CODECS = {".mp4": "aac", ".mov": "aac", ".mkv": "aac", ".webm": "libopus", ".avi": "pcm_s16le"}
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}
TONE_HZ = 1000.0


def picture(i: int, width: int, height: int) -> np.ndarray:
    """A frame that differs from every other: a bright bar at a position given by ``i`` over a ramp."""
    img = np.empty((height, width, 3), np.uint8)
    img[...] = (np.arange(width, dtype=np.uint16)[None, :, None] * 255 // max(width - 1, 1)).astype(np.uint8)
    x = (i * 5) % max(1, width - 4)
    img[:, x:x + 4] = (255, 32 * (i % 8), 0)
    return img


def sine(t: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * TONE_HZ * t)


def sweep(t: np.ndarray) -> np.ndarray:
    """A chirp (200 Hz rising 800 Hz/s): unlike a tone, it matches itself at one lag only."""
    return np.sin(2 * np.pi * (200 * t + 400 * t * t))


def tone(n: int, channels: int, *, amp: float = 0.5, start: int = 0) -> np.ndarray:
    """(channels, n) float32: a 1 kHz sine on every channel (so any downmix keeps it)."""
    t = (np.arange(n) + start) / SR
    return np.repeat((amp * np.sin(2 * np.pi * TONE_HZ * t))[None], channels, axis=0).astype(np.float32)


def make_video(path: Path, *, fps: float = 30, n: int = 30, size: tuple[int, int] = (64, 48),
               codec: str | None = None, pts_ms: list[int] | None = None, gop: int | None = None,
               bframes: bool = True, audio_channels: int | None = None, audio_codec: str | None = None,
               audio_rate: int = SR, audio_seconds: float | None = None, audio_amp: float = 0.5,
               audio_wave=None, rotation: int | None = None) -> Path:
    """Encode a test video with PyAV.  CFR (``fps``, ``n`` frames) or VFR (``pts_ms`` per frame);
    ``gop`` = key frame interval; ``audio_channels`` (1/2/6) adds ``audio_amp · audio_wave(t)``
    (default: a 1 kHz sine) on every channel, ``audio_seconds`` long (default: the video's length)."""
    suffix = path.suffix.lower()
    codec = codec or VIDEO_CODECS[suffix]
    count = len(pts_ms) if pts_ms is not None else n
    width, height = size
    with av.open(str(path), "w") as container:
        rate = Fraction(fps).limit_denominator(1001) if pts_ms is None else 30
        vs = container.add_stream(codec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        options: dict[str, str] = {}
        if codec == "libx264":
            options = {"preset": "ultrafast", **({} if bframes else {"bf": "0"})}
            if bframes:
                options["x264-params"] = "bframes=2:b-adapt=0"
        elif codec == "libvpx-vp9":
            options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        if gop is not None:
            vs.codec_context.gop_size = gop
            if codec == "libx264":
                options["x264-params"] = options.get("x264-params", "") + f":keyint={gop}:min-keyint={gop}" \
                    ":scenecut=0"
                options["x264-params"] = options["x264-params"].lstrip(":")
        vs.codec_context.options = options
        if pts_ms is not None:
            vs.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            vs.set_display_rotation(rotation)
        astream = None
        if audio_channels:
            acodec = audio_codec or AUDIO_CODECS[suffix]
            astream = container.add_stream(acodec, rate=audio_rate, layout=LAYOUTS[audio_channels])
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(picture(i, width, height), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            else:
                frame.pts, frame.time_base = i, 1 / rate
            for packet in vs.encode(frame):
                container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)
        if astream is not None:
            video_s = (pts_ms[-1] / 1000 + 1 / 30) if pts_ms is not None else count / fps
            total = int(round((audio_seconds if audio_seconds is not None else video_s) * audio_rate))
            t = np.arange(total) / audio_rate
            wave = (audio_amp * (audio_wave or sine)(t)).astype(np.float32)
            step = 960
            for s in range(0, total, step):
                chunk = np.repeat(wave[None, s:s + step], audio_channels, axis=0)
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp",
                                                layout=LAYOUTS[audio_channels])
                af.sample_rate, af.pts, af.time_base = audio_rate, s, Fraction(1, audio_rate)
                for packet in astream.encode(af):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return path


def video_packets(path: Path) -> list[tuple[bytes, bool]]:
    """(payload bytes, key frame) of every video packet in decode order."""
    with av.open(str(path)) as c:
        return [(bytes(p), p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size]


def video_times(path: Path) -> tuple[float, float]:
    """(first pts, end = max(pts + duration)) of the video stream in seconds."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate
        first, end = math.inf, -math.inf
        for p in c.demux(vs):
            if p.pts is None or not p.size:
                continue
            t = float(p.pts * p.time_base)
            dur = float(p.duration * p.time_base) if p.duration else 1 / float(rate)
            first, end = min(first, t), max(end, t + dur)
    return first, end


def decode_track(path: Path, index: int = 0) -> tuple[np.ndarray, float, str, int]:
    """Audio stream ``index`` decoded: (float32 (channels, N), first pts in s, codec name, channels)."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[index]
        resampler = av.AudioResampler(format="fltp")
        parts, first = [], None
        for frame in c.decode(stream):
            if first is None:
                first = frame.time
            parts.extend(out.to_ndarray() for out in resampler.resample(frame))
        parts.extend(out.to_ndarray() for out in resampler.resample(None))
        return np.concatenate(parts, axis=1), first or 0.0, stream.codec_context.name, stream.channels


def stream_layout(path: Path) -> list[str]:
    with av.open(str(path)) as c:
        return [f"{s.type}:{s.codec_context.name}" for s in c.streams]


def level_at(x: np.ndarray, hz: float) -> float:
    """Amplitude of the ``hz`` sinusoid in ``x`` (1-D), by projection."""
    t = np.arange(len(x)) / SR
    c, s = np.cos(2 * np.pi * hz * t), np.sin(2 * np.pi * hz * t)
    return float(2 * math.hypot(x @ c, x @ s) / len(x))


def generated(n: int, hz: float = 440.0, amp: float = 0.4) -> np.ndarray:
    t = np.arange(n) / SR
    left = amp * np.sin(2 * np.pi * hz * t)
    return np.stack([left, -left]).astype(np.float32)


def probe_duration(path: Path) -> float:
    from capture.file import probe_video

    return probe_video(path).duration


def aligned(decoded: np.ndarray, sent: np.ndarray, *, max_lag: int = 64) -> tuple[int, float]:
    """(lag in samples, normalised correlation) of the best match of ``decoded`` with ``sent`` (left)."""
    n = min(decoded.shape[1], sent.shape[1]) - 2 * max_lag
    ref = sent[0, max_lag:max_lag + n]
    best = (0, -1.0)
    for lag in range(-max_lag, max_lag + 1):
        seg = decoded[0, max_lag + lag:max_lag + lag + n]
        c = float(seg @ ref / (np.linalg.norm(seg) * np.linalg.norm(ref) + 1e-12))
        if c > best[1]:
            best = (lag, c)
    return best


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "aac"), (".mov", "aac"), (".mkv", "opus"),
                                               (".webm", "opus"), (".avi", "pcm_s16le")])
def test_video_copied_bit_for_bit_with_the_generated_track(tmp_path, suffix, codec):
    src = make_video(tmp_path / f"in{suffix}", fps=30, n=36, size=(66, 50), audio_channels=2)
    out = tmp_path / f"out{suffix}"
    track = 0.5 * np.repeat(sweep(np.arange(int(1.2 * SR)) / SR)[None], 2, axis=0).astype(np.float32)
    plan = mux_audio(src, track, out)
    assert (plan.start, plan.end) == (0.0, pytest.approx(1.2, abs=1e-3))  # (ms timestamps in mkv/webm)
    assert stream_layout(out)[0] == stream_layout(src)[0]
    assert stream_layout(out) == [stream_layout(src)[0], f"audio:{codec}"]  # the original sound is dropped
    assert video_packets(out) == video_packets(src)
    decoded, first, _, channels = decode_track(out)
    assert channels == 2 and first == pytest.approx(0.0, abs=1 / SR)
    assert abs(decoded.shape[1] - probe_duration(out) * SR) <= HOP
    lag, corr = aligned(decoded, track)
    assert abs(lag) <= 2 and corr > 0.95  # the track starts with the first frame
    assert not list(tmp_path.glob(".*partial*"))


def test_vfr_and_rotation_survive_the_copy(tmp_path):
    pts = [0, 40, 70, 140, 150, 200, 300, 310, 320, 400, 500, 530, 600, 700, 701, 750]
    src = make_video(tmp_path / "vfr.mp4", pts_ms=pts, size=(66, 50), rotation=90)
    out = tmp_path / "out.mkv"
    plan = mux_audio(src, generated(SR), out)
    assert video_packets(out) == video_packets(src)
    from capture.file import probe_video

    assert probe_video(out).rotation == probe_video(src).rotation == 90
    assert plan.duration == pytest.approx(probe_video(src).duration)
    decoded, *_ = decode_track(out)
    assert abs(decoded.shape[1] - probe_video(out).duration * SR) <= HOP


def test_keep_audio_copies_the_original_as_a_second_track(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=30, audio_channels=6, audio_amp=0.3)
    out = tmp_path / "out.mp4"
    mux_audio(src, generated(SR), out, keep_audio=True)
    assert stream_layout(out) == ["video:h264", "audio:aac", "audio:aac"]
    with av.open(str(src)) as c:
        original = [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]
    with av.open(str(out)) as c:
        kept = [bytes(p) for p in c.demux(c.streams.audio[1]) if p.size]
        titles = [s.metadata.get("title") or s.metadata.get("handler_name") for s in c.streams.audio]
    assert kept == original  # copied, not re-encoded
    assert titles == ["livefoley (generated)", "original"]
    new, _, _, new_ch = decode_track(out, 0)
    old, _, _, old_ch = decode_track(out, 1)
    assert (new_ch, old_ch) == (2, 6)
    assert level_at(new[0, :SR // 2], 440) > 0.3 and level_at(new[0, :SR // 2], TONE_HZ) < 0.02
    assert level_at(old[0, 4800:SR // 2], TONE_HZ) == pytest.approx(0.3, rel=0.1)


@pytest.mark.parametrize(("channels", "amp", "downmixed"),
                         [(1, 0.5, 0.5), (6, 0.3, 0.3 * (1 + 2 * math.sqrt(0.5)))])  # ITU: FL+.707(FC+BL)
def test_mix_blends_the_original_downmixed_to_stereo(tmp_path, channels, amp, downmixed):
    src = make_video(tmp_path / "in.mkv", n=30, audio_channels=channels, audio_amp=amp)
    track = generated(SR)
    levels = {}
    for mix in (0.0, 0.25, 1.0):
        out = tmp_path / f"out{mix}.mkv"
        mux_audio(src, track, out, mix=mix)
        assert stream_layout(out) == ["video:h264", "audio:opus"]  # one track: the mix
        decoded, *_ = decode_track(out)
        body = decoded[0, 4800:SR - 4800]
        levels[mix] = (level_at(body, 440), level_at(body, TONE_HZ))
    assert levels[0.0][0] == pytest.approx(0.4, rel=0.05) and levels[0.0][1] < 0.01      # generated only
    assert levels[1.0][0] < 0.01 and levels[1.0][1] == pytest.approx(downmixed, rel=0.05)  # original only
    assert levels[0.25][0] == pytest.approx(0.75 * 0.4, rel=0.05)
    assert levels[0.25][1] == pytest.approx(0.25 * downmixed, rel=0.05)


def test_read_audio_window_is_aligned_to_the_video_timeline(tmp_path):
    src = make_video(tmp_path / "in.mov", n=60, audio_channels=2, audio_codec="pcm_s16le", audio_rate=44100,
                     audio_wave=sweep)
    window = read_audio_window(src, 0.5, 1.5)
    assert window.shape == (2, SR)
    expected = 0.5 * sweep(0.5 + np.arange(SR) / SR)[None]
    lag, corr = aligned(window, expected)
    assert abs(lag) <= 2 and corr > 0.99
    past_end = read_audio_window(src, 1.5, 2.5)  # the track ends at 2.0 s: the rest is silence
    assert np.abs(past_end[:, int(0.55 * SR):]).max() == 0.0 and np.abs(past_end[:, :SR // 4]).max() > 0.4


def test_mix_tracks_is_a_convex_blend_that_never_clips():
    g = np.full((2, 10), 0.9, np.float32)
    o = np.full((2, 10), -2.0, np.float32)  # clipped to -1 first
    np.testing.assert_allclose(mix_tracks(g, o, 0.0), g)
    np.testing.assert_allclose(mix_tracks(g, o, 1.0), -1.0)
    np.testing.assert_allclose(mix_tracks(g, o, 0.5), (0.9 - 1.0) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="between 0 and 1"):
        mix_tracks(g, o, 1.5)


def test_segments_start_on_a_key_frame_and_cover_exactly_the_copied_video(tmp_path):
    src = make_video(tmp_path / "in.mkv", n=90, gop=15, bframes=False)  # key frames every 0.5 s
    packets = video_packets(src)
    assert [i for i, (_, key) in enumerate(packets) if key] == [0, 15, 30, 45, 60, 75]
    for start, duration, first, count in [(0.5, 1.0, 15, 30), (0.6, 1.0, 15, 33), (1.2, None, 30, 60)]:
        plan = plan_mux(src, tmp_path / "o.mkv", start=start, duration=duration)
        assert plan.start == pytest.approx(first / 30, abs=2e-3)
        out = tmp_path / f"seg{start}.mkv"
        mux_audio(src, generated(int(plan.duration * SR)), out, start=plan.start, duration=duration,
                  plan=plan)
        assert video_packets(out) == packets[first:first + count]
        assert video_times(out)[0] == pytest.approx(0.0, abs=1e-3)   # timestamps start at the video's start
        assert probe_duration(out) == pytest.approx(count / 30, abs=2e-3)
        decoded, first_t, *_ = decode_track(out)
        assert first_t == pytest.approx(0.0, abs=1e-3)
        assert abs(decoded.shape[1] - probe_duration(out) * SR) <= HOP


def test_segment_with_b_frames_keeps_decode_order(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=60, gop=15)  # x264 with 2 B-frames
    packets = video_packets(src)
    plan = plan_mux(src, tmp_path / "o.mp4", start=0.55, duration=0.5)
    out = tmp_path / "seg.mp4"
    mux_audio(src, generated(int(plan.duration * SR)), out, start=plan.start, plan=plan)
    copied = video_packets(out)
    assert copied[0][1] and copied == packets[15:15 + len(copied)]   # a contiguous run from the key frame
    assert plan.start == pytest.approx(0.5) and plan.end >= 1.05 - 1e-3
    with av.open(str(out)) as c:  # every copied frame decodes
        assert len(list(c.decode(video=0))) == len(copied)
    decoded, *_ = decode_track(out)
    assert abs(decoded.shape[1] - probe_duration(out) * SR) <= HOP


def test_audio_before_the_start_is_silence_when_the_plan_starts_earlier(tmp_path):
    src = make_video(tmp_path / "in.mkv", n=60, gop=30, bframes=False)
    out = tmp_path / "out.mkv"
    plan = mux_audio(src, generated(SR), out, start=0.5, duration=0.5)  # key frame at 0: silence first
    assert (plan.start, plan.end) == (0.0, pytest.approx(1.0))
    decoded, *_ = decode_track(out)
    assert np.abs(decoded[:, 1000:SR // 2 - 2000]).max() < 0.02
    assert level_at(decoded[0, SR // 2 + 2000:SR - 2000], 440) == pytest.approx(0.4, rel=0.05)


def test_refusals_name_the_file_and_the_fix_and_write_nothing(tmp_path):
    mp4 = make_video(tmp_path / "in.mp4", n=10, audio_channels=2)
    avi = make_video(tmp_path / "in.avi", n=10, audio_channels=2)
    track = generated(SR)
    cases = [
        (mp4, tmp_path / "o.flv", {}, "unknown video container"),
        (mp4, tmp_path / "o.webm", {}, "h264 video cannot be copied into a .webm"),
        (avi, tmp_path / "o.mp4", {"keep_audio": True}, "write .mkv"),
        (mp4, tmp_path / "o.mkv", {"start": 5.0}, "at or after the end"),
        (tmp_path / "missing.mp4", tmp_path / "o.mkv", {}, "no such file"),
        (mp4, mp4, {}, "never overwritten"),
        (mp4, tmp_path / "nowhere" / "o.mp4", {}, "does not exist"),
    ]
    for src, out, options, message in cases:
        with pytest.raises(MediaError, match=message):
            mux_audio(src, track, out, **options)
    wav = tmp_path / "sound.mp4"
    with av.open(str(wav), "w") as c:  # an audio-only "mp4"
        s = c.add_stream("aac", rate=SR, layout="stereo")
        frame = av.AudioFrame.from_ndarray(tone(1024, 2), format="fltp", layout="stereo")
        frame.sample_rate = SR
        for p in [*s.encode(frame), *s.encode()]:
            c.mux(p)
    with pytest.raises(MediaError, match="no video stream"):
        plan_mux(wav, tmp_path / "o.mkv")
    with pytest.raises(ValueError, match="exclusive"):
        plan_mux(mp4, tmp_path / "o.mkv", keep_audio=True, mix=0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        plan_mux(mp4, tmp_path / "o.mkv", mix=2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.avi", "in.mp4", "sound.mp4"]


def test_no_original_audio_means_generated_only(tmp_path, caplog):
    src = make_video(tmp_path / "silent.mp4", n=15)
    plan = mux_audio(src, generated(SR // 2), tmp_path / "out.mp4", keep_audio=True)
    assert not plan.keep_audio and not plan.has_original_audio
    assert stream_layout(tmp_path / "out.mp4") == ["video:h264", "audio:aac"]
    assert "no audio track" in caplog.text


def test_an_interrupt_while_muxing_leaves_no_file(tmp_path, monkeypatch):
    src = make_video(tmp_path / "in.mp4", n=30)
    calls = {"n": 0}
    real = av.AudioFrame.from_ndarray

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(av.AudioFrame, "from_ndarray", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mux_audio(src, generated(SR), tmp_path / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
