"""Glass-to-ear measured from outside the engine: pictures change on an X display at known moments,
the sound server's monitor is recorded on its own clock, and the engine's ledger is checked against
what was actually heard (``scripts/measure_glass_to_ear.py`` runs it; ``docs/live-engine.md`` says
what the numbers mean).

* :class:`PicturePlayer` — a child process paints frames on an X display (Tk, no window manager:
  the pixels are exactly the frame) at 30 fps from a given monotonic moment, and logs when each
  one was on screen.
* :class:`MonitorRecorder` — ``parec`` on a PulseAudio monitor with every read's arrival timed:
  sample ``n`` of the recording was rendered at ``t0 + n / 48000`` with ``t0`` the smallest
  ``arrival − samples so far / rate`` (the read that waited least).
* :func:`locate_chunks` — where each chunk the engine handed to its sinks (its recording, chunk by
  chunk) lies in the monitor recording: exact to the null sink's s16 mixing, so no correlation
  peak to misread.
* :func:`report` — per chunk the moment it was heard against the ledger's prediction (hand-over +
  device queue), the pixel-to-ear delay (from the picture on screen when the chunk's frame was
  grabbed), and from the picture changes of the world's events to the generated onsets.

All times are ``time.monotonic()`` seconds, one clock for every process on the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from audio.contract import CONTRACT
from audio.errors import LivefoleyError
from audio.measure import percentiles

__all__ = ["MonitorRecorder", "PicturePlayer", "locate_chunks", "report"]

S16_TOL = 3e-4
"""A null sink mixes in s16: what it plays matches what was written to ~10 LSB."""

_PLAYER = r"""
import json, sys, time, tkinter as tk
import numpy as np
frames = np.load(sys.argv[1], mmap_mode="r")
fps, log = float(sys.argv[2]), sys.argv[3]
t, h, w, _ = frames.shape
root = tk.Tk(); root.overrideredirect(True); root.geometry(f"{w}x{h}+0+0")
def ppm(i):
    return b"P6 %d %d 255\n" % (w, h) + np.ascontiguousarray(frames[i]).tobytes()
photo = tk.PhotoImage(data=ppm(0), format="PPM")
tk.Label(root, image=photo, bd=0).pack()
root.update()
print("ready", flush=True)
start = float(sys.stdin.readline())  # frame 0 stays on screen until then
shown = []
for i in range(t):
    data = ppm(i)
    while (wait := start + i / fps - time.monotonic()) > 0:
        time.sleep(min(wait, 0.005))
    photo.configure(data=data, format="PPM")
    root.update()
    shown.append(time.monotonic())
json.dump(shown, open(log, "w"))
print("done", flush=True)
"""


def _work_dir(directory: Path | None, prefix: str) -> Path:
    """``directory`` (created), or a new temporary one: where a helper process leaves its files."""
    if directory is None:
        return Path(tempfile.mkdtemp(prefix=prefix))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class PicturePlayer:
    """Paint ``frames`` ((T, H, W, 3) uint8) at the top-left of X display ``display``: frame 0 from
    :meth:`start` on, frame ``i`` at ``at + i / fps`` once :meth:`play` gave ``at``; :meth:`finish`
    returns when each was on screen (monotonic seconds).  The default rate is 29.97 fps, as an
    unsynchronised game's would be: the capture's grabs (30 fps) sweep every phase against the
    picture changes once every 33 s instead of sitting at one arbitrary phase."""

    def __init__(self, frames: np.ndarray, *, display: str, fps: float = CONTRACT.fps * 1000 / 1001,
                 directory: Path | None = None) -> None:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        self.frames, self.display, self.fps = frames, display, float(fps)
        self._dir = _work_dir(directory, "livefoley-player-")
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the painter; returns once frame 0 is on screen."""
        np.save(self._dir / "frames.npy", self.frames)
        env = dict(os.environ, DISPLAY=self.display)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _PLAYER, str(self._dir / "frames.npy"), repr(self.fps),
             str(self._dir / "shown.json")], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        line = self._proc.stdout.readline().strip()
        if line != "ready":
            self._proc.kill()
            raise LivefoleyError(f"the picture player did not start on display {self.display}: "
                                 f"{self._proc.stderr.read()[-2000:]}")

    def play(self, at: float) -> None:
        """Frame ``i`` goes on screen at ``at + i / fps``."""
        assert self._proc is not None and self._proc.stdin is not None, "start() first"
        self._proc.stdin.write(f"{at!r}\n")
        self._proc.stdin.flush()

    def finish(self, timeout: float) -> np.ndarray:
        """Wait for the last frame; ``(T,)`` moments each frame was on screen."""
        assert self._proc is not None, "start() first"
        try:
            out, err = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            raise LivefoleyError("the picture player did not finish in time") from None
        if self._proc.returncode != 0:
            raise LivefoleyError(f"the picture player failed: {err[-2000:]}")
        return np.asarray(json.loads((self._dir / "shown.json").read_text()), np.float64)

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)


