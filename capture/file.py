"""Video files as frame sources (PyAV / the FFmpeg bundled in its wheel), live or offline.

``file:PATH`` or a bare path.  Any container/codec FFmpeg reads; the first video stream is used.

* **Timeline.**  A frame's ``pts`` is its presentation time in seconds on the video's own
  timeline, where the video stream's start (its ``start_time``, normally the first frame) is 0,
  minus the ``start`` the source was opened at.  Variable frame rate is therefore handled for
  free: frames keep their real timestamps and the 30-fps resampler
  (:mod:`capture.resample`) picks by time.  With ``start > 0`` the decoder seeks to the key frame
  before ``start``; the frame on screen at ``start`` is returned first, with ``pts`` 0.
* **Pacing.**  ``realtime=True`` (the default; ``live`` is then True) replays the file in wall-clock
  time: ``read`` sleeps until ``first_read + pts``, like a camera would deliver it.
  ``realtime=False`` decodes as fast as possible (``live`` False) for offline work.
* **Pictures.**  RGB uint8 ``(H, W, 3)`` in display orientation: the container's display matrix
  (phone videos) is applied, odd sizes are fine, and ``size=(W, H)`` resizes in FFmpeg's scaler
  (area filter) on the way out.
* **End.**  After the last frame, :attr:`FileSource.end_pts` holds when that frame stops being
  shown: the stream's declared duration when the container gives one that lies after the last
  frame, otherwise the last frame + one nominal frame interval.  :func:`probe_video` uses the
  same rule, so ``output_frame_count(probe_video(p).duration)`` is exactly the number of frames
  :func:`iter_frames_30fps` yields.
* **Bad files.**  Missing, unreadable, no video stream, zero frames, or truncated/corrupt raise
  :class:`~capture.base.CaptureError` naming the file.  Truncation is caught three ways: a sample
  index (mp4/mov) that points past the end of the file (checked at open, exact), a partial packet
  or a decoder error while reading, and — for containers without a sample index — decoding that
  ends more than 2 frames before the stream's declared duration.  (An mp4 whose index was never
  written — cut while recording — has no readable video stream at all.)

:func:`iter_frames_30fps` is the offline helper (``livefoley generate`` / ``prepare``): a whole
video (or a window of it) decoded and resampled to exactly ``CONTRACT.fps``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audio.contract import CONTRACT
from capture.base import CaptureError, Frame, FrameSource
from capture.resample import DEFAULT_TOLERANCE, output_frame_count, resample

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

#: A decode that ends this many nominal frame intervals (or more) before the declared duration
#: means the file was cut short.
_TRUNCATION_FRAMES = 2.0
_HINT = "re-encode or re-download it (e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`)"


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a file without decoding pictures.

    ``duration``: seconds from the video stream's start to the end of its last frame (the rule in
    the module docstring); ``fps``: the stream's average rate; ``width``/``height``: display size
    (after rotation); ``n_frames``: frames in the stream (counted from the packets when the
    container does not say); ``has_audio``: an audio stream exists; ``start_time``: the video
    stream's start on the container clock, in seconds (offset a muxed soundtrack by this).
    """

    path: str
    duration: float
    fps: float
    width: int
    height: int
    n_frames: int
    has_audio: bool
    start_time: float
    rotation: int = 0

    @property
    def n_frames_30fps(self) -> int:
        """Frames :func:`iter_frames_30fps` yields for the whole video (``CONTRACT.fps``)."""
        return output_frame_count(self.duration, fps=CONTRACT.fps)


def _open_container(path: str) -> av.container.InputContainer:
    import av

    if not Path(path).exists():
        raise CaptureError(f"video file {path!r} does not exist; check the path (source strings: "
                           "'file:PATH' or a bare path)")
    if Path(path).is_dir():
        raise CaptureError(f"{path!r} is a directory, not a video file; give the path of a video")
    try:
        return av.open(path, mode="r")
    except av.FFmpegError as err:
        raise CaptureError(
            f"{path!r} is not a video FFmpeg can read ({err}); it may be truncated or corrupt, "
            f"or not a video at all — {_HINT}"
        ) from err


