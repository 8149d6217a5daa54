"""The live engine with real parts: the ``tiny`` model (seeded weights, real code paths), videos the
test encodes with PyAV, the screen of a real Xvfb display, and a real PulseAudio null sink whose
monitor is recorded back and compared with what the engine says it played.

The model runs with ``threads=2`` (one thread for the audio path, one for the vision encoder); the
process-wide torch thread count is restored afterwards.  Timing assertions are loose: these cores
are shared with other work.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audio.contract import CONTRACT
from audio.errors import LivefoleyError
from audio.sinks import SinkError
from plugin.live import (
    DegradationPolicy,
    EngineConfig,
    EngineError,
    LiveEngine,
    PolicyConfig,
    build_ladder,
)
from tests.conftest import in_fresh_process
from tests.test_generator import tiny  # noqa: F401 - the fixture (the tiny model, perturbed)
from tests.test_sinks import S16_TOL, Monitor, monitor  # noqa: F401 - `monitor` is a fixture

HOP = CONTRACT.hop
SR = CONTRACT.sample_rate
REPO = Path(__file__).resolve().parents[1]


def underrun_bound(chunks: int) -> int:
    """Underruns tolerated after start-up: none are expected on a quiet machine, but these 2 cores
    are shared with other jobs that can stall every thread of the test at once."""
    return max(2, chunks // 20)


@pytest.fixture(scope="module")
def generator():
    from model.generator import load_generator

    threads = torch.get_num_threads()
    gen = load_generator("tiny", device="cpu")
    yield gen
    torch.set_num_threads(threads)


class SlowVision:
    """Test double around the *real* generator: every vision encode takes ``extra_s`` longer (the
    part of a step the degradation policy can shed; everything else is the real model)."""

    def __init__(self, gen, extra_s: float) -> None:
        self._gen = gen
        self.extra_s = extra_s

    def __getattr__(self, name):
        return getattr(self._gen, name)

    def stream(self, **kwargs):
        return _SlowSession(self._gen.stream(**kwargs), self.extra_s)


class _SlowSession:
    def __init__(self, inner, extra_s: float) -> None:
        self._inner = inner
        self.extra_s = extra_s

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __enter__(self):
        self._inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)

    def encode(self, frame):
        time.sleep(self.extra_s)
        return self._inner.encode(frame)


def moving_picture(i: int, w: int = 640, h: int = 360) -> np.ndarray:
    """(h, w, 3) uint8: a bright square crossing a gradient, a bar flashing every 10 frames."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 180, w, dtype=np.uint8)[None, :]
    img[..., 2] = np.linspace(60, 0, h, dtype=np.uint8)[:, None]
    x = (i * 11) % (w - 60)
    img[150:210, x:x + 60] = 255
    if i % 10 == 0:
        img[300:340] = (250, 200, 40)
    return img


def encode_video(path: Path, *, fps: int, seconds: float) -> Path:
    from audio.media import write_video

    return write_video(path, (moving_picture(i) for i in range(round(fps * seconds))), fps=fps)


def read(path: Path) -> np.ndarray:
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    assert sr == SR and data.shape[1] == 2
    return data


def zero_runs(audio: np.ndarray, min_len: int = 32) -> int:
    """How many runs of ≥ ``min_len`` samples are exactly zero on both channels (``audio`` (N, 2))."""
    silent = np.concatenate([[False], ~audio.any(axis=1), [False]]).astype(np.int8)
    edges = np.diff(silent)
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return int(np.sum(ends - starts >= min_len))


