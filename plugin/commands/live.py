"""``livefoley live``: generate sound for a picture source in real time (see :mod:`plugin.live`)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from audio.errors import UsageError
from plugin.options import add_dinov2_weights, guidance, json_dest, write_json

log = logging.getLogger(__name__)

HELP = "generate sound live from the screen, a video, a camera or the synthetic world"
DESCRIPTION = """\
Turn every frame of a picture source into the next 33.3 ms of 48 kHz stereo sound, in real
time, until stopped (Ctrl-C / SIGTERM) or --duration. Stale frames are dropped so that the lag
never grows; when the computer cannot keep up, the engine degrades step by step (reuse the last
vision token, lower NFE, drop guidance, encode fewer frames) instead of leaving gaps in the sound.

Sources (--source):
  screen                the primary monitor       screen:N          monitor N (mss numbering)
  screen:X,Y,W,H        a region of the desktop   camera:N          camera / virtual camera N
  synthetic[:SEED]      the procedural arcade world (a demo source with its own ground truth)
  file:PATH or PATH     a video file, replayed at its real pace

Sinks (--sink, repeatable; default: device):
  device                the default sound output  device:NAME_OR_INDEX  (see `livefoley devices`)
  file:PATH.wav|.flac   a recording               null                  discard (benchmarks)
--record PATH.wav|.flac adds a recording beside the sinks; it is written as it goes and finalised
on every exit (Ctrl-C and SIGTERM included).

A status line (fps, glass-to-ear latency p50/p95, compute p50/p95, degradation rung, skipped
frames, underruns) refreshes on stderr when it is a terminal, or with --status. --json prints the
run's statistics (p50/p95/max of latency, compute, vision and audio-path times; drops; underruns)
at exit.

