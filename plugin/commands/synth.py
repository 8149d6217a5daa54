"""``livefoley synth``: write synthetic arcade clips (mp4 + events JSON) for training and evaluation."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from pathlib import Path

from audio.errors import LivefoleyError, UsageError
from capture.synthetic.looks import CLIP_LOOKS
from plugin.options import folder_dest, json_dest, write_json

MAX_MINUTES = 7 * 24 * 60  # a week of world; more is a typo (and more disk than a machine has)

HELP = "write synthetic arcade clips (H.264 + stereo AAC mp4, events JSON beside each)"
DESCRIPTION = """\
Play the procedural arcade world and write it as mp4 clips (H.264 yuv420p video at 30 fps, AAC
stereo audio at 48 kHz) named synth_s{SEED}_{i:04d}.mp4, each with synth_s{SEED}_{i:04d}.events.json
beside it: every event (frame, time_s, type, x, y, size, strength), the quiet stretches and the
clip's metadata.  Each clip plays its own world seed, derived from --seed and the clip index, so
palettes, scenes and sounds vary; `--source synthetic:CLIP_SEED` replays one live.  Files are
written under temporary names and renamed when complete.  The clips are ready for `livefoley
prepare`."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=folder_dest, required=True, metavar="DIR", help="folder for the clips (created)")
    p.add_argument("--minutes", type=float, default=1.0, metavar="M", help="total length (default 1)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="base seed (default 0)")
    p.add_argument(
        "--clip-seconds", type=float, default=30.0, metavar="SEC", help="length of each clip (default 30)"
    )
    p.add_argument("--audio-out", type=folder_dest, metavar="DIR",
                   help="also write each clip's exact sound (before AAC) as DIR/NAME.flac: training data for "
                        "`livefoley train vae` (AAC cuts the top octave)")
    p.add_argument("--size", default="640x360", metavar="WxH", help="frame size (default 640x360)")
    p.add_argument("--looks", nargs="+", default=["world"], choices=CLIP_LOOKS, metavar="LOOK",
                   help="draw the clips in these looks, in turn (clip i in the (i mod n)-th): "
                        f"{', '.join(CLIP_LOOKS)}; the sound and events stay the world's — pictures "
                        "that are not the world's, for training a model that should react to them "
                        "(default: world)")
    p.add_argument(
        "--json",
        nargs="?",
        const="-", type=json_dest,
        metavar="FILE",
        help="write the summary as JSON to FILE (or stdout when no FILE is given)",
    )
    p.set_defaults(func=run)


def clip_lengths(total_frames: int, clip_frames: int, min_frames: int) -> list[int]:
    """Split ``total_frames`` into clips of ``clip_frames``; a remainder shorter than
    ``min_frames`` is added to the last clip instead of becoming a clip of its own."""
    n_full, rest = divmod(total_frames, clip_frames)
    lengths = [clip_frames] * n_full
    if rest >= min_frames or not lengths:
        lengths.append(rest)
    else:
        lengths[-1] += rest
    return [n for n in lengths if n > 0]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from audio.contract import CONTRACT
    from capture.synthetic.clips import derive_seed, write_clip
    from capture.synthetic.source import parse_size

    fps = CONTRACT.fps
    if not (0 < args.minutes <= MAX_MINUTES):
        raise UsageError(f"--minutes must be a positive number of at most {MAX_MINUTES} (a week), got "
                             f"{args.minutes}")
    if not (args.clip_seconds >= 1.0 and math.isfinite(args.clip_seconds)):
        raise UsageError(f"--clip-seconds must be at least 1, got {args.clip_seconds}")
    if args.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {args.seed}")
    size = parse_size(args.size, what="--size")
    total = max(1, round(args.minutes * 60 * fps))
    lengths = clip_lengths(total, max(1, round(args.clip_seconds * fps)), min_frames=fps)
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LivefoleyError(f"cannot create the output folder {out} ({err}); pick another --out") from None

    clips, by_type = [], Counter()
    start = time.perf_counter()
    with tqdm(total=sum(lengths), unit="frame", desc="synth", file=sys.stderr, mininterval=0.5) as bar:
        for i, n in enumerate(lengths):
            clip_seed = derive_seed(args.seed, i)
            video = out / f"synth_s{args.seed}_{i:04d}.mp4"
            record = write_clip(
                video,
                seed=clip_seed,
                n_frames=n,
                size=size,
                meta={"seed": args.seed, "clip_index": i},
                progress=bar.update,
                audio_out=None if args.audio_out is None else args.audio_out / f"{video.stem}.flac",
                look=args.looks[i % len(args.looks)],
            )
            by_type.update(ev["type"] for ev in record["events"])
            clips.append(
                {
                    "video": str(video),
                    "events": str(video.with_name(video.stem + ".events.json")),
                    "clip_seed": clip_seed,
                    "scene": record["scene"],
                    "look": record["look"],
                    "n_frames": n,
                    "seconds": n / fps,
                    "n_events": len(record["events"]),
                }
            )
    wall = time.perf_counter() - start
    seconds = sum(lengths) / fps
    summary = {
        "out": str(out),
        "seed": args.seed,
        "size": list(size),
        "clips": clips,
        "n_clips": len(clips),
        "seconds": seconds,
        "n_events": sum(by_type.values()),
        "events_by_type": dict(sorted(by_type.items())),
        "wall_s": round(wall, 3),
        "clip_seconds_per_second": round(seconds / wall, 3) if wall > 0 else None,
    }
    if not (args.json and write_json(summary, args.json)):
        kinds = ", ".join(f"{k} {v}" for k, v in summary["events_by_type"].items()) or "none"
        print(
            f"wrote {len(clips)} clip(s), {seconds:.1f} s at {size[0]}x{size[1]}, to {out}\n"
            f"events: {summary['n_events']} ({kinds})\n"
            f"took {wall:.1f} s ({summary['clip_seconds_per_second']}x real time)"
        )
    return 0
