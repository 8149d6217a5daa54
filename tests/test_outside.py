"""Glass-to-ear measured from outside the engine (plugin/live/outside.py): the arithmetic on a run
whose every moment is known, then the whole measurement on a real Xvfb display and a real
PulseAudio null sink with the shipped default model."""

from __future__ import annotations

import numpy as np
import pytest

from audio.contract import CONTRACT
from plugin.live.outside import locate_chunks, measure, monitor_clock, report
from tests.conftest import in_fresh_process

SR, HOP = CONTRACT.sample_rate, CONTRACT.hop


def _s16(x: np.ndarray) -> np.ndarray:
    """What a null sink mixing in s16 hands its monitor."""
    return np.round(np.clip(x, -1, 1) * 32767) / 32767


def _known_run(late_s: float, wait_s: float, k: int = 90, cuts: dict[int, int] | None = None, rate: float = SR):
    """A run with every moment known: chunk ``j`` handed at ``100 + j/30`` with 50 ms queued ahead
    of it, rendered ``late_s`` after the ledger says, following a frame grabbed ``wait_s`` after its
    picture was shown.  Chunk 40 was never played (an underrun's gap); chunk 41 is a pure tone
    (periodic: it matches once every period) so it must be placed by the ledger's prediction.
    ``cuts``: chunks the ring cut shorter (index → samples taken out); ``rate``: the monitor's
    samples per second of the monotonic clock (the sound server's clock is not the system's)."""
    rng = np.random.default_rng(0)
    lengths = np.array([HOP - (cuts or {}).get(j, 0) for j in range(k)])
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    recorded = (0.3 * rng.standard_normal((bounds[-1], 2))).astype(np.float32)
    t = np.arange(lengths[41]) / SR
    recorded[bounds[41]:bounds[42]] = 0.5 * np.sin(2 * np.pi * 480 * t)[:, None]  # period 100 samples
    recorded[bounds[50]:bounds[51]] = 0.0  # silence: cannot be placed, and need not be
    hand = 100.0 + np.arange(k) / CONTRACT.fps * (SR / rate)  # paced by the device: the chunks play back to back
    queue_ms = np.full(k, 50.0)
    shown = 99.9 + np.arange(k + 10) / CONTRACT.fps
    captured = shown[5:5 + k] + wait_s
    g2e_ms = (hand + queue_ms / 1000 - captured) * 1000
    t0 = 99.5
    monitor = np.zeros((round((hand[-1] + 1 - t0) * SR), 2), np.float32)
    starts = np.round((hand + queue_ms / 1000 + late_s - t0) * rate).astype(int)
    for j in range(k):
        if j != 40:
            monitor[starts[j]:starts[j] + lengths[j]] = _s16(recorded[bounds[j]:bounds[j + 1]])
    run = dict(shown=shown, t0=t0, monitor=monitor, recorded=recorded, hand_time=hand, queue_ms=queue_ms,
               glass_to_ear_ms=g2e_ms)
    if cuts:
        run["chunk_samples"] = lengths
    return run, starts


def test_chunks_are_found_sample_exact_and_gaps_are_left_out():
    run, starts = _known_run(late_s=0.007, wait_s=0.02)
    predicted = (run["hand_time"] + run["queue_ms"] / 1000 - run["t0"]) * SR
    pos = locate_chunks(run["monitor"], run["recorded"], predicted)
    placed = np.flatnonzero(pos >= 0)
    assert pos[40] == -1 and pos[50] == -1  # never played; silent
    assert set(range(90)) - set(placed) == {40, 50}
    assert np.array_equal(pos[placed], starts[placed])  # the tone after the gap too, not a period off