Examples:
  livefoley live --source screen
  livefoley live --source game.mp4 --sink null --record game-foley.flac --duration 60
  livefoley live --source synthetic --model tiny --threads 2 --sink null --duration 30 --json
  livefoley live --source screen:0,0,1280,720 --sink device:USB --volume 0.5 --nfe 2 --cfg 2"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "live", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--source", required=True, metavar="SRC", help="what to watch (forms above)")
    p.add_argument("--sink", action="append", metavar="SINK",
                   help="where to play (repeatable; default: device)")
    p.add_argument("--record", metavar="FILE", help="also record to FILE (.wav float32 or .flac 24-bit)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --record / file: sink FILE (never the source)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: never)")
    p.add_argument("--model", default="default", metavar="M",
                   help="model folder or preset name (default: the shipped default model; `tiny` is an "
                        "untrained preset for testing)")
    p.add_argument("--nfe", type=int, metavar="N", help="head evaluations per frame (default: the model's)")
    p.add_argument("--cfg", type=guidance, metavar="W", help="guidance ω (1 = off; default: the model's)")
    p.add_argument("--volume", type=float, default=1.0, metavar="V", help="playback volume, 0–4 (default 1)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the model runs (default auto: CUDA when available)")
    add_dinov2_weights(p)
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads in all: the model uses all of them, or splits them with the vision "
                        "encoder when the degradation policy runs it alongside (default: torch's own setting)")
    p.add_argument("--optimize", action="store_true",
                   help="run DINOv2 compiled ahead of time (AOTInductor), in int8 (needs torchao; tokens within a "
                        "few %%) or bf16, whichever this CPU runs fastest (a CPU where neither beats the eager "
                        "path keeps it). The first time on a CPU every candidate is compiled and measured "
                        "before the first sound (~70 s on two cores); the choice and the winner's compiled "
                        "library are kept (~/.cache/livefoley: optimize.json, vision/), so later starts load "
                        "it in under a second. Also gives the audio path (transformer, head, VAE decoder) int8 "
                        "linear layers where they measure faster here (~3 s of timing the first time, remembered "
                        "beside the vision's; latents "
                        "within ~1 %%)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="noise seed (default 0)")
    p.add_argument("--blocksize", type=int, default=400, metavar="SAMPLES",
                   help="sound-device block (default 400 = 8.3 ms; PulseAudio reports two blocks of "
                        "output latency)")
    p.add_argument("--cushion-ms", type=float, default=20.0, metavar="MS",
                   help="audio kept queued ahead of each new chunk against hiccups (default 20)")
    p.add_argument("--no-degrade", action="store_true", help="never degrade (for measuring the full model)")
    p.add_argument("--status", action="store_true",
                   help="print the status line even when stderr is not a terminal (one line per second)")
    p.add_argument("--json", nargs="?", const="-", type=json_dest, metavar="FILE",
                   help="write the run's statistics as JSON to FILE (or stdout when no FILE is given)")
    p.set_defaults(func=run)


def _summary(st: dict) -> str:
    def ms(key: str) -> str:
        s = st[key]
        return "-" if s["p50"] is None else f"{s['p50']:.0f}/{s['p95']:.0f}/{s['max']:.0f}"

    pol = st["policy"] or {}
    return (
        f"livefoley live: {st['stream_s']:.1f} s of sound ({st['chunks']} chunks) at "
        f"{st['achieved_fps'] or 0:.1f} fps; {st['end_reason']}\n"
        f"  glass-to-ear ms p50/p95/max {ms('glass_to_ear_ms')}; compute {ms('compute_ms')} "
        f"(vision {ms('vision_ms')}, audio path {ms('audio_path_ms')})\n"
        f"  skipped frames {st['skipped_slots']}, underruns {st['underruns']} "
        f"({st['underruns_after_startup']} after start-up; {st['device_underflows']} reported by the device), "
        f"rung {pol.get('rung', '-')} ({pol.get('changes', 0)} changes)"
    )


def run(args: argparse.Namespace, *, source_options: dict | None = None,
        finish: Callable[[dict], None] | None = None) -> int:
    """``livefoley live``; ``source_options`` go to the source's factory, ``finish(stats)`` may add to
    the run's statistics before they are written (``livefoley obs live`` uses both)."""
    from capture.registry import parse_source
    from model.config import vision_input_size
    from plugin.live import EngineConfig, LiveEngine, PolicyConfig
    from plugin.options import check_output

    if args.duration is not None and not args.duration > 0:
        raise UsageError(f"--duration must be a positive number of seconds, got {args.duration}")
    if args.json not in (None, "-") and not Path(args.json).parent.is_dir():
        raise UsageError(f"--json {args.json}: folder {Path(args.json).parent} does not exist")
    kind, target = parse_source(args.source)[:2]
    inputs = [target] if kind == "file" else []
    outputs = [args.record] if args.record else []
    outputs += [s.split(":", 1)[1] for s in (args.sink or []) if s.startswith("file:")]
    for out in outputs:
        check_output(out, inputs=inputs, overwrite=getattr(args, "overwrite", False), what="the recording")
    options = dict(source_options or {})
    if kind == "obs":  # where OBS is (environment, saved settings, prompt); screenshots at the model's size
        from plugin.obs.target import resolve_target

        options.setdefault("target", resolve_target())
        options.setdefault("input_size", vision_input_size(args.model))
    config = EngineConfig(
        source=args.source, source_options=options, sinks=tuple(args.sink or ["device"]), record=args.record,
        duration_s=args.duration, model=args.model, device=args.device, dinov2_weights=args.dinov2_weights,
        threads=args.threads,
        optimize=args.optimize,
        nfe=args.nfe, guidance=args.cfg, volume=args.volume, seed=args.seed, blocksize=args.blocksize,
        cushion_ms=args.cushion_ms, policy=PolicyConfig(enabled=not args.no_degrade),
    )
    engine = LiveEngine(config=config)
    show = args.status or sys.stderr.isatty()
    end = "\r" if sys.stderr.isatty() else "\n"
    terminated = []

    def on_term(signum, frame) -> None:
        terminated.append(signum)
        engine.request_stop()

    old_term = signal.signal(signal.SIGTERM, on_term)
    interrupted = False
    try:
        engine.start()
        next_status = 0.0
        while not engine.wait(0.1):
            now = time.monotonic()
            if show and now >= next_status:
                print(engine.status_line(), end=end, file=sys.stderr, flush=True)
                next_status = now + (0.5 if end == "\r" else 1.0)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        # A second Ctrl-C while the sinks close must not leave the recording unfinished.
        old_int = signal.signal(signal.SIGINT, lambda *_: log.warning("stopping: closing the sinks"))
        try:
            engine.stop()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
        if show and end == "\r":
            print(file=sys.stderr)
    stats = engine.stats()
    if finish is not None:
        finish(stats)
    if args.json:
        write_json(stats, args.json)
    if args.json != "-":
        print(_summary(stats), file=sys.stderr)
    engine.raise_error()
    if interrupted:
        print("livefoley: interrupted", file=sys.stderr)
        return 130
    if terminated:  # like Ctrl-C: 128 + the signal's number (the recording is complete all the same)
        print("livefoley: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    return 0