def _video_stream(container: av.container.InputContainer, path: str) -> av.VideoStream:
    if not container.streams.video:
        raise CaptureError(
            f"{path!r} has no video stream (an audio-only file, or an mp4 cut short before its "
            f"index was written); give a video file, or {_HINT}"
        )
    return container.streams.video[0]


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _stream_timing(container: av.container.InputContainer,
                   stream: av.VideoStream) -> tuple[float, float | None, float]:
    """``(start_time, declared_duration, nominal_fps)`` of a video stream, in seconds / Hz.

    The declared duration is the stream's own; the container's is used only when the video is the
    file's only stream (otherwise it may be the audio's length).
    """
    start = _seconds(stream.start_time, stream.time_base) or 0.0
    declared = _seconds(stream.duration, stream.time_base)
    if declared is None and container.duration is not None and len(container.streams) == 1:
        declared = container.duration / 1_000_000 - start
    if declared is not None and declared <= 0:
        declared = None
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else float(CONTRACT.fps)
    return start, declared, fps


def _end_of_stream(last_pts: float, declared: float | None, fps: float) -> float:
    """When the last frame (at ``last_pts``, stream clock) stops being shown."""
    if declared is not None and declared > last_pts + 1e-6:
        return declared
    return last_pts + 1.0 / fps


def _check_complete(stream: av.VideoStream, path: str) -> bool:
    """Raise if the stream's sample index points past the end of the file (cut short).

    Returns whether the container indexes every sample (mp4/mov do; then this check is exact;
    Matroska's cues list only some key frames).
    """
    entries = stream.index_entries
    if entries is None or len(entries) == 0:
        return False
    per_sample = len(entries) >= (stream.frames or 0) > 0
    needed = max((e.pos + e.size for e in entries if e.pos >= 0), default=0)
    have = os.path.getsize(path)
    if needed > have:
        raise CaptureError(
            f"{path!r} is truncated: its index needs {needed} bytes but the file has {have} "
            f"({100 * have / needed:.0f}%); the download or recording did not finish — {_HINT}"
        )
    return per_sample


def _decode_checked(container: av.container.InputContainer, stream: av.VideoStream,
                    path: str) -> Iterator[av.VideoFrame]:
    """Decode ``stream`` packet by packet; a partial (corrupt) packet or a decoder error raises."""
    import av

    t = 0.0
    try:
        for packet in container.demux(stream):
            if packet.is_corrupt:
                raise CaptureError(
                    f"{path!r}: damaged data at {t:.3f} s (a partial or corrupt packet); the file is "
                    f"truncated or corrupt — {_HINT}"
                )
            for frame in packet.decode():
                if frame.time is not None:
                    t = frame.time
                yield frame
    except av.FFmpegError as err:
        raise CaptureError(
            f"{path!r}: decoding failed near {t:.3f} s ({err}); the file is truncated or corrupt "
            f"— {_HINT}"
        ) from err


def _display_rotation(frame: av.VideoFrame) -> int:
    """Counter-clockwise rotation in degrees (a multiple of 90) that displays ``frame`` upright."""
    return int(round((frame.rotation or 0) / 90.0)) % 4 * 90


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
    """Decoded frame → (H, W, 3) uint8 RGB in display orientation, resized to ``size`` = (W, H)."""
    rotation = _display_rotation(frame)
    if size is None:
        image = frame.to_ndarray(format="rgb24")
    else:
        width, height = size if rotation in (0, 180) else (size[1], size[0])
        image = frame.reformat(width=width, height=height, format="rgb24",
                               interpolation="AREA").to_ndarray()
    if rotation:
        # np.rot90 turns counter-clockwise for positive k, as FFmpeg's display matrix does.
        image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
    return image


