"""``livefoley bench``: the per-frame latency benchmark (Table 6 of the paper, and ours beside it)."""

from __future__ import annotations

import argparse
import sys

from plugin.options import add_dinov2_weights, count, write_json

HELP = "measure per-frame latency (token- and waveform-level) against the 33.3 ms budget"
DESCRIPTION = """\
Stream N frames of a 30-fps source (480p synthetic world by default, like the paper) through the
model after a warm-up, for every head NFE (1, 2, 4) with CFG on and off, and report token-level and
waveform-level latency (mean ± std, p50/p95/p99, max), each component (capture, preprocess, DINOv2,
aggregator, transformer token steps, head, VAE decode), the share of frames under 33.3 ms,
throughput and peak memory — beside the paper's Table 6 (one H100).  Frames are captured before
the timed loop; CUDA timings synchronise the device at each component boundary.

examples:
  livefoley bench --model default --threads 1
  livefoley bench --nfe 1 --cfg 3 --frames 600 --json bench.json --plot bench.png
  livefoley bench --nfe 1 --cfg 3 --optimize     # eager and optimised (compiled DINOv2, int8 audio path) side by side
  livefoley bench --device cuda --dtype bf16 --model runs/base_ect"""


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="model folder or name (default: the shipped model)")
    p.add_argument("--source", default="synthetic:11", help="frame source string (default synthetic:11)")
    p.add_argument("--size", default="854x480", help="synthetic source size WxH (default 854x480, 480p)")
    p.add_argument("--frames", type=count(1), default=300, help="timed frames per configuration (default 300)")
    p.add_argument("--warmup", type=count(0), default=30, help="untimed warm-up frames (default 30)")
    p.add_argument("--nfe", type=int, nargs="+", help="head NFEs to run (default: all the model supports)")
    p.add_argument("--cfg", type=float, nargs="+", help="guidance values (default: the model's ω and 1 = off)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    add_dinov2_weights(p)
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="transformer / head / VAE dtype (default fp32)")
    p.add_argument("--vision-dtype", choices=("fp32", "bf16"), help="DINOv2 dtype (default: the model's)")
    p.add_argument("--threads", type=count(1), help="CPU threads for torch (default: one per idle core, at most 2, "
                   "chosen again under each load)")
    p.add_argument("--load", choices=("quiet", "loaded", "both"), default="both",
                   help="run quiet, with one core kept busy by another process (it starts it itself), or both "
                        "(default; the rows side by side)")
    p.add_argument("--optimize", action="store_true",
                   help="also run the optimised CPU path (DINOv2 compiled ahead of time by AOTInductor, in int8 "
                        "— needs torchao — or bf16, whichever this CPU runs fastest; the audio path's linear layers "
                        "in int8 where that is faster) and print its rows beside the eager ones, with the speed-up, "
                        "what each candidate measured, the seconds it took to build and how far it moves the "
                        "tokens, the latents and the audio")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="write the full report (with every sample) as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="latency distributions against the 33.3 ms line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    from tqdm import tqdm

    from capture.synthetic.source import parse_size
    from plugin.bench import BenchConfig, format_table, plot_latency, run_bench

    config = BenchConfig(model=args.model, source=args.source, size=parse_size(args.size, what="--size"),
                         frames=args.frames, warmup=args.warmup, nfes=tuple(args.nfe or ()),
                         guidances=tuple(args.cfg or ()), device=args.device, dtype=args.dtype,
                         vision_dtype=args.vision_dtype, threads=args.threads, seed=args.seed,
                         loads=("quiet", "loaded") if args.load == "both" else (args.load,),
                         dinov2_weights=args.dinov2_weights, optimize=args.optimize)
    with tqdm(unit="frame", file=sys.stderr, dynamic_ncols=True, leave=False) as bar:
        report = run_bench(config, progress=bar.update)
    print(format_table(report))
    if args.json:
        write_json(report, args.json)
    if args.plot:
        plot_latency(report, args.plot)
    return 0
