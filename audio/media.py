"""Media I/O through PyAV (FFmpeg bundled in the wheel).

:func:`write_video` encodes RGB frames as H.264 (yuv420p) and, optionally, a float32 audio track
(AAC by default) into an mp4 / mov / mkv file.  Putting a generated soundtrack next to an existing
video without re-encoding it is :mod:`audio.mux`.

Every file is written under a temporary name in the same folder and renamed onto ``path`` only
when complete, so ``path`` either does not exist or is a whole, playable file — never a torso
left by a crash or a Ctrl-C.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from audio.contract import CONTRACT
from audio.errors import LivefoleyError
from audio.files import temp_path

log = logging.getLogger(__name__)

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
"""File suffix → FFmpeg muxer that :func:`write_video` can write."""

_AUDIO_FRAME = 1024  # samples per frame handed to the audio encoder (AAC's frame size)


class MediaError(LivefoleyError):
    """A media file could not be written or read; the message names the file and the fix."""


def _even(img: np.ndarray) -> np.ndarray:
    """Pad an odd-sized (H, W, 3) frame by one edge row/column: yuv420p needs even dimensions."""
    h, w = img.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return img
    return np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _check_frame(img: np.ndarray, index: int, shape: tuple[int, ...] | None) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"frame {index}: expected an (H, W, 3) uint8 RGB array, got {img.dtype} {img.shape}")
    if shape is not None and img.shape != shape:
        raise ValueError(f"frame {index}: size {img.shape} differs from the first frame's {shape}")
    return img


def _check_audio(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[None, :]
    if audio.ndim != 2 or audio.shape[0] not in (1, 2):
        raise ValueError(f"audio must be (channels, samples) with 1 or 2 channels, got shape {audio.shape}")
    return np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    *,
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    sample_rate: int = CONTRACT.sample_rate,
    audio_codec: str = "aac",
    video_codec: str = "libx264",
    crf: int = 20,
    preset: str = "veryfast",
    audio_bitrate: int = 192_000,
) -> Path:
    """Encode ``frames`` ((H, W, 3) uint8 RGB each, all the same size) at ``fps`` and, if given,
    ``audio`` ((channels, samples) float32 in [-1, 1], 1 or 2 channels, at ``sample_rate``) into
    ``path``; returns ``path``.

    Video is ``video_codec`` (H.264 via libx264 by default) in yuv420p — an odd width or height is
    padded by one edge pixel.  Audio is interleaved with the video by time, so the file streams
    well; an audio track longer or shorter than the video is written as it is.  The container is
    chosen by the suffix (see :data:`CONTAINERS`).  The file appears at ``path`` only when complete;
    on any error the temporary file is removed and the error propagates.
    """
    import av  # heavy: imported where used

    path = Path(path)
    fmt = CONTAINERS.get(path.suffix.lower())
    if fmt is None:
        raise MediaError(
            f"cannot write {path}: unknown container {path.suffix!r}; use one of {sorted(CONTAINERS)}"
        )
    if not path.parent.is_dir():
        raise MediaError(f"cannot write {path}: folder {path.parent} does not exist; create it first")
    rate = Fraction(fps).limit_denominator(1001000) if not isinstance(fps, Fraction) else fps
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    samples = None if audio is None else _check_audio(audio)

    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise MediaError(f"cannot write {path}: no video frames were given")
    first = _check_frame(first, 0, None)
    shape = first.shape

    tmp = temp_path(path)
    container = av.open(str(tmp), mode="w", format=fmt)
    try:
        try:
            vstream = container.add_stream(video_codec, rate=rate)
        except (ValueError, av.FFmpegError) as err:
            msg = f"cannot write {path}: video codec {video_codec!r} is unavailable ({err})"
            raise MediaError(msg) from err
        padded = _even(first)
        vstream.width, vstream.height = padded.shape[1], padded.shape[0]
        vstream.pix_fmt = "yuv420p"
        if video_codec in ("libx264", "h264"):
            vstream.options = {"crf": str(crf), "preset": preset}
        astream = None
        if samples is not None:
            layout = "stereo" if samples.shape[0] == 2 else "mono"
            try:
                astream = container.add_stream(audio_codec, rate=sample_rate, layout=layout)
            except (ValueError, av.FFmpegError) as err:
                msg = f"cannot write {path}: audio codec {audio_codec!r} is unavailable ({err})"
                raise MediaError(msg) from err
            astream.bit_rate = audio_bitrate
        sent = 0  # audio samples handed to the encoder so far

        def push_audio(upto: int, final: bool = False) -> None:
            nonlocal sent
            upto = min(upto, samples.shape[1])
            while upto - sent >= _AUDIO_FRAME or (final and upto > sent):
                n = min(_AUDIO_FRAME, upto - sent)
                block = np.ascontiguousarray(samples[:, sent : sent + n])
                af = av.AudioFrame.from_ndarray(block, format="fltp", layout=astream.layout.name)
                af.sample_rate = sample_rate
                af.pts = sent
                af.time_base = Fraction(1, sample_rate)
                sent += n
                for packet in astream.encode(af):
                    container.mux(packet)

        n_frames = 0
        img = first
        while img is not None:
            vf = av.VideoFrame.from_ndarray(_even(img), format="rgb24")
            vf.pts = n_frames
            vf.time_base = 1 / rate
            for packet in vstream.encode(vf):
                container.mux(packet)
            n_frames += 1
            if astream is not None:  # keep audio in step with the video written so far
                push_audio(int(n_frames / rate * sample_rate))
            nxt = next(it, None)
            img = None if nxt is None else _check_frame(nxt, n_frames, shape)
        for packet in vstream.encode(None):
            container.mux(packet)
        if astream is not None:
            push_audio(samples.shape[1], final=True)
            for packet in astream.encode(None):
                container.mux(packet)
        container.close()
    except BaseException:
        try:
            container.close()
        except Exception:  # noqa: BLE001 - the original error is the one worth reporting
            log.debug("closing the half-written %s failed", tmp, exc_info=True)
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    log.debug(
        "wrote %s (%d frames at %s fps%s)",
        path,
        n_frames,
        rate,
        "" if samples is None else f", {samples.shape[0]}-channel {audio_codec} audio",
    )
    return path
