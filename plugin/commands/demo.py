"""``livefoley demo``: the synthetic arcade world → the default model → a video with sound."""

from __future__ import annotations

import argparse
import sys

from plugin.options import add_dinov2_weights, json_dest, write_json

HELP = "generate sound for the built-in arcade world with the default model (start here)"
DESCRIPTION = """\
Run the synthetic arcade world (a procedural 2D game with ground-truth sound events) through the
model, frame by frame with the same causal streaming step as `livefoley live`, and write
  livefoley-demo.mp4   the world's picture with the generated 48 kHz stereo track
  livefoley-demo.png   frames, generated and ground-truth spectrograms and the events on one time axis
then print a latency summary (per-frame token- and waveform-level time against the 33.3 ms
budget).  When a sound device exists the sound is also played live, paced to the picture.

examples:
  livefoley demo
  livefoley demo --seconds 30 --seed 3 --nfe 2 --no-play --json"""


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="model folder or name (default: the shipped model)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the demo (default 10)")
    p.add_argument("--seed", type=int, default=7, help="world seed (default 7: not one the model trained on)")
    p.add_argument("--nfe", type=int, help="head evaluations per frame (1, 2 or 4; default: the model's)")
    p.add_argument("--cfg", type=float, help="guidance ω (default: the model's, 3; 1 = off)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    add_dinov2_weights(p)
    p.add_argument("-o", "--out", default="livefoley-demo.mp4", help="video to write (default livefoley-demo.mp4)")
    p.add_argument("--png", default=None, help="picture to write (default: the video's name with .png)")
    p.add_argument("--no-play", action="store_true", help="do not play on the sound device")
    p.add_argument("--json", nargs="?", const="-", type=json_dest, metavar="FILE",
                   help="figures as JSON (stdout or FILE)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from audio.contract import CONTRACT
    from plugin.demo import DemoConfig, run_demo

    video = Path(args.out)
    png = Path(args.png) if args.png else video.with_suffix(".png")
    config = DemoConfig(model=args.model, seconds=args.seconds, seed=args.seed, nfe=args.nfe, guidance=args.cfg,
                        device=args.device, dinov2_weights=args.dinov2_weights, video=video, png=png,
                        play=not args.no_play)
    total = max(1, round(args.seconds * CONTRACT.fps))
    with tqdm(total=total, unit="frame", file=sys.stderr, dynamic_ncols=True, leave=False) as bar:
        report = run_demo(config, progress=bar.update)
    if args.json and write_json(report, args.json):
        return 0
    w, t = report["waveform_ms"], report["token_ms"]
    print(f"wrote {report['video']} and {report['png']} ({report['seconds']:.1f} s, model {report['model']}, "
          f"NFE {report['nfe']}, ω {report['cfg']:g}, {report['device']})")
    print(f"per-frame latency: token-level p50 {t['p50']:.1f} ms, waveform-level p50 {w['p50']:.1f} / "
          f"p95 {w['p95']:.1f} / p99 {w['p99']:.1f} ms; {100 * report['under_budget']:.0f}% of frames under "
          f"{CONTRACT.frame_ms:.1f} ms; {report['realtime_factor']:.2f}× real time"
          + (" (played live)" if report["played"] else ""))
    return 0