class FileSource(FrameSource):
    """Frames of a video file; see the module docstring for timeline, pacing and errors.

    ``start``/``duration`` (seconds) select a window; ``size=(W, H)`` resizes.  ``realtime`` paces
    to the wall clock (``live`` = True); ``realtime=False`` decodes as fast as possible.
    """

    def __init__(self, path: str | os.PathLike[str], *, realtime: bool = True, start: float = 0.0,
                 duration: float | None = None, size: tuple[int, int] | None = None) -> None:
        if start < 0:
            raise CaptureError(f"start must be >= 0 seconds, got {start}")
        if duration is not None and duration <= 0:
            raise CaptureError(f"duration must be > 0 seconds, got {duration}")
        if size is not None and (len(size) != 2 or min(size) <= 0):
            raise CaptureError(f"size must be (width, height) with both > 0, got {size}")
        self.path = os.fspath(path)
        self.name = f"file:{self.path}"
        self.live = bool(realtime)
        self.start = float(start)
        self.duration = duration
        self._size = None if size is None else (int(size[0]), int(size[1]))
        self._container: Any = None
        self._timeline: Iterator[tuple[float, Any]] | None = None
        self._first: tuple[float, Any] | None = None
        self._index = 0
        self._indexed = False
        self._wall_origin: float | None = None
        self.end_pts: float | None = None
        """When the last returned frame stops being shown (``pts`` clock); set at the end."""

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self) -> None:
        self.close()
        container = _open_container(self.path)
        try:
            stream = _video_stream(container, self.path)
            stream.thread_type = "AUTO"  # frame + slice threads: decode throughput, not latency, matters
            self._indexed = _check_complete(stream, self.path)
            self._stream_start, self._declared, self.fps = _stream_timing(container, stream)
            if self._declared is not None and self.start >= self._declared:
                raise CaptureError(
                    f"{self.path!r}: start {self.start:.3f} s is at or after the end of the video "
                    f"({self._declared:.3f} s); choose an earlier start"
                )
            if self.start > 0:
                target = int((self.start + self._stream_start) / stream.time_base)
                container.seek(target, stream=stream, backward=True, any_frame=False)
            self._container = container
            self._stream = stream
            self._timeline = self._decode_timeline()
            self._first = next(self._timeline, None)
            if self._first is None:
                raise CaptureError(
                    f"{self.path!r} has a video stream but no frames could be decoded from it"
                    + (f" after {self.start:.3f} s" if self.start else "")
                    + f"; give a video that contains pictures, or {_HINT}"
                )
        except BaseException:
            container.close()
            self._container = None
            raise
        first_frame = self._first[1]
        if self._size is not None:
            self.size = self._size
        else:
            w, h = first_frame.width, first_frame.height
            self.size = (w, h) if _display_rotation(first_frame) in (0, 180) else (h, w)
        self._index = 0
        self._wall_origin = None
        self.end_pts = None
        log.debug("opened %s: %dx%d, %.3f fps, declared %.3f s", self.path, *self.size, self.fps,
                  self._declared or -1.0)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = None
        self._timeline = None
        self._first = None

    # -- decoding -------------------------------------------------------------------------------
    def _decode_timeline(self) -> Iterator[tuple[float, Any]]:
        """Yield ``(pts relative to start, av.VideoFrame)`` for the selected window, in order.

        Frames before ``start`` are skipped except the one on screen at ``start`` (returned with
        pts 0).  Raises :class:`CaptureError` on decode errors and on truncation.
        """
        tol = DEFAULT_TOLERANCE / CONTRACT.fps
        interval = 1.0 / self.fps
        stop_at = None if self.duration is None else self.duration
        pending = None       # latest frame at or before ``start`` (+ tolerance)
        first = True
        last_media: float | None = None
        max_media = -math.inf
        for frame in _decode_checked(self._container, self._stream, self.path):
            if frame.time is not None:
                media = frame.time - self._stream_start
            elif last_media is not None:  # no timestamp (raw elementary streams): assume CFR
                media = last_media + interval
            else:
                media = 0.0
            if last_media is not None and media <= last_media:
                log.debug("%s: non-increasing pts %.4f after %.4f", self.path, media, last_media)
            last_media = media
            max_media = max(max_media, media)
            rel = media - self.start
            if rel <= tol:
                pending = frame
                continue
            if pending is not None:
                yield 0.0, pending
                pending, first = None, False
            if stop_at is not None and rel >= stop_at:
                self.end_pts = stop_at
                return
            yield (0.0 if first else rel), frame
            first = False
        if pending is not None:
            yield 0.0, pending
        if last_media is None:
            return
        # Files with a sample index were checked against their size at open; for the others the
        # declared duration is the only yardstick.
        missing = None if self._indexed or self._declared is None else (
            self._declared - (max_media + interval))
        if missing is not None and missing > _TRUNCATION_FRAMES * interval:
            raise CaptureError(
                f"{self.path!r} ends at {max_media + interval:.3f} s although it declares "
                f"{self._declared:.3f} s: the file is truncated or corrupt — {_HINT}"
            )
        end = _end_of_stream(max_media, self._declared, self.fps) - self.start
        self.end_pts = end if stop_at is None else min(end, stop_at)

    def read(self) -> Frame | None:
        if self._timeline is None:
            raise CaptureError(f"{self.name}: read() before open(); use `with source:` or call open()")
        if self._first is not None:
            item, self._first = self._first, None
        else:
            item = next(self._timeline, None)
        if item is None:
            return None
        pts, frame = item
        image = _to_rgb(frame, self._size)
        if self.live:
            now = time.monotonic()
            if self._wall_origin is None:
                self._wall_origin = now - pts
            delay = self._wall_origin + pts - now
            if delay > 0:
                time.sleep(delay)
        out = Frame(image=image, index=self._index, pts=pts, captured_at=time.monotonic())
        self._index += 1
        return out


