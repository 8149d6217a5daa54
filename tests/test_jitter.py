"""The device ring's level control (audio/jitter.py) against a simulated sound card: clock drift of
±0.5 %, bursty and jittery producers, a stalled producer — ten minutes of stream in milliseconds,
without PulseAudio.  (The engine's use of it on a real PulseAudio sink: tests/test_engine.py.)"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from audio.jitter import Action, LevelTarget, RingLedger, shorten

SR, HOP, BLOCK, CUSHION = 48_000, 1600, 400, 960  # the engine's defaults: 400-sample blocks, 20 ms cushion
MINUTES_10 = 18_000  # slots


@dataclass
class Run:
    levels: list[int] = field(default_factory=list)  # ring level at each write (samples)
    underrun_times: list[float] = field(default_factory=list)
    silence: int = 0  # samples of silence the device inserted
    fill_ins: int = 0
    trims: int = 0
    cut: int = 0  # samples taken out of chunks
    topped_up: int = 0  # samples written ahead before the writes moved later

    @property
    def lv(self) -> np.ndarray:
        return np.asarray(self.levels)


def simulate(arrivals, *, drift: float = 0.0, fill_in: bool = True, cut: bool = False,
             top_up: dict[int, int] | None = None) -> Run:
    """A sound card pulling ``BLOCK`` samples every ``BLOCK / (SR·(1 + drift))`` s (``drift`` > 0:
    it plays faster than the frames come) from a ring that the engine's slot loop feeds: per frame
    ``(index, arrival time)``, account → trim or write a hop → maybe a fill-in → after the slots in
    ``top_up`` (index: samples the writes are about to move later), what :meth:`RingLedger.top_up`
    says.  The ring starts with ``CUSHION`` samples of silence and the device with the first chunk,
    as the engine does."""
    ring = RingLedger(LevelTarget(cushion=CUSHION, hop=HOP, blocksize=BLOCK, drift_window=60), fill_in=fill_in,
                      cut=cut)
    run, level, period = Run(), CUSHION, BLOCK / (SR * (1 + drift))
    next_callback: float | None = None
    last = None
    for index, t in arrivals:
        while next_callback is not None and next_callback <= t:  # the device plays up to now
            if level >= BLOCK:
                level -= BLOCK
            else:
                run.silence += BLOCK - level
                run.underrun_times.append(next_callback)
                level = 0
            next_callback += period
        gap = 0 if last is None else index - last - 1
        last = index
        ring.account(underrun_samples=run.silence, skipped=gap)
        if ring.trim_now():
            run.trims += 1
            continue
        n = ring.cut_now()
        run.cut += n
        run.levels.append(level)
        action = ring.after_write(level)
        level += HOP - n
        if next_callback is None:
            next_callback = t  # the device starts with the first chunk
        if action is Action.FILL_IN:
            level += HOP
            run.fill_ins += 1
        if top_up and index in top_up:
            n = ring.top_up(top_up[index])
            level += n
            run.topped_up += n
    return run


def steady(n: int = MINUTES_10) -> list[tuple[int, float]]:
    return [(k, k / 30) for k in range(n)]


def test_a_steady_producer_and_clock_keep_the_cushion_and_touch_nothing() -> None:
    run = simulate(steady())
    assert run.fill_ins == run.trims == run.silence == 0
    assert run.lv.max() <= CUSHION


@pytest.mark.parametrize("drift", [+0.005, -0.005], ids=["device-fast", "device-slow"])
def test_half_a_percent_of_clock_drift_for_ten_minutes(drift: float) -> None:
    run = simulate(steady(), drift=drift)
    expected = abs(drift) * MINUTES_10  # hops the clocks drift apart in ten minutes (90)
    assert run.silence == 0, "the ring never runs dry: the lost hops come from fill-ins, not underruns"
    if drift > 0:  # the device wants more than the frames give: one fill-in per hop of drift
        assert run.trims == 0 and abs(run.fill_ins - expected) <= 5
        assert run.lv.max() <= CUSHION + HOP
    else:  # the frames give more than the device plays: one trim per hop, the lag stays bounded
        assert run.fill_ins == 0 and abs(run.trims - expected) <= 5
        assert run.lv.max() <= CUSHION + 2 * HOP
        assert np.median(run.lv[MINUTES_10 // 10:]) <= CUSHION + HOP + BLOCK  # no creeping lag


@pytest.mark.parametrize("drift", [+0.005, -0.005], ids=["device-fast", "device-slow"])
def test_with_cuts_clock_drift_is_taken_out_of_the_chunks(drift: float) -> None:
    """The live engine's ring (``cut`` on): a slow device's surplus leaves as short cuts inside chunks
    (under a hop each) instead of whole skipped slots; the level stays nearer the aim."""
    run = simulate(steady(), drift=drift, cut=True)
    expected = abs(drift) * MINUTES_10 * HOP  # samples the clocks drift apart in ten minutes
    assert run.silence == 0
    if drift > 0:
        assert run.cut == 0 and abs(run.fill_ins * HOP - expected) <= 5 * HOP
    else:
        assert run.fill_ins == 0 and abs(run.trims * HOP + run.cut - expected) <= 2 * HOP
        assert np.median(run.lv[MINUTES_10 // 10:]) <= CUSHION + 2 * BLOCK  # a hop trim waits for CUSHION + HOP
        assert run.lv.max() <= CUSHION + HOP


def test_a_write_phase_moved_earlier_is_cut_out_within_seconds() -> None:
    """From slot 300 each chunk is written 25 ms earlier in its frame (the engine pipelined vision):
    the ring sits 25 ms higher for good, less than a hop, so no trim takes it out; cuts do, within a
    few seconds, and nothing runs dry."""
    arrivals = [(k, k / 30 - (0.025 if k >= 300 else 0.0)) for k in range(1800)]
    plain, cut = simulate(arrivals), simulate(arrivals, cut=True)
    assert plain.trims == cut.trims == 0 and plain.silence == cut.silence == 0 and cut.fill_ins == 0
    shift = 0.025 * SR
    assert np.median(plain.lv[600:]) - np.median(plain.lv[:300]) >= shift - BLOCK  # stays high
    assert 0.5 * shift <= cut.cut <= shift + BLOCK
    assert np.median(cut.lv[600:]) - np.median(cut.lv[:300]) <= BLOCK  # back near the aim in 10 s


@pytest.mark.parametrize("later_ms", [25, 30])  # more than the 20-ms cushion
def test_a_write_phase_moved_later_is_written_ahead_and_does_not_run_dry(later_ms: int) -> None:
    """From slot 300 each chunk is written later in its frame (a pipelined rung gave way to one that
    waits for vision: the chunk comes after the encode).  Unprepared, the ring runs dry there (an
    underrun, the device's silence); topped up after slot 299 by what ``top_up`` says, it does not,
    and the level after the move is back at the aim (no lasting lag)."""
    later = later_ms * SR // 1000
    arrivals = [(k, k / 30 + (later / SR if k >= 300 else 0.0)) for k in range(900)]
    plain = simulate(arrivals, cut=True)
    assert plain.silence > 0 and min(plain.underrun_times) > 299 / 30
    topped = simulate(arrivals, cut=True, top_up={299: later})
    assert topped.silence == 0 and topped.fill_ins == 0
    assert later <= topped.topped_up <= later + CUSHION
    assert topped.lv[300:].min() >= CUSHION - BLOCK  # the first late writes still find (about) the cushion
    assert np.median(topped.lv[600:]) <= CUSHION + BLOCK  # and no lasting lag
    steady_run = simulate(steady(900), cut=True, top_up={299: 0})
    assert steady_run.topped_up == 0  # nothing moves: nothing written ahead


def test_top_up_is_zero_when_the_ring_holds_enough_and_at_most_a_hop() -> None:
    ring = RingLedger(LevelTarget(cushion=CUSHION, hop=HOP, blocksize=BLOCK))
    assert ring.top_up(960) == 0  # nothing written yet: nothing known
    for _ in range(8):
        ring.after_write(CUSHION + 2000)
    assert ring.top_up(960) == 0  # 2000 samples above the cushion already
    for _ in range(8):
        ring.after_write(CUSHION)
    assert ring.top_up(960) == 960 and ring.top_up(5000) == HOP and ring.top_up(100) == 0
    assert ring.top_up(300) == 300 and ring.top_up(0) == 0


def test_shorten_joins_the_two_sides_without_a_gap_or_a_click() -> None:
    t = np.arange(HOP) / SR
    chunk = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)]).astype(np.float32)
    out = shorten(chunk, 480)
    assert out.shape == (2, HOP - 480) and out.dtype == np.float32
    a = (HOP - 480 - 240) // 2
    assert np.array_equal(out[:, :a], chunk[:, :a]) and np.array_equal(out[:, a + 240:], chunk[:, a + 480 + 240:])
    # a 440-Hz tone moves 2π·440·0.01 s = 4.4π in phase: the crossfade stays within the tone's range
    assert np.abs(out).max() <= np.abs(chunk).max() + 1e-6
    assert np.abs(np.diff(out, axis=-1)).max() <= 1.5 * np.abs(np.diff(chunk, axis=-1)).max()
    assert shorten(chunk, 0) is chunk
    with pytest.raises(ValueError, match="cannot take"):
        shorten(chunk, HOP)


def test_bursty_producer_frames_in_pairs() -> None:
    arrivals = [(k, (k // 2) * 2 / 30 + 0.001 * (k % 2)) for k in range(9000)]
    run = simulate(arrivals)
    assert run.silence == 0 and run.fill_ins == 0 and run.trims == 0
    assert run.lv.max() <= CUSHION + HOP  # the pair's second chunk sits a hop higher, no more


def test_jittery_producer() -> None:
    rng = np.random.default_rng(0)
    arrivals = sorted(((k, k / 30 + rng.uniform(0, 0.025)) for k in range(9000)), key=lambda a: a[1])
    run = simulate(arrivals)
    assert run.silence == 0 and run.trims == 0
    assert run.lv.max() <= CUSHION + HOP


def test_a_stalled_producer_costs_silence_during_the_stall_only_and_no_lasting_lag() -> None:
    before = simulate(steady(9000))
    arrivals = [(k, k / 30) for k in range(9000) if not 300 <= k < 330]  # one second without frames
    run = simulate(arrivals)
    assert run.silence > 0 and all(10.0 <= t < 11.0 + 1 / 30 for t in run.underrun_times)
    assert run.trims == 0 and run.fill_ins == 1  # the cushion the stall used up is written again
    after = run.lv[300 + 60:]  # two seconds after the stall on
    assert after.max() <= CUSHION + HOP // 2
    assert np.median(after) - np.median(before.lv) < HOP / 2


def test_a_producer_that_comes_back_late_plays_on_without_trimming_good_audio() -> None:
    # frames stop for half a second and then keep coming half a second late (none are skipped):
    # the device played silence meanwhile; the ring's level is normal again, so nothing is trimmed
    arrivals = [(k, k / 30 + (0.5 if k >= 300 else 0.0)) for k in range(9000)]
    run = simulate(arrivals)
    assert run.silence > 0 and run.trims == 0
    assert run.lv[360:].max() <= CUSHION + HOP


def test_without_fill_ins_a_fast_device_is_fed_by_underruns() -> None:
    run = simulate(steady(), drift=+0.005, fill_in=False)
    assert run.fill_ins == 0 and run.silence > 0  # what `fill_in` buys, measured


def test_level_target_is_checked() -> None:
    with pytest.raises(ValueError, match="hop > 0"):
        LevelTarget(cushion=960, hop=0, blocksize=400)
