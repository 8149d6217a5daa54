"""Where generated audio goes: a sound device, a wav/flac file, nowhere, or several at once.

Every sink takes chunks of shape ``(channels, N)`` float32 at :data:`CONTRACT.sample_rate`
(normally ``(2, CONTRACT.hop)`` = ``(2, 1600)``, one video frame of sound) through
``open() / write(chunk) / close()`` or a ``with`` block, and reports counters through ``stats()``.

Sink strings (``--sink`` / ``--record``), see :func:`parse_sink` and :func:`build_sinks`::

    device                 the default output device
    device:NAME_OR_INDEX   an output device by (case-insensitive) name substring or index
    file:PATH.wav|.flac    a recording, written as it goes and finalised on close
    null                   discard (counts samples; for benchmarks and tests)

**Audio-thread discipline** (:class:`DeviceSink`, STYLE.md pattern 12).  The PortAudio callback
only copies from a bounded, preallocated ring buffer into ``outdata``; it zero-fills on underflow,
counts underruns and PortAudio status flags, and allocates no arrays (it slices preallocated
buffers and copies into ``outdata``).  The lock it shares with the writer is held only for index
arithmetic and one copy of at most one block (microseconds), never while waiting.  Volume is applied
by the writer when a chunk enters the ring, so the callback never multiplies.  The stream starts
only once ``prefill_frames`` frames of audio are buffered ("primed"); the burst of callbacks with
which PortAudio fills the device's own buffer at start is served with silence placed before the
audio, so the prefill stays in the ring as the cushion against a late writer.  What a sample
written now waits before it is heard is :attr:`DeviceSink.delay_s` (ring + device latency; with
the defaults about 67 + 67 ms under PulseAudio).  An underrun inserts silence and (the writer
being paced to the device) leaves the queue a block longer; ``clear()`` cuts it back.

**Full-ring policy.**  ``write`` waits for room for at most ``block_timeout_s`` (default: one frame,
33.3 ms, so a late device can never stall the generator by more than a frame); if the ring is still
full it *drops the oldest* buffered audio to make room and counts an ``overflow``.  Latency
therefore stays bounded by ``capacity_frames`` frames whatever the clocks do; the live engine
paces itself to the frame rate, so in normal running the ring holds about ``prefill_frames``.

**Files** (:class:`FileSink`) are written chunk by chunk to a hidden temporary name in the target
folder and renamed to the final name on ``close()``, which runs on every exit of a ``with`` block,
exceptions and Ctrl-C (``KeyboardInterrupt``) included; the live engine calls ``close()`` in a
``finally``.  A partial recording is thus a valid file holding every chunk written so far.  Only
a hard kill (SIGKILL, power loss) leaves the temporary file behind.

Which devices there are, and which one a ``device:NAME_OR_INDEX`` means, is :mod:`audio.devices`'s
business (it also imports sounddevice, lazily: importing it loads and initialises PortAudio).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audio.contract import CONTRACT
from audio.devices import SinkError, SinkSpecError, _sounddevice, resolve_device
from audio.errors import LivefoleyError
from audio.files import leftovers, temp_path

log = logging.getLogger(__name__)

SINK_FORMS = ("device", "device:NAME_OR_INDEX", "file:PATH.wav", "file:PATH.flac", "null")
FILE_FORMATS = {".wav": ("WAV", "FLOAT"), ".flac": ("FLAC", "PCM_24")}
"""Extension → (libsndfile format, subtype).  WAV stores float32 exactly; FLAC is 24-bit."""
MAX_VOLUME = 4.0
STATUS_FLAGS = ("output_underflow", "output_overflow", "priming_output", "input_underflow", "input_overflow")


def _as_chunk(chunk: np.ndarray) -> np.ndarray:
    """Validate a chunk: ``(CONTRACT.channels, N)`` floating point → float32 (no copy if already)."""
    arr = np.asarray(chunk)
    if arr.ndim != 2 or arr.shape[0] != CONTRACT.channels or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"got an audio chunk of shape {arr.shape} and dtype {arr.dtype}; chunks must be "
            f"({CONTRACT.channels}, N) float32 at {CONTRACT.sample_rate} Hz, normally "
            f"({CONTRACT.channels}, {CONTRACT.hop}) for one frame"
        )
    return arr.astype(np.float32, copy=False)


def check_volume(volume: float) -> float:
    """0 … :data:`MAX_VOLUME` (1 = unchanged), else :class:`SinkError`."""
    volume = float(volume)
    if not (math.isfinite(volume) and 0.0 <= volume <= MAX_VOLUME):
        raise SinkSpecError(f"volume must be between 0 and {MAX_VOLUME:g} (1 = unchanged); got {volume}")
    return volume


class Sink(ABC):
    """Open / write / close, or a ``with`` block.  ``write`` takes ``(channels, N)`` float32.

    ``name`` is the sink string; ``latency_s`` is the output latency the backend reports (seconds
    from handing a sample over to hearing it; 0 for files and the null sink)."""

    name: str = "?"

    @property
    def latency_s(self) -> float:
        return 0.0

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def write(self, chunk: np.ndarray) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def stats(self) -> dict: ...

    def __enter__(self) -> Sink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _Ring:
    """A bounded single-producer / single-consumer audio ring with drop-oldest overflow.

    ``data`` is ``(capacity, channels)`` float32, preallocated; positions are running sample
    counts (``read`` ≤ ``written`` ≤ ``read + capacity``), taken modulo ``capacity`` to index.
    The producer copies into the free region without the lock (the consumer never reads beyond
    ``written``) and takes the lock only to drop old audio and to publish ``written``; the consumer
    (the audio callback) holds the lock while it copies at most one block out.
    """

    def __init__(self, capacity: int, channels: int = CONTRACT.channels) -> None:
        self.capacity = capacity
        self.data = np.zeros((capacity, channels), dtype=np.float32)
        self.lock = threading.Lock()
        self.read = 0
        self.written = 0
        self.overflows = 0
        self.dropped = 0

    @property
    def available(self) -> int:
        return self.written - self.read

    @property
    def free(self) -> int:
        return self.capacity - (self.written - self.read)

    def push(self, chunk: np.ndarray, gain: float = 1.0) -> int:
        """Append ``chunk`` ((channels, n) float32, n ≤ capacity) times ``gain``; return how many of
        the oldest buffered samples were dropped to make room (0 normally)."""
        n = chunk.shape[1]
        if n > self.capacity:
            raise ValueError(f"chunk of {n} samples exceeds the ring capacity {self.capacity}")
        with self.lock:
            w = self.written
            over = w + n - self.read - self.capacity
            if over > 0:  # full: drop the oldest `over` samples (the consumer has not read them yet)
                self.read += over
                self.overflows += 1
                self.dropped += over
        start = w % self.capacity
        first = min(n, self.capacity - start)
        # (channels, n) → rows of (n, channels): the transposed view is copied in place, no temporaries
        for dst, src in ((self.data[start:start + first], chunk[:, :first]),
                         (self.data[:n - first], chunk[:, first:])):
            if dst.shape[0]:
                if gain == 1.0:
                    np.copyto(dst, src.T)
                else:
                    np.multiply(src.T, np.float32(gain), out=dst)
        with self.lock:
            self.written = w + n
        return max(over, 0)

    def pull(self, out: np.ndarray) -> int:
        """Copy up to ``len(out)`` buffered samples into ``out`` ((frames, channels)); return the
        number copied.  Runs in the audio callback: slices and copies only, allocates no arrays."""
        frames = out.shape[0]
        with self.lock:
            r = self.read
            n = self.written - r
            if n > frames:
                n = frames
            start = r % self.capacity
            first = self.capacity - start
            if first >= n:
                out[:n] = self.data[start:start + n]
            else:
                out[:first] = self.data[start:]
                out[first:n] = self.data[:n - first]
            self.read = r + n
        return n

    def prepend_silence(self, n: int) -> int:
        """Put up to ``n`` samples of silence *before* the buffered audio (only while no consumer
        runs); returns how many fitted."""
        n = max(0, min(n, self.free))
        with self.lock:
            r = self.read - n
            start = r % self.capacity
            first = min(n, self.capacity - start)
            self.data[start:start + first] = 0.0
            self.data[: n - first] = 0.0
            self.read = r
        return n


@dataclass(frozen=True)
class DeviceSinkConfig:
    """Settings of a :class:`DeviceSink` (validated; volume is only the *initial* volume).

    - ``device``: None (the default output), an index, or a case-insensitive name substring.
    - ``blocksize``: samples per callback (0: the host API chooses).  The reported device latency
      follows it (PulseAudio: two blocks, 66.7 ms at 1600, 20 ms at 480).
    - ``prefill_frames`` / ``capacity_frames``: ring priming level and size, in frames of
      ``CONTRACT.hop`` samples.
    - ``latency``: PortAudio's suggested latency ("low", "high" or seconds).
    - ``block_timeout_s``: the longest ``write`` waits for room before dropping the oldest audio
      (None: one frame)."""

    device: int | str | None = None
    volume: float = 1.0
    blocksize: int = CONTRACT.hop
    prefill_frames: int = 2
    capacity_frames: int = 8
    latency: float | str = "low"
    block_timeout_s: float | None = None

    def __post_init__(self) -> None:
        check_volume(self.volume)
        if self.blocksize < 0:
            raise SinkSpecError(f"blocksize must be ≥ 0 samples (0: the backend chooses); got {self.blocksize}")
        if self.capacity_frames < 1:
            raise SinkSpecError(f"capacity_frames must be ≥ 1; got {self.capacity_frames}")
        if not 1 <= self.prefill_frames <= self.capacity_frames:
            raise SinkSpecError(
                f"prefill_frames must be between 1 and capacity_frames ({self.capacity_frames}); "
                f"got {self.prefill_frames}"
            )
        if self.capacity_samples < 2 * self.blocksize:
            raise SinkSpecError(
                f"the ring ({self.capacity_frames} frames = {self.capacity_samples} samples) must hold at "
                f"least two blocks of {self.blocksize}; raise capacity_frames or lower blocksize"
            )
        if self.block_timeout_s is not None and self.block_timeout_s < 0:
            raise SinkSpecError(f"block_timeout_s must be ≥ 0; got {self.block_timeout_s}")

    @property
    def capacity_samples(self) -> int:
        return self.capacity_frames * CONTRACT.hop

    @property
    def prefill_samples(self) -> int:
        return self.prefill_frames * CONTRACT.hop

    @property
    def timeout_s(self) -> float:
        return CONTRACT.frame_ms / 1000.0 if self.block_timeout_s is None else self.block_timeout_s


class DeviceSink(Sink):
    """Play through a sound device with sounddevice/PortAudio (float32, stereo, 48 kHz).

    See the module docstring for the callback discipline and the full-ring policy.  Call ``write``
    and ``close`` from one thread (the engine's); ``volume`` may be set from any thread and applies
    to chunks written afterwards (what is already buffered, ≤ ``capacity_frames``, keeps its level).
    """

    def __init__(self, config: DeviceSinkConfig | None = None, *, name: str | None = None, **fields: Any) -> None:
        """``DeviceSink(DeviceSinkConfig(...))`` or ``DeviceSink(device="pulse", ...)`` with the fields
        of :class:`DeviceSinkConfig` (not both)."""
        if config is not None and fields:
            raise TypeError("pass a DeviceSinkConfig or its fields, not both")
        self.config = config if config is not None else DeviceSinkConfig(**fields)
        device = self.config.device
        self.name = name or ("device" if device is None else f"device:{device}")
        self._volume = self.config.volume
        self._ring = _Ring(self.config.capacity_samples)
        self._stream = None
        self.device: dict | None = None
        self._started = False
        self._stopping = False
        self._draining = False
        self._closed = False
        self._error: str | None = None
        self._latency_s = 0.0
        # counters written by the audio callback (plain ints: no allocation beyond CPython's own)
        self._callbacks = 0
        self._samples_out = 0
        self._underruns = 0
        self._underrun_samples = 0
        self._flag_counts = dict.fromkeys(STATUS_FLAGS, 0)
        # counters written by the writer
        self._chunks = 0
        self._samples_written = 0
        self._nonfinite = 0

    # -- volume ------------------------------------------------------------------------------
    @property
    def volume(self) -> float:
        return self._volume

    @volume.setter
    def volume(self, value: float) -> None:
        self._volume = check_volume(value)

    def set_volume(self, value: float) -> None:
        self.volume = value

    @property
    def latency_s(self) -> float:
        return self._latency_s

    @property
    def started(self) -> bool:
        return self._started

    @property
    def delay_s(self) -> float:
        """Seconds until a sample written now is heard: the audio buffered ahead of it (ring) plus
        the device's reported output latency.  Add it to the write time for glass-to-ear."""
        return self._ring.available / CONTRACT.sample_rate + self._latency_s

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} was closed; sinks are single-use, build a new one")
        if self._stream is not None:
            return
        sd = _sounddevice()
        self.device = resolve_device(self.config.device)
        if self.device["max_output_channels"] < CONTRACT.channels:
            raise SinkError(
                f"output device {self.device['name']!r} has {self.device['max_output_channels']} channel(s); "
                f"livefoley plays {CONTRACT.channels}-channel audio: choose another with --sink device:NAME"
            )
        try:
            self._stream = sd.OutputStream(
                samplerate=CONTRACT.sample_rate, blocksize=self.config.blocksize, device=self.device["index"],
                channels=CONTRACT.channels, dtype="float32", latency=self.config.latency,
                callback=self._callback, finished_callback=self._finished,
            )
        except sd.PortAudioError as err:
            raise SinkError(
                f"could not open output device {self.device['name']!r} for {CONTRACT.sample_rate} Hz float32 "
                f"stereo: {err}; try another device (`livefoley devices`) or --sink file:OUT.wav"
            ) from err
        self._latency_s = float(self._stream.latency)
        log.info("opened %s (%s): reported output latency %.1f ms, block %d, prefill %d frames",
                 self.device["name"], self.device["hostapi"], 1000 * self._latency_s,
                 self.config.blocksize, self.config.prefill_frames)

    def _start(self) -> None:
        """Start playing a primed ring.

        On start PortAudio calls the callback back to back until the device's own buffer is full
        (measured with PulseAudio: 3 blocks of 1600 = the reported latency + one block).  Were that
        burst served from the ring it would eat the prefill (and, with prefill 2, underrun inside
        the audio), leaving no cushion against a late writer.  So the burst is served with silence
        put in front of the audio: playback starts with ``prefill_frames`` still buffered."""
        sd = _sounddevice()
        burst = round(self._latency_s * CONTRACT.sample_rate) + self.config.blocksize
        fitted = self._ring.prepend_silence(burst)
        if fitted < burst:
            log.warning("%s: the ring (capacity_frames=%d) cannot hold the device's start-up burst; "
                        "the prefill cushion is %d samples smaller", self.name, self.config.capacity_frames,
                        burst - fitted)
        try:
            self._stream.start()
        except sd.PortAudioError as err:
            self._error = self._vanished(f"starting the stream failed: {err}")
            raise SinkError(self._error) from err
        self._started = True

    def _vanished(self, why: str) -> str:
        name = self.device["name"] if self.device else self.name
        return (
            f"the audio device {name!r} vanished or failed while playing ({why}); check that it is "
            f"connected and its sound server is running, then restart (`livefoley devices` lists devices)"
        )

    def _check_alive(self) -> None:
        if self._error is None and self._started and not self._stopping and not self._stream.active:
            self._error = self._vanished("PortAudio stopped the stream")
        if self._error is not None:
            raise SinkError(self._error)

    def write(self, chunk: np.ndarray) -> None:
        """Queue ``chunk`` ((channels, N) float32) for playback; see the full-ring policy above.

        Non-finite samples are replaced by silence (and counted) so that a diverging model can
        never send NaN/inf to a loudspeaker."""
        if self._stream is None or self._closed:
            raise RuntimeError(f"{self!r}: write() outside open() … close()")
        self._check_alive()
        chunk = _as_chunk(chunk)
        if not np.isfinite(chunk).all():
            bad = ~np.isfinite(chunk)
            self._nonfinite += int(bad.sum())
            chunk = np.where(bad, np.float32(0), chunk)
        ring, cfg = self._ring, self.config
        deadline = time.monotonic() + cfg.timeout_s
        poll = CONTRACT.frame_ms / 1000.0 / 8
        total = chunk.shape[1]
        pos = 0
        while pos < total:
            # before the stream starts nothing drains the ring: fill it only up to its free space
            n = min(total - pos, ring.capacity if self._started else ring.free)
            if self._started:
                while ring.free < n:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break  # still full after the timeout: push() drops the oldest audio
                    time.sleep(min(poll, left))
                    self._check_alive()
            ring.push(chunk[:, pos:pos + n], self._volume)
            pos += n
            if not self._started and ring.available >= cfg.prefill_samples:
                self._start()
        self._chunks += 1
        self._samples_written += total

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's audio thread: copy from the ring, zero-fill what is missing, count."""
        if status:
            self._note_status(status)
        n = self._ring.pull(outdata)
        if n < frames:
            outdata[n:].fill(0.0)
            if not self._draining:
                self._underruns += 1
                self._underrun_samples += frames - n
        self._callbacks += 1
        self._samples_out += frames

    def _note_status(self, status: Any) -> None:
        for flag in STATUS_FLAGS:
            if getattr(status, flag, False):
                self._flag_counts[flag] += 1

    def _finished(self) -> None:
        """PortAudio calls this when the stream ends: by our stop(), or because the device died."""
        if not self._stopping and self._error is None:
            self._error = self._vanished("PortAudio ended the stream")

    def close(self, *, drain: bool = True) -> None:
        """Play out what is buffered (``drain``), then stop and close the stream.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        stream = self._stream
        if stream is None:
            return
        sd = _sounddevice()
        try:
            if drain and self._error is None:
                if not self._started and self._ring.available:
                    self._start()  # fewer than prefill_frames were ever written: play them anyway
                if self._started:
                    self._draining = True
                    deadline = time.monotonic() + self._ring.available / CONTRACT.sample_rate + 2.0
                    while self._ring.available and self._error is None and time.monotonic() < deadline:
                        time.sleep(CONTRACT.frame_ms / 1000.0 / 4)
                    # Stopping does not wait for what the device still has queued with every host API
                    # (ALSA's pulse plugin drops it, measured).  The device has played its queue once
                    # it has asked for a queue's worth (latency) plus a block more of silence; waiting
                    # on that count rather than on the wall clock stays right when the CPU is busy.
                    queued = round(self._latency_s * CONTRACT.sample_rate) + max(self.config.blocksize, 1)
                    target = self._samples_out + queued
                    deadline = time.monotonic() + self._latency_s + 2.0
                    while self._samples_out < target and self._error is None and time.monotonic() < deadline:
                        time.sleep(CONTRACT.frame_ms / 1000.0 / 4)
            self._stopping = True
            if self._started and self._error is None:
                if drain:
                    stream.stop()
                else:
                    stream.abort()
            stream.close()
        except (sd.PortAudioError, SinkError) as err:  # a dying device may fail to stop; nothing is lost
            log.warning("closing %s: %s", self.name, err)
            with contextlib.suppress(sd.PortAudioError):
                stream.close(ignore_errors=True)
        finally:
            self._stopping = True
            self._stream = None

    def stats(self) -> dict:
        ring = self._ring
        return {
            "kind": "device",
            "name": self.name,
            "device": self.device["name"] if self.device else None,
            "latency_s": self._latency_s,
            "delay_s": self.delay_s,
            "volume": self._volume,
            "started": self._started,
            "callbacks": self._callbacks,
            "chunks_written": self._chunks,
            "samples_written": self._samples_written,
            "frames_written": self._samples_written / CONTRACT.hop,
            "buffered_samples": ring.available,
            "buffered_frames": ring.available / CONTRACT.hop,
            "underruns": self._underruns,
            "underrun_samples": self._underrun_samples,
            "overflows": ring.overflows,
            "overflow_samples": ring.dropped,
            "nonfinite_samples": self._nonfinite,
            "status_flags": dict(self._flag_counts),
            "error": self._error,
        }


class FileSink(Sink):
    """A wav (float32) or flac (24-bit) recording at ``CONTRACT.sample_rate``, written as chunks
    arrive to a hidden temporary file beside ``path`` and renamed to ``path`` on ``close()``."""

    def __init__(self, path: str | os.PathLike, *, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or f"file:{self.path}"
        suffix = self.path.suffix.lower()
        if suffix not in FILE_FORMATS:
            raise SinkSpecError(
                f"cannot record to {str(self.path)!r}: the extension must be "
                f"{' or '.join(FILE_FORMATS)} (e.g. --record out.flac)"
            )
        self.format, self.subtype = FILE_FORMATS[suffix]
        self.tmp_path = temp_path(self.path)
        self._file = None
        self._closed = False
        self._samples = 0
        self._chunks = 0

    def open(self) -> None:
        if self._file is not None:
            return
        import soundfile

        if not self.path.parent.is_dir():
            raise SinkError(
                f"cannot record to {str(self.path)!r}: folder {str(self.path.parent)!r} does not exist"
            )
        try:
            self._file = soundfile.SoundFile(
                self.tmp_path, mode="w", samplerate=CONTRACT.sample_rate, channels=CONTRACT.channels,
                format=self.format, subtype=self.subtype,
            )
        except (OSError, RuntimeError) as err:  # soundfile raises LibsndfileError(RuntimeError)
            raise SinkError(f"cannot record to {str(self.path)!r}: {err}") from err
        log.info("recording to %s (%s %s)", self.path, self.format, self.subtype)
        for left in leftovers(self.path):
            log.warning("%s is an unfinished recording to %s left by a run that was killed (SIGKILL or power "
                        "loss): every block written before that is in it; rename it to keep it (e.g. `mv '%s' "
                        "'%s'`) or delete it", left, self.path.name, left,
                        self.path.with_name(f"recovered-{self.path.name}"))

    def write(self, chunk: np.ndarray) -> None:
        if self._file is None or self._closed:
            raise RuntimeError(f"{self!r}: write() outside open() … close()")
        chunk = _as_chunk(chunk)
        # soundfile wants (frames, channels), C-contiguous
        self._file.write(np.ascontiguousarray(chunk.T))
        self._samples += chunk.shape[1]
        self._chunks += 1

    def close(self) -> None:
        """Finalise the file (header/stream info) and rename it into place.  Idempotent."""
        if self._closed or self._file is None:
            self._closed = True
            return
        self._closed = True
        try:
            self._file.close()
        finally:  # even when interrupted while closing, the recording gets its final name
            os.replace(self.tmp_path, self.path)
            log.info("recorded %.2f s to %s", self._samples / CONTRACT.sample_rate, self.path)

    def discard(self) -> None:
        """Close without keeping anything (a start-up that failed elsewhere must not replace an
        existing file with an empty one)."""
        if self._file is not None and not self._closed:
            self._file.close()
            self.tmp_path.unlink(missing_ok=True)
        self._closed = True

    def stats(self) -> dict:
        return {
            "kind": "file",
            "name": self.name,
            "path": str(self.path),
            "chunks_written": self._chunks,
            "samples_written": self._samples,
            "frames_written": self._samples / CONTRACT.hop,
            "seconds": self._samples / CONTRACT.sample_rate,
        }


class NullSink(Sink):
    """Discards audio; counts what it was given."""

    def __init__(self, *, name: str = "null") -> None:
        self.name = name
        self._samples = 0
        self._chunks = 0
        self._open = False

    def open(self) -> None:
        self._open = True

    def write(self, chunk: np.ndarray) -> None:
        if not self._open:
            raise RuntimeError(f"{self!r}: write() outside open() … close()")
        self._samples += _as_chunk(chunk).shape[1]
        self._chunks += 1

    def close(self) -> None:
        self._open = False

    def stats(self) -> dict:
        return {
            "kind": "null",
            "name": self.name,
            "chunks_written": self._chunks,
            "samples_written": self._samples,
            "frames_written": self._samples / CONTRACT.hop,
        }


class MultiSink(Sink):
    """Several sinks fed the same chunks (e.g. a device and a recording).

    A failure of one sink (a vanished device) does not stop the others from receiving the chunk;
    the first error is raised after all were written.  ``close`` closes every sink."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = list(sinks)
        self.name = " + ".join(s.name for s in self.sinks) or "none"

    @property
    def latency_s(self) -> float:
        return max((s.latency_s for s in self.sinks), default=0.0)

    def set_volume(self, value: float) -> None:
        """Set the playback volume of every sink that has one (device sinks; recordings keep the
        generated level)."""
        value = check_volume(value)
        for s in self.sinks:
            if hasattr(s, "set_volume"):
                s.set_volume(value)

    def open(self) -> None:
        opened: list[Sink] = []
        try:
            for s in self.sinks:
                s.open()
                opened.append(s)
        except BaseException:
            for s in reversed(opened):
                try:
                    getattr(s, "discard", s.close)()
                except Exception as err:  # keep the original error; this one is secondary
                    log.warning("closing %s after a failed open: %s", s.name, err)
            raise

    def write(self, chunk: np.ndarray) -> None:
        first: BaseException | None = None
        for s in self.sinks:
            try:
                s.write(chunk)
            except LivefoleyError as err:
                first = first or err
        if first is not None:
            raise first

    def close(self) -> None:
        first: BaseException | None = None
        for s in self.sinks:
            try:
                s.close()
            except BaseException as err:  # close every sink, then report the first failure
                first = first or err
        if first is not None:
            raise first

    def stats(self) -> dict:
        per = [s.stats() for s in self.sinks]
        return {
            "kind": "multi",
            "name": self.name,
            "latency_s": self.latency_s,
            "underruns": sum(p.get("underruns", 0) for p in per),
            "overflows": sum(p.get("overflows", 0) for p in per),
            "sinks": per,
        }


