"""``livefoley obs``: OBS Studio — list sources, set up audio capture and delay compensation, run live
on an OBS source (see :mod:`plugin.obs` and :mod:`capture.obs`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from audio.errors import UsageError
from plugin.options import guidance

log = logging.getLogger(__name__)

HELP = "OBS Studio: list sources, set up audio capture + delay, run live on an OBS source"
DESCRIPTION = """\
Work with OBS Studio (28+, obs-websocket 5) over its WebSocket server: enable it in OBS under
Tools → WebSocket Server Settings. The password is read from the LIVEFOLEY_OBS_PASSWORD
environment variable, or asked for when run in a terminal; it is never a command-line option
and never saved. Host and port default to the saved settings, LIVEFOLEY_OBS_HOST / _PORT, or
localhost:4455. Settings (host, port, source, sink, model, NFE, guidance, volume, the last
measured latency) persist in the user's config folder (e.g. ~/.config/livefoley/settings.json)
and are shared with the OBS script (Tools → Scripts → + → plugin/obs/livefoley_obs.py).

  livefoley obs sources                    scenes, the sources in them, and every input
  livefoley obs setup --source "Game"      capture livefoley's sound in OBS + delay the picture
  livefoley obs live --source "Game"       generate sound for an OBS source, live
  livefoley obs calibrate                  measure the A/V offset in OBS's recording, cancel it"""

CALIBRATE_DESCRIPTION = """\
Measure where livefoley's sound lands against the picture in what OBS records — the stream a
viewer gets — and cancel the offset:
  1. a temporary Media Source 'livefoley calibration' plays a clip of the synthetic world (its
     events known frame by frame), muted, over the current scene;
  2. the live engine runs on it with the model (default: the saved one) and plays to the sound
     output OBS captures (the audio input 'livefoley audio' of `obs setup`, created if missing);
  3. OBS records --seconds (its own recording output: OBS's picture, OBS's mix); each event's
     time on screen is found by matching the recorded pictures to the clip, each sound onset is
     paired with its event: the offset is their median difference (positive = sound late);
  4. the Render Delay 'livefoley delay' on the scene (put there at the last measured latency, or
     150 ms, if missing) becomes its current value plus that offset (0–500 ms);
  5. a second recording measures the offset after (--no-verify skips it).
The temporary source and the recordings are removed at the end (Ctrl-C too) unless
--keep-recordings DIR. Stop any recording first; the scene shows the test picture meanwhile, so do
not run it live on stream. Takes about 2 × --seconds + 20 s.

  livefoley obs calibrate
  livefoley obs calibrate --seconds 120 --json --keep-recordings calib/"""

SETUP_DESCRIPTION = """\
Idempotently (a second run reports "unchanged"):
  * creates the audio input "livefoley audio" in the current scene: on Linux an Audio Output
    Capture of the PulseAudio sink's monitor (--sink, default livefoley → livefoley.monitor;
    run the engine into that sink, e.g. PULSE_SINK=livefoley). On Windows / macOS it prints the
    steps to do by hand (Application Audio Capture / a loopback device);
  * adds a Render Delay filter "livefoley delay" (≤ 500 ms) that delays the picture by
    livefoley's glass-to-ear latency: --delay-ms if given, else the latency measured by the last
    `livefoley obs live` run that played to a sound device, else 150 ms. The filter goes on the
    scene showing the source (or --delay-on), never on the captured source itself: OBS
    screenshots include the filter, so livefoley would see the delayed picture too. Other
    sources in that scene are delayed as well; give a microphone the same Sync Offset
    (Edit → Advanced Audio Properties) to keep a webcam's lip sync."""


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", metavar="HOST", help="OBS WebSocket host (default: saved / localhost)")
    p.add_argument("--port", type=int, metavar="PORT", help="OBS WebSocket port (default: saved / 4455)")


