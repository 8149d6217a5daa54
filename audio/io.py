"""Audio I/O at the edges: read any audio file or the audio track of a video, write wav/flac.

:func:`read_audio` returns float32 ``(channels, N)`` at the contract's 48 kHz, whatever the file:

* wav / flac / ogg / aiff through soundfile (libsndfile); everything else, and anything libsndfile
  refuses, through PyAV (FFmpeg) - the first audio stream of any audio or video container.
* Resampled with a polyphase filter (``scipy.signal.resample_poly``).
* Mixed to stereo from any layout: mono is duplicated; surround uses the ITU-R BS.775 downmix
  (``L = FL + 0.707·FC + 0.707·(BL|SL)``, likewise R, LFE dropped).  If that mix would clip, it is
  scaled down to peak 1.0 (clip-safe) and a log line says by how much.
* Problems raise :class:`AudioReadError` naming the file: missing, corrupt / not media,
  :class:`NoAudioTrackError` for a video without sound, NaN/inf samples, no samples at all.

:func:`write_audio` writes wav (16-bit PCM by default) or flac (24-bit) chosen by the extension,
to a temporary name in the same folder that is renamed when complete, so a reader never sees a
half-written file and a failure leaves nothing behind.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from audio.contract import CONTRACT
from audio.errors import LivefoleyError
from audio.files import atomic_path

log = logging.getLogger(__name__)

__all__ = ["AudioReadError", "NoAudioTrackError", "AudioWriteError", "decode_track", "downmix", "read_audio",
           "resample", "write_audio"]

SOUNDFILE_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff"})
WRITE_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_24")}

_SQRT_HALF = math.sqrt(0.5)  # 0.707…, -3 dB
# Stereo gains (left, right) per FFmpeg channel name; ITU-R BS.775 for the 5.1/7.1 speakers.
_STEREO_GAINS: dict[str, tuple[float, float]] = {
    "FL": (1.0, 0.0),
    "FR": (0.0, 1.0),
    "FC": (_SQRT_HALF, _SQRT_HALF),
    "LFE": (0.0, 0.0),
    "LFE2": (0.0, 0.0),
    "BL": (_SQRT_HALF, 0.0),
    "BR": (0.0, _SQRT_HALF),
    "SL": (_SQRT_HALF, 0.0),
    "SR": (0.0, _SQRT_HALF),
    "FLC": (1.0, 0.0),
    "FRC": (0.0, 1.0),
    "BC": (0.5, 0.5),
    "DL": (1.0, 0.0),  # stereo downmix channels
    "DR": (0.0, 1.0),
    "WL": (_SQRT_HALF, 0.0),
    "WR": (0.0, _SQRT_HALF),
    "TFL": (_SQRT_HALF, 0.0),
    "TFR": (0.0, _SQRT_HALF),
    "TBL": (_SQRT_HALF, 0.0),
    "TBR": (0.0, _SQRT_HALF),
    "TC": (0.5, 0.5),
    "TFC": (0.5, 0.5),
    "TBC": (0.5, 0.5),
}
# WAVE_FORMAT_EXTENSIBLE speaker order for files that carry no layout (FFmpeg's default layouts).
_DEFAULT_LAYOUTS = {
    1: ("FC",),
    2: ("FL", "FR"),
    3: ("FL", "FR", "FC"),
    4: ("FL", "FR", "BL", "BR"),
    5: ("FL", "FR", "FC", "BL", "BR"),
    6: ("FL", "FR", "FC", "LFE", "BL", "BR"),
    7: ("FL", "FR", "FC", "LFE", "BC", "SL", "SR"),
    8: ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR"),
}


class AudioReadError(LivefoleyError):
    """An input file that is missing, corrupt, not media, or holds unusable samples."""


class NoAudioTrackError(AudioReadError):
    """A readable media file without any audio stream (e.g. a silent screen recording)."""


class AudioWriteError(LivefoleyError):
    """An output that cannot be written (unsupported extension, bad samples, disk problems)."""


# ---- reading -----------------------------------------------------------------------------------


def read_audio(
    path: str | Path, *, sample_rate: int = CONTRACT.sample_rate, channels: int = CONTRACT.channels
) -> np.ndarray:
    """Decode ``path`` to float32 ``(channels, N)`` at ``sample_rate`` (``channels`` is 1 or 2)."""
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    path = Path(path)
    if not path.is_file():
        raise AudioReadError(f"{path}: no such file")
    data = names = rate = None
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        data, rate = _read_soundfile(path)  # None if libsndfile cannot read it; PyAV may
    if data is None:
        data, rate, names = _read_pyav(path)
    if data.shape[1] == 0:
        raise AudioReadError(f"{path}: the audio track holds no samples")
    if not np.isfinite(data).all():
        raise AudioReadError(
            f"{path}: the audio contains NaN or infinite samples; re-export it from its source"
        )
    out = downmix(data, names, channels=channels, source=str(path))
    if rate != sample_rate:
        out = resample(out, rate, sample_rate)
    return np.ascontiguousarray(out, dtype=np.float32)


def _read_soundfile(path: Path) -> tuple[np.ndarray | None, int]:
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        log.debug("soundfile cannot read %s (%s); trying FFmpeg", path, err)
        return None, 0
    return data.T, int(rate)


def _read_pyav(path: Path) -> tuple[np.ndarray, int, list[str] | None]:
    """The first audio stream of any container: float32 ``(C, N)``, its rate, its channel names."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise AudioReadError(
            f"{path}: not a readable audio or video file ({err}); "
            "give a wav/flac/mp3 file or a video with sound"
        ) from None
    with container:
        if not container.streams.audio:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "nothing"
            raise NoAudioTrackError(
                f"{path}: the file has no audio track (it holds {kinds}); give a file with sound"
            )
        stream = container.streams.audio[0]
        try:
            data, rate, names, _ = decode_track(container, stream)
        except (av.error.FFmpegError, ValueError) as err:
            raise AudioReadError(f"{path}: the audio track is corrupt ({err})") from None
    if data is None:
        raise AudioReadError(f"{path}: the audio track holds no samples")
    return data, rate or int(stream.rate or stream.codec_context.sample_rate), names