def from_spec(arg: str | None, **options: Any) -> FileSource:
    """Registry factory for ``file:PATH`` / a bare path; ``options`` go to :class:`FileSource`."""
    if not arg:
        raise CaptureError("the 'file' source needs a path: 'file:VIDEO.mp4' or just 'VIDEO.mp4'")
    return FileSource(arg, **options)


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Duration, rate, display size, frame count, audio presence and start of a video file.

    Reads the container header and demuxes only the tail (to find the last frame's timestamp)
    unless the container does not declare a frame count, in which case all video packets are
    counted (no decoding).  Raises :class:`CaptureError` for files :class:`FileSource` rejects
    at open (missing, unreadable, no video stream).
    """
    import av

    path = os.fspath(path)
    with _open_container(path) as container:
        stream = _video_stream(container, path)
        _check_complete(stream, path)
        start, declared, fps = _stream_timing(container, stream)
        width, height = stream.codec_context.width, stream.codec_context.height
        rotation = 0
        n_frames = int(stream.frames or 0)
        last_pts: float | None = None

        def scan() -> tuple[int, float | None]:
            count, latest = 0, None
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                count += 1
                t = float(packet.pts * packet.time_base) - start
                latest = t if latest is None else max(latest, t)
            return count, latest

        if n_frames == 0:
            n_frames, last_pts = scan()
        else:
            hint = declared if declared is not None else (container.duration or 0) / 1_000_000 - start
            tail = max(0.0, hint)
            # Seek a little before the declared end (back to its key frame) and read to EOF.
            container.seek(int((max(0.0, tail - 1.0) + start) / stream.time_base), stream=stream,
                           backward=True, any_frame=False)
            _, last_pts = scan()
            if last_pts is None:
                container.seek(0, stream=stream, backward=True)
                _, last_pts = scan()
        if last_pts is None or n_frames == 0:
            raise CaptureError(f"{path!r} has a video stream but no frames; give a video that contains "
                               f"pictures, or {_HINT}")
        # Rotation lives in the frames' side data: decode one frame to read it (cheap).
        container.seek(0, stream=stream, backward=True)
        try:
            for frame in container.decode(stream):
                rotation = _display_rotation(frame)
                break
        except av.FFmpegError as err:  # a broken first frame is reported by FileSource itself
            log.debug("%s: could not decode a frame while probing: %s", path, err)
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            path=path, duration=_end_of_stream(last_pts, declared, fps), fps=fps, width=width,
            height=height, n_frames=n_frames, has_audio=bool(container.streams.audio),
            start_time=start, rotation=rotation,
        )


def iter_frames_30fps(path: str | os.PathLike[str], *, start: float = 0.0, duration: float | None = None,
                      size: tuple[int, int] | None = None, fps: float = CONTRACT.fps) -> Iterator[Frame]:
    """Decode a video offline (as fast as possible) and yield it resampled to ``fps`` (default 30).

    Output frame ``k`` (``index`` k, ``pts`` k/fps) shows the video at ``start + k/fps`` (rule in
    :mod:`capture.resample`); the count is ``output_frame_count(window)`` where the window runs from
    ``start`` to ``start + duration`` or the end of the video — for the whole video that equals
    ``probe_video(path).n_frames_30fps``.  Images are (H, W, 3) uint8 RGB, resized to
    ``size=(W, H)`` if given; a repeated frame is the same array object.
    """
    source = FileSource(path, realtime=False, start=start, duration=duration, size=size)
    with source:
        yield from resample(source, fps=fps, origin=0.0, end=lambda: source.end_pts)


__all__ = ["FileSource", "VideoInfo", "from_spec", "iter_frames_30fps", "probe_video"]
