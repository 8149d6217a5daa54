"""Stream-copy muxing (``livefoley generate``): a generated soundtrack next to an existing video.

:func:`mux_audio` copies the original video stream packet for packet, encodes the new stereo track
(AAC in mp4/mov, Opus in mkv/webm, PCM in avi), and drops the original audio, stream-copies it as a
second track, or mixes it in (:func:`mix_tracks`: ``(1 − mix)·generated + mix·original``).
:func:`plan_mux` checks all of that up front (containers, codecs, the exact window — a copy starts
on a key frame) so a long generation never ends in a refusal; :func:`scan_video` reads the video
packets; :func:`read_audio_window` decodes the original sound of a window as 48 kHz stereo.  The
output is written under a temporary name and renamed when complete (:mod:`audio.files`).
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from audio.contract import CONTRACT
from audio.files import temp_path
from audio.media import MediaError

log = logging.getLogger(__name__)

MUX_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm",
                  ".avi": "avi"}
"""File suffix → FFmpeg muxer that :func:`mux_audio` writes."""

MUX_AUDIO_CODECS = {"mp4": "aac", "mov": "aac", "matroska": "libopus", "webm": "libopus", "avi": "pcm_s16le"}
"""Muxer → encoder of the generated track.  AAC where players expect it (mp4/mov); Opus in
Matroska/WebM (its pre-skip is signalled, so the track starts and ends sample-exactly); 16-bit PCM
in AVI (AVI cannot signal an encoder delay, so a lossy codec there would shift the sound)."""

_BITRATES = {"aac": 192_000, "libopus": 160_000}
_INTERLEAVE_S = 0.5  # generated audio is muxed this far ahead of the video packets being copied


@dataclass(frozen=True)
class MuxPlan:
    """What :func:`mux_audio` will write for ``video_in`` → ``out_path`` (see :func:`plan_mux`).

    ``start``/``end``: the output's window in seconds on the video's own timeline (0 = its first
    frame).  A stream copy can only begin on a key frame, so ``start`` is the key frame at or before
    the requested start, and ``end`` is where the last copied frame stops being shown.  Decode order
    is kept, like ``ffmpeg -c copy``: every packet decoded before ``copy_until`` (the requested end;
    None = to the end of the video) is copied, so with B-frames a reference frame shown just after
    the requested end may be included and ``end`` is a few frames later.
    ``keep_audio``/``mix`` are the effective settings (both off when the input has no audio).
    """

    video_in: str
    out_path: str
    format: str
    video_codec: str
    audio_codec: str
    start: float
    end: float
    copy_until: float | None
    has_original_audio: bool
    original_codec: str | None
    keep_audio: bool
    mix: float | None

    @property
    def duration(self) -> float:
        return self.end - self.start


def mux_format(path: str | os.PathLike) -> str:
    """The FFmpeg muxer for an output path's suffix, or a :class:`MediaError` listing the valid ones."""
    path = Path(path)
    fmt = MUX_CONTAINERS.get(path.suffix.lower())
    if fmt is None:
        raise MediaError(f"cannot write {path}: unknown video container {path.suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(sorted(MUX_CONTAINERS))} (or .wav/.flac for audio only)")
    return fmt


def _open_input(path: str):
    import av

    if not Path(path).is_file():
        raise MediaError(f"{path}: no such file; check the path")
    try:
        return av.open(path)
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise MediaError(f"{path}: not a media file FFmpeg can read ({err}); it may be truncated or "
                         "corrupt — re-encode or re-download it") from None


def _supported_codecs(fmt: str) -> set[str]:
    import av

    with av.open(io.BytesIO(), mode="w", format=fmt) as probe:
        return set(probe.supported_codecs)


def _rel(value: int | None, time_base: Fraction, origin: float) -> float | None:
    return None if value is None else float(value * time_base) - origin


