"""Sync and quality metrics (:mod:`audio.metrics`) on real clips of the synthetic world, where
the right answer is known: the ground truth against itself, delayed, advanced, with its channels
swapped, silenced, with noise in the quiet stretches, and increasingly distorted."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.signal import butter, sosfilt

from audio.contract import CONTRACT
from audio.errors import LivefoleyError
from audio.metrics import (
    MetricsConfig,
    aggregate,
    detect_onsets,
    evaluate_clip,
    event_onsets,
    logmel_distance,
    match_onsets,
    mel_filterbank,
    mrstft_distance,
)
from capture.synthetic import World, render_clip

SR, HOP = CONTRACT.sample_rate, CONTRACT.hop


def world_clip(seed: int, seconds: float):
    """(audio (2, N), events, quiet_spans) of a world played without drawing."""
    world = World(seed, width=64, height=36)
    audio = np.concatenate([world.step(render=False)[1] for _ in range(int(seconds * CONTRACT.fps))], axis=1)
    return audio, list(world.events), [list(s) for s in world.quiet_spans]


@pytest.fixture(scope="module")
def clip():
    """Seed 104, 8 s: 14 events (gun, explosion, impact, pickup on both sides), one quiet stretch."""
    audio, events, quiet = world_clip(104, 8.0)
    assert len(events) >= 10 and quiet, "the test clip lost its events or its quiet stretch"
    return audio, events, quiet


def shift(audio: np.ndarray, ms: float) -> np.ndarray:
    """Delay (ms > 0) or advance (ms < 0) by whole samples, zero-filled, same length."""
    k = int(round(ms * SR / 1000))
    out = np.zeros_like(audio)
    if k >= 0:
        out[:, k:] = audio[:, : audio.shape[1] - k]
    else:
        out[:, :k] = audio[:, -k:]
    return out


def assert_json_ready(result: dict) -> None:
    json.dumps(result, allow_nan=False)  # raises on NaN / inf / numpy scalars


# --------------------------------------------------------------------------------- whole-clip checks
def test_ground_truth_against_itself_is_perfect(clip):
    audio, events, quiet = clip
    r = evaluate_clip(audio, audio, events, quiet_spans=quiet)
    assert_json_ready(r)
    assert r["n_events"] == len(events) and r["n_onsets"] >= 10
    assert r["f1"] == 1.0 and r["precision"] == 1.0 and r["recall"] == 1.0
    assert r["fp"] == 0 and r["fn"] == 0
    assert r["ignored"] > 0  # the pickup arpeggio's later notes are don't-care onsets, not hits
    assert abs(r["onset_offset_median_ms"]) <= 2.0 and abs(r["onset_abs_offset_p90_ms"]) <= 5.0
    assert abs(r["av_offset_ms"]) < 1.0 and r["av_corr"] > 0.99
    assert r["pan_total"] >= 8 and r["pan_accuracy"] == 1.0
    assert r["mrstft"] == 0.0 and r["logmel_l1_db"] == 0.0
    assert r["quiet_source"] == "quiet_spans" and r["quiet_s"] > 1.0
    assert r["quiet_contrast_db"] > 10.0  # the world's quiet stretches really are quiet
    assert r["quiet_db"] == r["ref_quiet_db"]


def test_render_clip_gives_the_same_ground_truth(clip):
    """The clip the eval command plays (render_clip's audio and events) scores like the fixture."""
    frames, audio, events = render_clip(104, 8.0, width=64, height=36)
    np.testing.assert_array_equal(audio, clip[0])
    assert events == clip[1]


@pytest.mark.parametrize("ms", [40.0, -30.0])
def test_shifted_sound_shows_its_offset_with_the_right_sign(clip, ms):
    audio, events, quiet = clip
    r = evaluate_clip(shift(audio, ms), audio, events, quiet_spans=quiet)
    assert r["f1"] >= 0.9  # still within ±50 ms
    assert r["onset_offset_median_ms"] == pytest.approx(ms, abs=3.0)
    assert r["av_offset_ms"] == pytest.approx(ms, abs=2.0)
    assert r["pan_accuracy"] >= 0.9
    assert r["mrstft"] > 0.5 and r["logmel_l1_db"] > 1.0


def test_sound_80_ms_late_misses_the_window(clip):
    audio, events, quiet = clip
    r = evaluate_clip(shift(audio, 80.0), audio, events, quiet_spans=quiet)
    assert r["f1"] <= 0.3
    assert r["av_offset_ms"] == pytest.approx(80.0, abs=2.0)  # the cross-correlation still finds it


def test_swapped_channels_fail_the_pan_and_nothing_else(clip):
    audio, events, quiet = clip
    r = evaluate_clip(audio[::-1].copy(), audio, events, quiet_spans=quiet)
    assert r["pan_accuracy"] <= 0.1
    assert r["f1"] == 1.0 and abs(r["av_offset_ms"]) < 1.0


def test_mono_sound_has_no_louder_side(clip):
    audio, events, quiet = clip
    mono = np.repeat(audio.mean(axis=0, keepdims=True), 2, axis=0)
    r = evaluate_clip(mono, audio, events, quiet_spans=quiet)
    assert r["pan_total"] >= 8 and r["pan_accuracy"] == 0.0  # a tie is not a correct side
    assert r["f1"] >= 0.9


def test_silence_scores_zero_without_crashing(clip):
    audio, events, quiet = clip
    r = evaluate_clip(np.zeros_like(audio), audio, events, quiet_spans=quiet)
    assert_json_ready(r)
    assert r["n_detected"] == 0 and r["tp"] == 0 and r["f1"] == 0.0
    assert r["precision"] is None and r["recall"] == 0.0
    assert r["onset_offset_median_ms"] is None and r["av_offset_ms"] is None and r["pan_accuracy"] is None
    assert r["quiet_contrast_db"] == pytest.approx(0.0) and r["quiet_db"] < -100
    assert r["mrstft_sc"] == pytest.approx(1.0) and r["logmel_l1_db"] > 20


def test_noise_in_the_quiet_stretches_raises_their_energy(clip):
    audio, events, quiet = clip
    noisy = audio.copy()
    rng = np.random.default_rng(0)
    for start, end in quiet:
        seg = noisy[:, start * HOP : end * HOP]
        seg += 0.05 * rng.standard_normal(seg.shape).astype(np.float32)
    base = evaluate_clip(audio, audio, events, quiet_spans=quiet)
    r = evaluate_clip(noisy, audio, events, quiet_spans=quiet)
    assert r["quiet_db"] > base["quiet_db"] + 10.0
    assert r["event_db"] == pytest.approx(base["event_db"], abs=0.01)  # event windows untouched
    assert r["quiet_contrast_db"] < base["quiet_contrast_db"] - 10.0
    assert r["ref_quiet_db"] == base["quiet_db"]


def test_quiet_stretches_are_derived_from_the_events_without_spans(clip):
    audio, events, _ = clip
    r = evaluate_clip(audio, audio, events)
    assert r["quiet_source"] == "derived"
    assert r["quiet_s"] > 0.5 and r["quiet_contrast_db"] > 10.0


def test_spectral_distances_grow_with_distortion(clip):
    audio = clip[0]
    assert mrstft_distance(audio, audio)["total"] == 0.0 and logmel_distance(audio, audio) == 0.0
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(audio.shape).astype(np.float32)
    stft = [mrstft_distance(audio + a * noise, audio) for a in (0.001, 0.01, 0.1)]
    mel = [logmel_distance(audio + a * noise, audio) for a in (0.001, 0.01, 0.1)]
    assert 0 < stft[0]["total"] < stft[1]["total"] < stft[2]["total"]
    assert 0 < stft[0]["sc"] < stft[1]["sc"] < stft[2]["sc"]
    assert 0 < mel[0] < mel[1] < mel[2]
    assert set(stft[0]["per_size"]) == {"2048", "1024", "512", "256", "128"}
    dull = sosfilt(butter(8, 4000, fs=SR, output="sos"), audio, axis=1).astype(np.float32)
    assert logmel_distance(dull, audio) > mel[0]


# ------------------------------------------------------------------------------------------- pieces
def test_onset_detector_finds_clicks_and_ignores_steady_noise():
    rng = np.random.default_rng(2)
    n = 3 * SR
    bed = 0.01 * rng.standard_normal((2, n)).astype(np.float32)
    assert detect_onsets(bed).size == 0
    hum = 0.05 * np.sin(2 * np.pi * 60 * np.arange(n) / SR)[None].repeat(2, 0).astype(np.float32)
    assert detect_onsets(bed + hum).size == 0
    times = [0.5, 1.07, 1.9, 2.55]
    x = bed.copy()
    decay = np.exp(-np.arange(4800) / 480.0)
    for t in times:
        k = int(t * SR)
        x[:, k : k + 4800] += 0.3 * rng.standard_normal(4800) * decay
    found = detect_onsets(x)
    assert len(found) == len(times)
    np.testing.assert_allclose(found, times, atol=0.006)


def test_matching_is_one_to_one_and_maximal():
    # greedy-by-distance would pair 0.04↔0.03 first and leave one match; the optimum has two
    pairs = match_onsets(np.array([0.0, 0.04]), np.array([0.03, 0.08]), 0.05)
    assert pairs == [(0, 0), (1, 1)]
    assert match_onsets(np.array([0.0, 0.01, 0.02]), np.array([0.01]), 0.05) == [(1, 0)]
    assert match_onsets(np.array([0.0]), np.array([0.2]), 0.05) == []
    assert match_onsets(np.zeros(0), np.array([0.2]), 0.05) == []


def test_events_chain_into_onset_groups():
    ev = [{"frame": f, "x": 0.2} for f in (30, 31, 32, 40, 90)]
    onsets, groups = event_onsets(ev, tolerance_s=0.05)
    np.testing.assert_allclose(onsets, [1.0, 40 / 30, 3.0])
    assert groups == [[0, 1, 2], [3], [4]]
    onsets, groups = event_onsets(ev, tolerance_s=0.05, duration_s=2.0)  # the last one is past the end
    assert len(onsets) == 2
    with pytest.raises(LivefoleyError, match="'frame' or 'time_s'"):
        event_onsets([{"x": 0.1}])


def test_mel_filterbank_has_no_empty_band():
    for n_fft, n_mels in ((2048, 64), (512, 24), (256, 64)):
        fb = mel_filterbank(n_fft, n_mels, SR)
        assert fb.shape == (n_mels, n_fft // 2 + 1)
        assert (fb.sum(axis=1) > 0).all()


def test_bad_input_is_a_clear_error(clip):
    audio, events, _ = clip
    with pytest.raises(LivefoleyError, match="differ in length"):
        evaluate_clip(audio[:, :-HOP], audio, events)
    with pytest.raises(LivefoleyError, match=r"\(2, samples\)"):
        evaluate_clip(audio[0], audio[0], events)
    bad = audio.copy()
    bad[0, 10] = np.nan
    with pytest.raises(LivefoleyError, match="NaN"):
        evaluate_clip(bad, audio, events)


def test_aggregate_pools_counts_and_offsets(clip):
    audio, events, quiet = clip
    other, ev2, q2 = world_clip(107, 4.0)
    cfg = MetricsConfig()
    clips = [evaluate_clip(shift(audio, 20.0), audio, events, quiet_spans=quiet, config=cfg),
             evaluate_clip(np.zeros_like(other), other, ev2, quiet_spans=q2, config=cfg)]
    agg = aggregate(clips)
    assert_json_ready(agg)
    assert agg["n_clips"] == 2 and agg["clips"] == clips
    assert agg["tp"] == clips[0]["tp"] and agg["fn"] == clips[0]["fn"] + clips[1]["fn"]
    tp, fp, fn = agg["tp"], agg["fp"], agg["fn"]
    assert agg["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert agg["f1_clip_mean"] == pytest.approx((clips[0]["f1"] + 0.0) / 2)
    assert agg["onset_offset_median_ms"] == pytest.approx(20.0, abs=3.0)  # silence adds no offsets
    assert agg["av_offset_ms"] == pytest.approx(clips[0]["av_offset_ms"])  # None is left out of means
    assert agg["seconds"] == pytest.approx(12.0)
    empty = aggregate([])
    assert empty["n_clips"] == 0 and empty["f1"] is None