def assert_continuous(audio: np.ndarray, lengths: np.ndarray | None = None) -> None:
    """No NaN, no silent gaps, and no clicks at chunk boundaries: the jump from the last sample of a
    chunk to the first of the next is distributed like the sample-to-sample steps inside chunks
    (chunks made independently would jump about 4× more here: the untrained model's output is
    broadband, with in-chunk steps ≈ 0.35 × its level).  ``lengths``: the chunks' own (the engine's
    ``chunk_samples``, where its ring cut some shorter); a hop each without."""
    assert np.isfinite(audio).all()
    if lengths is None:
        assert audio.shape[0] % HOP == 0
        lengths = np.full(audio.shape[0] // HOP, HOP)
    assert audio.shape[0] == lengths.sum() and audio.shape[0] >= 10 * HOP
    assert zero_runs(audio) == 0, "the audio has silent gaps"
    steps = np.abs(np.diff(audio, axis=0)).mean(axis=1)  # (N - 1,)
    at = np.cumsum(lengths)[:-1].astype(int) - 1  # the step from a chunk's last sample to the next's first
    inside = np.ones(steps.size, bool)
    inside[at] = False
    ratio = np.median(steps[at]) / np.median(steps[inside])
    tail = np.percentile(steps[at], 95) / np.percentile(steps[inside], 99)
    assert ratio < 1.6 and tail < 1.5, f"chunk boundaries jump more than the inside: {ratio:.2f}, {tail:.2f}"


def find_exact(played: np.ndarray, probe: np.ndarray) -> int:
    """The first position where ``probe`` ((n, 2)) occurs in ``played`` ((M, 2)) to s16 precision.
    (Cross-correlation is ambiguous here: the untrained model's sound is strongly periodic.)"""
    from numpy.lib.stride_tricks import sliding_window_view

    n = probe.shape[0]
    err = np.zeros(played.shape[0] - n + 1, np.float32)
    for c in range(2):
        np.maximum(err, np.abs(sliding_window_view(played[:, c], n) - probe[:, c]).max(axis=1), out=err)
    hits = np.nonzero(err < S16_TOL)[0]
    assert hits.size, f"the recording's start is not in the monitor capture (best error {err.min():.2e})"
    return int(hits[0])


def resume_point(played: np.ndarray, expected: np.ndarray, lost: int) -> tuple[int, int]:
    """Where playback resumes after a gap: the first ``skip`` (a multiple of 16, < 480) at which the
    64 samples ``played[skip:]`` equal ``expected[d:]`` for some ``d`` ≤ ``lost`` + ``skip``, to s16
    precision; ``(d, skip)``, or ``(-1, -1)`` when the playback does not resume the recording."""
    from numpy.lib.stride_tricks import sliding_window_view

    for skip in range(0, min(480, played.shape[0] - 64 + 1), 16):
        probe = played[skip:skip + 64]
        window = expected[:lost + skip + 64]
        if window.shape[0] < 64:
            break
        err = np.zeros(window.shape[0] - 63, np.float32)
        for c in range(2):
            np.maximum(err, np.abs(sliding_window_view(window[:, c], 64) - probe[:, c]).max(axis=1), out=err)
        hits = np.nonzero(err < S16_TOL)[0]
        if hits.size:
            return int(hits[0]), skip
    return -1, -1


def assert_recording_was_played(played: np.ndarray, recorded: np.ndarray, volume: float, sink: dict) -> int:
    """The whole recording ((N, 2), full level) was played — ``played`` is the monitor capture, at
    ``volume`` — sample for sample and in order, except where the device sink counted underruns:
    there the playback has a gap of silence, and the monitor may miss up to ~10 ms as the stream
    restarts (the PulseAudio rewind quirk described in tests/test_sinks.py).  Returns where the
    recording starts.  The null sink mixes in s16 (:data:`S16_TOL`); clipped samples are skipped."""
    expected = recorded * volume
    start = p = find_exact(played, expected[:64])
    gaps: list[int] = []
    i = 0
    while i < expected.shape[0]:
        n = min(expected.shape[0] - i, played.shape[0] - p)
        assert n > 0, f"the monitor stops {expected.shape[0] - i} samples before the recording ends"
        bad = (np.abs(played[p:p + n] - expected[i:i + n]) >= S16_TOL) & (np.abs(expected[i:i + n]) < 0.999)
        k = int(np.argmax(bad.any(axis=1))) if bad.any() else n
        i, p = i + k, p + k
        if i == expected.shape[0]:
            break
        silent = ~played[p:].any(axis=1)
        z = int(np.argmin(silent)) if not silent.all() else silent.size
        assert z > 0, f"sample {i} of the recording was played wrongly (and not after a gap of silence)"
        gaps.append(z)
        p += z
        # where does the playback resume?  The first samples after a restart may be missing: ~640
        # as PulseAudio mixes the new stream in by a rewind, and, when the sound system itself
        # reported the underrun, what its buffers held (ALSA's recovery drops them; CI once lost
        # more than 640 there): allowed up to 4 × the device's latency.  The first ~10 ms the
        # monitor hands on may be a mix left from the rewind; so the first clean 64 samples
        # within 480 of the gap's end must continue the recording, at most `lost` samples on.
        lost = 640 + (4 * round(sink["latency_s"] * SR) if sink["status_flags"]["output_underflow"] else 0)
        d, skip = resume_point(played[p:p + 480 + 64], expected[i:i + lost + 480 + 64], lost)
        assert d >= 0, (f"after a gap at recording sample {i} the playback does not resume it within "
                        f"{lost} samples", sink)
        i, p = i + d, p + skip
    # a gap is silence the ring ran out of (counted in samples), or an underflow the sound system
    # itself reported (the callback came too late although the ring had audio)
    underflows = sink["status_flags"]["output_underflow"]
    assert len(gaps) <= sink["underruns"] + underflows, (gaps, sink)
    if underflows == 0:
        assert sum(gaps) <= sink["underrun_samples"], (gaps, sink)
    return start


# --------------------------------------------------------------------------------------------------
# The degradation policy (pure logic)
# --------------------------------------------------------------------------------------------------


def test_ladder_leaves_out_rungs_that_change_nothing():
    names = [r.name for r in build_ladder(nfe=1, guidance=3.0, valid_nfe=(1, 2, 4))]
    assert names == ["full", "cfg-off", "no-wait", "vision/2", "vision/4", "vision/8", "no-wait/4", "no-wait/8"]
    full = build_ladder(nfe=4, guidance=1.0, valid_nfe=(1, 2, 4))
    assert [r.name for r in full][:6] == ["full", "nfe-1", "no-wait", "vision/2", "vision/4", "vision/8"]
    assert [r.wait_for_vision for r in full] == [True, True, False, True, True, True, False, False]
    assert [r.vision_every for r in full] == [1, 1, 1, 2, 4, 8, 4, 8]
    assert all(r.nfe == 1 for r in full[1:]) and all(r.guidance is None for r in full)
    shed = build_ladder(nfe=4, guidance=3.0, valid_nfe=(1, 2, 4))  # each rung sheds what the one before did
    assert [r.name for r in shed][:4] == ["full", "nfe-1", "cfg-off", "no-wait"]
    assert all(r.guidance == 1.0 for r in shed[2:]) and all(r.nfe == 1 for r in shed[1:])


def test_policy_climbs_when_late_and_comes_down_with_backoff():
    rungs = build_ladder(nfe=1, guidance=3.0, valid_nfe=(1,))
    pol = DegradationPolicy(config=PolicyConfig(startup_slots=0, settle_slots=8, hold_slots=10), rungs=rungs)
    fast, slow = 0.3 * CONTRACT.frame_ms, 0.7 * CONTRACT.frame_ms
    for _ in range(50):  # comfortably inside the budget: nothing happens
        assert pol.observe(slow) is None
    assert pol.level == 0
    moves = []
    while len(moves) < 3:  # late slots count as 1.5 budgets: a rung settles, is judged, is left
        if (m := pol.observe(slow, late=True)) is not None:
            moves.append((sum(pol.slots_at), m.name))
    assert [name for _, name in moves] == ["cfg-off", "no-wait", "vision/2"]
    assert [b - a for (a, _), (b, _) in zip(moves, moves[1:], strict=False)] == [12, 12]
    for _ in range(4 + 9):
        assert pol.observe(fast) is None  # settling, then below `low` but not for `hold` slots yet
    assert pol.observe(fast).name == "no-wait"
    for _ in range(4 + 7):  # it went down and must go back up within flap_s: the hold doubles
        assert pol.observe(slow, late=True) is None
    assert pol.observe(slow, late=True).name == "vision/2" and pol.hold == 20
    for _ in range(4 + 19):
        assert pol.observe(fast) is None
    assert pol.observe(fast).name == "no-wait"
    for _ in range(4 + 20):
        pol.observe(fast)
    assert pol.rung.name == "cfg-off"
    # a step down is taken only when the rung below is predicted to fit
    too_slow_for_full = {"full": 2 * CONTRACT.frame_ms}
    for _ in range(60):
        assert pol.observe(fast, predict=lambda r: too_slow_for_full.get(r.name, fast)) is None
    for _ in range(60):
        pol.observe(fast, predict=lambda r: fast)
    assert pol.rung.name == "full" and pol.changes == 8
    assert pol.jump(2).name == "no-wait" and pol.changes == 9


def test_policy_does_not_hold_start_up_against_the_first_rung():
    """Slow or late slots while the device starts (``startup_slots``) are not judged: the rung is
    judged by its own slots after start-up, and only after ``settle_slots`` of them."""
    rungs = build_ladder(nfe=1, guidance=3.0, valid_nfe=(1,))
    pol = DegradationPolicy(config=PolicyConfig(startup_slots=15, settle_slots=8), rungs=rungs)
    ok, slow = 0.6 * CONTRACT.frame_ms, 3 * CONTRACT.frame_ms
    for _ in range(15):
        assert pol.observe(slow, late=True) is None
    assert pol.ewma is None
    for _ in range(100):
        assert pol.observe(ok) is None
    assert pol.rung.name == "full" and pol.ewma == pytest.approx(ok)
    moves = [pol.observe(slow, late=True) for _ in range(5)]  # most of the last 8 slots late: left
    assert moves[:4] == [None] * 4 and moves[4].name == "cfg-off"
    again = DegradationPolicy(config=PolicyConfig(startup_slots=15, settle_slots=8), rungs=rungs)
    moves = [again.observe(slow, late=True) for _ in range(15 + 8)]
    assert moves[:-1] == [None] * 22 and moves[-1].name == "cfg-off"  # judged for 8 slots after start-up


def test_policy_steps_over_rungs_that_can_never_work():
    """Vision too slow to be waited for every frame (a rung that waits for it is predicted ``inf``,
    except ``vision/2``): climbing from ``vision/2`` goes past ``vision/4`` and ``vision/8`` to
    ``no-wait/4``, coming down from there goes past them too, and from ``no-wait`` it does not go down
    to ``cfg-off`` or ``full``, which could never work."""
    rungs = build_ladder(nfe=1, guidance=3.0, valid_nfe=(1,))
    names = [r.name for r in rungs]
    pol = DegradationPolicy(config=PolicyConfig(startup_slots=0, settle_slots=4, hold_slots=10), rungs=rungs)
    pol.start_at(names.index("vision/2"))
    fast, slow = 0.3 * CONTRACT.frame_ms, 0.7 * CONTRACT.frame_ms

    def predict(r):
        return math.inf if r.wait_for_vision and r.name != "vision/2" else fast

    while (moved := pol.observe(slow, late=True, predict=predict)) is None:
        pass
    assert moved.name == "no-wait/4"
    while (moved := pol.observe(fast, predict=predict)) is None:
        pass
    assert moved.name == "vision/2"
    while (moved := pol.observe(fast, predict=predict)) is None:
        pass
    assert moved.name == "no-wait"
    for _ in range(200):
        assert pol.observe(fast, predict=predict) is None
    # with nothing known about vision the next rung up is simply the next one
    while (moved := pol.observe(slow, late=True)) is None:
        pass
    assert moved.name == "vision/2"


def test_a_waiting_rung_whose_encode_slot_the_ring_cannot_hold_is_never_tried():
    """With a core kept busy here, vision took ~47 ms and the audio path ~14: a rung that waits for
    vision every other frame averages 38 ms a slot, but its encode slots take 61 ms, 28 past the
    frame, and the 20-ms cushion cannot hold that: the device ran dry on every encode (a run that
    went there had 61 underruns). Playing to a device, such a rung is predicted never to work, and
    the policy climbs from ``no-wait`` straight to ``no-wait/4``."""
    from plugin.live.policy import predict_ms

    rungs = build_ladder(nfe=1, guidance=3.0, valid_nfe=(1,))
    by = {r.name: r for r in rungs}
    device = EngineConfig(source="synthetic", sinks=("device",))  # a 20-ms cushion, 400-sample blocks
    null = EngineConfig(source="synthetic", sinks=("null",))
    roomy = EngineConfig(source="synthetic", sinks=("device:pulse",), cushion_ms=100)
    assert device.encode_slot_limit_ms == pytest.approx(CONTRACT.frame_ms + 20 - 400 / SR * 1000)  # 45 ms
    assert null.encode_slot_limit_ms == roomy.encode_slot_limit_ms == pytest.approx(1.9 * CONTRACT.frame_ms)
    busy, quiet = dict(vision=47.0, audio=14.0, prefeed=2.0), dict(vision=13.0, audio=9.0, prefeed=2.0)
    limit = device.encode_slot_limit_ms
    assert predict_ms(by["vision/2"], **busy, encode_slot_limit=limit) == math.inf
    assert predict_ms(by["vision/2"], **busy, encode_slot_limit=null.encode_slot_limit_ms) == 14 + 2 + 47 / 2
    assert predict_ms(by["no-wait/4"], **busy, encode_slot_limit=limit) == 16.0  # vision on its own thread
    assert predict_ms(by["full"], **quiet, encode_slot_limit=limit) == 24.0
    assert predict_ms(by["vision/8"], **quiet, encode_slot_limit=limit) == 9 + 2 + 13 / 8

    pol = DegradationPolicy(config=PolicyConfig(startup_slots=0, settle_slots=4), rungs=rungs)
    pol.start_at([r.name for r in rungs].index("no-wait"))
    while (moved := pol.observe(40.0, late=True,
                                predict=lambda r: predict_ms(r, **busy, encode_slot_limit=limit))) is None:
        pass
    assert moved.name == "no-wait/4"


def test_policy_tries_the_rung_below_now_and_then_and_backs_off():
    """On a rung that fits without room to spare (no slot late, none below ``low``) the policy tries
    the rung below every ``probe_holds`` × hold slots — its prediction, made from times measured on a
    pipelined rung, may be wrong — unless it could never work; a try that fails doubles the wait."""
    rungs = build_ladder(nfe=1, guidance=3.0, valid_nfe=(1,))
    names = [r.name for r in rungs]
    cfg = PolicyConfig(startup_slots=0, settle_slots=4, hold_slots=10, probe_holds=5)
    pol = DegradationPolicy(config=cfg, rungs=rungs)
    pol.start_at(names.index("no-wait"))
    middling, late = 0.7 * CONTRACT.frame_ms, 2 * CONTRACT.frame_ms
    pessimistic = {"full": late, "cfg-off": late}.get  # predicted not to fit, yet not impossible
    slots = 0
    while (moved := pol.observe(middling, predict=lambda r: pessimistic(r.name, middling))) is None:
        slots += 1
    assert moved.name == "cfg-off" and slots + 1 == 5 * 10
    while (moved := pol.observe(middling, late=True)) is None:  # it does not fit after all
        pass
    assert moved.name == "no-wait" and pol.hold == 20
    slots = 0
    while (moved := pol.observe(middling)) is None:
        slots += 1
    assert moved.name == "cfg-off" and slots + 1 == 5 * 20
    impossible = DegradationPolicy(config=cfg, rungs=rungs)
    impossible.start_at(names.index("no-wait"))
    for _ in range(1000):
        assert impossible.observe(middling, predict=lambda r: math.inf if r.wait_for_vision else middling) is None


def test_policy_limits_and_disabled():
    rungs = build_ladder(nfe=2, guidance=2.0, valid_nfe=(1, 2))
    pol = DegradationPolicy(config=PolicyConfig(startup_slots=0, max_rung=2), rungs=rungs)
    for _ in range(200):
        pol.observe(2 * CONTRACT.frame_ms)
    assert pol.level == 2 and pol.rung.name == "cfg-off"
    off = DegradationPolicy(config=PolicyConfig(enabled=False, start_rung=2), rungs=rungs)
    for _ in range(100):
        assert off.observe(2 * CONTRACT.frame_ms, late=True) is None
    assert off.rung.name == "cfg-off" and off.ewma == pytest.approx(2 * CONTRACT.frame_ms)
    with pytest.raises(EngineError, match="0 < low < high"):
        PolicyConfig(low=0.9, high=0.8)


def test_policy_takes_a_new_ladder_and_a_start_rung_through_its_methods():
    short = build_ladder(nfe=1, guidance=1.0, valid_nfe=(1,))  # no nfe-N, no cfg-off
    pol = DegradationPolicy(config=PolicyConfig(startup_slots=0), rungs=short)
    pol.start_at(99)
    assert pol.level == pol.top == len(short) - 1 and pol.changes == 0
    for _ in range(3):
        pol.observe(0.5 * CONTRACT.frame_ms)
    longer = build_ladder(nfe=4, guidance=3.0, valid_nfe=(1, 2, 4))  # the user raised NFE and ω
    pol.set_rungs(longer)
    assert pol.top == len(longer) - 1 and len(pol.slots_at) == len(longer)  # the new rungs are reachable
    assert pol.rung is longer[pol.level]
    capped = DegradationPolicy(config=PolicyConfig(max_rung=2), rungs=short)
    capped.set_rungs(longer)
    assert capped.top == 2
    with pytest.raises(ValueError, match="at least one rung"):
        capped.set_rungs([])


# --------------------------------------------------------------------------------------------------
# Real runs into PulseAudio
# --------------------------------------------------------------------------------------------------


def _tiny_run(cfg: EngineConfig) -> tuple[dict, dict[str, np.ndarray]]:
    """The engine run of a real-time test with the tiny model (in the child of ``in_fresh_process``:
    these runs keep pace only just on these shared cores, and what earlier tests left in the test
    process must not tilt them): its stats and per-chunk series."""
    from model.generator import load_generator

    engine = LiveEngine(config=cfg, generator=load_generator("tiny", device="cpu"))
    st = engine.run()
    return st, {k: engine.series(k) for k in ("chunk_samples", "glass_to_ear_ms", "device_queue_ms")}


def test_video_file_plays_continuously_and_the_recording_equals_what_was_played(
    pulse, monitor, tmp_path  # noqa: F811 - `monitor` is the fixture imported above
):
    """A 25-fps H.264 file (resampled to 30 fps by the capture thread), paced in real time, played
    into the null sink at half volume and recorded to a wav beside it."""
    video = encode_video(tmp_path / "clip.mp4", fps=25, seconds=4.0)
    rec = tmp_path / "rec.wav"
    cfg = EngineConfig(source=f"file:{video}", sinks=("device:pulse",), record=str(rec), duration_s=3.0,
                       volume=0.5, threads=2, cushion_ms=100)
    mark = monitor.mark()
    st, series = in_fresh_process(_tiny_run, cfg)
    played = monitor.since(mark)
    recorded = read(rec)
    counts = {k: st[k] for k in ("chunks", "skipped_slots", "fill_ins", "underruns")}
    print(f"\nvideo run: {json.dumps(counts)} g2e {st['glass_to_ear_ms']} compute {st['compute_ms']} "
          f"rungs {st['policy']['seconds_at']}")
    assert st["end_reason"] == "duration reached" and st["error"] is None
    lengths = series["chunk_samples"]  # a hop each, unless the ring cut one shorter
    assert recorded.shape[0] == lengths.sum() == st["chunks"] * HOP - st["cut_samples"]
    assert 80 <= st["chunks"] <= 95, st["chunks"]  # 3 s at 30 fps (± skipped slots / fill-ins)
    assert st["capture"]["repeated"] >= 10  # 25 → 30 fps repeats every 5th frame
    assert st["underruns_after_startup"] <= underrun_bound(st["chunks"])
    assert st["device_latency_ms"] == pytest.approx(2 * cfg.blocksize / SR * 1000, rel=0.05)  # PulseAudio
    g2e, queue = series["glass_to_ear_ms"], series["device_queue_ms"]
    # (the stats round the device's latency to 0.01 ms: an empty ring at a write shows 16.6667 against 16.67)
    assert g2e.size == st["chunks"] and np.all(g2e > queue) and np.all(queue >= st["device_latency_ms"] - 0.01)
    assert_continuous(recorded, lengths)
    device = st["sink_stats"]["sinks"][0]
    start = assert_recording_was_played(played, recorded, 0.5, device)
    # the cushion of silence came first (the monitor misses ≤ 450 samples of a new stream)
    assert start >= round(0.1 * SR) - 600 and not played[start - round(0.1 * SR) + 600:start].any()


def test_screen_of_an_xvfb_display(xvfb, pulse, monitor, tmp_path):  # noqa: F811
    picture = moving_picture(7, xvfb.width, xvfb.height)
    painter = xvfb.show_image(picture)
    rec = tmp_path / "screen.flac"
    try:
        cfg = EngineConfig(source="screen", sinks=("device:pulse", "null"), record=str(rec), duration_s=2.0,
                           threads=2, cushion_ms=100)
        mark = monitor.mark()
        st, series = in_fresh_process(_tiny_run, cfg)
        played = monitor.since(mark)
    finally:
        painter.terminate()
        painter.wait(timeout=10)
    recorded = read(rec)
    print(f"\nscreen run: chunks {st['chunks']} capture {st['capture']} g2e {st['glass_to_ear_ms']} "
          f"cut {st['cut_samples']} underruns {st['underruns']} ({st['underruns_after_startup']} after start-up) "
          f"skipped {st['skipped_slots']} fill-ins {st['fill_ins']} compute {st['compute_ms']} "
          f"rungs {st['policy']['seconds_at']}")
    assert st["source"] == "screen" and st["capture"]["captured"] >= 40
    # a live source: the ring may have cut a chunk shorter (audio.jitter), and says so
    lengths = series["chunk_samples"]
    assert lengths.size == st["chunks"] and HOP * st["chunks"] - lengths.sum() == st["cut_samples"]
    assert 50 <= st["chunks"] <= 65 and recorded.shape[0] == st["chunks"] * HOP - st["cut_samples"]
    assert [s["samples_written"] for s in st["sink_stats"]["sinks"]][1:] == [recorded.shape[0]] * 2
    assert_continuous(recorded, lengths)
    assert st["underruns_after_startup"] <= underrun_bound(st["chunks"])
    assert_recording_was_played(played, recorded, 1.0, st["sink_stats"]["sinks"][0])


def test_slow_vision_triggers_the_policy_without_growing_latency(pulse):
    """Every vision encode 60 ms slower than the real one (more than a frame): waiting for vision
    misses every deadline, so the policy pipelines it (``no-wait``: the audio path reuses the newest
    token); the audio stays continuous and the latency flat.  Run in a fresh process (timing-bound:
    tests/conftest.py ``in_fresh_process``), with the session's PulseAudio."""
    st, lag, age, ladder = in_fresh_process(_slow_vision_run)
    pol = st["policy"]
    print(f"\nslow vision: rungs {pol['seconds_at']} g2e {st['glass_to_ear_ms']} vision {st['vision_ms']} "
          f"audio {st['audio_path_ms']} skipped {st['skipped_slots']} fill-ins {st['fill_ins']} "
          f"underruns {st['underruns']} ({st['underruns_after_startup']} after start-up)")
    assert st["vision_ms"]["p50"] >= 60
    # it must reach no-wait (vision pipelined) and may go on to no-wait/4 or /8: those run the slow
    # vision thread less often, which is what keeps the audio path in time when these two shared
    # cores are slow (the vision thread takes the GIL and memory bandwidth from it on every encode)
    assert ladder.index(pol["rung"]) >= ladder.index("no-wait"), pol["rung"]
    assert pol["seconds_at"]["full"] < 1.5 and st["late_slots"] >= 3
    assert st["stale_slots"] > 2 * st["fresh_slots"]
    # the audio kept pace: a policy that still waited for vision would play ~60 of the 180 slots;
    # the start on `full` and a stall of these shared cores cost up to ~15 % (the engine drops
    # slots rather than lag: skipped_slots)
    assert st["chunks"] >= 0.8 * 180
    assert st["underruns_after_startup"] <= underrun_bound(st["chunks"])
    # no lag building up: glass-to-ear less the age of the token the sound followed (which the
    # rungs set on purpose: up to 8 frames on no-wait/8) stays flat
    half = lag.size // 2
    first, second = np.percentile(lag[:half], 95), np.percentile(lag[half:], 95)
    assert second <= first + 40, f"latency grew: p95 {first:.0f} → {second:.0f} ms (token age aside)"
    assert age.mean() >= 1.5  # the sound follows tokens at least a frame old: vision is the bottleneck


def test_a_rung_too_slow_for_the_machine_still_follows_the_picture(pulse):
    """Held on ``full`` (``max_rung=0``) with every encode 60 ms slower: the device ring is always low,
    so the engine postpones encodes to protect it — but by one cadence at most, never for good (it
    once kept its first token for the whole run: token age growing by 30 frames a second)."""
    st = in_fresh_process(_slow_vision_run, 0, 4.0)[0]
    age = st["token_age_frames"]
    print(f"\npinned to full: chunks {st['chunks']} token age {age} vision encoded {st['vision_encoded']} "
          f"underruns {st['underruns']}")
    assert st["policy"]["seconds_at"].keys() == {"full"} and st["chunks"] >= 8  # slow: a machine too slow for it
    assert st["vision_encoded"] >= 0.3 * st["chunks"]
    assert age["p95"] <= 12, age


def _slow_vision_run(max_rung: int | None = None, seconds: float = 6.0):
    """The engine run of the two tests above (in the child), starting on ``full`` with the policy
    free up to ``max_rung``: stats, lag and token-age series, the ladder."""
    from model.generator import load_generator

    generator = load_generator("tiny", device="cpu")
    ladder = [r.name for r in build_ladder(nfe=generator.nfe, guidance=generator.guidance,
                                           valid_nfe=generator.valid_nfe)]
    cfg = EngineConfig(source="synthetic", sinks=("device:pulse",), duration_s=seconds, threads=2, cushion_ms=100,
                       policy=PolicyConfig(auto_start=False, max_rung=max_rung))
    engine = LiveEngine(config=cfg, generator=SlowVision(generator, 0.06))
    st = engine.run()
    g2e = engine.series("glass_to_ear_ms")[30:]  # after the first second
    age = engine.series("token_age_frames")[30:]
    return st, g2e - age * 1000.0 / CONTRACT.fps, age, ladder


# --------------------------------------------------------------------------------------------------
# Control, memory, shutdown
# --------------------------------------------------------------------------------------------------


def _wait_chunks(engine: LiveEngine, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.stats()["chunks"] < n:
        assert engine.running, engine.error
        assert time.monotonic() < deadline, f"fewer than {n} chunks within {timeout} s"
        time.sleep(0.05)


def test_configure_reset_swap_and_restart_while_running(generator, tmp_path):
    rec = tmp_path / "control.wav"
    engine = LiveEngine(config=EngineConfig(source="synthetic", sinks=("null",), record=str(rec), threads=2),
                        generator=generator)
    engine.start()
    try:
        _wait_chunks(engine, 10)
        engine.configure(guidance=1.0).result(5)
        assert engine.stats()["cfg"] == 1.0 and "cfg-off" not in engine.stats()["policy"]["ladder"]
        with pytest.raises(LivefoleyError, match="NFE 3 is not supported.*valid values: 1, 2, 4"):
            engine.configure(nfe=3).result(5)
        engine.configure(nfe=2).result(5)
        st = engine.stats()
        assert st["nfe"] == 2 and "nfe-1" in st["policy"]["ladder"]
        engine.configure(volume=0.5)
        with pytest.raises(SinkError, match="volume must be between 0 and 4"):
            engine.configure(volume=9)
        engine.reset().result(5)
        n = engine.stats()["chunks"]
        engine.configure(model=generator).result(10)  # a loaded generator: a fresh stream
        _wait_chunks(engine, n + 10)
        with pytest.raises(LivefoleyError, match="neither a preset"):
            engine.configure(model=str(tmp_path / "no-such-model")).result(30)
        assert engine.running
    finally:
        engine.stop()
    st = engine.stats()
    assert (st["resets"], st["model_swaps"], st["volume"], st["error"]) == (1, 1, 0.5, None)
    assert st["end_reason"] == "stopped"
    assert_continuous(read(rec)[: (n - 1) * HOP])  # up to the swap (which restarts the stream)
    assert read(rec).shape[0] == st["chunks"] * HOP
    # started again: the loaded model is kept
    engine.start()
    try:
        _wait_chunks(engine, 15)
    finally:
        engine.stop()
    again = engine.stats()
    assert again["chunks"] >= 15 and again["resets"] == 0 and read(rec).shape[0] == again["chunks"] * HOP


def test_on_a_vision_cadence_the_recording_is_what_eval_emulates(tiny, tmp_path):  # noqa: F811
    """On ``vision/2`` the engine encodes every other frame and the token of each stands for two
    slots: its recording is the model's offline output for ``Generator.tokenize(frames, every=2)``,
    which ``livefoley eval --vision-every 2`` measures — not the output for every frame.  (The tiny
    model with perturbed weights: a fresh one's zero-initialised output layers ignore the condition.)"""
    from capture.synthetic.source import SyntheticSource

    n = 24
    ladder = build_ladder(nfe=tiny.nfe, guidance=tiny.guidance, valid_nfe=tiny.valid_nfe)
    rung = next(r for r in ladder if r.name == "vision/2")
    rec = tmp_path / "rec.wav"
    cfg = EngineConfig(source="synthetic:3", source_options={"realtime": False, "size": (320, 180)},
                       sinks=("null",), record=str(rec), duration_s=n / CONTRACT.fps, threads=2,
                       policy=PolicyConfig(start_rung=ladder.index(rung), enabled=False))
    st = LiveEngine(config=cfg, generator=tiny).run()
    assert st["error"] is None and st["chunks"] == n and st["vision_encoded"] == n // 2
    recorded = read(rec)

    with SyntheticSource(seed=3, size=(320, 180), realtime=False) as source:  # the frames the engine saw
        clip = [source.read().image for _ in range(n)]
    nfe = rung.nfe or tiny.nfe
    guidance = tiny.guidance if rung.guidance is None else rung.guidance
    want = tiny.generate_from_tokens(tiny.tokenize(clip, every=2), seed=cfg.seed, nfe=nfe, guidance=guidance)
    # not bit-exact: DINOv2 in bf16 on a batch of frames against one at a time (test_generator.py)
    np.testing.assert_allclose(recorded, want.T, atol=1e-4, rtol=1e-3)
    every_frame = tiny.generate_from_tokens(tiny.tokenize(clip), seed=cfg.seed, nfe=nfe, guidance=guidance)
    assert np.abs(every_frame.T - recorded).max() > 1e-3


def test_no_frame_offered_while_vision_is_paused_is_encoded_before_the_pause_ends(generator):
    """A reset or a model swap pauses the vision thread: a frame the dispatcher offers meanwhile
    waits, so it is never encoded with a session being reset or closed (CI once saw the vision
    thread step a tokenizer whose stream had just been closed by a swap)."""
    from plugin.live.vision import VisionThread

    vision = VisionThread(threads=1, on_encoded=lambda ms: None)
    try:
        with generator.stream(seed=0) as session:
            vision.set_session(session)
            frame = moving_picture(0, 320, 180)
            with vision.paused():
                vision.offer(frame)
                time.sleep(0.5)
                assert vision.newest() == (None, None)
            deadline = time.monotonic() + 30
            while vision.newest()[0] is None:
                assert time.monotonic() < deadline, "the frame offered during the pause was never encoded"
                time.sleep(0.01)
            vision.quiesce()
    finally:
        vision.close()


def _run_for_memory(generator, seconds: float, leak: list | None = None) -> tuple[list[float], np.ndarray]:
    """An accelerated run (the synthetic world rendered as fast as possible, null sink, the cheapest
    rung so that most slots take the audio path only) sampling RSS and Python's allocated blocks
    every 30 chunks while it runs; returns the RSS samples (MiB) and the ``(chunk, blocks)`` samples.
    ``leak``: a list the audio step appends one object to per slot (the check's own check).

    (``sys.getallocatedblocks`` rather than ``gc.get_objects``: the latter, called while other
    threads build tuples, can hand out a tuple under construction and crash them — a CPython bug.)"""
    ladder = [r.name for r in build_ladder(nfe=generator.nfe, guidance=generator.guidance,
                                           valid_nfe=generator.valid_nfe)]
    cfg = EngineConfig(source="synthetic", source_options={"realtime": False, "size": (320, 180)},
                       sinks=("null",), duration_s=seconds, threads=2,
                       policy=PolicyConfig(start_rung=ladder.index("vision/8"), enabled=False))
    engine = LiveEngine(config=cfg, generator=generator)
    if leak is not None:
        step = engine._audio_step
        engine._audio_step = lambda session: (leak.append(object()), step(session))[1]
    total = round(seconds * CONTRACT.fps)
    samples = np.zeros((total // 30 + 1, 2), np.int64)  # preallocated: the sampling allocates nothing
    n = 0
    engine.start()
    try:
        deadline = time.monotonic() + seconds * 3
        while engine.running and time.monotonic() < deadline:
            chunks = engine.counts["chunks"]  # a dict read: stats() would compute percentiles every 5 ms
            if chunks >= 30 * (n + 1) and chunks < total and n < samples.shape[0]:
                samples[n] = chunks, sys.getallocatedblocks()
                n += 1
            time.sleep(0.005)
        engine.wait(seconds * 3)
    finally:
        engine.stop()
    st = engine.stats()
    assert st["end_reason"] == "duration reached" and st["chunks"] == total
    return engine.series("rss_mb").tolist(), samples[:n]


def blocks_per_slot(samples: np.ndarray) -> float:
    """The growth of Python's allocated blocks per slot over the second half of a run: the median of
    the slopes between every pair of samples there (Theil–Sen: a burst of objects in flight at one
    sample moves it little).  The first half is left out: caches (numpy's, torch's, the
    interpreter's) still fill there, up to ~1 block a slot, then stop."""
    late = samples[samples[:, 0] >= samples[-1, 0] / 2].astype(np.float64)
    i, j = np.triu_indices(late.shape[0], k=1)
    return float(np.median((late[j, 1] - late[i, 1]) / (late[j, 0] - late[i, 0])))


# measured (tiny, 30-s accelerated run after a 20-s one in the same process): 0.13–0.3 blocks a slot
# without a leak, 1.1–1.3 with one object leaked per slot (2026-12-06)
LEAK_PER_SLOT = 0.6


def test_memory_stays_flat(generator):
    _run_for_memory(generator, 20.0)  # warms the process's caches (when this test runs alone)
    rss, samples = _run_for_memory(generator, 30.0)
    slope = blocks_per_slot(samples)
    print(f"\nmemory: RSS samples {[round(r, 1) for r in rss]} MiB, allocated blocks "
          f"{samples[:, 1] - samples[0, 1]}, {slope:.2f} per slot in the second half")
    assert len(rss) >= 3
    assert rss[-1] - rss[0] < 8.0, f"RSS grew {rss[-1] - rss[0]:.1f} MiB over {len(rss)} samples"
    assert slope < LEAK_PER_SLOT, samples


def test_the_memory_check_catches_a_leak_of_one_object_per_slot(generator):
    leak: list = []
    _, samples = _run_for_memory(generator, 30.0, leak=leak)
    slope = blocks_per_slot(samples)
    print(f"\nmemory with a leak of one object per slot: {slope:.2f} blocks per slot")
    assert len(leak) >= 0.9 * 30 * CONTRACT.fps and slope >= LEAK_PER_SLOT, samples


@pytest.mark.slow
def test_memory_stays_flat_over_ten_minutes_of_stream(generator):
    rss, samples = _run_for_memory(generator, 600.0)
    slope = blocks_per_slot(samples)
    print(f"\nmemory, 10 min: RSS {rss[0]:.1f} → {rss[-1]:.1f} MiB (max {max(rss):.1f}), "
          f"{slope:.3f} blocks per slot in the second half")
    later = rss[len(rss) // 4:]
    assert max(later) - min(later) < 10.0, rss
    assert slope < LEAK_PER_SLOT / 3, samples  # 20× longer, caches long full: a leak of 0.2 a slot shows


def test_sigint_and_sigterm_leave_complete_recordings(tmp_path):
    """Two real ``livefoley live`` processes, one interrupted with SIGINT (exit 130), one terminated
    with SIGTERM (exit 143 = 128 + 15, as a shell reports it): both leave a complete, readable recording
    of every chunk they made."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / f"{sig.name}.flac"
        stats = tmp_path / f"{sig.name}.json"
        cmd = [sys.executable, "-m", "plugin.cli", "live", "--source", "synthetic", "--model", "tiny",
               "--sink", "null", "--record", str(out), "--threads", "1", "--status", "--json", str(stats)]
        procs[sig] = (subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True), out, stats)
    for sig, (proc, _, _) in procs.items():
        assert proc.stderr is not None
        log = []
        while True:  # wait until it has played a little
            line = proc.stderr.readline()
            assert line, "".join(log)
            log.append(line)
            if line.startswith("live ") and float(line.split()[1].rstrip("s")) >= 1.0:
                break
        proc.send_signal(sig)
    for sig, (proc, out, stats) in procs.items():
        rest = proc.stderr.read()
        rc = proc.wait(timeout=60)
        assert rc == (130 if sig == signal.SIGINT else 143), rest
        data = read(out)
        st = json.loads(stats.read_text())
        assert st["end_reason"] == "stopped" and st["error"] is None
        assert data.shape[0] == st["chunks"] * HOP and st["chunks"] >= 20
        assert_continuous(data)
        assert "glass-to-ear" in rest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SIGINT.flac", "SIGINT.json", "SIGTERM.flac",
                                                          "SIGTERM.json"]


def test_cli_help_and_bad_input(capsys):
    from plugin.cli import build_parser, main

    with pytest.raises(SystemExit):
        build_parser().parse_args(["live", "--help"])
    text = capsys.readouterr().out
    for part in ("screen:X,Y,W,H", "synthetic[:SEED]", "device:NAME_OR_INDEX", "file:PATH.wav|.flac",
                 "--record", "Examples:", "livefoley live --source screen"):
        assert part in text
    cases = [
        (["--source", "nosuch:thing"], "unknown source 'nosuch:thing'"),
        (["--source", "synthetic", "--sink", "speakers"], "unknown sink 'speakers'"),
        (["--source", "synthetic", "--record", "out.mp3"], r"extension must be .wav or .flac"),
        (["--source", "synthetic", "--duration", "0"], "--duration must be a positive number"),
        (["--source", "synthetic", "--volume", "7"], "volume must be between 0 and 4"),
        (["--source", "synthetic", "--sink", "null", "--model", "no/such/folder"], "neither a preset"),
    ]
    for args, message in cases:
        t0 = time.monotonic()
        assert main(["live", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.startswith("livefoley: error:"), err
        assert time.monotonic() - t0 < 10  # rejected before any model is loaded


def test_optimize_builds_the_vision_for_the_engines_thread_counts(tmp_path, monkeypatch):
    """`live --optimize`: before the first sound the engine gives DINOv2 the fastest compiled graph
    for every thread count vision runs with (all N on the worker, ⌊N/2⌋ on the vision thread), or
    keeps the eager path for a count where none beats it, and times the int8 audio path at the
    worker's counts; the next start (a new process loads the model afresh) loads what was chosen,
    compiles nothing and times nothing."""
    import model.optimize
    from model.generator import load_generator

    monkeypatch.setenv("LIVEFOLEY_CACHE_DIR", str(tmp_path))  # this CPU measured for the first time
    cfg = EngineConfig(source="synthetic", source_options={"realtime": False, "size": (320, 180)},
                       sinks=("null",), duration_s=1.0, threads=2, optimize=True)
    before = torch.get_num_threads()
    for start in ("first", "later"):
        if start == "later":
            monkeypatch.setattr(model.optimize, "_package",
                                lambda *a, **k: pytest.fail("a later start compiled the vision again"))
        gen = load_generator("tiny", device="cpu")
        engine = LiveEngine(config=cfg, generator=gen)
        try:
            engine.start()
            engine.wait(60)
        finally:
            engine.stop()
            torch.set_num_threads(before)
        backbone = gen.model.tokenizer.backbone
        assert set(backbone.fast_choice) == {1, 2}
        assert all(c["cached"] == (start == "later") for c in backbone.fast_choice.values())
        assert set(backbone.fast_features or {}) == {n for n, c in backbone.fast_choice.items() if c["path"] != "eager"}
        # the audio path's layers timed at the worker's counts (all 2 threads waiting, 1 pipelined)
        assert set(gen.audio_choice["ms"]) == {1, 2} and gen.audio_choice["path"] in ("eager", "int8")
        assert gen.audio_choice["cached"] == (start == "later")  # remembered, not timed again
        st = engine.stats()
        assert st["end_reason"] == "duration reached" and st["chunks"] == CONTRACT.fps
