"""Audio sinks against real parts: a PulseAudio null sink (played audio is recorded back from its
monitor and compared sample by sample), real wav/flac files, a child process interrupted with
SIGINT, and a second PulseAudio server killed mid-stream.

sounddevice is imported (through ``audio.devices._sounddevice``) only inside tests that request the
``pulse`` fixture: PortAudio enumerates the devices at import, so it must see the test server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal as sps

from audio.contract import CONTRACT
from audio.devices import PORTAUDIO_MISSING, SinkError, _sounddevice, list_devices
from audio.sinks import (
    DeviceSink,
    FileSink,
    MultiSink,
    NullSink,
    _Ring,
    build_sinks,
    parse_sink,
)
from plugin.live.outside import S16_TOL  # the null sink mixes in s16: one LSB is 3.05e-5

HOP = CONTRACT.hop
SR = CONTRACT.sample_rate
REPO = Path(__file__).resolve().parents[1]
FLAC_TOL = 1.5e-7  # 24-bit FLAC: half an LSB is 6e-8


def tone_chunks(n_chunks: int, seed: int = 0) -> np.ndarray:
    """(2, n_chunks·HOP) float32: a different frequency in every chunk (phase-continuous, so no
    clicks), left and right distinct; never silent for more than a few samples."""
    rng = np.random.default_rng(seed)
    f_left = np.repeat(rng.uniform(220, 1800, n_chunks), HOP)
    f_right = np.repeat(rng.uniform(300, 2500, n_chunks), HOP)
    left = 0.5 * np.sin(2 * np.pi * np.cumsum(f_left) / SR)
    right = 0.3 * np.sin(2 * np.pi * np.cumsum(f_right) / SR + 0.7)
    return np.stack([left, right]).astype(np.float32)


def chunks_of(audio: np.ndarray) -> list[np.ndarray]:
    return [audio[:, i:i + HOP] for i in range(0, audio.shape[1], HOP)]


def play(sink, audio: np.ndarray) -> None:
    """Write one frame of silence, then ``audio`` frame by frame.

    Why the silence: PulseAudio mixes a newly started stream into the running null sink by
    rewinding it, and the monitor has already passed the rewound ~10 ms on to parec, so a monitor
    recording misses about the first 450 samples of every new stream (measured: with a lead-in of
    480 zeros or more every signal sample arrives).  A real card re-renders the rewound part."""
    sink.write(np.zeros((CONTRACT.channels, HOP), np.float32))
    for chunk in chunks_of(audio):
        sink.write(chunk)


def locate(recording: np.ndarray, played: np.ndarray) -> int:
    """Where ``played`` ((2, N)) starts inside ``recording`` ((M, 2)), by cross-correlation."""
    assert recording.shape[0] >= played.shape[1], "the recording is shorter than what was played"
    corr = sps.correlate(recording[:, 0], played[0], mode="valid", method="fft")
    return int(np.argmax(corr))


def assert_played(recording: np.ndarray, played: np.ndarray, tol: float = S16_TOL) -> int:
    """The whole of ``played`` appears in ``recording`` contiguously (no gap, no repeat)."""
    assert np.isfinite(recording).all()
    start = locate(recording, played)
    got = recording[start:start + played.shape[1]]
    assert got.shape[0] == played.shape[1], "the recording stops before the played signal ends"
    err = np.abs(got - played.T).max(axis=1)
    bad = np.nonzero(err >= tol)[0]
    assert bad.size == 0, (
        f"played audio differs from the monitor recording in {bad.size} of {played.shape[1]} samples "
        f"(first at {bad[0]}; max error {err.max():.2e})"
    )
    return start


class Monitor:
    """A parec recording of the null sink's monitor running for the whole module; tests take a
    ``mark()`` before playing and read everything recorded ``since(mark)``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size // 8  # float32 × 2 channels per sample

    def since(self, mark: int, settle_s: float = 0.35) -> np.ndarray:
        time.sleep(settle_s)  # let the sink render and parec write what was just played
        data = np.fromfile(self.path, dtype=np.float32, offset=mark * 8)
        return data[: data.size // 2 * 2].reshape(-1, 2)


@pytest.fixture(scope="module")
def monitor(pulse, tmp_path_factory):
    """Record the monitor from before the first test; wait until data flows.

    Why wait: PulseAudio's null sink sleeps up to 2 s between renders while nothing asks for low
    latency, and a stream that connects during such a sleep hears nothing until it ends.  parec's
    10 ms request wakes it for good once its first data arrives."""
    path = tmp_path_factory.mktemp("monitor") / "monitor.raw"
    proc = pulse.record(path)
    deadline = time.monotonic() + 10
    sizes = []
    while time.monotonic() < deadline:
        sizes.append(path.stat().st_size if path.exists() else 0)
        if len(sizes) > 3 and sizes[-1] > sizes[-2] > sizes[-3] > 0:
            break
        time.sleep(0.05)
    else:
        proc.terminate()
        pytest.fail("parec recorded nothing from livefoley.monitor within 10 s")
    yield Monitor(path)
    proc.terminate()
    proc.wait(timeout=10)


class TimedDeviceSink(DeviceSink):
    """Test-only harness: times the real callback body on PortAudio's thread."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.durations_ns: list[int] = []

    def _callback(self, outdata, frames, time_info, status) -> None:
        t0 = time.perf_counter_ns()
        super()._callback(outdata, frames, time_info, status)
        self.durations_ns.append(time.perf_counter_ns() - t0)


# --------------------------------------------------------------------------------------------
# The ring buffer (no device needed)
# --------------------------------------------------------------------------------------------


def test_ring_wraps_around_and_drops_oldest_when_full():
    ring = _Ring(10)
    audio = np.arange(2 * 40, dtype=np.float32).reshape(2, 40)
    out = np.empty((4, 2), np.float32)
    pulled = []
    pos = 0
    for n in (3, 4, 2, 5, 1, 4):  # wraps the 10-sample ring several times
        ring.push(audio[:, pos:pos + n])
        pos += n
        while ring.available >= 4:
            assert ring.pull(out) == 4
            pulled.append(out.copy())
    got = np.concatenate(pulled)
    np.testing.assert_array_equal(got, audio[:, : got.shape[0]].T)

    # full: drop-oldest keeps the newest 10 samples and counts one overflow
    ring = _Ring(10)
    ring.push(audio[:, :8])
    assert ring.push(audio[:, 8:14], gain=0.5) == 4
    assert (ring.overflows, ring.dropped, ring.available) == (1, 4, 10)
    out = np.empty((12, 2), np.float32)
    assert ring.pull(out) == 10  # only 10 there; the caller zero-fills the rest
    np.testing.assert_array_equal(out[:4], audio[:, 4:8].T)
    np.testing.assert_array_equal(out[4:10], 0.5 * audio[:, 8:14].T)


def test_callback_copies_zero_fills_and_allocates_no_arrays(pulse):
    """The callback body, driven directly with 1200-sample blocks (so copies straddle the ring's
    wrap point): exact copies, zero-fill and underrun counting on underflow, status flags recorded
    — and no array allocated per call (tracemalloc sees numpy's data buffers too; a block-sized
    temporary would be 9 600 bytes)."""
    sd = _sounddevice()
    sink = DeviceSink(capacity_frames=3, prefill_frames=1)
    audio = tone_chunks(11, seed=3)  # 17 600 samples = 14 blocks of 1200 + 800
    block = 1200
    out = np.empty((block, 2), np.float32)
    ok, flagged = sd.CallbackFlags(), sd.CallbackFlags()
    flagged.output_underflow = True
    sink._callback(out, block, None, ok)  # warm-up on the empty ring: one underrun
    peaks, played = [], []

    def call(status) -> None:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        sink._callback(out, block, None, status)
        peaks.append(tracemalloc.get_traced_memory()[1] - before)
        played.append(out.copy())

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for chunk in chunks_of(audio):
            sink._ring.push(chunk)
            while sink._ring.available >= block:
                call(ok)
        call(flagged)  # 800 left: copied, then 400 zeros
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    stats = sink.stats()
    assert (stats["underruns"], stats["underrun_samples"]) == (2, block + 400)
    assert stats["status_flags"]["output_underflow"] == 1
    got = np.concatenate(played)
    np.testing.assert_array_equal(got[: audio.shape[1]], audio.T)
    assert not got[audio.shape[1]:].any()
    assert max(peaks) < 1024, f"a callback allocated {max(peaks)} bytes at peak"
    assert after - base - sum(p.nbytes for p in played) < 4096, "memory grew across callbacks"
    print(f"\ncallback body: at most {max(peaks)} B of transient Python objects per call, no array buffers")


# --------------------------------------------------------------------------------------------
# Device sink through PulseAudio
# --------------------------------------------------------------------------------------------


def test_device_plays_every_sample_continuously(pulse, monitor):
    played = tone_chunks(36, seed=1)  # 1.2 s, a new frequency every frame
    mark = monitor.mark()
    sink = TimedDeviceSink(device="pulse", block_timeout_s=2.0)  # blocksize 1600, prefill 2
    with sink:
        assert 0 < sink.latency_s < 1.0
        play(sink, played)
        during = sink.stats()
    after = sink.stats()
    rec = monitor.since(mark)
    assert_played(rec, played)
    assert during["started"] and during["underruns"] == 0 and during["overflows"] == 0
    assert after["samples_written"] == played.shape[1] + HOP and after["buffered_samples"] == 0
    assert after["error"] is None
    d = np.array(sink.durations_ns[3:]) / 1e3  # µs; skip stream start-up
    print(
        f"\nreported output latency {1000 * sink.latency_s:.1f} ms (blocksize {HOP}, prefill 2); "
        f"callback µs over {d.size} calls: median {np.median(d):.1f}, p99 {np.percentile(d, 99):.1f}, "
        f"max {d.max():.1f}; status flags {after['status_flags']}"
    )
    assert np.median(d) < 1000  # one block is 33 333 µs


def test_stream_starts_primed_and_keeps_its_cushion(pulse, monitor):
    """The stream starts once ``prefill_frames`` are buffered, and the device's start-up burst (3
    blocks at once here) does not eat them: a writer paced like the engine, half a frame behind,
    causes no underrun.  (Served from the ring, the burst would underrun at once.)"""
    audio = tone_chunks(10, seed=13)
    chunks = chunks_of(audio)
    period = CONTRACT.frame_ms / 1000
    mark = monitor.mark()
    with DeviceSink(device="pulse", prefill_frames=2) as sink:
        sink.write(np.zeros((2, HOP), np.float32))  # see play()
        assert not sink.started and sink.stats()["callbacks"] == 0
        sink.write(chunks[0])
        assert sink.started
        t0 = time.monotonic()
        for k, chunk in enumerate(chunks[1:]):
            time.sleep(max(0.0, t0 + (k + 0.5) * period - time.monotonic()))
            sink.write(chunk)
        stats = sink.stats()
        assert 0 < sink.delay_s < 0.5
    assert stats["underruns"] == 0, stats
    assert_played(monitor.since(mark), audio)


def test_underruns_zero_fill_while_the_writer_pauses(pulse, monitor):
    first, second = tone_chunks(4, seed=2), tone_chunks(6, seed=4)
    mark = monitor.mark()
    with DeviceSink(device="pulse", block_timeout_s=2.0) as sink:
        play(sink, first)
        calls = sink.stats()["callbacks"]
        time.sleep(0.5)  # the generator "stalls": the callback keeps running on silence
        paused = sink.stats()
        for chunk in chunks_of(second):
            sink.write(chunk)
    rec = monitor.since(mark)
    assert paused["callbacks"] >= calls + 8
    assert paused["underruns"] >= 6
    assert paused["underrun_samples"] >= 6 * HOP
    a = assert_played(rec, first)
    b = assert_played(rec, second)
    gap = rec[a + first.shape[1]: b]
    # the gap is silence written by the zero-fill, not stale or repeated audio
    assert gap.shape[0] >= int(0.3 * SR) and np.abs(gap).max() < 1e-6


def test_volume_applies_at_write_time_and_changes_at_runtime(pulse, monitor):
    audio = tone_chunks(20, seed=5)
    mark = monitor.mark()
    with DeviceSink(device="pulse", volume=0.5, block_timeout_s=2.0) as sink:
        for k, chunk in enumerate(chunks_of(audio)):
            if k == 0:
                sink.write(np.zeros((2, HOP), np.float32))  # see play()
            if k == 10:
                sink.volume = 0.25
            sink.write(chunk)
    expected = audio.copy()
    expected[:, : 10 * HOP] *= 0.5
    expected[:, 10 * HOP:] *= 0.25
    rec = monitor.since(mark)
    start = assert_played(rec, expected)
    full = np.abs(audio).max()
    assert abs(np.abs(rec[start:start + 10 * HOP]).max() / full - 0.5) < 0.01
    with pytest.raises(SinkError, match="volume must be between 0 and"):
        sink.volume = -1
    with pytest.raises(SinkError, match="volume must be between 0 and"):
        DeviceSink(volume=float("nan"))


def test_device_by_index_by_substring_and_unknown_names(pulse, monitor):
    devices = list_devices()
    names = {d["name"]: d for d in devices}
    assert {"pulse", "default"} <= set(names)
    assert sum(d["is_default"] for d in devices) == 1
    index = names["pulse"]["index"]
    audio = tone_chunks(4, seed=6)
    mark = monitor.mark()
    with parse_sink(f"device:{index}", block_timeout_s=2.0) as sink:
        assert sink.device["name"] == "pulse"
        play(sink, audio)
    assert_played(monitor.since(mark), audio)
    with DeviceSink(device="PULS") as sink:  # case-insensitive substring
        assert sink.device["index"] == index
    with DeviceSink(device=None) as sink:  # the default output
        assert sink.device["is_default"]
    with pytest.raises(SinkError, match=r"no output device matches 'nonexistent-card'.*'pulse'.*'default'"):
        DeviceSink(device="nonexistent-card").open()
    with pytest.raises(SinkError, match=r"no output device with index 4242.*'pulse'"):
        parse_sink("device:4242").open()


def test_no_sound_device_at_all_suggests_recording_or_the_null_sink(monkeypatch):
    """A machine where PortAudio sees no output (no card, no sound server): the message says what
    works without one, instead of pointing at a device list that is empty."""
    import audio.devices

    monkeypatch.setattr(audio.devices, "list_devices", lambda: [])
    for device in (None, "3", "pulse"):
        with pytest.raises(SinkError, match="no output devices were found") as err:
            audio.devices.resolve_device(device)
        assert "--sink file:OUT.flac" in str(err.value) and "--sink null" in str(err.value)


def test_full_ring_drops_oldest_and_never_blocks_longer_than_a_frame(pulse, monitor):
    with DeviceSink(device="pulse", capacity_frames=4, prefill_frames=2) as sink:
        chunk = tone_chunks(1, seed=7)
        worst = 0.0
        for _ in range(30):  # 1 s of audio handed over as fast as possible
            t0 = time.monotonic()
            sink.write(chunk)
            worst = max(worst, time.monotonic() - t0)
        stats = sink.stats()
        sink.close(drain=False)
    assert stats["overflows"] > 0 and stats["overflow_samples"] >= stats["overflows"]
    assert stats["buffered_samples"] <= 4 * HOP
    assert worst < CONTRACT.frame_ms / 1000 + 0.02, f"write blocked {1000 * worst:.1f} ms"


def test_nonfinite_samples_are_silenced(pulse, monitor):
    audio = tone_chunks(3, seed=8)
    bad = audio.copy()
    bad[0, 100:110] = np.nan
    bad[1, 2000] = np.inf
    mark = monitor.mark()
    with DeviceSink(device="pulse", block_timeout_s=2.0) as sink:
        play(sink, bad)
    assert sink.stats()["nonfinite_samples"] == 11
    expected = np.where(np.isfinite(bad), bad, 0)
    assert_played(monitor.since(mark), expected)


def test_vanished_device_makes_write_fail_clearly(pulse, monkeypatch, tmp_path):
    """A second PulseAudio server is killed while we play to it, like an unplugged card."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), HOME=str(tmp_path))
    server = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--load=module-native-protocol-unix",
         "--load=module-null-sink sink_name=doomed rate=48000", "--log-target=stderr"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode:
            assert time.monotonic() < deadline, "second PulseAudio server did not start"
            time.sleep(0.05)
        monkeypatch.setenv("PULSE_SERVER", f"unix:{runtime}/pulse/native")
        monkeypatch.setenv("PULSE_SINK", "doomed")
        sink = DeviceSink(device="pulse")
        sink.open()
        chunk = tone_chunks(1, seed=9)
        for _ in range(3):
            sink.write(chunk)
        assert sink.started
        server.kill()
        server.wait(timeout=10)
        deadline = time.monotonic() + 5
        with pytest.raises(SinkError, match="vanished or failed while playing") as err:  # noqa: PT012
            while time.monotonic() < deadline:
                sink.write(chunk)
                time.sleep(CONTRACT.frame_ms / 1000)
        assert "livefoley devices" in str(err.value)
        assert sink.stats()["error"]
        t0 = time.monotonic()
        sink.close()  # must neither hang nor raise
        assert time.monotonic() - t0 < 3
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# Files, null, several at once
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ext", "tol"), [(".wav", 0.0), (".flac", FLAC_TOL)])
def test_file_sink_writes_exactly_what_it_was_given(tmp_path, ext, tol):
    audio = tone_chunks(7, seed=10)
    path = tmp_path / f"out{ext}"
    with FileSink(path) as sink:
        for chunk in chunks_of(audio):
            sink.write(chunk)
        sink.write(audio[:, :123])  # any length is allowed
        assert not path.exists() and sink.tmp_path.exists()  # written under a temporary name
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    assert sr == SR and data.shape == (7 * HOP + 123, 2)
    np.testing.assert_allclose(data, np.concatenate([audio, audio[:, :123]], axis=1).T, atol=tol, rtol=0)
    assert sink.stats()["samples_written"] == 7 * HOP + 123
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_file_sink_is_finalised_when_the_block_is_left_by_an_exception(tmp_path, exc):
    audio = tone_chunks(3, seed=11)
    path = tmp_path / "partial.flac"
    with pytest.raises(exc), FileSink(path) as sink:
        for chunk in chunks_of(audio):
            sink.write(chunk)
        raise exc()
    data, _ = sf.read(path, dtype="float32", always_2d=True)
    np.testing.assert_allclose(data, audio.T, atol=FLAC_TOL, rtol=0)
    assert list(tmp_path.iterdir()) == [path]


CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from audio.contract import CONTRACT
    from audio.sinks import FileSink
    print("lazy" if "sounddevice" not in sys.modules else "eager", flush=True)
    hop = CONTRACT.hop
    with FileSink(sys.argv[1]) as sink:
        for k in range(100_000):
            sink.write(np.full((2, hop), (k % 97) / 100, np.float32))
            print(k + 1, flush=True)
            time.sleep(0.005)
    """
)


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_ctrl_c_in_a_child_process_leaves_a_complete_recording(tmp_path, ext):
    path = tmp_path / f"live{ext}"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "lazy", "importing audio.sinks loaded sounddevice/PortAudio"
    written = 0
    while written < 25:
        line = child.stdout.readline()
        assert line, child.stderr.read() if child.stderr else "child died"
        written = int(line)
    child.send_signal(signal.SIGINT)
    rest = child.stdout.read().split()
    child.wait(timeout=20)
    assert "KeyboardInterrupt" in (child.stderr.read() if child.stderr else "")
    last = int(rest[-1]) if rest else written
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    chunks = data.shape[0] // HOP
    assert data.shape[0] % HOP == 0 and last <= chunks <= last + 1, (data.shape, last)
    expected = np.repeat((np.arange(chunks) % 97) / 100, HOP).astype(np.float32)
    np.testing.assert_allclose(data, np.stack([expected, expected], axis=1), atol=FLAC_TOL)
    assert list(tmp_path.iterdir()) == [path], "the temporary file was left behind"


def test_a_recording_left_by_a_killed_run_is_named_on_the_next_run(tmp_path, caplog):
    """SIGKILL leaves only the hidden temporary file; the next recording to that name says where it is
    (and how to keep it) instead of leaving the user to find it."""
    path = tmp_path / "live.flac"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "lazy"
    while int(child.stdout.readline() or "-1") < 10:
        assert child.poll() is None, "child died"
    child.kill()
    child.wait(timeout=20)
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".live.") and left.name.endswith(".partial.flac") and not path.exists()
    with caplog.at_level("WARNING", logger="audio.sinks"), FileSink(path) as sink:
        sink.write(tone_chunks(1))
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and str(left) in warned[0] and "killed" in warned[0] and "mv " in warned[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([left.name, "live.flac"])  # nothing deleted


def test_null_sink_counts_and_rejects_bad_chunks():
    with NullSink() as sink:
        sink.write(tone_chunks(2))
        sink.write(np.zeros((2, 5), np.float64))
        with pytest.raises(ValueError, match=r"got an audio chunk of shape \(1600, 2\).*\(2, 1600\)"):
            sink.write(np.zeros((HOP, 2), np.float32))
    assert sink.stats()["samples_written"] == 2 * HOP + 5


def test_multi_sink_recording_equals_what_the_device_played(pulse, monitor, tmp_path):
    audio = tone_chunks(24, seed=12)
    path = tmp_path / "rec.flac"
    mark = monitor.mark()
    with build_sinks(["device:pulse", "null"], record=str(path), block_timeout_s=2.0) as sink:
        assert isinstance(sink, MultiSink) and sink.latency_s > 0
        play(sink, audio)
    played = monitor.since(mark)
    recorded, _ = sf.read(path, dtype="float32", always_2d=True)
    start = assert_played(played, recorded.T)
    assert np.abs(recorded - played[start:start + recorded.shape[0]]).max() < S16_TOL
    np.testing.assert_allclose(recorded[HOP:], audio.T, atol=FLAC_TOL, rtol=0)
    assert not recorded[:HOP].any()
    stats = sink.stats()
    assert [s["kind"] for s in stats["sinks"]] == ["device", "null", "file"]
    assert stats["underruns"] == stats["sinks"][0]["underruns"]
    assert all(s["samples_written"] == audio.shape[1] + HOP for s in stats["sinks"])


def test_multi_sink_failing_to_open_discards_the_new_recording(pulse, tmp_path):
    path = tmp_path / "keep.wav"
    sf.write(path, np.full((10, 2), 0.25, np.float32), SR, subtype="FLOAT")
    sinks = MultiSink([FileSink(path), DeviceSink(device="no-such-card")])
    with pytest.raises(SinkError, match="no output device matches 'no-such-card'"), sinks:
        pass
    assert sf.read(path)[0].shape == (10, 2), "an existing recording was replaced"
    assert list(tmp_path.iterdir()) == [path]


def test_sink_strings():
    assert isinstance(parse_sink("device"), DeviceSink)
    assert parse_sink("device:Speakers 2").config.device == "Speakers 2"
    assert isinstance(parse_sink("null"), NullSink)
    assert isinstance(parse_sink("file:/tmp/x.FLAC"), FileSink)
    with pytest.raises(SinkError, match=r"unknown sink 'speakers'; valid forms: device, device:NAME_OR"):
        parse_sink("speakers")
    with pytest.raises(SinkError, match=r"extension must be \.wav or \.flac"):
        parse_sink("file:out.mp3")
    with pytest.raises(SinkError, match="names no device"):
        parse_sink("device:")
    with pytest.raises(SinkError, match="no sink given"):
        build_sinks([], None)
    with pytest.raises(SinkError, match="named twice"):
        build_sinks(["file:a.wav"], record="a.wav")
    with pytest.raises(SinkError, match="prefill_frames must be between 1 and capacity_frames"):
        DeviceSink(prefill_frames=9, capacity_frames=8)
    with pytest.raises(SinkError, match="folder .* does not exist"):
        FileSink(Path(tempfile.gettempdir()) / "no-such-dir-livefoley" / "x.wav").open()
    multi = build_sinks(["device", "null"], record="r.wav", volume=0.5)
    assert [type(s) for s in multi.sinks] == [DeviceSink, NullSink, FileSink]
    assert multi.sinks[0].volume == 0.5


# --------------------------------------------------------------------------------------------
# CLI and a missing PortAudio
# --------------------------------------------------------------------------------------------


def test_devices_command_lists_the_pulse_devices(pulse, capsys):
    from plugin.cli import main

    assert main(["devices", "--json"]) == 0
    devices = json.loads(capsys.readouterr().out)["devices"]
    assert {"pulse", "default"} <= {d["name"] for d in devices}
    assert all(d["max_output_channels"] >= 2 for d in devices)
    assert main(["devices"]) == 0
    table = capsys.readouterr().out
    assert "pulse" in table and "default" in table and "index" in table


def test_missing_portaudio_gives_one_clear_message(tmp_path):
    """Run where PortAudio cannot be found (the loader lookup is made to fail before import)."""
    script = textwrap.dedent(
        """
        import ctypes.util, sys
        ctypes.util.find_library = lambda name: None
        from audio.devices import SinkError, _sounddevice
        try:
            _sounddevice()
        except SinkError as err:
            print("MESSAGE:" + str(err))
        from plugin.cli import main
        sys.exit(main(["devices", "--json"]))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert f"MESSAGE:{PORTAUDIO_MISSING}\n" in out.stdout
    assert out.stderr.strip() == f"livefoley: error: {PORTAUDIO_MISSING}"
    assert "libportaudio2" in PORTAUDIO_MISSING and "brew install portaudio" in PORTAUDIO_MISSING