def decode_track(container, stream, *, start: float | None = None, end: float | None = None,
                 ) -> tuple[np.ndarray | None, int, list[str] | None, float | None]:
    """Decode audio ``stream`` of an open PyAV ``container`` (from ``start`` to ``end`` seconds of the
    stream's own time when given; the caller seeks) → ``(data (C, N) float32 at the native rate and
    layout or None when empty, rate, FFmpeg channel names, time of the first sample)``.  The one
    decode loop of every reader (:func:`read_audio`, :func:`audio.mux.read_audio_window`); FFmpeg
    errors propagate for the caller to name its file."""
    import av

    resampler = av.AudioResampler(format="fltp")  # planar float32, native rate and layout
    parts: list[np.ndarray] = []
    names: list[str] | None = None
    rate, first_time = 0, None
    for frame in container.decode(stream):
        if end is not None and frame.time is not None and frame.time >= end:
            break
        if names is None:
            if start is not None and frame.time is not None and frame.time + frame.samples / frame.sample_rate <= start:
                continue  # wholly before the window
            names = [c.name for c in frame.layout.channels]
            rate = frame.sample_rate
            first_time = frame.time if frame.time is not None else start
        for out in resampler.resample(frame):
            parts.append(out.to_ndarray())
    for out in resampler.resample(None):
        parts.append(out.to_ndarray())
    if not parts:
        return None, rate, names, first_time
    width = parts[0].shape[0]
    if any(p.shape[0] != width for p in parts):
        raise ValueError("the channel count changes inside the audio track; convert it first")
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False), int(rate), names, first_time


def downmix(
    data: np.ndarray, names: list[str] | None = None, *, channels: int = 2, source: str = "audio"
) -> np.ndarray:
    """``(C_in, N)`` → ``(channels, N)``.  ``names`` are FFmpeg channel names (``FL``, ``FC``, …);
    without them the WAV default order for ``C_in`` channels is assumed.  See the module doc."""
    n_in = data.shape[0]
    if n_in == 1:
        stereo = np.repeat(data, 2, axis=0)
    elif n_in == 2:  # any two-channel layout is left/right
        stereo = data
    else:
        if not names or len(names) != n_in:
            names = list(_DEFAULT_LAYOUTS.get(n_in, ()))
        if len(names) == n_in:
            gains = np.array([_STEREO_GAINS.get(n, (0.5, 0.5)) for n in names], dtype=np.float32).T  # (2, C)
        else:  # an unusual channel count without a layout: every channel to both sides equally
            log.warning("%s: %d channels without a known layout; mixing them equally", source, n_in)
            gains = np.full((2, n_in), 1.0 / n_in, dtype=np.float32)
        stereo = gains @ data
        peak = float(np.abs(stereo).max(initial=0.0))
        if peak > 1.0:
            log.info(
                "%s: the %d→2 channel downmix peaks at %.2f; scaled by %.3f", source, n_in, peak, 1 / peak
            )
            stereo = stereo / peak
    return stereo.mean(axis=0, keepdims=True) if channels == 1 else stereo


def resample(data: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """``(C, N)`` float32 from ``rate_in`` to ``rate_out`` (polyphase)."""
    from scipy.signal import resample_poly

    g = math.gcd(rate_in, rate_out)
    return resample_poly(data, rate_out // g, rate_in // g, axis=-1).astype(np.float32, copy=False)


# ---- writing -----------------------------------------------------------------------------------


def write_audio(
    path: str | Path, wav, sample_rate: int = CONTRACT.sample_rate, *, subtype: str | None = None
) -> Path:
    """Write ``wav`` ``(C, N)`` (numpy or torch, float) as wav or flac, chosen by the extension.

    Default encodings: wav 16-bit PCM, flac 24-bit; samples beyond ±1 are clipped (a warning
    counts them).  ``subtype`` overrides (e.g. ``"FLOAT"`` for a lossless float wav).  Written to
    a temporary name in the same folder and renamed when complete.
    """
    import soundfile as sf

    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioWriteError(
            f"{path}: cannot write {path.suffix or 'files without extension'}; use .wav or .flac"
        )
    if hasattr(wav, "detach"):  # a torch tensor
        wav = wav.detach().to("cpu").float().numpy()
    data = np.asarray(wav, dtype=np.float32)
    if data.ndim != 2 or not 1 <= data.shape[0] <= 8:
        raise AudioWriteError(f"{path}: expected samples shaped (channels, N); got {data.shape}")
    if not np.isfinite(data).all():
        raise AudioWriteError(f"{path}: refusing to write NaN or infinite samples")
    subtype = subtype or fmt[1]
    if subtype != "FLOAT" and subtype != "DOUBLE":
        clipped = int((np.abs(data) > 1.0).sum())
        if clipped:
            log.warning("%s: %d samples beyond ±1 were clipped", path, clipped)
            data = np.clip(data, -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            sf.write(str(tmp), data.T, int(sample_rate), subtype=subtype, format=fmt[0])
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as err:
        raise AudioWriteError(f"{path}: could not write ({err})") from None
    return path
