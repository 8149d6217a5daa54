"""``livefoley obs calibrate``: measure the A/V offset of livefoley's sound in OBS's own recording —
what a viewer gets — and cancel it with the scene's Render Delay.

1. A clip of the synthetic world (its events known frame by frame) plays in a temporary, muted
   Media Source ``livefoley calibration`` that fills the canvas of the current scene.
2. The live engine runs on that source (``obs:livefoley calibration``) and plays to the sound
   output OBS captures (``livefoley obs setup``'s audio input).
3. OBS records (its recording output: OBS's picture and OBS's mix of our sound); the recording is
   analysed by :func:`measure_offset`.
4. The Render Delay ``livefoley delay`` on the scene becomes its current value plus the measured
   offset (0–500 ms).
5. A second recording measures the offset after.

The temporary source and the recordings are removed on every exit (Ctrl-C included) unless the
recordings are asked to be kept.  The analysis is independent of OBS and of the engine: it reads a
video file with a picture track and a sound track, and the clip that was shown.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from audio.contract import CONTRACT
from capture.obs.client import NOT_FOUND, ObsClient, ObsError, ObsRequestError
from plugin.obs.settings import MAX_DELAY_MS
from plugin.obs.setup import DELAY_FILTER, SetupReport, ensure_filter

log = logging.getLogger(__name__)

CALIBRATION_SOURCE = "livefoley calibration"
THUMB = (64, 36)  # grey thumbnails the recorded frames are matched on (width, height)
CLIP_SEED = 4242  # the calibration clip's world (any seed works; fixed so runs compare)
MIN_MATCHED = 6  # events paired with a sound onset below which no offset is claimed
MIN_HEARD = 0.12  # … or below this share of the events seen
MIN_PEAK = 0.15  # normalised cross-correlation below which the sound does not follow the picture
MATCH_TOLERANCE_S = 0.06  # an onset belongs to an event within this of the event's lag-corrected time
MAX_LAG_S = 1.0  # the largest offset searched for (OBS's Render Delay stops at 0.5 s)
WINDOW_S = 10.0  # offsets are also summarised per window of this length (drift)


class CalibrationError(ObsError):
    """Calibration could not measure the offset (the message says what was missing and what to do)."""


# ------------------------------------------------------------------------------------------ analysis
@dataclass
class OffsetMeasurement:
    """The A/V offset in one recording.  ``offset_ms``: median over events of (time the sound's
    onset is heard − time the event is first seen), positive = sound late; ``jitter_p95_ms``: p95
    of the events' distance from that median; ``drift_ms``: spread of the per-window medians."""

    offset_ms: float
    jitter_p95_ms: float
    drift_ms: float | None
    matched: int
    events: int
    onsets: int
    xcorr_lag_ms: float
    xcorr_peak: float
    seconds: float
    frames: int
    frames_matched: int
    window_offsets_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _thumbs(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Every picture of ``path`` as a zero-mean grey thumbnail ``(N, w·h)`` and its time (s)."""
    import cv2

    from capture.file import FileSource

    images, times = [], []
    with FileSource(path, realtime=False) as source:
        while (frame := source.read()) is not None:
            grey = cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY)
            images.append(cv2.resize(grey, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32).ravel())
            times.append(frame.pts)
    if not images:
        raise CalibrationError(f"{path}: no pictures could be decoded")
    x = np.stack(images)
    return x - x.mean(axis=1, keepdims=True), np.asarray(times, np.float64)


def picture_times(recording: str | Path, clip: str | Path, *, fps: float = CONTRACT.fps,
                  ) -> tuple[Callable[[int], float | None], int, int]:
    """When each clip frame was first seen in ``recording``.

    Every recorded picture is matched to the clip frame it shows (nearest grey thumbnail; a match
    counts when the second-best is clearly worse, so still stretches that fit several frames do
    not).  Returns ``(seen_at(k), frames, frames_matched)`` where ``seen_at(k)`` is the time of the
    first recorded picture showing clip frame ``k`` or a later one, None when the recording never
    showed it.  A picture matched out of order (a late outlier) is ignored: the clip only plays
    forward.
    """
    rec, rec_t = _thumbs(recording)
    ref, _ = _thumbs(clip)
    d = (rec**2).sum(1)[:, None] - 2.0 * rec @ ref.T + (ref**2).sum(1)[None, :]
    order = np.argsort(d, axis=1)[:, :2]
    best = d[np.arange(len(d)), order[:, 0]]
    second = d[np.arange(len(d)), order[:, 1]]
    confident = (second > 1.3 * np.maximum(best, 1e-6)) & (np.abs(order[:, 1] - order[:, 0]) >= 1)
    k = order[:, 0]
    idx = np.flatnonzero(confident)
    if idx.size < 10:
        raise CalibrationError(
            f"the calibration picture was not found in OBS's recording ({idx.size} of {len(rec)} pictures "
            f"matched): is '{CALIBRATION_SOURCE}' visible in the program scene, with nothing drawn over it?")
    # lag of every confident picture; outliers (a match far from its neighbours) are dropped
    lag = rec_t[idx] - k[idx] / fps
    med = np.median(lag)
    keep = idx[np.abs(lag - med) <= 0.5]
    kept_k, kept_t = k[keep], rec_t[keep]
    # first time each clip frame (or a later one) is seen: a running minimum from the end
    first = np.full(int(ref.shape[0]), np.inf)
    np.minimum.at(first, kept_k, kept_t)
    seen = np.minimum.accumulate(first[::-1])[::-1]
    lo, hi = int(kept_k.min()), int(kept_k.max())

    def seen_at(frame: int) -> float | None:
        if frame < lo or frame > hi or not math.isfinite(seen[frame]):
            return None
        return float(seen[frame])

    return seen_at, len(rec), int(keep.size)


def measure_offset(recording: str | Path, clip: str | Path, events: Sequence[dict], *,
                   fps: float = CONTRACT.fps) -> OffsetMeasurement:
    """The A/V offset of the sound in ``recording`` against the events of ``clip`` as seen in it.

    The picture side comes from :func:`picture_times`; the sound side from the onsets of the
    recording's sound track (:func:`audio.metrics.detect_onsets`).  A cross-correlation of the
    onset envelope with the events' (seen) times finds the overall lag within ±1 s; then each
    event is paired with at most one onset within ±60 ms of its lag-corrected time, and its own
    offset is that onset's time minus the time the event was first seen.
    """
    from audio.io import read_audio
    from audio.metrics import DEFAULT_CONFIG, av_offset, detect_onsets, event_onsets, match_onsets, onset_novelty

    seen_at, n_frames, n_matched = picture_times(recording, clip, fps=fps)
    audio = read_audio(recording)  # the recording's mix, 48 kHz stereo, from the track's first sample
    config = replace(DEFAULT_CONFIG, av_max_lag_s=MAX_LAG_S)
    frames = [{"frame": int(ev["frame"])} for ev in events]
    clip_onsets, groups = event_onsets(frames, tolerance_s=config.tolerance_s)
    shown = [seen_at(int(round(t * fps))) for t in clip_onsets]
    # on the sound track's clock (a container may start its tracks at different times)
    times = np.array([t for t in shown if t is not None], np.float64) - _audio_lead(recording)
    seconds = audio.shape[1] / CONTRACT.sample_rate
    times = times[(times > 0.25) & (times < seconds - MAX_LAG_S)]
    if times.size < MIN_MATCHED:
        raise CalibrationError(f"only {times.size} events of the calibration clip were seen in the recording; "
                               "record longer (--seconds)")
    novelty = onset_novelty(audio, config)
    reference = np.zeros_like(novelty)
    at = np.round(times * config.onset_rate).astype(int)
    reference[at[at < len(reference)]] = 1.0
    lag_ms, peak = av_offset(novelty, reference, config)
    onsets = detect_onsets(audio, config, novelty=novelty)
    if lag_ms is None:
        raise CalibrationError("OBS's recording is silent: livefoley's sound did not reach OBS. Run "
                               "`livefoley obs setup` (it adds the audio input) and check that the engine plays to "
                               "the sound output OBS captures")
    pairs = match_onsets(onsets, times + lag_ms / 1000.0, MATCH_TOLERANCE_S)
    if len(pairs) < max(MIN_MATCHED, MIN_HEARD * times.size) or peak < MIN_PEAK or abs(lag_ms) > 0.95e3 * MAX_LAG_S:
        raise CalibrationError(
            f"livefoley's sound in OBS's recording does not follow the calibration picture ({len(pairs)} of "
            f"{times.size} events heard, {onsets.size} onsets; correlation {peak:.2f}): check that OBS's audio "
            f"input hears livefoley's output and that the model reacts to the picture (--model default)")
    offsets = np.array([onsets[i] - times[j] for i, j in pairs]) * 1000.0
    seen_times = np.array([times[j] for _, j in pairs])
    median = float(np.median(offsets))
    windows = []
    for start in np.arange(0.0, seconds, WINDOW_S):
        sel = (seen_times >= start) & (seen_times < start + WINDOW_S)
        if sel.sum() >= 3:
            windows.append(round(float(np.median(offsets[sel])), 1))
    return OffsetMeasurement(
        offset_ms=median, jitter_p95_ms=float(np.percentile(np.abs(offsets - median), 95)),
        drift_ms=(max(windows) - min(windows)) if len(windows) >= 2 else None,
        matched=len(pairs), events=int(times.size), onsets=int(onsets.size), xcorr_lag_ms=float(lag_ms),
        xcorr_peak=float(peak), seconds=round(seconds, 2), frames=n_frames, frames_matched=n_matched,
        window_offsets_ms=windows)


def falling_behind(before: dict | None, after: dict | None, *, share: float = 0.3) -> str | None:
    """Why the engine's sound cannot follow the picture frame by frame, from its policy stats at the
    start and end of a recording (``stats()["policy"]``): ``None`` unless it spent more than ``share``
    of that time on rungs that skip frames (the ladder's answer to a machine too slow; over a third
    of the recording with a sound that follows every 4th or 8th frame, too few events are heard)."""
    if not before or not after:
        return None
    spent = {k: v - before["seconds_at"].get(k, 0.0) for k, v in after["seconds_at"].items()}
    total = sum(spent.values())
    behind = {k: v for k, v in spent.items() if k not in after["every_frame"] and v > 0}
    lost = sum(behind.values())
    if total <= 0 or lost <= share * total:
        return None
    worst = max(behind, key=behind.get)
    return (f"the engine could not keep up with every frame on this machine: it spent {lost:.0f} of "
            f"{total:.0f} s of the recording on rungs that encode only every few frames (most on '{worst}'), so its "
            f"sound cannot follow the picture frame by frame. Close what else runs, try --optimize (DINOv2 "
            f"compiled, the audio path in int8), --cfg 1, or a smaller OBS canvas, and calibrate again")


def engine_during(before: dict, after: dict, hand_time: np.ndarray, g2e_ms: np.ndarray,
                  start: float, end: float) -> dict[str, Any]:
    """The engine's side of one recording, from its own figures: ``glass_to_ear_ms``, the median of
    its ledger over the chunks handed to the sound device between ``start`` and ``end`` (monotonic
    s; ``hand_time`` / ``g2e_ms``: its per-chunk series, oldest first), and ``rungs``, the seconds
    it spent on each rung (from its policy stats ``before`` and ``after``).

    The engine's latency depends on its rung (a pipelined rung hears each frame one frame later),
    so a recording's offset holds for the rung it was measured on; this says which that was."""
    n = min(hand_time.size, g2e_ms.size)  # copied one after the other: a chunk more in one at most
    hand, g2e = hand_time[hand_time.size - n:], g2e_ms[g2e_ms.size - n:]
    sel = (hand >= start) & (hand <= end)
    spent = {k: round(v - before["seconds_at"].get(k, 0.0), 2) for k, v in after["seconds_at"].items()}
    return {"glass_to_ear_ms": round(float(np.median(g2e[sel])), 1) if sel.any() else None,
            "chunks": int(sel.sum()), "rungs": {k: v for k, v in spent.items() if v > 0}}


def _audio_lead(path: str | Path) -> float:
    """How much later the first sound sample is than the first picture (s) in ``path``."""
    import av

    with av.open(str(path)) as container:
        starts = {}
        for kind in ("video", "audio"):
            streams = getattr(container.streams, kind)
            if not streams:
                raise CalibrationError(f"{path}: the recording has no {kind} track; OBS must record picture and sound")
            s = streams[0]
            starts[kind] = float(s.start_time * s.time_base) if s.start_time is not None else 0.0
    return starts["audio"] - starts["video"]


# --------------------------------------------------------------------------------------- in OBS
@dataclass
class CalibrationReport:
    """``before`` / ``after``: the measurements (``after`` None with ``verify=False``);
    ``delay_ms``: the Render Delay on ``scene`` before and after; ``during``: the engine's side of
    each recording (:func:`engine_during`), keyed ``before`` / ``after``."""

    scene: str
    before: OffsetMeasurement
    after: OffsetMeasurement | None
    delay_ms: tuple[int, int]
    engine: dict = field(default_factory=dict)
    recordings: list[str] = field(default_factory=list)
    during: dict[str, dict] = field(default_factory=dict)

    @property
    def engine_shift_ms(self) -> float | None:
        """How much later the engine's own sound was in the second recording than in the first (its
        ledger): the part of ``after``'s offset that the Render Delay, set from the first, cannot hold."""
        g = [self.during.get(k, {}).get("glass_to_ear_ms") for k in ("before", "after")]
        return None if None in g else round(g[1] - g[0], 1)

    def to_dict(self) -> dict[str, Any]:
        return {"scene": self.scene, "before": self.before.to_dict(),
                "after": self.after.to_dict() if self.after else None,
                "delay_ms": {"before": self.delay_ms[0], "after": self.delay_ms[1]},
                "during": self.during, "engine_shift_ms": self.engine_shift_ms,
                "engine": self.engine, "recordings": self.recordings}


def correction(offset_ms: float, delay_ms: int) -> int:
    """The Render Delay (ms) that cancels ``offset_ms`` measured with ``delay_ms`` in place: the
    picture waits that much more (a late sound) or less (an early one), within 0–500 ms."""
    return int(min(max(round(delay_ms + offset_ms), 0), MAX_DELAY_MS))


def _current_delay(client: ObsClient, scene: str) -> int | None:
    """The Render Delay on ``scene`` (ms); None when there is no such filter or it is off."""
    try:
        f = client.call("GetSourceFilter", {"sourceName": scene, "filterName": DELAY_FILTER})
    except ObsRequestError as err:
        if err.code != NOT_FOUND:
            raise
        return None
    if not f.get("filterEnabled", True):
        return None
    return int(f.get("filterSettings", {}).get("delay_ms", 0))


def _set_delay(client: ObsClient, scene: str, delay_ms: int) -> None:
    ensure_filter(client, SetupReport(), target=scene, delay_ms=delay_ms)


def _record(client: ObsClient, seconds: float, *, alive: Callable[[], None]) -> Path:
    """Record ``seconds`` through OBS's recording output; the finished file."""
    client.call("StartRecord")
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            alive()
            time.sleep(0.2)
    except BaseException:  # the recording is of no use: stop it and remove it
        with contextlib.suppress(ObsError, OSError, KeyError):
            Path(client.call("StopRecord", timeout=30.0)["outputPath"]).unlink(missing_ok=True)
        raise
    path = Path(client.call("StopRecord", timeout=30.0)["outputPath"])
    deadline = time.monotonic() + 30
    while client.call("GetRecordStatus").get("outputActive") and time.monotonic() < deadline:
        time.sleep(0.1)
    if not path.is_file():
        raise CalibrationError(f"OBS reported its recording at {path}, but there is no such file")
    return path


def calibrate(client: ObsClient, *, start_engine: Callable[[str], Any], seconds: float = 30.0,
              warmup_s: float = 3.0, verify: bool = True, keep_dir: Path | None = None, initial_delay_ms: int = 0,
              progress: Callable[[str], None] = log.info) -> CalibrationReport:
    """Run the calibration (module docstring) in the current program scene.

    ``start_engine(source_name)`` starts the live engine on the OBS source of that name and returns
    it (started; :meth:`plugin.live.LiveEngine.stop` / ``running`` / ``stats`` are used).
    ``initial_delay_ms``: the Render Delay put on the scene for the first measurement when it has
    none (a delay filter costs OBS some work: measured with it there, the load stays the same).
    A calibration that fails or is stopped — also in its second recording, after the new delay was
    set — leaves the scene's Render Delay as it found it.
    """
    from capture.synthetic.clips import events_path, load_events, write_clip

    if client.call("GetRecordStatus").get("outputActive"):
        raise CalibrationError("OBS is recording already; stop the recording first (calibration records "
                               "through OBS and removes what it recorded)")
    if CALIBRATION_SOURCE in client.source_names():
        raise CalibrationError(f"OBS already has a source named '{CALIBRATION_SOURCE}' (left by a calibration that "
                               "was killed?); remove it in OBS and run calibrate again")
    scene = client.current_scene()
    video = client.call("GetVideoSettings")
    width, height = int(video["baseWidth"]), int(video["baseHeight"])
    delay0 = _current_delay(client, scene)
    placed = delay0 is None  # measured with the filter in place: OBS's load (and so the engine's) as after
    if placed:
        delay0 = initial_delay_ms
        _set_delay(client, scene, delay0)
    delay1 = None
    done = False
    n_recordings = 2 if verify else 1
    clip_s = warmup_s + n_recordings * (seconds + 4.0) + 10.0
    work = Path(tempfile.mkdtemp(prefix="livefoley-calibrate-"))
    recordings: list[Path] = []
    during: dict[str, dict] = {}
    engine = None
    try:
        clip = work / "calibration.mp4"
        w = 320  # OBS decodes and scales it; the engine looks at 140 pixels wide
        h = max(2, int(round(w * height / width / 2)) * 2)  # the canvas's shape, so the picture fills it
        progress(f"writing the calibration clip ({clip_s:.0f} s of the synthetic world, {w}x{h})")
        write_clip(clip, seed=CLIP_SEED, n_frames=int(math.ceil(clip_s * CONTRACT.fps)), size=(w, h))
        events = load_events(events_path(clip))["events"]
        item = client.call("CreateInput", {
            "sceneName": scene, "inputName": CALIBRATION_SOURCE, "inputKind": "ffmpeg_source",
            "inputSettings": {"local_file": str(clip), "looping": False, "restart_on_activate": True,
                              "close_when_inactive": False, "hw_decode": False},
            "sceneItemEnabled": True})["sceneItemId"]
        client.call("SetInputMute", {"inputName": CALIBRATION_SOURCE, "inputMuted": True})  # the clip's own sound
        client.call("SetSceneItemTransform", {"sceneName": scene, "sceneItemId": item, "sceneItemTransform": {
            "positionX": 0.0, "positionY": 0.0, "alignment": 5, "boundsType": "OBS_BOUNDS_STRETCH",
            "boundsAlignment": 0, "boundsWidth": float(width), "boundsHeight": float(height)}})
        client.call("TriggerMediaInputAction", {"inputName": CALIBRATION_SOURCE,
                                                "mediaAction": "OBS_WEBSOCKET_MEDIA_INPUT_ACTION_RESTART"})
        progress(f"running the engine on obs:{CALIBRATION_SOURCE}")
        engine = start_engine(CALIBRATION_SOURCE)

        def alive() -> None:
            if not engine.running:
                raise CalibrationError(f"the engine stopped during calibration ({engine.stats().get('end_reason')})")

        end = time.monotonic() + warmup_s
        while time.monotonic() < end:
            alive()
            time.sleep(0.1)

        def one(key: str, delay_ms: int) -> OffsetMeasurement:
            label = f"{key}: Render Delay {delay_ms} ms"
            progress(f"recording {seconds:.0f} s through OBS ({label})")
            at_start, t_start = engine.stats()["policy"], time.monotonic()
            path = _record(client, seconds, alive=alive)
            at_end, t_end = engine.stats()["policy"], time.monotonic()
            recordings.append(path)
            if at_start and at_end:
                during[key] = engine_during(
                    at_start, at_end, engine.series("hand_time"), engine.series("glass_to_ear_ms"), t_start, t_end)
            try:
                m = measure_offset(path, clip, events)
            except CalibrationError as err:
                behind = falling_behind(at_start, at_end)
                if behind is None:
                    raise
                raise CalibrationError(f"{behind}; {err}") from None
            side = during.get(key, {})
            own = ""
            if side.get("glass_to_ear_ms") is not None and side["rungs"]:
                own = (f"; the engine's own latency {side['glass_to_ear_ms']:.0f} ms, mostly on rung "
                       f"'{max(side['rungs'], key=side['rungs'].get)}'")
            progress(f"{label}: sound {m.offset_ms:+.0f} ms against the picture (p95 jitter {m.jitter_p95_ms:.0f} ms, "
                     f"{m.matched}/{m.events} events heard{own})")
            return m

        before = one("before", delay0)
        delay1 = correction(before.offset_ms, delay0)
        if delay0 + before.offset_ms > MAX_DELAY_MS:
            log.warning("the sound is %.0f ms late: more than OBS's Render Delay can cancel (%d ms)",
                        delay0 + before.offset_ms, MAX_DELAY_MS)
        elif delay0 + before.offset_ms < -45:
            log.warning("the sound is %.0f ms early even without a Render Delay: an audio input's Sync Offset "
                        "(Edit → Advanced Audio Properties) delays it", -(delay0 + before.offset_ms))
        _set_delay(client, scene, delay1)
        after = one("after", delay1) if verify else None
        engine.stop()
        stats = engine.stats()
        engine = None
        done = True
    finally:
        if engine is not None:
            engine.stop()
        try:
            client.call("RemoveInput", {"inputName": CALIBRATION_SOURCE})
        except ObsError as err:
            log.warning("could not remove the calibration source '%s' from OBS (%s); remove it by hand",
                        CALIBRATION_SOURCE, err)
        if not done:  # refused or stopped (also after the new delay was set): the scene as it was
            with contextlib.suppress(ObsError):
                if placed:
                    client.call("RemoveSourceFilter", {"sourceName": scene, "filterName": DELAY_FILTER})
                elif delay1 is not None:
                    _set_delay(client, scene, delay0)
        kept = _dispose(recordings, keep_dir)
        shutil.rmtree(work, ignore_errors=True)
    return CalibrationReport(
        scene=scene, before=before, after=after, delay_ms=(delay0, delay1),
        engine={k: stats.get(k) for k in ("glass_to_ear_ms", "compute_ms", "vision_ms", "chunks", "underruns",
                                          "threads", "policy")},
        recordings=[str(p) for p in kept], during=during)


def _dispose(recordings: Sequence[Path], keep_dir: Path | None) -> list[Path]:
    """Move the recordings to ``keep_dir`` (kept) or delete them; the kept paths."""
    kept = []
    for path in recordings:
        if not path.exists():
            continue
        if keep_dir is None:
            path.unlink()
            continue
        keep_dir.mkdir(parents=True, exist_ok=True)
        dest = keep_dir / path.name
        shutil.move(str(path), dest)
        kept.append(dest)
    return kept


__all__ = ["CALIBRATION_SOURCE", "CalibrationError", "CalibrationReport", "OffsetMeasurement", "calibrate",
           "correction", "engine_during", "falling_behind", "measure_offset", "picture_times"]