def test_report_recovers_a_known_delay_and_capture_wait():
    run, _ = _known_run(late_s=0.007, wait_s=0.02)
    out = report(**run, skip_s=0.0)
    assert out["chunks"] == 90 and out["chunks_located"] == 88 and out["chunks_compared"] == 88
    assert out["heard_minus_ledger_ms"]["p50"] == pytest.approx(7.0, abs=0.05)
    assert out["heard_minus_ledger_ms"]["max"] == pytest.approx(7.0, abs=0.05)
    assert out["capture_wait_ms"]["p50"] == pytest.approx(20.0, abs=0.05)
    ledger = out["glass_to_ear_ledger_ms"]["p50"]
    assert out["glass_to_ear_outside_ms"]["p50"] == pytest.approx(ledger + 7.0 + 20.0, abs=0.1)
    # a ledger that is wrong by 30 ms shows as such
    late = report(**_known_run(late_s=-0.03, wait_s=0.02)[0], skip_s=0.0)
    assert late["heard_minus_ledger_ms"]["p50"] == pytest.approx(-30.0, abs=0.05)


def test_chunks_the_ring_cut_shorter_are_placed_by_their_own_lengths():
    """The live engine's ring takes a few hundred samples out of a chunk now and then (audio.jitter
    ``shorten``); the engine's ``chunk_samples`` says which: every chunk is still found where it
    played.  Read as whole hops, each chunk after a cut would seem heard that much later."""
    run, starts = _known_run(late_s=0.007, wait_s=0.02, cuts={20: 400, 60: 800})
    out = report(**run, skip_s=0.0)
    assert out["chunks"] == 90 and out["chunks_located"] == 88
    assert out["heard_minus_ledger_ms"]["p50"] == pytest.approx(7.0, abs=0.05)
    assert out["heard_minus_ledger_ms"]["max"] == pytest.approx(7.0, abs=0.05)
    predicted = (run["hand_time"] + run["queue_ms"] / 1000 - run["t0"]) * SR
    pos = locate_chunks(run["monitor"], run["recorded"], predicted, lengths=run["chunk_samples"])
    placed = np.flatnonzero(pos >= 0)
    assert np.array_equal(pos[placed], starts[placed])
    as_hops = report(**{k: v for k, v in run.items() if k != "chunk_samples"}, skip_s=0.0)
    assert as_hops["heard_minus_ledger_ms"]["p50"] != pytest.approx(7.0, abs=1.0)


def test_the_monitors_clock_is_fitted_to_the_prompt_reads():
    """The sound server's samples and the monotonic clock drift apart (98 ppm measured: 59 ms over
    a 10-minute run, read as a disagreement of the ledger with what was heard).  Reads arrive
    late by chance, never early; the line through the prompt ones gives the start and the rate."""
    rng = np.random.default_rng(1)
    rate = SR * (1 + 98e-6)
    samples = np.cumsum(rng.integers(200, 900, 20_000))  # ~600 s of reads
    rendered = 1000.0 + samples / rate
    late = rng.exponential(0.002, len(samples)) * (rng.random(len(samples)) > 0.2)  # a fifth prompt
    t0, fitted = monitor_clock(rendered + late, samples)
    assert t0 == pytest.approx(1000.0, abs=2e-4)
    assert (fitted / SR - 1) * 1e6 == pytest.approx(98.0, abs=2.0)
    short = samples < 20 * SR  # 20 s: too short to see a drift, the nominal rate
    t0, nominal = monitor_clock((rendered + late)[short], samples[short])
    assert nominal == SR and t0 == pytest.approx(1000.0, abs=2e-3)


def test_chunks_are_placed_on_the_monitors_own_clock():
    rate = SR * (1 + 0.004)  # exaggerated, so that three seconds show it: 12 ms by the end
    run, starts = _known_run(late_s=0.007, wait_s=0.02, rate=rate)
    out = report(**run, skip_s=0.0, monitor_rate=rate)
    assert out["chunks_located"] == 88 and out["monitor_clock_ppm"] == pytest.approx(4000, abs=0.1)
    assert out["heard_minus_ledger_ms"]["p50"] == pytest.approx(7.0, abs=0.05)
    assert out["heard_minus_ledger_ms"]["max"] == pytest.approx(7.0, abs=0.05)
    nominal = report(**run, skip_s=0.0)  # read at 48 kHz: the later chunks seem heard later and later
    assert nominal["heard_minus_ledger_ms"]["max"] > 15.0