def register(subparsers) -> None:
    p = subparsers.add_parser("obs", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="obs_command", metavar="COMMAND", required=True)

    s = sub.add_parser("sources", help="list OBS scenes, their sources, and every input",
                       description="List what `obs:NAME` can capture: scenes (current one marked *) with "
                                   "their sources, and every input.")
    _add_target(s)
    s.add_argument("--json", action="store_true", help="print the listing as JSON")
    s.set_defaults(func=run_sources)

    st = sub.add_parser("setup", help="capture livefoley's sound in OBS and delay the picture to match",
                        description=SETUP_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_target(st)
    st.add_argument("--source", metavar="NAME", help="the OBS source livefoley watches (default: saved)")
    st.add_argument("--sink", metavar="SINK", help="PulseAudio sink livefoley plays to (default: saved / livefoley)")
    st.add_argument("--delay-ms", type=float, metavar="MS",
                    help="Render Delay in ms (default: the last measured latency, else 150; max 500)")
    st.add_argument("--no-delay", action="store_true", help="do not add / update the Render Delay filter")
    st.add_argument("--scene", metavar="SCENE", help="scene for the audio input (default: the current one)")
    st.add_argument("--delay-on", metavar="NAME",
                    help="source or scene that gets the Render Delay (default: the scene showing --source)")
    st.add_argument("--json", action="store_true", help="print what was done as JSON")
    st.set_defaults(func=run_setup)

    c = sub.add_parser("calibrate", help="measure the A/V offset in OBS's own recording and set the delay that "
                                         "cancels it", description=CALIBRATE_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_target(c)
    c.add_argument("--seconds", type=_seconds, default=30.0, metavar="S",
                   help="length of each recording (default 30; 10–600)")
    c.add_argument("--sink", metavar="SINK", help="PulseAudio sink OBS captures (default: saved / livefoley)")
    c.add_argument("--model", metavar="M", help="model the engine runs (default: saved / default)")
    c.add_argument("--nfe", type=int, metavar="N", help="head evaluations per frame (default: saved / the model's)")
    c.add_argument("--cfg", type=guidance, metavar="W", help="guidance ω (default: saved / the model's)")
    c.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: one per idle core)")
    c.add_argument("--optimize", action="store_true",
                   help="the engine runs DINOv2 compiled and the audio path in int8 where faster (as `live "
                        "--optimize`; calibrate with the setting you stream with)")
    c.add_argument("--no-verify", action="store_true", help="do not record again to measure the offset after")
    c.add_argument("--keep-recordings", type=Path, metavar="DIR", help="move OBS's recordings into DIR")
    c.add_argument("--json", action="store_true", help="print the measurements as JSON")
    c.set_defaults(func=run_calibrate)

    # `obs live` takes every option of `livefoley live` (same parser), --source meaning an OBS source.
    from plugin.commands import live

    live.register(sub)
    lp = sub.choices["live"]
    lp.description = ("Run the live engine (`livefoley live`) on an OBS source or scene: --source NAME "
                      "captures obs:NAME (JPEG screenshots at the model's input size). The run's glass-to-ear "
                      "latency is saved for `livefoley obs setup` when it played to a sound device.\n\n"
                      + (lp.description or "").split("\n\nSources (--source):")[0])
    for action in lp._actions:
        if action.dest == "source":
            action.help = "the OBS source or scene to watch (see `livefoley obs sources`)"
    _add_target(lp)
    lp.set_defaults(func=run_live)


def _client(args):
    from capture.obs.client import ObsClient
    from plugin.obs.target import resolve_target

    return ObsClient(target=resolve_target(args.host, args.port)).connect()


def run_sources(args: argparse.Namespace) -> int:
    from plugin.obs.setup import list_sources

    with _client(args) as client:
        listing = list_sources(client)
    if args.json:
        print(json.dumps(listing, indent=1))
        return 0
    for scene in listing["scenes"]:
        mark = "*" if scene["name"] == listing["current_scene"] else " "
        print(f"{mark} scene {scene['name']!r}")
        for item in scene["items"]:
            off = "" if item["enabled"] else " (hidden)"
            print(f"    {item['name']!r}  [{item['kind']}]{off}")
    print("inputs:")
    for inp in listing["inputs"]:
        print(f"    {inp['name']!r}  [{inp['kind']}]")
    print("\ncapture one with `livefoley obs live --source NAME` (* = current scene)")
    return 0


def run_setup(args: argparse.Namespace) -> int:
    from plugin.obs.settings import load_settings, update_settings
    from plugin.obs.setup import setup_obs

    saved = load_settings()
    source = args.source or saved.source
    if not source:
        raise UsageError("obs setup needs --source NAME (the OBS source livefoley watches; "
                             "`livefoley obs sources` lists them)")
    sink = args.sink or saved.sink
    with _client(args) as client:
        report = setup_obs(client, source=source, sink=sink, delay_ms=args.delay_ms, measured_ms=saved.latency_ms,
                           scene=args.scene, delay_on=args.delay_on, delay=not args.no_delay)
        target = client.target
    update_settings(source=source, sink=sink, host=target.host, port=target.port)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return 0
    for what, outcome in report.actions:
        print(f"{outcome:>9}  {what}")
    if report.delay_ms is not None:
        print(f"delay {report.delay_ms} ms on '{report.delay_on}': {report.delay_from}")
    if report.manual_steps:
        print("\nto do by hand:\n  " + report.manual_steps)
    print("OBS: nothing changed (already set up)" if not report.changed else "OBS: set up")
    return 0


def run_live(args: argparse.Namespace) -> int:
    from plugin.commands import live
    from plugin.obs.settings import update_settings
    from plugin.obs.target import resolve_target

    name = args.source
    if name.startswith("obs:"):
        name = name[4:]
    target = resolve_target(args.host, args.port)
    ns = argparse.Namespace(**vars(args))
    ns.source = f"obs:{name}"

    def finish(stats: dict) -> None:
        _finish_live(stats)
        if (stats["obs"] or {}).get("screenshots", 0) > 0:  # only a source that worked becomes the default
            update_settings(host=target.host, port=target.port, source=name, model=args.model, nfe=args.nfe,
                            cfg=args.cfg, volume=args.volume)

    return live.run(ns, source_options={"target": target}, finish=finish)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 10 <= value <= 600:
        raise argparse.ArgumentTypeError(f"give 10 to 600 seconds, got {text}")
    return value


class _Terminated(Exception):
    """SIGTERM during calibration (cleaned up like Ctrl-C; exit 143)."""


def run_calibrate(args: argparse.Namespace) -> int:
    from capture.obs.client import ObsClient
    from model.config import vision_input_size
    from plugin.live import EngineConfig, LiveEngine
    from plugin.obs.calibrate import calibrate
    from plugin.obs.settings import load_settings, update_settings
    from plugin.obs.setup import SetupReport, ensure_audio, resolve_delay
    from plugin.obs.target import resolve_target

    saved = load_settings()
    sink = args.sink or saved.sink
    model = args.model or saved.model
    target = resolve_target(args.host, args.port)
    if args.keep_recordings is not None and args.keep_recordings.exists() and not args.keep_recordings.is_dir():
        raise UsageError(f"--keep-recordings {args.keep_recordings}: not a folder")
    if sys.platform.startswith("linux"):
        os.environ["PULSE_SINK"] = sink  # the engine plays where OBS's audio input listens

    def start_engine(name: str) -> LiveEngine:
        engine = LiveEngine(config=EngineConfig(
            source=f"obs:{name}", source_options={"target": target, "input_size": vision_input_size(model)},
            sinks=(saved.output,), model=model, threads=args.threads, optimize=args.optimize,
            nfe=args.nfe if args.nfe else saved.nfe,
            guidance=args.cfg if args.cfg is not None else saved.cfg, volume=saved.volume))
        engine.start()
        return engine

    def on_term(signum, frame) -> None:
        raise _Terminated

    old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        with ObsClient(target=target).connect() as client:
            setup = SetupReport()
            if sys.platform.startswith("linux"):
                ensure_audio(client, setup, scene=client.current_scene(), sink=sink)
            report = calibrate(client, start_engine=start_engine, seconds=args.seconds, verify=not args.no_verify,
                               keep_dir=args.keep_recordings,
                               initial_delay_ms=resolve_delay(None, saved.latency_ms)[0],
                               progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except _Terminated:
        print("livefoley: terminated", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, old_term)
    final = report.after or report.before
    delay = report.delay_ms[1]
    update_settings(host=target.host, port=target.port, sink=sink, latency_ms=float(delay),
                    latency_source=CALIBRATED)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return 0
    b = report.before
    print(f"before: sound {b.offset_ms:+.0f} ms against the picture (p95 jitter {b.jitter_p95_ms:.0f} ms, "
          f"{b.matched}/{b.events} events) with Render Delay {report.delay_ms[0]} ms")
    print(f"set:    Render Delay on '{report.scene}' {report.delay_ms[0]} → {delay} ms")
    if report.after is not None:
        a = report.after
        print(f"after:  sound {a.offset_ms:+.0f} ms against the picture (p95 jitter {a.jitter_p95_ms:.0f} ms, "
              f"{a.matched}/{a.events} events)")
    if abs(final.offset_ms) > 45:
        shift = report.engine_shift_ms
        if report.after is not None and shift is not None and abs(report.after.offset_ms - shift) <= 45:
            rungs = [max(d["rungs"], key=d["rungs"].get) if d["rungs"] else "?"
                     for d in (report.during["before"], report.during["after"])]
            print(f"the engine's own latency moved by {shift:+.0f} ms between the two recordings (mostly on rung "
                  f"'{rungs[0]}', then '{rungs[1]}'): the machine's load changed, and the engine shed work another "
                  "way. The Render Delay holds for the first; calibrate again with the machine as busy as when you "
                  "stream", file=sys.stderr)
        else:
            print("the offset is still beyond ±45 ms (where viewers notice sound early); run calibrate again, "
                  "or look at the engine's latency (`livefoley obs live --status`)", file=sys.stderr)
        return 1
    return 0


CALIBRATED = "livefoley obs calibrate (offset in OBS's recording)"


def _finish_live(stats: dict) -> None:
    """Add the OBS source's counters to the run's statistics and save the measured latency (unless
    `obs calibrate` measured it in OBS's recording)."""
    from plugin.obs.settings import load_settings, update_settings

    stats["obs"] = (stats.get("capture") or {}).get("source_stats")
    if stats["obs"] is not None:
        o = stats["obs"]
        shot = o["screenshot_ms"] or {}
        print(f"  OBS {o['source']}: {o['screenshots']} screenshots ({o['size'][0]}x{o['size'][1]} JPEG, "
              f"{shot.get('p50', '-')} ms p50), {o['gaps']} gap(s) totalling {o['gap_s']:.1f} s, "
              f"{o['repeated']} repeated frames", file=sys.stderr)
    g2e = (stats.get("glass_to_ear_ms") or {}).get("p50")
    if load_settings().latency_source == CALIBRATED:  # measured in OBS's recording: better than our own ledger
        return
    if g2e is not None and stats.get("device_latency_ms") is not None and stats.get("chunks", 0) >= 30:
        update_settings(latency_ms=float(g2e), latency_source="livefoley obs live (glass-to-ear p50)")
        print(f"  saved the measured latency {g2e:.0f} ms for `livefoley obs setup`", file=sys.stderr)