def _stream_origin(stream) -> float:
    """The stream's start (seconds on the container clock); 0 when the container does not say."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _duration(packet) -> float:
    return float(packet.duration * packet.time_base) if packet.duration else 0.0


class _VideoSelector:
    """The packet rule shared by :func:`plan_mux` and :func:`mux_audio` (decode order).

    Copy starts at the key frame whose pts is the window start; afterwards a packet is copied when
    it decodes before the requested end (``dts < end``) and is not shown before the start.
    """

    def __init__(self, start: float, end: float | None, eps: float) -> None:
        self.start, self.end, self.eps = start, end, eps
        self.started = False
        self.done = False

    def __call__(self, pts: float, dts: float | None, key: bool) -> bool:
        if self.done:
            return False
        if not self.started:
            if key and abs(pts - self.start) <= self.eps:
                self.started = True
                return True
            return False
        if self.end is not None and (dts if dts is not None else pts) >= self.end - self.eps:
            self.done = True
            return False
        return pts >= self.start - self.eps


@dataclass(frozen=True)
class VideoScan:
    """The first video stream's packets, read without decoding (:func:`scan_video`).

    ``packets``: ``(pts, dts, key frame, duration)`` per packet in decode order, seconds on the
    video's own timeline (0 = its start); ``end``: when the last frame stops being shown
    (:func:`capture.file.probe_video`'s rule); ``nominal``: one frame interval at the average rate.
    """

    path: str
    codec: str
    packets: tuple[tuple[float, float | None, bool, float], ...]
    end: float
    nominal: float

    @property
    def eps(self) -> float:
        """Timestamp tolerance: the smaller of 1 ms and a quarter frame."""
        return min(1e-3, self.nominal / 4)


def _matroska_duration(stream) -> float | None:
    """The per-stream ``DURATION`` tag FFmpeg's Matroska muxer writes ("HH:MM:SS.nnnnnnnnn")."""
    tag = stream.metadata.get("DURATION")
    if not tag:
        return None
    try:
        h, m, sec = tag.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        return None


def _scan(container, path: str) -> VideoScan:
    if not container.streams.video:
        raise MediaError(f"{path}: has no video stream; give a video file")
    vs = container.streams.video[0]
    if vs.codec_context is None:
        raise MediaError(f"{path}: FFmpeg does not know its video codec (unsupported codec); "
                         "convert it to H.264/VP9 first (e.g. with the program that made it)")
    origin = _stream_origin(vs)
    rate = vs.average_rate or vs.guessed_rate or vs.base_rate
    nominal = 1.0 / float(rate) if rate else 1.0 / CONTRACT.fps
    packets = []
    for p in container.demux(vs):
        if p.pts is None or p.size == 0:
            continue
        dur = float(p.duration * p.time_base) if p.duration else nominal
        pts, dts = _rel(p.pts, p.time_base, origin), _rel(p.dts, p.time_base, origin)
        packets.append((pts, dts, p.is_keyframe, dur))
    if not packets:
        raise MediaError(f"{path}: the video stream holds no frames; give a video with pictures")
    # When the last frame stops being shown: capture.file.probe_video's rule, so that the window
    # and the 30-fps frame count iter_frames_30fps yields agree.
    declared = _rel(vs.duration, vs.time_base, 0.0) if vs.duration else None
    if declared is None and container.duration is not None and len(container.streams) == 1:
        declared = container.duration / 1_000_000 - origin
    last = max(pts for pts, *_ in packets)
    end = declared if declared is not None and declared > last + 1e-6 else last + nominal
    tagged = _matroska_duration(vs)
    if tagged is not None and last + nominal < tagged - 2 * nominal:
        raise MediaError(f"{path} is truncated: its video declares {tagged:.3f} s but its frames end at "
                         f"{last + nominal:.3f} s; the download or recording did not finish — re-encode "
                         "or re-download it")
    return VideoScan(path=path, codec=vs.codec_context.name, packets=tuple(packets), end=end, nominal=nominal)


def scan_video(path: str | os.PathLike) -> VideoScan:
    """Read the packets of ``path``'s first video stream (no decoding; fast).

    Raises :class:`MediaError` for an unreadable file, no video stream, a codec FFmpeg does not
    know, no frames, or a Matroska file cut short (fewer frames than its ``DURATION`` tag says).
    """
    path = os.fspath(path)
    with _open_input(path) as container:
        return _scan(container, path)


def plan_mux(video_in: str | os.PathLike, out_path: str | os.PathLike, *, keep_audio: bool = False,
             mix: float | None = None, start: float = 0.0, duration: float | None = None) -> MuxPlan:
    """Check that ``video_in`` can be stream-copied into ``out_path`` and find the exact window.

    Reads only packets (:func:`scan_video`), then writes the start of the output to memory (a dry
    run that catches what a muxer refuses only when packets arrive).  Raises :class:`MediaError`
    for an unknown container, a video (or, with ``keep_audio``, audio) codec the output container
    cannot hold, what :func:`scan_video` rejects, or a window outside the video; ``ValueError`` for
    contradictory options.
    """
    if keep_audio and mix is not None:
        raise ValueError("keep_audio and mix are exclusive: keep the original as a second track, "
                         "or mix it in")
    if mix is not None and not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix must be between 0 and 1, got {mix}")
    if start < 0 or (duration is not None and duration <= 0):
        raise ValueError(f"need start >= 0 and duration > 0, got start={start}, duration={duration}")
    video_in, out_path = os.fspath(video_in), os.fspath(out_path)
    fmt = mux_format(out_path)
    supported = _supported_codecs(fmt)
    with _open_input(video_in) as container:
        scan = _scan(container, video_in)
        if scan.codec not in supported:
            raise MediaError(
                f"{video_in}: its {scan.codec} video cannot be copied into a {Path(out_path).suffix} file "
                f"without re-encoding; write .mkv (holds any codec) or the input's own container"
            )
        original = container.streams.audio[0] if container.streams.audio else None
        ocodec = original.codec_context.name if original is not None and original.codec_context else None
    if original is not None and ocodec is None and (keep_audio or mix is not None):
        raise MediaError(f"{video_in}: FFmpeg does not know its audio codec, so it can be neither "
                         "kept nor mixed; drop --keep-audio/--mix")
    if original is None and (keep_audio or mix is not None):
        log.warning("%s has no audio track: writing the generated track only "
                    "(--keep-audio/--mix ignored)", video_in)
        keep_audio, mix = False, None
    if keep_audio and ocodec not in supported:
        raise MediaError(
            f"{video_in}: its {ocodec} audio cannot be copied into a {Path(out_path).suffix} file; "
            "write .mkv, use --mix to mix it into the generated track, or drop --keep-audio"
        )
    packets, eps = scan.packets, scan.eps
    if start >= scan.end - eps:
        raise MediaError(f"{video_in}: start {start:.3f} s is at or after the end of the video "
                         f"({scan.end:.3f} s); choose an earlier start")
    keys = [pts for pts, _, key, _ in packets if key and pts <= start + eps]
    t0 = max(keys) if keys else min(pts for pts, _, key, _ in packets if key)
    req_end = None if duration is None or start + duration >= scan.end - eps else start + duration
    select = _VideoSelector(t0, req_end, eps)
    chosen = [(pts, dur) for pts, dts, key, dur in packets if select(pts, dts, key)]
    # Copied to the end: the last frame stops where the video does.
    t1 = min(max(pts + dur for pts, dur in chosen), scan.end) if select.done else scan.end
    plan = MuxPlan(video_in=video_in, out_path=out_path, format=fmt, video_codec=scan.codec,
                   audio_codec=MUX_AUDIO_CODECS[fmt], start=t0, end=t1, copy_until=req_end,
                   has_original_audio=original is not None, original_codec=ocodec, keep_audio=keep_audio,
                   mix=mix)
    _remux(io.BytesIO(), plan, np.zeros((2, CONTRACT.hop), np.float32), dry_run=True)
    return plan


def read_audio_window(path: str | os.PathLike, start: float, end: float, *,
                      sample_rate: int = CONTRACT.sample_rate) -> np.ndarray:
    """The first audio track of ``path`` between ``start`` and ``end`` seconds of its *video*
    timeline (0 = the video's first frame), as float32 stereo ``(2, round((end-start)·rate))``.

    Downmixed like :func:`audio.io.read_audio` (ITU for surround, mono duplicated), resampled to
    ``sample_rate``; parts of the window the track does not cover are silence.  Raises
    :class:`MediaError` for a file without audio or an undecodable track.
    """
    import av

    from audio.io import decode_track, downmix, resample

    path = os.fspath(path)
    n_out = int(round((end - start) * sample_rate))
    with _open_input(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: has no audio track to mix; drop --mix")
        stream = container.streams.audio[0]
        origin = _stream_origin(container.streams.video[0]) if container.streams.video else 0.0
        t_start, t_end = origin + start, origin + end
        if start > 0:
            container.seek(int(max(0.0, t_start - 1.0) / stream.time_base), stream=stream, backward=True)
        try:
            data, rate, names, first_time = decode_track(container, stream, start=t_start, end=t_end)
        except (av.FFmpegError, ValueError) as err:
            raise MediaError(f"{path}: its audio track could not be decoded ({err}); re-encode it") from None
    result = np.zeros((2, n_out), np.float32)
    if data is None:
        return result
    data = downmix(data, names, source=path)
    if rate != sample_rate:
        data = resample(data, rate, sample_rate)
    offset = int(round((first_time - t_start) * sample_rate))  # > 0: the track starts inside the window
    src_from = max(0, -offset)
    dst_from = max(0, offset)
    n = min(data.shape[1] - src_from, n_out - dst_from)
    if n > 0:
        result[:, dst_from:dst_from + n] = data[:, src_from:src_from + n]
    return result


def mix_tracks(generated: np.ndarray, original: np.ndarray, mix: float) -> np.ndarray:
    """``(1 − mix)·generated + mix·original`` (both ``(2, N)``, clipped to ±1 first), float32.

    ``mix`` = 0 → generated only, 1 → original only, 0.5 → equal parts.  A convex combination of
    two signals within ±1 stays within ±1: the mix never clips and needs no normalisation.
    """
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix must be between 0 and 1, got {mix}")
    if generated.shape != original.shape:
        raise ValueError(f"tracks differ in shape: {generated.shape} vs {original.shape}")
    g = np.clip(generated, -1.0, 1.0).astype(np.float32, copy=False)
    o = np.clip(original, -1.0, 1.0).astype(np.float32, copy=False)
    return ((1.0 - mix) * g + mix * o).astype(np.float32, copy=False)


def _fit(audio: np.ndarray, sample_rate: int, lead_s: float, total: int) -> np.ndarray:
    """Resample to the contract rate, prepend ``lead_s`` of silence, pad / trim to ``total`` samples."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or audio.shape[0] not in (1, 2):
        raise ValueError(f"audio must be (channels, samples) with 1 or 2 channels, got shape {audio.shape}")
    if audio.shape[0] == 1:
        audio = np.repeat(audio, 2, axis=0)
    if not np.isfinite(audio).all():
        raise ValueError("audio contains NaN or infinite samples")
    if sample_rate != CONTRACT.sample_rate:
        from audio.io import _resample

        audio = _resample(audio, sample_rate, CONTRACT.sample_rate)
    lead = int(round(lead_s * CONTRACT.sample_rate))
    out = np.zeros((2, total), np.float32)
    n = min(audio.shape[1], total - lead)
    if n > 0:
        out[:, lead:lead + n] = audio[:, :n]
    return out


def mux_audio(video_in: str | os.PathLike, audio: np.ndarray, out_path: str | os.PathLike, *,
              keep_audio: bool = False, mix: float | None = None, sample_rate: int = CONTRACT.sample_rate,
              start: float = 0.0, duration: float | None = None, audio_bitrate: int | None = None,
              plan: MuxPlan | None = None) -> MuxPlan:
    """Write ``out_path``: ``video_in``'s video stream copied packet for packet (no re-encode) plus
    ``audio`` as a new stereo track; returns the :class:`MuxPlan` it followed.

    ``audio``: float32 ``(2, N)`` (or mono) at ``sample_rate``, whose sample 0 belongs to ``start``
    seconds into the video (0 = its first frame).  The output covers ``plan_mux(...)``'s window:
    from the key frame at or before ``start`` (the gap before ``start`` is silence — give ``start``
    = ``plan.start`` to avoid it) to the end of the last copied frame; the track is padded with
    silence or trimmed to exactly that length.  Timestamps are shifted so the window starts at 0 for
    every stream.  The track is AAC in mp4/mov, Opus in mkv/webm, 16-bit PCM in avi
    (:data:`MUX_AUDIO_CODECS`).

    The original audio (first audio stream) is, with ``keep_audio``, stream-copied as a second
    track (packets that start inside the window), or with ``mix`` (0..1) decoded, downmixed to
    stereo at 48 kHz and mixed in as ``(1 − mix)·generated + mix·original`` (:func:`mix_tracks`);
    otherwise dropped.  A kept track holds the packets that sound inside the window (from the start
    of the file: all of them before the last frame ends, encoder priming included).  Subtitles and
    other streams are not copied.

    Written to a temporary name in the output's folder and renamed when complete; on any error or
    interrupt the temporary file is removed.  ``out_path`` must differ from ``video_in``.
    """
    video_in, out_path = Path(video_in), Path(out_path)
    if out_path.exists() and video_in.exists() and os.path.samefile(video_in, out_path):
        raise MediaError(f"{out_path} is the input itself; an input is never overwritten — "
                         "choose another output")
    if not out_path.parent.is_dir():
        raise MediaError(f"cannot write {out_path}: folder {out_path.parent} does not exist; create it first")
    if plan is None:
        plan = plan_mux(video_in, out_path, keep_audio=keep_audio, mix=mix, start=start, duration=duration)
    total = int(round(plan.duration * CONTRACT.sample_rate))
    track = _fit(audio, sample_rate, start - plan.start, total)
    if plan.mix is not None:
        track = mix_tracks(track, read_audio_window(video_in, plan.start, plan.end), plan.mix)
    else:
        track = np.clip(track, -1.0, 1.0)

    tmp = temp_path(out_path)
    try:
        n_video = _remux(str(tmp), plan, track, audio_bitrate=audio_bitrate)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out_path)
    log.debug("wrote %s: %d video packets copied, %d generated samples (%s)%s", out_path, n_video, total,
              plan.audio_codec, " + original audio" if plan.keep_audio else "")
    return plan


def _remux(dest, plan: MuxPlan, track: np.ndarray, *, audio_bitrate: int | None = None,
           dry_run: bool = False) -> int:
    """Write ``plan``'s output to ``dest`` (a path or a file object); returns the video packets copied.

    ``dry_run`` stops after the first packet of each stream: a cheap check that the muxer accepts
    every stream (some refuse only when the first packet arrives).  FFmpeg errors become
    :class:`MediaError`.
    """
    import av

    total = track.shape[1]
    out = av.open(dest, mode="w", format=plan.format)
    n_video = 0
    try:
        with _open_input(plan.video_in) as inp:
            vin = inp.streams.video[0]
            ain = inp.streams.audio[0] if plan.keep_audio else None
            vout = out.add_stream_from_template(vin, opaque=True)
            if "language" in vin.metadata:
                vout.metadata["language"] = vin.metadata["language"]
            aout = out.add_stream(plan.audio_codec, rate=CONTRACT.sample_rate, layout="stereo")
            if plan.audio_codec in _BITRATES:
                aout.bit_rate = audio_bitrate or _BITRATES[plan.audio_codec]
            aout.metadata["title"] = aout.metadata["handler_name"] = "livefoley (generated)"
            kout = None
            if ain is not None:
                kout = out.add_stream_from_template(ain, opaque=True)
                kout.metadata["title"] = kout.metadata["handler_name"] = "original"
                if "language" in ain.metadata:
                    kout.metadata["language"] = ain.metadata["language"]
            origin = _stream_origin(vin) + plan.start  # container-clock seconds that become 0
            rate = vin.average_rate or vin.guessed_rate or vin.base_rate
            eps = min(1e-3, (1.0 / float(rate) if rate else 1.0 / CONTRACT.fps) / 4)
            until = None if plan.copy_until is None else plan.copy_until - plan.start
            select = _VideoSelector(0.0, until, eps)
            sent = 0

            def push(upto: int) -> None:
                nonlocal sent
                upto = min(upto, total)
                while sent < upto:
                    n = min(CONTRACT.hop, upto - sent)
                    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(track[:, sent:sent + n]),
                                                       format="fltp", layout="stereo")
                    frame.sample_rate = CONTRACT.sample_rate
                    frame.pts, frame.time_base = sent, Fraction(1, CONTRACT.sample_rate)
                    sent += n
                    for packet in aout.encode(frame):
                        out.mux(packet)

            def copy(packet, stream) -> None:
                off = int(round(origin / packet.time_base))
                packet.pts -= off
                if packet.dts is not None:
                    packet.dts -= off
                packet.stream = stream
                out.mux(packet)

            kept = 0
            for packet in inp.demux([vin] + ([ain] if ain is not None else [])):
                if packet.pts is None or packet.size == 0:
                    continue
                t = float(packet.pts * packet.time_base) - origin
                if packet.stream.type == "video":
                    dts = None if packet.dts is None else float(packet.dts * packet.time_base) - origin
                    if not select(t, dts, packet.is_keyframe):
                        if select.done and kout is None:
                            break
                        continue
                    push(int(((dts if dts is not None else t) + _INTERLEAVE_S) * CONTRACT.sample_rate))
                    copy(packet, vout)
                    n_video += 1
                elif t < plan.duration - eps and (plan.start == 0.0 or t + _duration(packet) > eps):
                    copy(packet, kout)  # original audio, kept as it is (with its priming, from the start)
                    kept += 1
                if dry_run and n_video and (kout is None or kept):
                    break
            push(total)
            for packet in aout.encode(None):
                out.mux(packet)
        out.close()
    except BaseException as err:
        try:
            out.close()
        except Exception:  # noqa: BLE001 - the original error is the one worth reporting
            log.debug("closing the half-written output failed", exc_info=True)
        if isinstance(err, av.FFmpegError):
            raise MediaError(
                f"cannot write {plan.out_path} from {plan.video_in}: the {Path(plan.out_path).suffix} muxer "
                f"refused it ({getattr(err, 'strerror', None) or err}); write .mkv (holds any codec) or the "
                "input's own container"
            ) from None
        raise
    if n_video == 0:
        raise MediaError(f"{plan.video_in}: no video packets could be copied; the file may be corrupt")
    return n_video
