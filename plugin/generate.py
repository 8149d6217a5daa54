"""Offline video-to-audio: the job behind ``livefoley generate``.

For every input video: probe it, decode it (PyAV) resampled to 30 fps by timestamp, run the same
causal model as ``live`` over it (vision tokens in batches, then the autoregressive loop), and write

* a video (mp4 / m4v / mov / mkv / webm / avi): the original video stream copied packet for packet
  plus the generated 48 kHz stereo track, the original audio kept as a second track or mixed in
  (:func:`audio.mux.mux_audio`); or
* audio only (``.wav`` / ``.flac``, :func:`audio.io.write_audio`).

The generated track lasts exactly as long as the output's video (the model makes ``n`` 1600-sample
chunks for the ``n`` 30-fps frames that cover the window, trimmed to the window's length).  With
``start``/``duration`` and a video output, the window begins on the key frame at or before
``start`` (a stream copy cannot begin elsewhere; :class:`audio.mux.MuxPlan`); audio-only outputs
use the window as given.

Robustness: each input fails on its own (a :class:`FileResult` with the message) and the batch
goes on; an input is never overwritten; an existing output needs ``overwrite``; outputs are
written under a temporary name and renamed when complete, so an error or Ctrl-C leaves no partial
file.

Speed: decoding (+ fitting frames to the vision input) and the batched vision encoder run in
background threads ahead of the autoregressive loop (:func:`generate_pipelined`), the encoder with
one batch in flight per core; FFmpeg, OpenCV and torch release the GIL, so the cores stay busy
while the loop (transformer, head, VAE) waits for the interpreter.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audio.contract import CONTRACT
from audio.errors import LivefoleyError, UsageError
from audio.measure import choose_threads, peak_rss_mib, usable_cores
from plugin.options import check_writable, same_file

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mkv", ".mov", ".webm", ".avi")
"""What a folder given as input contributes (case-insensitive), and the video outputs."""
AUDIO_SUFFIXES = (".wav", ".flac")
OUTPUT_TAG = ".livefoley"
"""Outputs in a folder are named ``<stem>.livefoley<ext>``; such files are skipped as inputs."""


class GenerateError(LivefoleyError):
    """A ``generate`` request that cannot be carried out (unreadable inputs, unwritable outputs)."""


class GenerateUsageError(GenerateError, UsageError):
    """Options that are out of range or exclude each other, or outputs that do not fit the inputs."""


@dataclass(frozen=True)
class GenerateConfig:
    """Options of one ``generate`` run (CLI flags of the same names).

    ``nfe``/``guidance`` None → the model's defaults; ``duration`` None → to the end; ``mix`` None → no
    mixing; ``dinov2_weights``: a local DINOv2 file (for a model with hub vision weights);
    ``format`` (a suffix such as ``".mkv"``/``".wav"``) names the outputs written to a folder
    (default: the input's own container); ``threads`` = torch CPU threads (None → 1, see
    :func:`audio.measure.choose_threads`, at most 1); ``optimize``: the audio path's linear layers in
    int8 where that measures faster (:func:`model.optimize.optimize_audio`, CPU only).
    """

    model: str = "default"
    device: str = "auto"
    dinov2_weights: str | None = None
    nfe: int | None = None
    guidance: float | None = None  # ω (--cfg)
    seed: int = 0
    start: float = 0.0
    duration: float | None = None
    keep_audio: bool = False
    mix: float | None = None
    overwrite: bool = False
    batch_size: int = 32
    threads: int | None = None
    format: str | None = None
    progress: bool = True
    optimize: bool = False

    def __post_init__(self) -> None:
        if not (self.start >= 0 and math.isfinite(self.start)):
            raise GenerateUsageError(f"--start must be >= 0 seconds, got {self.start}")
        if self.duration is not None and not (self.duration > 0 and math.isfinite(self.duration)):
            raise GenerateUsageError(f"--duration must be > 0 seconds, got {self.duration}")
        if self.mix is not None and not 0.0 <= self.mix <= 1.0:
            raise GenerateUsageError(f"--mix must be between 0 (generated only) and 1 (original only), "
                                f"got {self.mix}")
        if self.keep_audio and self.mix is not None:
            raise GenerateUsageError("--keep-audio and --mix exclude each other: keep the original as a second "
                                "track, or mix it into the generated one")
        if self.batch_size < 1:
            raise GenerateUsageError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise GenerateUsageError(f"--threads must be >= 1, got {self.threads}")
        if self.guidance is not None and not math.isfinite(self.guidance):
            raise GenerateUsageError(f"--cfg must be a finite number, got {self.guidance}")
        if self.format is not None:
            fmt = self.format if self.format.startswith(".") else f".{self.format}"
            if fmt.lower() not in VIDEO_SUFFIXES + AUDIO_SUFFIXES:
                raise GenerateUsageError(f"--format {self.format!r} is not one of "
                                    f"{', '.join(s[1:] for s in VIDEO_SUFFIXES + AUDIO_SUFFIXES)}")
            object.__setattr__(self, "format", fmt.lower())


@dataclass
class FileResult:
    """The outcome for one input (``--json`` writes these)."""

    input: str
    output: str | None
    ok: bool = False
    error: str | None = None
    frames: int = 0               # 30-fps frames generated
    duration: float = 0.0         # seconds of video processed (= seconds of audio written)
    start: float = 0.0            # window on the input's video timeline, seconds
    end: float = 0.0
    seconds: float = 0.0          # wall time for this file (probe → written)
    decode_seconds: float = 0.0   # busy time of the decoding thread (decode + fit to the vision input)
    vision_seconds: float = 0.0   # busy time of the vision-encoder thread (includes waiting for frames)
    generate_seconds: float = 0.0  # decode → last audio chunk (the threads overlap the model loop)
    write_seconds: float = 0.0
    peak_rss_mib: float = 0.0     # the process's peak resident memory so far
    tracks: list[str] = field(default_factory=list)

    @property
    def realtime(self) -> float:
        """Speed as a multiple of real time (video seconds per wall second)."""
        return self.duration / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["realtime"] = round(self.realtime, 3)
        for k in ("duration", "start", "end", "seconds", "decode_seconds", "vision_seconds",
                  "generate_seconds", "write_seconds", "peak_rss_mib"):
            d[k] = round(d[k], 4)
        return d


@dataclass
class GenerateReport:
    """All results of a run; :attr:`exit_code` is the number of failed files (at most 125)."""

    results: list[FileResult]
    model: str
    device: str
    nfe: int
    guidance: float
    seed: int
    threads: int | None
    audio_path: str | None = None  # "eager" or "int8" (--optimize); None: no model was loaded
    seconds: float = 0.0

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if not r.ok]

    @property
    def exit_code(self) -> int:
        return min(len(self.failed), 125)

    def to_dict(self) -> dict[str, Any]:
        ok = [r for r in self.results if r.ok]
        duration = sum(r.duration for r in ok)
        busy = sum(r.seconds for r in ok)
        return {
            "model": self.model, "device": self.device, "nfe": self.nfe, "cfg": self.guidance, "seed": self.seed,
            "threads": self.threads, "audio_path": self.audio_path,
            "files": [r.to_dict() for r in self.results],
            "totals": {
                "files": len(self.results), "ok": len(ok), "failed": len(self.failed),
                "frames": sum(r.frames for r in ok), "duration": round(duration, 4),
                "seconds": round(self.seconds, 4), "realtime": round(duration / busy, 3) if busy > 0 else 0.0,
                "peak_rss_mib": round(peak_rss_mib(), 1),
            },
            "failures": [{"input": r.input, "error": r.error} for r in self.failed],
        }


# ---- inputs and outputs ------------------------------------------------------------------------------

def is_output_name(path: Path) -> bool:
    return path.stem.lower().endswith(OUTPUT_TAG)


def collect_inputs(paths: Sequence[str | os.PathLike]) -> tuple[list[Path], list[FileResult], bool]:
    """Expand the command line: files as given, folders to their videos (sorted, not recursive;
    earlier ``*.livefoley.*`` outputs skipped).  Returns ``(inputs, failures, had_folder)``; a
    missing path or a folder without videos becomes a failure of its own."""
    inputs: list[Path] = []
    failures: list[FileResult] = []
    had_folder = False
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            had_folder = True
            videos = sorted(f for f in p.iterdir()
                            if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES and not is_output_name(f))
            if not videos:
                failures.append(FileResult(input=str(p), output=None, error=(
                    f"{p}: folder holds no videos ({', '.join(s[1:] for s in VIDEO_SUFFIXES)}); "
                    "give video files or another folder")))
            inputs.extend(videos)
        elif p.exists():
            inputs.append(p)
        else:
            failures.append(FileResult(input=str(p), output=None,
                                       error=f"{p}: no such file or folder; check the path"))
    return inputs, failures, had_folder


def plan_outputs(inputs: Sequence[Path], out: str | os.PathLike, *, folder_mode: bool,
                 fmt: str | None) -> list[Path]:
    """Output path per input: ``out`` itself for one input written to a file, else
    ``out/<stem>.livefoley<ext>`` (``ext`` = ``fmt`` or the input's suffix).  Creates a folder
    ``out`` when needed.  Raises :class:`GenerateError` for an unusable ``out``."""
    named_folder = os.fspath(out).endswith(("/", os.sep))  # before Path() drops the trailing '/'
    out = Path(out)
    folder = folder_mode or out.is_dir() or named_folder
    if not folder:
        suffix = out.suffix.lower()
        if suffix not in VIDEO_SUFFIXES + AUDIO_SUFFIXES:
            raise GenerateUsageError(
                f"-o {out}: unknown output type {suffix or '(no suffix)'!r}; name a video "
                f"({', '.join(VIDEO_SUFFIXES)}), an audio file (.wav, .flac) or a folder (ending in '/')")
        if fmt is not None and fmt != suffix:
            raise GenerateUsageError(f"--format {fmt} disagrees with -o {out}; --format names the files written "
                                "into an output folder")
        if not out.parent.is_dir():
            raise GenerateUsageError(f"-o {out}: folder {out.parent} does not exist; create it first")
        check_writable(out.parent)
        return [out]
    if out.exists() and not out.is_dir() or (not out.exists() and out.suffix.lower() in
                                              VIDEO_SUFFIXES + AUDIO_SUFFIXES):
        raise GenerateUsageError(f"-o {out} names a file, but several inputs (or a folder) need an output "
                            "folder; give a folder (the outputs are named <stem>.livefoley<ext>)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GenerateError(f"cannot create the output folder {out} ({err}); pick another -o") from None
    check_writable(out)
    return [out / f"{p.stem}{OUTPUT_TAG}{fmt or p.suffix.lower()}" for p in inputs]


# ---- decoding in the background ------------------------------------------------------------------------

_END = object()


class _Failed:
    def __init__(self, err: BaseException) -> None:
        self.err = err


class Prefetch:
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead (a bounded queue).

    Errors raised by the producer are re-raised in the consumer.  :meth:`close` (or leaving the
    ``with`` block) stops the thread and closes the producer even when the consumer stops early
    (an error, Ctrl-C).  ``busy_seconds``: time the producer spent producing.
    """

    def __init__(self, iterable: Iterable, *, depth: int = 32, name: str = "livefoley-decode") -> None:
        self._source = iterable
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self.busy_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        it = iter(self._source)
        try:
            while not self._stop.is_set():
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    self._put(_END)
                    return
                self.busy_seconds += time.perf_counter() - t
                self._put(item)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(_Failed(err))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.err
            yield item

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=10)

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fitted(frames: Iterable, fit: Callable[[np.ndarray], np.ndarray]) -> Iterator:
    """``frames`` (capture Frames) → images passed through ``fit``; a repeated frame (the same array
    object, from the 30-fps resampler) is resized once."""
    last_in: np.ndarray | None = None
    last_out: np.ndarray | None = None
    try:
        for frame in frames:
            image = frame.image
            if image is not last_in:
                last_in, last_out = image, fit(image)
            yield last_out
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def generate_pipelined(gen, frames: Iterable, *, seed: int = 0, nfe: int | None = None,
                       guidance: float | None = None, batch_size: int = 32, vision_workers: int = 1,
                       progress: Callable[[int], None] | None = None,
                       ) -> tuple[np.ndarray, tuple[float, float]]:
    """``gen.generate(frames, ...)`` as a three-stage pipeline; returns ``(audio (2, 1600·T), (decode
    seconds, vision seconds))``.

    Same audio as :meth:`model.generator.Generator.generate` (same tokens, same session, same noise
    order — a test checks it), but decoding + fitting frames to the vision input (thread 1) and the
    batched vision encoder (``gen.tokenize``, thread 2, with ``vision_workers`` batches in flight on
    threads of their own) run ahead of the autoregressive loop (transformer, head, VAE: the main
    thread).  ``progress(n)`` is called per block of ``n`` frames done.
    """
    # The backbone's own resize, in the decoding thread: the backbone then finds frames already at
    # size and leaves them alone (bit-identical tokens), and the main thread is spared the resize
    # and the stacking of full-size frames.
    with Prefetch(_fitted(frames, gen.fit), depth=batch_size) as decoded, \
            Prefetch(gen.tokenize(decoded, batch_size=batch_size, workers=vision_workers), depth=2,
                     name="livefoley-vision") as blocks:
        audio = gen.generate_from_tokens(blocks, seed=seed, nfe=nfe, guidance=guidance, progress=progress)
        busy = (decoded.busy_seconds, blocks.busy_seconds)
    return audio, busy


