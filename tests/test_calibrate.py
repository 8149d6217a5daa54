"""The A/V offset analysis of ``livefoley obs calibrate`` (plugin/obs/calibrate.py) on real encoded
recordings made here: the world's picture shown late and its sound played late by known amounts,
jittered and with frames shown twice, as OBS's media source does.  The run in a real OBS is in
tests/test_obs.py."""

from __future__ import annotations

import numpy as np
import pytest

from audio.contract import CONTRACT
from capture.synthetic.clips import events_path, load_events, write_clip
from plugin.obs.calibrate import CalibrationError, correction, engine_during, falling_behind, measure_offset

FPS = CONTRACT.fps
HOP = CONTRACT.hop


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib")
    video = folder / "clip.mp4"
    write_clip(video, seed=4242, n_frames=int(24 * FPS), size=(320, 180), audio_out=folder / "clip.flac")
    from audio.io import read_audio
    from capture.file import iter_frames_30fps

    frames = [f.image for f in iter_frames_30fps(video)]
    return video, load_events(events_path(video))["events"], frames, read_audio(folder / "clip.flac")


def _recording(path, frames, audio, *, picture_late_s, sound_late_s, seed=0, repeat=0.2, jitter_ms=0.0):
    """What OBS would record: frame k of the clip first seen at picture_late + k/fps (some shown
    twice, the next then skipped: OBS's media source running a frame behind now and then), the
    clip's sound heard sound_late later than it belongs, plus per-event jitter of the sound."""
    from audio.media import write_video

    rng = np.random.default_rng(seed)
    lead = int(round(picture_late_s * FPS))
    shown = [frames[0]] * lead
    k = 0
    while len(shown) < len(frames) + lead:
        if rng.random() < repeat and 0 < k < len(frames) - 1:
            shown += [frames[k], frames[k]]  # one frame late, then catches up
            k += 2
        else:
            shown.append(frames[k])
            k += 1
    n = audio.shape[1]
    out = np.zeros((2, n + int(0.5 * CONTRACT.sample_rate)), np.float32)
    start = int(round((picture_late_s + sound_late_s) * CONTRACT.sample_rate))
    if jitter_ms:  # each 1-s block of sound shifted by its own amount
        block = CONTRACT.sample_rate
        for b in range(0, n, block):
            j = int(round(rng.uniform(-jitter_ms, jitter_ms) * CONTRACT.sample_rate / 1000))
            s = max(0, start + b + j)
            seg = audio[:, b:b + block][:, : out.shape[1] - s]
            out[:, s:s + seg.shape[1]] += seg
    else:
        out[:, start:start + n] = audio[:, : out.shape[1] - start]
    return write_video(path, shown, fps=FPS, audio=out)


@pytest.mark.parametrize("picture_late, sound_late", [(0.5, 0.18), (0.3, 0.0), (1.0, -0.08)])
def test_the_offset_in_a_recording_is_found(clip, tmp_path, picture_late, sound_late):
    video, events, frames, audio = clip
    rec = _recording(tmp_path / "rec.mkv", frames, audio, picture_late_s=picture_late, sound_late_s=sound_late)
    m = measure_offset(rec, video, events)
    # onsets are detected on 5-ms hops; a shown-twice frame makes its events seen a frame late
    assert m.offset_ms == pytest.approx(sound_late * 1000, abs=12)
    assert m.jitter_p95_ms < 35
    assert m.matched >= 0.8 * m.events and m.events > 20
    assert m.frames_matched > 0.7 * m.frames


def test_jitter_is_measured(clip, tmp_path):
    video, events, frames, audio = clip
    rec = _recording(tmp_path / "rec.mkv", frames, audio, picture_late_s=0.4, sound_late_s=0.1, jitter_ms=40, seed=3)
    m = measure_offset(rec, video, events)
    assert m.offset_ms == pytest.approx(100, abs=15)
    assert 20 < m.jitter_p95_ms < 60  # uniform ±40 ms blocks: p95 of |x| ≈ 38 ms


def test_silence_and_a_wrong_picture_are_named(clip, tmp_path):
    video, events, frames, audio = clip
    silent = _recording(tmp_path / "silent.mkv", frames, np.zeros_like(audio), picture_late_s=0.3, sound_late_s=0)
    with pytest.raises(CalibrationError, match="silent|does not follow"):
        measure_offset(silent, video, events)
    other = [np.ascontiguousarray(255 - f) for f in frames]  # another picture altogether
    wrong = _recording(tmp_path / "wrong.mkv", other, audio, picture_late_s=0.3, sound_late_s=0)
    with pytest.raises(CalibrationError, match="calibration picture was not found"):
        measure_offset(wrong, video, events)


def test_correction_is_the_picture_delay_that_cancels_the_offset():
    assert correction(120.0, 0) == 120  # sound late: the picture waits
    assert correction(30.0, 150) == 180  # on top of the delay already there
    assert correction(-40.0, 150) == 110  # too much delay: less
    assert correction(-40.0, 0) == 0  # sound early with no delay: nothing to take away
    assert correction(900.0, 0) == 500  # OBS's Render Delay stops at 500 ms


def test_an_engine_that_fell_behind_is_named_as_the_cause():
    """The policy's seconds per rung over a recording: mostly on rungs that skip frames → the reason
    the sound cannot follow the picture; mostly frame by frame (pipelined or not) → no excuse."""
    ladder = ["full", "cfg-off", "no-wait", "vision/2", "vision/4", "vision/8", "no-wait/4", "no-wait/8"]
    start = {"seconds_at": {"full": 3.0}, "ladder": ladder, "every_frame": ["full", "cfg-off", "no-wait"]}
    slow = {**start, "seconds_at": {"full": 8.0, "vision/8": 5.0, "no-wait/8": 20.0}}
    why = falling_behind(start, slow)
    assert why is not None and "25 of 30 s" in why and "'no-wait/8'" in why and "--optimize" in why
    kept_up = {**start, "seconds_at": {"full": 5.0, "no-wait": 20.0, "vision/2": 8.0}}
    assert falling_behind(start, kept_up) is None  # 22 of 30 s frame by frame
    assert falling_behind(None, slow) is None and falling_behind(start, start) is None


def test_the_engine_side_of_a_recording_is_its_ledger_and_rungs_over_that_time():
    """The median of the engine's own glass-to-ear over the chunks handed over during the recording,
    and the seconds per rung spent then (a pipelined rung hears each frame a frame later)."""
    hand = 100.0 + np.arange(3000) / 30  # a chunk every 1/30 s from t = 100 s
    g2e = np.where(hand < 150.0, 80.0, 130.0)  # 'full' until 150 s, then 'no-wait'
    start = {"seconds_at": {"full": 10.0}}
    end = {"seconds_at": {"full": 30.0, "no-wait": 12.0}}
    first = engine_during(start, end, hand, g2e, 110.0, 140.0)
    assert first["glass_to_ear_ms"] == 80.0 and first["chunks"] == 901
    assert first["rungs"] == {"full": 20.0, "no-wait": 12.0}
    second = engine_during(start, end, hand[:-1], g2e, 155.0, 185.0)  # a chunk more in one series
    assert second["glass_to_ear_ms"] == 130.0 and second["chunks"] == 901
    assert engine_during(start, start, hand, g2e, 300.0, 330.0) == {"glass_to_ear_ms": None, "chunks": 0, "rungs": {}}
