"""Synthetic clips on disk: an mp4 (H.264 yuv420p + AAC stereo 48 kHz) with an events JSON beside it.

``synth_s3_0000.mp4`` is described by ``synth_s3_0000.events.json``::

    {"format": "livefoley-synth-events/1", "video": "synth_s3_0000.mp4",
     "seed": 3, "clip_index": 0, "clip_seed": 123…, "source": "synthetic:123…",
     "fps": 30, "sample_rate": 48000, "channels": 2, "width": 640, "height": 360,
     "n_frames": 900, "duration_s": 30.0, "scene": "space",
     "coordinates": "…", "quiet_spans": [[start, end], …],
     "events": [{"frame", "time_s", "type", "x", "y", "size", "strength"}, …]}

``quiet_spans`` are ``[start, end)`` frame ranges with no event and nothing going on but the
engine and the ambience.  ``synthetic:<clip_seed>`` replays the same clip live.  Both files are
written under temporary names and renamed when complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from audio.contract import CONTRACT
from audio.errors import LivefoleyError
from audio.files import atomic_path
from capture.synthetic.world import World

EVENTS_FORMAT = "livefoley-synth-events/1"
COORDINATES = (
    "x, y: normalised to [0, 1] (x / frame width, y / frame height, origin top-left); "
    "size: radius in frame heights; strength: [0, 1]; frame: index at 30 fps, whose sound starts at "
    "sample frame * 1600 of the 48 kHz audio"
)


def derive_seed(seed: int, index: int) -> int:
    """The world seed of clip ``index`` of a run with base ``seed`` (distinct per clip, 32 bits)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)[0])


def events_path(video: str | os.PathLike) -> Path:
    """``dir/name.mp4`` → ``dir/name.events.json``."""
    video = Path(video)
    return video.with_name(video.stem + ".events.json")


def load_events(path: str | os.PathLike) -> dict:
    """Read the events JSON of a clip (give the JSON or the video path); checks its format tag."""
    path = Path(path)
    if path.suffix != ".json":
        path = events_path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LivefoleyError(f"no events file {path}; write clips with `livefoley synth`") from None
    except json.JSONDecodeError as err:
        msg = f"events file {path} is not valid JSON ({err}); re-run `livefoley synth`"
        raise LivefoleyError(msg) from err
    if data.get("format") != EVENTS_FORMAT:
        raise LivefoleyError(f"{path} is not a livefoley synth events file (format {data.get('format')!r})")
    return data


def _round(ev: dict) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in ev.items()}


def _dumps(record: dict) -> str:
    """JSON with one event per line: readable, diffable, and still plain JSON."""
    head = {k: v for k, v in record.items() if k not in ("quiet_spans", "events")}
    lines = json.dumps(head, indent=1)[:-2]
    lines += ',\n "quiet_spans": ' + json.dumps(record["quiet_spans"])
    lines += ',\n "events": [' + ",".join("\n  " + json.dumps(ev) for ev in record["events"]) + "\n ]\n}\n"
    return lines


def write_clip(
    video: str | os.PathLike,
    *,
    seed: int,
    n_frames: int,
    size: tuple[int, int] = (640, 360),
    meta: dict | None = None,
    progress: Callable[[int], None] | None = None,
    audio_out: str | os.PathLike | None = None,
    look: str = "world",
) -> dict:
    """Play ``World(seed)`` for ``n_frames`` frames into ``video`` (+ its events JSON); returns
    the JSON record.  ``meta`` adds keys to the record; ``progress(n)`` is called per frame.

    The world is played twice — once without drawing to collect the audio track and the events,
    once to draw the frames while they are encoded — because the encoder wants the audio as one
    array; the two passes are checked to agree (the game never depends on drawing).

    ``audio_out``: also write the world's exact sound (before the lossy AAC of the video) there as
    24-bit FLAC — codec training wants it: AAC removes the top octave and adds its own artefacts.

    ``look``: draw the frames in one of :data:`capture.synthetic.looks.CLIP_LOOKS` (the sound and
    the events are the world's)."""
    from audio.media import write_video
    from capture.synthetic.looks import CLIP_LOOKS, apply_look

    if look not in CLIP_LOOKS:
        raise ValueError(f"unknown look {look!r} for a clip; valid: {', '.join(CLIP_LOOKS)}")

    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    video = Path(video)
    width, height = size
    hop = CONTRACT.hop
    world = World(seed, width=width, height=height)
    audio = np.empty((CONTRACT.channels, n_frames * hop), np.float32)
    for i in range(n_frames):
        _, chunk, _ = world.step(render=False)
        audio[:, i * hop : (i + 1) * hop] = chunk

    if audio_out is not None:
        from audio.io import write_audio

        write_audio(audio_out, audio, CONTRACT.sample_rate)
    drawn = World(seed, width=width, height=height)

    def frames():
        for _ in range(n_frames):
            frame, _, _ = drawn.step()
            if progress is not None:
                progress(1)
            yield apply_look(frame, look)

    write_video(video, frames(), fps=CONTRACT.fps, audio=audio, sample_rate=CONTRACT.sample_rate)
    if drawn.events != world.events:  # pragma: no cover - guards the render/no-render invariant
        video.unlink(missing_ok=True)
        raise RuntimeError(f"synthetic world {seed} played differently with and without drawing")

    record = {
        "format": EVENTS_FORMAT,
        "video": video.name,
        **(meta or {}),
        "clip_seed": int(seed),
        "source": f"synthetic:{int(seed)}",
        "look": look,
        "fps": CONTRACT.fps,
        "sample_rate": CONTRACT.sample_rate,
        "channels": CONTRACT.channels,
        "width": width,
        "height": height,
        "n_frames": n_frames,
        "duration_s": n_frames / CONTRACT.fps,
        "scene": world.style.scene,
        "coordinates": COORDINATES,
        "quiet_spans": [list(s) for s in world.quiet_spans],
        "events": [_round(dict(ev)) for ev in world.events],
    }
    target = events_path(video)
    with atomic_path(target) as tmp:
        tmp.write_text(_dumps(record))
    return record