# ---- the job ----------------------------------------------------------------------------------------------

def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, disable=not enabled, leave=True,
                dynamic_ncols=True, smoothing=0.1,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} frames "
                           "[{elapsed}<{remaining}{postfix}]")


def _check_codec(src: Path) -> None:
    """A clear error for a video stream FFmpeg has no decoder for (other problems: probe_video)."""
    import av

    try:
        container = av.open(str(src))
    except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError):
        return  # unreadable: probe_video says so, naming the file
    with container:
        if container.streams.video and container.streams.video[0].codec_context is None:
            raise GenerateError(f"{src}: FFmpeg has no decoder for its video codec (unsupported codec); "
                                "convert it to H.264 or VP9 first")


def generate_file(gen, src: Path, dst: Path, config: GenerateConfig, *,
                  bar_factory: Callable[[int, str], Any] | None = None) -> FileResult:
    """Process one input into ``dst``; raises :class:`LivefoleyError` (or an FFmpeg / OS error)
    on failure.  ``gen`` is a loaded :class:`model.generator.Generator`."""
    from audio.io import write_audio
    from audio.mux import mix_tracks, mux_audio, plan_mux, read_audio_window, scan_video
    from capture.file import iter_frames_30fps, probe_video
    from capture.resample import output_frame_count

    t_begin = time.perf_counter()
    result = FileResult(input=str(src), output=str(dst))
    if src.is_file() and src.stat().st_size == 0:
        raise GenerateError(f"{src} is empty (0 bytes): the recording or download produced nothing; "
                            "give the real file")
    _check_codec(src)
    info = probe_video(src)
    audio_only = dst.suffix.lower() in AUDIO_SUFFIXES
    plan = None
    if audio_only:
        scan_video(src)  # what decoding alone may not notice (a Matroska file cut short)
        if config.start >= info.duration:
            raise GenerateError(f"{src}: --start {config.start:.3f} s is at or after the end of the video "
                                f"({info.duration:.3f} s); choose an earlier start")
        start = config.start
        end = info.duration if config.duration is None else min(info.duration, start + config.duration)
        whole_tail = config.duration is None or start + config.duration >= info.duration
        mix = config.mix if info.has_audio else None
        if config.mix is not None and not info.has_audio:
            log.warning("%s has no audio track: --mix ignored", src)
        result.tracks = ["audio:generated"]
    else:
        plan = plan_mux(src, dst, keep_audio=config.keep_audio, mix=config.mix, start=config.start,
                        duration=config.duration)
        start, end = plan.start, plan.end
        whole_tail = plan.copy_until is None
        mix = plan.mix
        result.tracks = [f"video:{plan.video_codec} (copied)", f"audio:{plan.audio_codec} (generated"
                         + (f", mixed {plan.mix:g} with the original)" if plan.mix is not None else ")")]
        if plan.keep_audio:
            result.tracks.append(f"audio:{plan.original_codec} (original, copied)")
        if plan.start < config.start - 1e-6:
            log.info("%s: the stream copy starts on the key frame at %.3f s (asked for %.3f s)",
                     src, plan.start, config.start)
    window = end - start
    n_frames = output_frame_count(window)
    n_samples = int(round(window * CONTRACT.sample_rate))
    result.start, result.end, result.duration = start, end, window

    frames = iter_frames_30fps(src, start=start, duration=None if whole_tail else window)
    bar = (bar_factory or (lambda n, d: _bar(n, d, config.progress)))(n_frames, src.name)
    done = 0
    t_gen = time.perf_counter()

    def progress(n: int) -> None:
        nonlocal done
        done += n
        bar.update(n)
        elapsed = time.perf_counter() - t_gen
        if elapsed > 0:
            bar.set_postfix_str(f"{done / CONTRACT.fps / elapsed:.2f}× real time", refresh=False)

    # a batch in flight per torch's thread count of cores (one per core by default): the backbone keeps
    # every core busy while the loop waits for the interpreter, and no more threads than cores spin
    # waiting for each other (audio.measure.choose_threads); at most 8 batches' activations at once
    workers = 1
    if gen.device.type == "cpu":
        import torch

        workers = max(1, min(8, len(usable_cores()) // torch.get_num_threads()))
    try:
        audio, busy = generate_pipelined(gen, frames, seed=config.seed, nfe=config.nfe, guidance=config.guidance,
                                         batch_size=config.batch_size, vision_workers=workers, progress=progress)
    finally:
        bar.close()
    result.decode_seconds, result.vision_seconds = busy
    result.generate_seconds = time.perf_counter() - t_gen
    result.frames = audio.shape[1] // CONTRACT.hop
    if result.frames != n_frames:
        log.debug("%s: %d frames decoded, %d expected for %.3f s", src, result.frames, n_frames, window)
    if audio.shape[1] < n_samples:  # a decoder that ended a frame early: pad the last sliver with silence
        audio = np.pad(audio, ((0, 0), (0, n_samples - audio.shape[1])))
    audio = np.ascontiguousarray(audio[:, :n_samples])

    t_write = time.perf_counter()
    if audio_only:
        if mix is not None:
            audio = mix_tracks(audio, read_audio_window(src, start, end), mix)
        write_audio(dst, audio)
    else:
        mux_audio(src, audio, dst, start=start, plan=plan)
    result.write_seconds = time.perf_counter() - t_write
    result.seconds = time.perf_counter() - t_begin
    result.peak_rss_mib = peak_rss_mib()
    result.ok = True
    return result


def run_generate(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, config: GenerateConfig, *,
                 generator=None) -> GenerateReport:
    """The whole command: expand inputs, load the model once, process each file (failures are
    recorded and the batch goes on).  ``generator``: an already loaded model (tests, reuse)."""
    t0 = time.perf_counter()
    paths, failures, had_folder = collect_inputs(inputs)
    folder_mode = had_folder or len(paths) + len(failures) > 1
    outputs = plan_outputs(paths, out, folder_mode=folder_mode, fmt=config.format) if paths else []
    if config.keep_audio and outputs and all(o.suffix.lower() in AUDIO_SUFFIXES for o in outputs):
        raise GenerateUsageError("--keep-audio needs a video output (it adds the original as a second track); "
                            "for .wav/.flac use --mix to mix the original in")

    gen = generator
    if paths and gen is None:
        import torch

        from model.generator import load_generator

        gen = load_generator(config.model, config.device, dinov2_weights=config.dinov2_weights)
        if gen.device.type == "cpu":
            # one intra-op thread unless asked: the loop's small matrices gain little from two, and
            # decoding and the vision encoder run on threads of their own beside it
            torch.set_num_threads(choose_threads(config.threads, most=1))
    if gen is not None and config.optimize:
        if gen.device.type == "cpu":
            from model.optimize import optimize_audio

            optimize_audio(gen)  # ~3 s of timing; int8 kept only where it is faster here
        else:
            log.warning("--optimize is the CPU path; ignored on %s", gen.device)
    if gen is not None:
        nfe = gen.check_nfe(config.nfe if config.nfe is not None else gen.nfe)
        guidance = config.guidance if config.guidance is not None else gen.guidance
        model_name, device = gen.config.name, str(gen.device)
    else:
        nfe, guidance, model_name, device = config.nfe or 0, config.guidance or 0.0, config.model, config.device

    threads = None
    if gen is not None and gen.device.type == "cpu":
        import torch

        threads = torch.get_num_threads()
    audio_path = (gen.audio_choice or {}).get("path", "eager") if gen is not None else None
    report = GenerateReport(results=list(failures), model=model_name, device=device, nfe=nfe, guidance=guidance,
                            seed=config.seed, threads=threads, audio_path=audio_path)
    resolved_inputs = {p.resolve() for p in paths}
    claimed: dict[Path, Path] = {}
    for src, dst in zip(paths, outputs, strict=True):
        error = None
        if same_file(src, dst):
            error = (f"{src}: the output would be the input itself; an input is never overwritten — "
                     "choose another -o")
        elif dst.resolve() in resolved_inputs:
            error = (f"{src}: the output {dst} is another input of this run; an input is never "
                     "overwritten — choose another -o")
        elif dst.resolve() in claimed:
            error = (f"{src}: the output {dst} is already written for {claimed[dst.resolve()]} in this run "
                     "(same name); rename one input or use --format")
        elif dst.is_dir():
            error = f"{src}: the output {dst} is a folder; choose a file name"
        elif dst.exists() and not config.overwrite:
            error = f"{src}: the output {dst} exists; pass --overwrite to replace it"
        if error is None:
            claimed[dst.resolve()] = src
            try:
                result = generate_file(gen, src, dst, config)
            except (KeyboardInterrupt, SystemExit):
                raise
            except LivefoleyError as err:
                error = str(err)
            except Exception as err:  # noqa: BLE001 - one bad file must not end the batch
                log.debug("%s failed", src, exc_info=True)
                error = f"{src}: {type(err).__name__}: {err}"
        if error is not None:
            log.error("%s", error)
            report.results.append(FileResult(input=str(src), output=str(dst), error=error,
                                             peak_rss_mib=peak_rss_mib()))
        else:
            log.info("%s → %s: %.2f s of video in %.2f s (%.2f× real time)", src, dst, result.duration,
                     result.seconds, result.realtime)
            report.results.append(result)
    report.seconds = time.perf_counter() - t0
    return report


__all__ = [
    "AUDIO_SUFFIXES", "FileResult", "GenerateConfig", "GenerateError", "GenerateReport", "Prefetch",
    "VIDEO_SUFFIXES", "collect_inputs", "generate_file", "generate_pipelined", "plan_outputs",
    "run_generate",
]