def parse_sink(spec: str, **device_options: Any) -> Sink:
    """Build the (unopened) sink for a sink string (see the module docstring).

    ``device_options`` (volume, blocksize, prefill_frames, capacity_frames, latency,
    block_timeout_s) apply to device sinks and are ignored by the others."""
    text = spec.strip()
    kind, sep, arg = text.partition(":")
    if kind == "device":
        if sep and not arg.strip():
            raise SinkSpecError(f"sink {spec!r} names no device; use 'device' or 'device:NAME_OR_INDEX'")
        return DeviceSink(device=arg.strip() if sep else None, name=text, **device_options)
    if kind == "file" and arg.strip():
        return FileSink(arg.strip(), name=text)
    if text == "null":
        return NullSink()
    raise SinkSpecError(f"unknown sink {spec!r}; valid forms: {', '.join(SINK_FORMS)}")


def build_sinks(
    specs: list[str], record: str | None = None, volume: float = 1.0, **device_options: Any
) -> MultiSink:
    """Build (not open) the :class:`MultiSink` for ``--sink`` strings plus an optional ``--record``
    path; open it with a ``with`` block (or ``open()``).  ``volume`` is the playback volume of the device sinks."""
    sinks = [parse_sink(s, volume=volume, **device_options) for s in specs]
    if record:
        sinks.append(FileSink(record))
    if not sinks:
        raise SinkSpecError("no sink given: pass --sink device, --sink null or --record OUT.flac")
    paths = [s.path.resolve() for s in sinks if isinstance(s, FileSink)]
    if len(paths) != len(set(paths)):
        raise SinkSpecError("the same recording file is named twice; give each one its own path")
    return MultiSink(sinks)
