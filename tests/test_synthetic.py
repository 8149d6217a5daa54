"""The synthetic arcade world: determinism, ground truth (event onsets, pan, visibility, quiet
stretches), the ``synthetic:SEED`` capture source and ``livefoley synth``."""

from __future__ import annotations

import json
import time

import av
import numpy as np
import pytest

from audio.contract import CONTRACT
from capture import CaptureError, Frame, open_source
from capture.synthetic import World, render_clip
from capture.synthetic.clips import derive_seed, load_events
from capture.synthetic.sound import EVENT_TYPES, Engine, EventSynth, OverlapBuffer, Timbre, soft_limit
from plugin.cli import main
from plugin.commands.synth import clip_lengths

HOP = CONTRACT.hop
SR = CONTRACT.sample_rate


def play(seed: int, n: int, *, size=(64, 36), render: bool = False):
    """Step a world ``n`` frames: (world, frames or [], mix (2, n·hop), event stem (2, n·hop))."""
    world = World(seed, width=size[0], height=size[1])
    frames, mix, stem = [], [], []
    for _ in range(n):
        frame, chunk, _ = world.step(render=render)
        if render:
            frames.append(frame)
        mix.append(chunk)
        stem.append(world.last_events_audio.copy())
    return world, frames, np.concatenate(mix, axis=1), np.concatenate(stem, axis=1)


@pytest.fixture(scope="module")
def minute():
    """One minute of seed 2, sound and events only (no drawing)."""
    return play(2, 60 * CONTRACT.fps)


def isolated(events, frames_before: int):
    """Events with no other event in the ``frames_before`` frames before them (nor on their frame)."""
    out = []
    for ev in events:
        k = ev["frame"]
        others = [e for e in events if e is not ev and k - frames_before <= e["frame"] <= k]
        if not others:
            out.append(ev)
    return out


# ------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_the_same_frames_audio_and_events():
    a = render_clip(5, 4.0, width=96, height=54)
    b = render_clip(5, 4.0, width=96, height=54)
    assert a[0].shape == (120, 54, 96, 3) and a[0].dtype == np.uint8
    assert a[1].shape == (2, 120 * HOP) and a[1].dtype == np.float32
    assert np.array_equal(a[0], b[0])
    assert np.array_equal(a[1], b[1])
    assert a[2] == b[2] and len(a[2]) > 0


def test_different_seeds_look_and_sound_different():
    worlds = [World(s, width=96, height=54) for s in range(6)]
    firsts = [w.step()[0].astype(np.int16) for w in worlds]
    for i in range(6):
        for j in range(i + 1, 6):
            assert np.abs(firsts[i] - firsts[j]).mean() > 3, (i, j)
    assert len({w.style.palette.bg_top for w in worlds}) == 6
    assert len({w.style.palette.objects for w in worlds}) == 6
    assert len({w.style.scene for w in worlds}) >= 2
    audios = [np.concatenate([w.step(render=False)[1] for _ in range(30)], axis=1) for w in worlds]
    for i in range(1, 6):
        assert not np.allclose(audios[0], audios[i])


def test_drawing_does_not_change_the_game():
    drawn = play(9, 300, render=True)
    blind = play(9, 300, render=False)
    assert drawn[0].events == blind[0].events and drawn[0].events
    assert np.array_equal(drawn[2], blind[2])


