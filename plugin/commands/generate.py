"""``livefoley generate``: offline video-to-audio for recorded videos (see :mod:`plugin.generate`)."""

from __future__ import annotations

import argparse
import sys

from plugin.options import add_dinov2_weights, guidance, json_dest, write_json

HELP = "offline V2A: give video file(s) a generated soundtrack (video out, or .wav/.flac)"
DESCRIPTION = """\
Generate sound for recorded videos with the same causal model `livefoley live` uses, faster than
real time, and write it out:

  * a video (.mp4 .m4v .mov .mkv .webm .avi): the original video stream is copied bit for bit
    (never re-encoded) and the generated 48 kHz stereo track is added (AAC in mp4/mov, Opus in
    mkv/webm, PCM in avi).  The original sound is dropped, kept as a second track
    (--keep-audio, copied as it is), or mixed in (--mix X);
  * audio only (.wav 16-bit, .flac 24-bit).

Any container and codec FFmpeg reads, any resolution, constant or variable frame rate (resampled
to the model's 30 fps by timestamp).  The new track lasts exactly as long as the video and starts
with its first frame.

Inputs and outputs:
  one input, -o FILE          writes FILE (its suffix picks video or audio)
  several inputs or a folder  -o is a folder (created); each output is <stem>.livefoley<ext>,
                              ext = the input's own suffix or --format.  A folder contributes
                              every .mp4 .m4v .mkv .mov .webm .avi in it (not sub-folders, not
                              earlier *.livefoley.* outputs)

Safety: an input is never overwritten; an existing output is kept unless --overwrite; files are
written under a temporary name and renamed when complete, so an error or Ctrl-C leaves nothing
half-written.  A bad input (corrupt, truncated, no video, empty, unknown codec) fails on its own
with a message; the others are still processed.

Segments: --start/--duration pick a window.  A stream copy must begin on a key frame, so a video
output starts at the key frame at or before --start (and, with B-frames, may end a few frames
after --start + --duration); the track covers exactly the copied video.  .wav/.flac outputs use
the window as given.

Speed: decoding and the vision encoder (batches of --batch-size frames, one batch per core at
once) run on their own threads, ahead of the transformer, diffusion head and VAE, which go frame
by frame as live.  --optimize gives that frame-by-frame part int8 linear layers where they measure
faster on this CPU (~3 s of timing the first time, then remembered; latents within ~1 %).  On a
2-core AMD EPYC, 2 minutes of 720p: `tiny` 1.9-2.0x real time (2.2x with --optimize), the default
model 1.7x (1.85-2.1x with --optimize).  A progress bar (on stderr) shows frames, speed as a
multiple of real time and the time left.

Exit status: 0 when every input worked, else the number of inputs that failed (at most 125);
2 for a usage error (bad option, unknown model).

examples:
  livefoley generate gameplay.mp4 -o gameplay-foley.mp4
  livefoley generate clip.mkv -o clip.wav --seed 3 --nfe 2
  livefoley generate clip.mp4 -o out.mkv --keep-audio          # generated + original tracks
  livefoley generate clip.mp4 -o out.mp4 --mix 0.3             # 70 % generated, 30 % original
  livefoley generate recordings/ -o foley/ --format mkv --json stats.json
  livefoley generate long.mp4 -o part.mp4 --start 60 --duration 30 --overwrite
  livefoley generate gameplay.mp4 -o out.mp4 --optimize             # int8 audio path where faster
  livefoley generate clip.mp4 -o out.mp4 --model tiny --device cpu   # untrained preset, for testing"""


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video file(s) or folder(s) of videos")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file (.mp4 .m4v .mov .mkv .webm .avi .wav .flac) for one input, "
                        "or a folder (created) for several")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="default", metavar="M",
                   help="model folder or preset name (default: the shipped 'default'; 'tiny'/'base' are "
                        "untrained presets with seeded weights, for testing)")
    g.add_argument("--nfe", type=int, default=None, metavar="N",
                   help="diffusion-head evaluations per frame (1-4 as the model allows; "
                        "default: the model's)")
    g.add_argument("--cfg", type=guidance, default=None, metavar="W",
                   help="guidance weight ω on the vision token (1 = none; default: the model's, 3)")
    g.add_argument("--seed", type=int, default=0, metavar="S",
                   help="noise seed: same seed, same sound (default 0)")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the model runs (default auto: CUDA when available)")
    add_dinov2_weights(g)
    g.add_argument("--batch-size", type=int, default=32, metavar="N",
                   help="frames per vision-encoder batch (default 32)")
    g.add_argument("--optimize", action="store_true",
                   help="the transformer, diffusion head and VAE decoder with int8 linear layers where that "
                        "measures faster here (CPU only; ~3 s of timing the first time on a CPU, then remembered in "
                        "~/.cache/livefoley/optimize.json; latents within ~1 %%)")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads of each computation (default 1: the per-frame loop gains little "
                        "from more; decoding and the vision batches, one per core, use the other cores; with N "
                        "the vision runs one batch per N cores)")
    s = p.add_argument_group("what to write")
    s.add_argument("--start", type=float, default=0.0, metavar="SEC", help="begin this far into each video")
    s.add_argument("--duration", type=float, default=None, metavar="SEC",
                   help="process this many seconds (default: to the end)")
    orig = s.add_mutually_exclusive_group()
    orig.add_argument("--keep-audio", action="store_true",
                      help="keep the original sound as a second track, copied as it is (video outputs)")
    orig.add_argument("--mix", type=float, default=None, metavar="X",
                      help="mix the original in: X·original + (1-X)·generated, X from 0 (generated only) "
                           "to 1 (original only); surround is downmixed to stereo at 48 kHz")
    s.add_argument("--format", default=None, metavar="EXT",
                   help="suffix of the files written into an output folder (mp4 mkv mov webm avi wav "
                        "flac; default: each input's own)")
    s.add_argument("--overwrite", action="store_true", help="replace outputs that exist (never an input)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--json", nargs="?", const="-", type=json_dest, default=None, metavar="FILE",
                   help="write per-file and total stats (frames, seconds, real-time factor, peak memory, "
                        "failures) as JSON to FILE, or to stdout when no FILE is given")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from plugin.generate import GenerateConfig, run_generate

    config = GenerateConfig(
        model=args.model, device=args.device, dinov2_weights=args.dinov2_weights, nfe=args.nfe, guidance=args.cfg,
        seed=args.seed, start=args.start,
        duration=args.duration, keep_audio=args.keep_audio, mix=args.mix, overwrite=args.overwrite,
        batch_size=args.batch_size, threads=args.threads, format=args.format,
        progress=not (args.no_progress or getattr(args, "quiet", False)), optimize=args.optimize,
    )
    report = run_generate(args.inputs, args.output, config)
    failed = report.failed
    if failed:
        print(f"livefoley: {len(failed)} of {len(report.results)} input(s) failed:", file=sys.stderr)
        for r in failed:
            print(f"  {r.error}", file=sys.stderr)
    if args.json is not None:
        write_json(report.to_dict(), args.json)
    return report.exit_code