def test_a_ledger_that_kept_only_the_last_chunks_is_matched_to_the_end_of_the_recording():
    """The engine keeps its per-chunk history in rings (``history_s``, 10 minutes by default) while
    its recording holds every chunk: over a longer run the ledger's first entry is not the
    recording's first chunk.  The report lines them up from the end (a 10-minute measurement once
    placed none of 18 000 chunks: every one was compared with the chunk 138 earlier)."""
    run, starts = _known_run(late_s=0.007, wait_s=0.02, cuts={20: 400, 60: 800})
    first = 30  # the ring kept chunks 30 … 89
    kept = {k: (v[first:] if k in ("hand_time", "queue_ms", "glass_to_ear_ms", "chunk_samples") else v)
            for k, v in run.items()}
    out = report(**kept, skip_s=0.0)
    assert out["chunks"] == 60 and out["chunks_located"] == 58  # 40 (never played) and 50 (silent) aside
    assert out["heard_minus_ledger_ms"]["p50"] == pytest.approx(7.0, abs=0.05)
    assert out["heard_minus_ledger_ms"]["max"] == pytest.approx(7.0, abs=0.05)


SECONDS = 20  # of pictures: 34 events (10 s had 14: the correlation ranged 0.30–0.78 with the host's speed)


def _measure_default_model(display: str, monitor: str, pulse_env: dict, work) -> dict:
    from model.generator import load_generator
    from plugin.live.config import PolicyConfig
    from plugin.live.policy import build_ladder

    gen = load_generator("default", device="cpu")
    # held on `no-wait` (every frame offered to vision, pipelined): how far down the ladder the engine
    # goes depends on how fast this shared machine is at the moment, and the rungs that encode only
    # every N-th frame cost most of the sync (docs/live-engine.md: F1 0.85 → 0.53 every 2nd frame)
    names = [r.name for r in build_ladder(nfe=gen.nfe, guidance=gen.guidance, valid_nfe=gen.valid_nfe)]
    rung = names.index("no-wait")
    return measure(gen, display=display, monitor=monitor, pulse_env=pulse_env, seed=100, seconds=SECONDS, threads=2,
                   settle_s=2.0, work=work, policy=PolicyConfig(start_rung=rung, max_rung=rung, auto_start=False))


def test_outside_measurement_of_the_default_model_on_xvfb_and_pulseaudio(xvfb, pulse, tmp_path):
    """Real pictures on a real X display, the real engine with the shipped model following the
    screen, the real sound server's monitor: every handed chunk is found in what was played, the
    engine's ledger says when it was heard (within the issue's 10 ms), and the generated onsets
    follow the picture changes — after them, never before."""
    # in a fresh process (tests/conftest.py): how fast the engine runs decides its rung, and its rung how
    # closely the sound can follow the pictures — what earlier tests left in this process must not tilt it
    out = in_fresh_process(_measure_default_model, xvfb.display, pulse.monitor, pulse.env, tmp_path)
    st = out.pop("stats")
    print(f"\noutside: {out}\nengine rungs {st['policy']['seconds_at']} underruns {st['underruns']}")
    assert st["error"] is None and out["events"] > 5
    assert out["chunks_located"] >= 0.9 * out["chunks"]
    assert out["chunks_compared"] >= 0.9 * SECONDS * CONTRACT.fps * 0.9  # the pictures' seconds, start-up aside
    assert abs(out["heard_minus_ledger_ms"]["p50"]) <= 10.0
    # glass-to-ear outside = ledger + (heard − ledger) + capture wait; the wait is under a frame
    # for a grab that keeps up (the picture player runs at 29.97 fps against the 30-fps grabs)
    assert 0 <= out["capture_wait_ms"]["p50"] <= 1000 / CONTRACT.fps + 5
    assert out["glass_to_ear_outside_ms"]["p50"] > out["glass_to_ear_ledger_ms"]["p50"] - 10
    # the sound follows the pictures: onsets line up with the picture changes, and after them
    # (against the chance level of the same recording: the pictures' sound moved by whole seconds,
    # 0.17–0.24 here; the onsets follow the pictures at 0.31–0.73 depending on the host's speed)
    assert out["picture_to_onset_correlation"] >= max(0.25, out["picture_to_onset_chance"] + 0.1)
    assert 0 < out["picture_to_onset_ms"] < 1000
