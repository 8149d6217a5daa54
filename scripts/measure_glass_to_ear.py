#!/usr/bin/env python
"""Glass-to-ear from outside the engine: pictures on an X display, sound from a PulseAudio monitor.

    .venv/bin/python scripts/measure_glass_to_ear.py [--model default] [--seconds 60] [--load both] [--json OUT]

A private Xvfb (1280×720) and a private PulseAudio server with a null sink are started (and stopped)
by this script.  A world clip (``--seed``, never used in training) is painted on the display at
30 fps; ``livefoley live`` follows that screen region (``screen:0,0,W,H``) with the model and plays
into the null sink; the sink's monitor is recorded with ``parec``, each read's arrival timed.  Then
(``plugin/live/outside.py``):

* heard − ledger: when each chunk the engine handed out was actually rendered (found sample-exact
  in the monitor recording) minus when the engine's ledger said it would be (hand-over + device
  queue).  The two ways of measuring glass-to-ear agree when this is ~0.
* glass-to-ear outside: heard − the moment the picture the chunk followed was put on screen
  (the ledger starts at the grab; the difference is the capture wait, reported too).
* picture → onset: the lag that best lines up the generated onsets with the pictures' own sound
  placed where each picture appeared (what a viewer perceives; the model's own A/V offset is in it).

``--load busy`` keeps one core busy with another process while measuring; ``both`` runs quiet then
busy.  Numbers depend on what else runs on the machine: say so when quoting them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure_capture import start_xvfb  # noqa: E402


def start_pulse() -> tuple[subprocess.Popen, dict]:
    """A private PulseAudio server with a 48 kHz null sink ``livefoley``; its environment."""
    for binary, package in (("pulseaudio", "pulseaudio"), ("pactl", "pulseaudio-utils"), ("parec", "pulseaudio-utils")):
        if shutil.which(binary) is None:
            raise SystemExit(f"{binary} not found: install the Debian package {package!r}")
    runtime = Path(tempfile.mkdtemp())
    runtime.chmod(0o700)
    env = dict(os.environ, HOME=tempfile.mkdtemp(), XDG_RUNTIME_DIR=str(runtime), PULSE_SINK="livefoley")
    proc = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--load=module-native-protocol-unix",
         "--load=module-null-sink sink_name=livefoley rate=48000", "--log-target=stderr"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("PulseAudio did not start")
        time.sleep(0.1)
    return proc, env


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="model name or folder (default: default)")
    p.add_argument("--seconds", type=float, default=60.0, help="how long the pictures play (default 60)")
    p.add_argument("--seed", type=int, default=100, help="world seed of the pictures (default 100)")
    p.add_argument("--size", default="320x180", help="picture size WxH (default 320x180)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--nfe", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--optimize", action="store_true", help="the fastest compiled vision path (as `live --optimize`)")
    p.add_argument("--cushion-ms", type=float, default=None, help="silence queued ahead of the first chunk "
                   "(default: the engine's)")
    p.add_argument("--load", choices=("quiet", "busy", "both"), default="quiet",
                   help="quiet, one core busy with another process, or both in turn (default quiet)")
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.add_argument("--plot", type=Path, help="draw where the time goes (a PNG) here")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from model.optimize import choice_cache

    # the private HOME below is PulseAudio's: --optimize keeps using this user's kept graphs
    os.environ.setdefault("LIVEFOLEY_CACHE_DIR", str(choice_cache().parent))
    xvfb, display = start_xvfb()
    pulse, env = start_pulse()
    os.environ.update({k: env[k] for k in ("HOME", "XDG_RUNTIME_DIR", "PULSE_SINK")})  # before sounddevice
    try:
        from audio.measure import competing_load
        from plugin.live.outside import measure

        results = {}
        for load in (("quiet", "busy") if args.load == "both" else (args.load,)):
            print(f"{load}: {args.seconds:.0f} s of world {args.seed} at {w}x{h} on {display} …", flush=True)
            with competing_load(1) if load == "busy" else _nothing():
                r = measure(args.model, display=display, monitor="livefoley.monitor", pulse_env=env, seed=args.seed,
                            seconds=args.seconds, size=(w, h), threads=args.threads, nfe=args.nfe,
                            optimize=args.optimize,
                            **({} if args.cushion_ms is None else {"cushion_ms": args.cushion_ms}))
            st = r.pop("stats")
            r["engine"] = {k: st.get(k) for k in ("chunks", "underruns", "underruns_after_startup", "fill_ins",
                                                  "top_ups", "skipped_slots", "glass_to_ear_ms", "compute_ms",
                                                  "vision_ms", "audio_path_ms", "device_queue_ms", "token_age_frames",
                                                  "device_latency_ms", "policy")}
            results[load] = r
            print(json.dumps({k: v for k, v in r.items() if k != "engine"}, indent=1), flush=True)
    finally:
        pulse.terminate()
        pulse.wait(timeout=10)
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(timeout=10)
    if args.json:  # first: the measurements must not be lost to a plot that cannot be drawn
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results},
                                        indent=2, default=str))
    if args.plot:
        drawable = {load: r for load, r in results.items() if "grab_to_hand_ms" in r}
        if drawable:
            plot_breakdown(drawable, args.plot, title=f"{args.model}, NFE {args.nfe or 'default'}, {args.threads} "
                           f"threads, world {args.seed} at {w}x{h}, {args.seconds:.0f} s per row")
            print(f"wrote {args.plot}")
        else:
            print(f"{args.plot} not written: no chunk of any run was placed in the monitor recording")
    return 0 if all(r["chunks_compared"] for r in results.values()) else 1


PARTS = (("capture_wait_ms", "capture wait (picture → grab)", "#9e9e9e"),
         ("grab_to_hand_ms", "grab → hand-over (vision, audio path, waits)", "#1f77b4"),
         ("ring_ms", "engine's ring", "#ff7f0e"),
         ("device_latency_ms", "device (reported)", "#2ca02c"))


def plot_breakdown(results: dict, path: Path, *, title: str) -> None:
    """One stacked bar per load: the medians of the parts of glass-to-ear, with the measured total."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from audio.files import atomic_path

    fig = Figure(figsize=(9, 1.2 + 0.8 * len(results)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for row, r in enumerate(results.values()):
        left = 0.0
        for key, label, colour in PARTS:
            v = r[key] if key == "device_latency_ms" else r[key]["p50"]
            ax.barh(row, v, left=left, color=colour, label=label if row == 0 else None)
            ax.text(left + v / 2, row, f"{v:.0f}", ha="center", va="center", fontsize=8, color="white")
            left += v
        g = r["glass_to_ear_outside_ms"]
        ax.text(left + 3, row, f"heard: p50 {g['p50']:.0f} / p95 {g['p95']:.0f} ms "
                f"(ledger off by {r['heard_minus_ledger_ms']['p50']:+.1f})", va="center", fontsize=8)
    ax.set_yticks(range(len(results)), list(results))
    ax.invert_yaxis()
    ax.set_xlabel("ms (medians of each part)")
    ax.set_xlim(0, max(r["glass_to_ear_outside_ms"]["p95"] for r in results.values()) * 1.6)
    ax.axvline(100, color="k", lw=0.8, ls="--")
    ax.set_title(f"Where glass-to-ear goes — {title}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", ncols=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


class _nothing:  # noqa: N801
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


if __name__ == "__main__":
    raise SystemExit(main())