_RECORDER = r"""
import os, signal, subprocess, sys, time
monitor, latency, audio_path, times_path = sys.argv[1:5]
proc = subprocess.Popen(["parec", "-d", monitor, "--format=float32le", "--rate=48000", "--channels=2", "--raw",
                         f"--latency-msec={latency}"], stdout=subprocess.PIPE)
signal.signal(signal.SIGTERM, lambda *_: proc.terminate())  # parec ends, the loop reads its last bytes
fd, total = proc.stdout.fileno(), 0
with open(audio_path, "wb") as audio, open(times_path, "w") as times:
    while True:
        data = os.read(fd, 1 << 16)
        now = time.monotonic()
        if not data:
            break
        total += len(data)
        audio.write(data)
        times.write(f"{now!r} {total}\n")
        if total < 1 << 16:
            audio.flush(); times.flush()  # the parent waits for the first samples
"""


class MonitorRecorder:
    """Record PulseAudio source ``monitor`` (float32 stereo 48 kHz) with each read's arrival timed.

    The reading runs in its own process (``parec`` and a reader that stamps each read), so a
    recorder polled every 2 ms takes nothing from the measured engine's interpreter; the low
    latency matters: a null sink renders up to one of its blocks ahead, and the monitor hands the
    block on as it is rendered (10 ms blocks put the heard moments ~9 ms early, measured)."""

    def __init__(self, monitor: str, *, env: dict | None = None, latency_ms: int = 2,
                 directory: Path | None = None) -> None:
        self.monitor, self.env, self.latency_ms = monitor, env, latency_ms
        self._dir = _work_dir(directory, "livefoley-monitor-")
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start recording and wait until samples flow (a null sink may sleep ~2 s before its first render)."""
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _RECORDER, self.monitor, str(self.latency_ms), str(self._dir / "audio.raw"),
             str(self._dir / "times.txt")], env=self.env, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        times = self._dir / "times.txt"
        while not times.exists() or len(times.read_text().splitlines()) < 4:
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.stop()
                raise LivefoleyError(f"parec recorded nothing from {self.monitor!r} within {timeout:.0f} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop parec (the reader then writes out what it had) and wait for both."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)

    def audio(self) -> np.ndarray:
        """``(N, 2)`` float32: everything recorded."""
        raw = (self._dir / "audio.raw").read_bytes()
        return np.frombuffer(raw[: len(raw) // 8 * 8], np.float32).reshape(-1, 2)

    def clock(self) -> tuple[float, float]:
        """``(t0, rate)``: sample ``n`` of the recording was rendered at ``t0 + n / rate`` (monotonic
        clock), see :func:`monitor_clock`."""
        rows = [line.split() for line in (self._dir / "times.txt").read_text().splitlines() if line.strip()]
        if not rows:
            raise LivefoleyError("nothing recorded")
        reads = np.array([(float(t), int(n) // 8) for t, n in rows], np.float64)
        return monitor_clock(reads[:, 0], reads[:, 1])


def monitor_clock(arrival: np.ndarray, samples: np.ndarray, *, rate: float = CONTRACT.sample_rate,
                  segment_s: float = 10.0) -> tuple[float, float]:
    """``(t0, rate)`` such that sample ``n`` was rendered at ``t0 + n / rate``, from reads that
    arrived at ``arrival`` holding ``samples`` samples so far.  Each read's last sample was rendered
    no later than the read arrived, so every read lies on or above that line and the prompt ones
    on it.  The sound server's clock and the monotonic clock differ (measured: 98 ppm, 59 ms over
    10 minutes), so the slope is fitted: a line through the most prompt read of every ``segment_s``
    (the lower envelope), lowered until no read lies below it.  A run shorter than three segments
    keeps the nominal ``rate``."""
    arrival, samples = np.asarray(arrival, np.float64), np.asarray(samples, np.float64)
    slack = arrival - samples / rate
    segment = ((arrival - arrival[0]) // segment_s).astype(np.int64)
    if segment[-1] < 2:
        return float(slack.min()), float(rate)
    prompt = [idx[np.argmin(slack[idx])] for idx in np.split(np.arange(len(arrival)),
                                                             np.flatnonzero(np.diff(segment)) + 1)]
    slope, intercept = np.polyfit(samples[prompt], arrival[prompt], 1)
    intercept += (arrival - intercept - slope * samples).min()
    return float(intercept), float(1.0 / slope)


def _matches(monitor: np.ndarray, pos: int, chunk: np.ndarray) -> bool:
    if pos < 0 or pos + len(chunk) > len(monitor):
        return False
    ok = np.abs(chunk) < 0.999  # clipped samples are not compared
    return bool(np.all(np.abs(monitor[pos:pos + len(chunk)] - chunk)[ok] < S16_TOL))


def _search(monitor: np.ndarray, chunk: np.ndarray, lo: int, hi: int, near: int, probe: int = 48) -> int | None:
    """The position in ``[lo, hi)`` nearest ``near`` where the whole ``chunk`` matches (a periodic
    sound matches once per period; its loudest ``probe`` samples screen the candidates)."""
    from numpy.lib.stride_tricks import sliding_window_view

    lo, hi = max(lo, 0), min(hi, len(monitor) - len(chunk) + 1)
    if hi <= lo:
        return None
    start = int(np.argmax(np.convolve(np.abs(chunk).max(axis=1), np.ones(probe), "valid")))
    part = chunk[start:start + probe]
    windows = monitor[lo + start: hi + start + probe - 1]
    err = np.zeros(hi - lo, np.float32)
    for c in range(2):
        np.maximum(err, np.abs(sliding_window_view(windows[:, c], probe) - part[:, c]).max(axis=1), out=err)
    cands = lo + np.flatnonzero(err < S16_TOL)
    for cand in cands[np.argsort(np.abs(cands - near), kind="stable")]:
        if _matches(monitor, int(cand), chunk):
            return int(cand)
    return None


def _chunk_bounds(n_samples: int, lengths: np.ndarray | None, hop: int = CONTRACT.hop) -> np.ndarray:
    """Start of each whole chunk in a recording of ``n_samples`` (and its end last): ``lengths`` per
    chunk (the engine's ``chunk_samples``: a hop unless the ring cut it), or a hop each."""
    if lengths is None:
        lengths = np.full(n_samples // hop, hop, np.int64)
    bounds = np.concatenate([[0], np.cumsum(np.asarray(lengths, np.int64))])
    return bounds[bounds <= n_samples]


def locate_chunks(monitor: np.ndarray, recorded: np.ndarray, predicted: np.ndarray | None = None, *,
                  window: int = CONTRACT.sample_rate // 2, hop: int = CONTRACT.hop,
                  quiet: float = 1e-3, lengths: np.ndarray | None = None) -> np.ndarray:
    """Position of every chunk of ``recorded`` ((N, 2): ``hop`` samples each, or ``lengths``) in
    ``monitor`` ((M, 2)), ``-1`` where it cannot be placed (too quiet to be unambiguous, or not
    played: an underrun's gap).  ``predicted`` (``(K,)`` monitor sample positions, e.g. from the
    engine's ledger) centres the search of a chunk that does not follow its predecessor; without it
    the first chunk is searched everywhere."""
    bounds = _chunk_bounds(len(recorded), lengths, hop)
    k = len(bounds) - 1
    pos = np.full(k, -1, np.int64)
    prev = None  # where the previous chunk's successor should start
    for i in range(k):
        chunk = recorded[bounds[i]:bounds[i + 1]]
        if np.abs(chunk).max() < quiet:
            prev = None if prev is None else prev + len(chunk)  # keep walking: the next chunk likely follows
            continue
        if prev is not None and _matches(monitor, prev, chunk):
            pos[i] = prev
        else:
            if predicted is not None:
                centre = int(predicted[i])
                found = _search(monitor, chunk, centre - window, centre + window, centre)
            else:
                lo = 0 if prev is None else prev
                found = _search(monitor, chunk, lo, len(monitor), lo)
            if found is not None:
                pos[i] = found
        if pos[i] >= 0:
            prev = int(pos[i]) + len(chunk)
        elif prev is not None:
            prev += len(chunk)
    return pos


def report(*, shown: np.ndarray, t0: float, monitor: np.ndarray, recorded: np.ndarray,
           hand_time: np.ndarray, queue_ms: np.ndarray, glass_to_ear_ms: np.ndarray,
           device_latency_ms: float = 0.0, reference: np.ndarray | None = None, skip_s: float = 1.0,
           chunk_samples: np.ndarray | None = None, monitor_rate: float = CONTRACT.sample_rate) -> dict:
    """Everything the outside measurement says about one run.

    ``shown``: when each picture was on screen; ``t0``/``monitor``/``monitor_rate``: the monitor
    recording, the moment of its sample 0 and its rate on the monotonic clock
    (:meth:`MonitorRecorder.clock`); ``recorded``: what the engine handed to its sinks ((N, 2));
    ``hand_time``/``queue_ms``/``glass_to_ear_ms``/``chunk_samples``: the engine's per-chunk ledger
    (:meth:`LiveEngine.series`; without ``chunk_samples``, a hop each), ``device_latency_ms`` the
    part of the queue the device itself reported (the rest is the engine's ring); ``reference``:
    the pictures' own sound ((2, T·1600), the world's ground truth), placed on the display's
    timeline to time the generated onsets against the picture changes.  Chunks handed out in the
    first ``skip_s`` (start-up) are left out."""
    from audio.metrics import DEFAULT_CONFIG, MetricsConfig, av_offset, onset_novelty

    sr, hop = CONTRACT.sample_rate, CONTRACT.hop
    if chunk_samples is not None and (lost := len(recorded) - int(np.sum(chunk_samples, dtype=np.int64))) > 0:
        # the engine's per-chunk history is a ring (EngineConfig.history_s): over a longer run it holds
        # only the last chunks, and the recording's first ``lost`` samples have no ledger entry
        recorded = recorded[lost:]
    bounds = _chunk_bounds(len(recorded), chunk_samples, hop)
    k = min(len(bounds) - 1, len(hand_time), len(queue_ms), len(glass_to_ear_ms))
    predicted_dac = hand_time[:k] + queue_ms[:k] / 1000  # the ledger: when the chunk's first sample plays
    captured = predicted_dac - glass_to_ear_ms[:k] / 1000  # the frame the chunk followed was grabbed then
    pos = locate_chunks(monitor, recorded[:bounds[k]], (predicted_dac - t0) * monitor_rate,
                        lengths=None if chunk_samples is None else chunk_samples[:k])
    heard = t0 + pos / monitor_rate
    keep = (pos >= 0) & (hand_time[:k] >= hand_time[0] + skip_s)
    # the picture on screen when the frame was grabbed: the last one shown before the grab
    idx = np.searchsorted(shown, captured, side="right") - 1
    keep &= (idx >= 0) & (captured < shown[-1] + 1.5 * np.median(np.diff(shown)))  # not the last picture held
    out: dict = {"chunks": int(k), "chunks_located": int((pos >= 0).sum()), "chunks_compared": int(keep.sum()),
                 "monitor_clock_ppm": round((monitor_rate / sr - 1.0) * 1e6, 1)}
    if not keep.any():
        return out
    diff_ms = (heard - predicted_dac)[keep] * 1000
    outside_ms = (heard[keep] - shown[idx[keep]]) * 1000
    wait_ms = (captured[keep] - shown[idx[keep]]) * 1000
    out |= {
        "heard_minus_ledger_ms": _rounded(percentiles(diff_ms)),
        "glass_to_ear_outside_ms": _rounded(percentiles(outside_ms)),
        "glass_to_ear_ledger_ms": _rounded(percentiles(glass_to_ear_ms[:k][keep])),
        "capture_wait_ms": _rounded(percentiles(wait_ms)),
        # where the time goes: capture wait + grab → hand-over + ring + device + (heard − ledger)
        "grab_to_hand_ms": _rounded(percentiles((hand_time[:k] - captured)[keep] * 1000)),
        "ring_ms": _rounded(percentiles(queue_ms[:k][keep] - device_latency_ms)),
        "device_latency_ms": round(float(device_latency_ms), 1),
        "picture_interval_ms": _rounded(percentiles(np.diff(shown) * 1000)),
    }
    if reference is not None:
        # the pictures' own sound, each frame's chunk placed where its picture appeared
        timeline = np.zeros((2, len(monitor)), np.float32)
        for i, t in enumerate(shown[: reference.shape[1] // hop]):
            at = int(round((t - t0) * sr))
            if at >= 0 and at + hop <= len(monitor):
                timeline[:, at:at + hop] = reference[:, i * hop:(i + 1) * hop]
        first = int(round((heard[keep][0] - t0) * sr))  # from the first compared chunk on
        cfg = MetricsConfig(av_max_lag_s=max(DEFAULT_CONFIG.av_max_lag_s, 1.0))
        heard_nov, pictures_nov = onset_novelty(monitor[first:].T.copy(), cfg), onset_novelty(timeline[:, first:], cfg)
        lag, corr = av_offset(heard_nov, pictures_nov, cfg)
        out["picture_to_onset_ms"] = None if lag is None else round(lag, 1)
        out["picture_to_onset_correlation"] = None if corr is None else round(corr, 3)
        # chance: the same peak search against the pictures' sound moved by whole seconds (well past
        # the ±1 s searched), the correlation a sound that ignored the pictures' timing would reach
        n = min(len(heard_nov), len(pictures_nov))
        moved = [av_offset(heard_nov[:n], np.roll(pictures_nov[:n], int(s * cfg.onset_rate)), cfg)[1]
                 for s in range(2, int(n / cfg.onset_rate) - 1)]
        moved = [c for c in moved if c is not None]
        out["picture_to_onset_chance"] = round(max(moved), 3) if moved else None
    return out


def _rounded(d: dict) -> dict:
    return {key: round(v, 1) for key, v in d.items()}


def measure(model, *, display: str, monitor: str, pulse_env: dict | None = None, seed: int = 100,
            seconds: float = 30.0, size: tuple[int, int] = (320, 180), threads: int = 2, nfe: int | None = None,
            work: Path | None = None, settle_s: float = 3.0, **engine_options) -> dict:
    """One outside measurement: world ``seed``'s pictures painted on ``display`` for ``seconds``, the
    engine following the screen region they are painted in with ``model`` (a name or folder it
    loads itself, or a loaded generator) and playing to the PulseAudio default sink, whose
    ``monitor`` is recorded.  The engine runs ``settle_s`` on the first picture before the pictures
    start moving; ``engine_options`` are more :class:`~plugin.live.config.EngineConfig` fields
    (``optimize``, ``cushion_ms``, …).  Returns :func:`report` plus the engine's
    :meth:`~plugin.live.engine.LiveEngine.stats`."""
    from capture.synthetic import render_clip
    from plugin.live.config import EngineConfig
    from plugin.live.engine import LiveEngine

    w, h = size
    frames, reference, events = render_clip(seed, seconds, width=w, height=h)
    work = _work_dir(work, "livefoley-outside-")
    wav = work / "handed.wav"
    recorder = MonitorRecorder(monitor, env=pulse_env, directory=work / "monitor")
    player = PicturePlayer(frames, display=display, directory=work / "player")
    cfg = EngineConfig(source=f"screen:0,0,{w},{h}", source_options={"display": display}, sinks=("device",),
                       record=str(wav), threads=threads, nfe=nfe,
                       history_s=seconds + settle_s + 60.0,  # a ledger entry for every chunk recorded
                       **engine_options,
                       **({"model": str(model)} if isinstance(model, str | Path) else {}))
    engine = LiveEngine(config=cfg, generator=None if isinstance(model, str | Path) else model)
    recorder.start()
    try:
        player.start()
        engine.start()
        time.sleep(settle_s)
        player.play(at=time.monotonic() + 0.5)
        shown = player.finish(timeout=seconds + 60)
        time.sleep(0.5)  # the last pictures' chunks reach the monitor
    finally:
        player.close()
        engine.stop()
        recorder.stop()
    engine.raise_error()
    import soundfile

    recorded, _ = soundfile.read(wav, dtype="float32", always_2d=True)
    t0, rate = recorder.clock()
    raw = {"shown": shown, "t0": t0, "monitor_rate": rate, "hand_time": engine.series("hand_time"),
           "queue_ms": engine.series("device_queue_ms"), "glass_to_ear_ms": engine.series("glass_to_ear_ms"),
           "chunk_samples": engine.series("chunk_samples"),
           "device_latency_ms": engine.stats()["device_latency_ms"] or 0.0}
    np.savez(work / "ledger.npz", **raw)  # for a closer look: every moment of the run
    out = report(monitor=recorder.audio(), recorded=recorded, reference=reference, skip_s=settle_s + 0.5, **raw)
    out["events"] = len(events)
    out["work"] = str(work)
    out["stats"] = engine.stats()
    return out