def test_other_noise_draws_change_only_the_noise():
    """``noise_seed`` (the codec yardstick's floor): same events, quiet stretches and tones; the
    Gaussian noise is another draw, so the waveforms differ while the spectral envelope stays."""
    from capture.synthetic import world_audio

    ref, events, quiet = world_audio(7, 300)
    other, events2, quiet2 = world_audio(7, 300, noise_seed=1)
    assert events2 == events and quiet2 == quiet and events
    assert np.array_equal(world_audio(7, 300, noise_seed=1)[0], other)  # seeded: reproducible
    assert not np.allclose(other, ref, atol=1e-3)

    def band_db(x):  # 1/3-s band energies of the mid channel, 8 octave bands from 47 Hz
        frames = x.mean(0)[: len(x[0]) // 16000 * 16000].reshape(-1, 16000)
        power = np.abs(np.fft.rfft(frames * np.hanning(16000), axis=1)) ** 2
        edges = 16000 / 48000 * 47 * 2.0 ** np.arange(10)
        bands = [power[:, int(a):int(b)].sum(1) for a, b in zip(edges, edges[1:], strict=False)]
        return 10 * np.log10(np.stack(bands, 1) + 1e-12)

    assert np.median(np.abs(band_db(other) - band_db(ref))) < 2.0
    assert np.corrcoef(other[0], ref[0])[0, 1] < 0.99  # the noise really is another draw


def test_game_is_the_same_at_any_resolution_with_the_same_aspect():
    assert play(4, 300, size=(64, 36))[0].events == play(4, 300, size=(320, 180))[0].events


# ------------------------------------------------------------------------------------ ground truth
def test_events_are_logged_with_normalised_fields(minute):
    world = minute[0]
    events = world.events
    assert {e["type"] for e in events} == set(EVENT_TYPES)
    assert [e["frame"] for e in events] == sorted(e["frame"] for e in events)
    for e in events:
        assert set(e) == {"frame", "time_s", "type", "x", "y", "size", "strength"}
        assert e["frame"] >= 1 and e["time_s"] == pytest.approx(e["frame"] / CONTRACT.fps)
        assert 0.0 <= e["x"] <= 1.0 and 0.0 <= e["y"] <= 1.0
        assert 0.0 < e["size"] < 0.2 and 0.0 <= e["strength"] <= 1.0
    impacts = [e for e in events if e["type"] == "impact"]
    # an impact happens at a wall: x or y is on the frame's border
    assert all(min(e["x"], 1 - e["x"], e["y"], 1 - e["y"]) == 0.0 for e in impacts)


def test_event_sound_starts_exactly_on_its_frame(minute):
    world, _, mix, stem = minute
    # the event layer is silent before an isolated event and sounds from sample frame·1600 on
    exact = [e for e in world.events if not stem[:, e["frame"] * HOP - HOP : e["frame"] * HOP].any()]
    assert len(exact) >= 15
    for e in exact:
        on = e["frame"] * HOP
        assert np.abs(stem[:, on]).max() > 0, e
    # in the mix (engine + ambience + limiter included): the envelope rises within a few samples
    env = np.abs(mix).max(axis=0)
    detected = 0
    for e in isolated(world.events, 20):
        on = e["frame"] * HOP
        pre, peak = env[on - 800 : on].max(), env[on : on + 4800].max()
        if peak < 3 * pre:  # a soft sound over a loud bed: not a clean test case
            continue
        thr = pre + 0.2 * (peak - pre)
        onset = on - 400 + int(np.argmax(env[on - 400 :] > thr))
        assert on <= onset <= on + 12, (e, onset - on)
        detected += 1
    assert detected >= 8


def test_pan_is_constant_power_by_screen_x(minute):
    world, _, mix, stem = minute
    frames = [e["frame"] for e in world.events]
    exact = 0
    for e in world.events:  # the event layer alone: L = cos θ · s, R = sin θ · s, θ = x·π/2
        on = e["frame"] * HOP
        if stem[:, on - HOP : on].any() or frames.count(e["frame"]) > 1:
            continue  # another sound is in the window
        theta = e["x"] * np.pi / 2
        seg = stem[:, on : on + HOP]
        np.testing.assert_allclose(seg[0] * np.sin(theta), seg[1] * np.cos(theta), atol=1e-6)
        exact += 1
    assert exact >= 15
    lefts = rights = 0
    for e in isolated(world.events, 20):  # the mix: the louder channel is the event's side
        on = e["frame"] * HOP
        left, right = (mix[:, on : on + HOP] ** 2).sum(axis=1)
        if e["x"] < 0.35:
            assert left > 1.5 * right, e
            lefts += 1
        elif e["x"] > 0.65:
            assert right > 1.5 * left, e
            rights += 1
    assert lefts >= 2 and rights >= 2


def test_quiet_stretches_exist_and_are_quieter(minute):
    world, _, mix, _ = minute
    spans = world.quiet_spans
    n_quiet = sum(b - a for a, b in spans)
    assert n_quiet >= 3 * CONTRACT.fps  # at least 3 s of a minute
    quiet = np.zeros(mix.shape[1] // HOP, bool)
    for a, b in spans:
        quiet[a:b] = True
    busy = np.zeros_like(quiet)
    for e in world.events:
        assert not quiet[e["frame"]], e
        busy[e["frame"] : e["frame"] + 3] = True
    frame_power = (mix.reshape(2, -1, HOP) ** 2).mean(axis=(0, 2))
    quiet_db = 10 * np.log10(frame_power[quiet].mean())
    busy_db = 10 * np.log10(frame_power[busy].mean())
    assert busy_db - quiet_db > 12, (busy_db, quiet_db)
    assert quiet_db < -30


def test_audio_peaks_stay_below_one(minute):
    mix = minute[2]
    assert mix.dtype == np.float32 and mix.shape[0] == 2
    assert np.abs(mix).max() < 1.0
    assert np.abs(soft_limit(np.array([-5.0, -0.9, 0.3, 0.9, 50.0]))).max() <= 0.99
    np.testing.assert_array_equal(soft_limit(np.array([0.1, -0.5, 0.79])), [0.1, -0.5, 0.79])


def test_every_event_is_visible_on_its_frame():
    world, frames, _, _ = play(4, 20 * CONTRACT.fps, size=(160, 90), render=True)
    assert len(world.events) >= 15
    for e in world.events:
        k, x, y = e["frame"], int(e["x"] * 159), int(e["y"] * 89)
        win = (slice(max(0, y - 3), y + 4), slice(max(0, x - 3), x + 4))
        change = np.abs(frames[k][win].astype(np.int16) - frames[k - 1][win].astype(np.int16)).mean()
        assert change > 15, (e, change)
        # and what appears there is the event's white flash, not just motion (unless the previous
        # frame already had a flash on that very spot)
        white_now, white_before = ((f[win] >= 225).all(axis=-1) for f in (frames[k], frames[k - 1]))
        assert (white_now & ~white_before).sum() >= 3 or white_before.mean() > 0.5, e


# ------------------------------------------------------------------------------------------ sounds
def _centroid(x: np.ndarray) -> float:
    mag = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float((mag * freqs).sum() / mag.sum())


def _dominant(x: np.ndarray, lo: float = 200, hi: float = 3000) -> float:
    mag = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    band = (freqs > lo) & (freqs < hi)
    return float(freqs[band][np.argmax(mag[band])])


def _zero_crossings(x: np.ndarray) -> int:
    return int(np.count_nonzero(np.diff(np.signbit(x))))


def test_event_sounds_are_distinct_per_type():
    synth = EventSynth(Timbre.sample(np.random.default_rng(0)), rng=np.random.default_rng(1), sample_rate=SR)
    s = {k: synth.sound(k, size=0.05, strength=0.8) for k in EVENT_TYPES}
    for k, x in s.items():
        assert x.dtype == np.float32 and 0.1 < np.abs(x).max() < 1.0, k
        assert np.abs(x[0]) > 0.0, k  # sounds from its first sample
    n20 = int(0.02 * SR)
    laser = s["laser"]
    assert _zero_crossings(laser[:n20]) > 2 * _zero_crossings(laser[-n20:])  # downward chirp
    assert len(s["gun"]) < 0.15 * SR < 0.5 * SR < len(s["explosion"])
    assert _centroid(s["explosion"]) < 0.5 * _centroid(s["gun"])
    assert _centroid(s["pickup"]) > 600  # bright
    note = int(0.055 * SR)
    first, last = s["pickup"][:note], s["pickup"][3 * note : 4 * note]
    assert _dominant(last) > 1.4 * _dominant(first)  # a rising arpeggio
    soft = np.abs(synth.sound("impact", size=0.05, strength=0.05)).max()
    hard = np.abs(synth.sound("impact", size=0.05, strength=1.0)).max()
    assert hard > 3 * soft


def test_engine_pitch_and_level_follow_speed():
    timbre = Timbre.sample(np.random.default_rng(3))
    engine = Engine(timbre, rng=np.random.default_rng(0), sample_rate=SR, hop=HOP)

    def settle(speed):
        chunks = [engine.chunk(speed, 0.5) for _ in range(15)]
        x = np.concatenate(chunks, axis=1)[0, HOP:]
        spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        freqs = np.fft.rfftfreq(len(x), 1 / SR)
        low = freqs < 400  # the fundamental is the strongest harmonic
        return np.sqrt((x**2).mean()), freqs[low][np.argmax(spec[low])]

    rms0, f0 = settle(0.0)
    rms1, f1 = settle(1.0)
    assert rms1 > 2 * rms0
    assert f0 == pytest.approx(timbre.engine_f0, abs=3)
    assert f1 == pytest.approx(timbre.engine_f0 + timbre.engine_span, abs=3)


def test_overlap_buffer_carries_long_sounds_into_later_chunks():
    buf = OverlapBuffer(capacity=4000)
    buf.pop(3000)  # wrap-around on the next add
    buf.add(np.ones((2, 2500), np.float32))
    buf.add(np.full((2, 10), 2.0, np.float32))
    a, b, c = buf.pop(1600), buf.pop(1600), buf.pop(1600)
    assert a[:, :10].tolist() == [[3.0] * 10] * 2 and (a[:, 10:] == 1).all()
    assert (b[:, :900] == 1).all() and (b[:, 900:] == 0).all()
    assert not c.any()


# ------------------------------------------------------------------------------------------ source
def test_synthetic_source_opens_through_open_source():
    src = open_source("synthetic:7", realtime=False, duration=1.0)
    reference = World(7)
    with src:
        assert (src.name, src.fps, src.size, src.live) == ("synthetic:7", 30.0, (640, 360), False)
        frames = []
        for frame in src:
            image, audio, events = reference.step()
            assert isinstance(frame, Frame)
            assert frame.image.shape == (360, 640, 3) and frame.image.dtype == np.uint8
            assert np.array_equal(frame.image, image)
            assert np.array_equal(src.last_audio, audio) and src.last_audio.shape == (2, HOP)
            assert src.last_events == events
            frames.append(frame)
    assert [f.index for f in frames] == list(range(30))
    assert [f.pts for f in frames] == pytest.approx([i / 30 for i in range(30)])


def test_synthetic_source_is_paced_to_the_wall_clock_by_default():
    with open_source("synthetic", size="96x54") as src:
        assert src.live and src.name == "synthetic:0" and src.size == (96, 54)
        start = time.monotonic()
        stamps = [src.read().captured_at for _ in range(10)]
    elapsed = time.monotonic() - start
    assert elapsed >= 9 / 30 - 0.005
    assert np.median(np.diff(stamps)) == pytest.approx(1 / 30, abs=0.01)


def test_synthetic_source_rejects_bad_input():
    for spec in ("synthetic:abc", "synthetic:-1"):
        with pytest.raises(CaptureError, match="non-negative integer"):
            open_source(spec)
    with pytest.raises(CaptureError, match="valid: size, realtime, duration"):
        open_source("synthetic:1", colour="red")
    with pytest.raises(CaptureError, match="too small"):
        open_source("synthetic:1", size="10x10")
    with pytest.raises(CaptureError, match="WIDTHxHEIGHT"):
        open_source("synthetic:1", size="big")
    with pytest.raises(CaptureError, match="not open"):
        open_source("synthetic:1").read()


# --------------------------------------------------------------------------------------------- CLI
def test_clip_lengths_split_and_absorb_short_remainders():
    assert clip_lengths(180, 900, 30) == [180]
    assert clip_lengths(1810, 900, 30) == [900, 910]
    assert clip_lengths(1900, 900, 30) == [900, 900, 100]


def test_livefoley_synth_writes_decodable_clips_with_events(tmp_path, capsys):
    out = tmp_path / "clips"
    assert main(["-q", "synth", "--out", str(out), "--minutes", "0.1", "--seed", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == ["synth_s3_0000.events.json", "synth_s3_0000.mp4"]
    assert summary["n_clips"] == 1 and summary["seconds"] == pytest.approx(6.0)
    assert summary["clip_seconds_per_second"] > 0

    record = load_events(out / "synth_s3_0000.mp4")
    clip_seed = derive_seed(3, 0)
    assert record["clip_seed"] == clip_seed and record["seed"] == 3
    assert (record["fps"], record["width"], record["height"], record["n_frames"]) == (30, 640, 360, 180)
    reference = World(clip_seed)
    truth = [reference.step() for _ in range(180)]
    expected = [ev for _, _, evs in truth for ev in evs]
    assert len(record["events"]) == len(expected) > 0
    for got, want in zip(record["events"], expected, strict=True):
        assert got["frame"] == want["frame"] and got["type"] == want["type"]
        assert got["x"] == pytest.approx(want["x"], abs=1e-6)
        assert got["time_s"] == pytest.approx(want["frame"] / 30, abs=1e-6)

    with av.open(str(out / "synth_s3_0000.mp4")) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
        assert v.average_rate == 30 and (v.width, v.height) == (640, 360)
        assert a.codec_context.name == "aac" and a.rate == SR and a.channels == 2
        images = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(out / "synth_s3_0000.mp4")) as container:
        audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert abs(len(images) - 180) <= 1
    assert audio.shape[0] == 2 and abs(audio.shape[1] / SR - 6.0) < 0.05
    # the decoded picture and sound are the world's, in sync (no offset from encoder priming)
    assert np.abs(images[100].astype(np.int16) - truth[100][0]).mean() < 6
    gt = np.concatenate([c for _, c, _ in truth], axis=1)
    seg = slice(SR, 5 * SR)
    lags = range(-64, 65)
    corr = [float((audio[0, seg] * np.roll(gt[0], lag)[seg]).sum()) for lag in lags]
    assert abs(lags[int(np.argmax(corr))]) <= 2
    assert np.corrcoef(audio[:, seg].ravel(), gt[:, seg].ravel())[0, 1] > 0.9


def test_livefoley_synth_reports_bad_arguments(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--minutes", "0"]) == 2
    assert "--minutes must be a positive number" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path), "--size", "12x12"]) == 2
    assert "--size 12x12 is too small" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
