"""``livefoley obs``: OBS Studio — list sources, set up audio capture and delay compensation, run live
on an OBS source (see :mod:`plugin.obs` and :mod:`capture.obs`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from audio.errors import UsageError

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
  livefoley obs live --source "Game"       generate sound for an OBS source, live"""

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


def _finish_live(stats: dict) -> None:
    """Add the OBS source's counters to the run's statistics and save the measured latency."""
    from plugin.obs.settings import update_settings

    stats["obs"] = (stats.get("capture") or {}).get("source_stats")
    if stats["obs"] is not None:
        o = stats["obs"]
        shot = o["screenshot_ms"] or {}
        print(f"  OBS {o['source']}: {o['screenshots']} screenshots ({o['size'][0]}x{o['size'][1]} JPEG, "
              f"{shot.get('p50', '-')} ms p50), {o['gaps']} gap(s) totalling {o['gap_s']:.1f} s, "
              f"{o['repeated']} repeated frames", file=sys.stderr)
    g2e = (stats.get("glass_to_ear_ms") or {}).get("p50")
    if g2e is not None and stats.get("device_latency_ms") is not None and stats.get("chunks", 0) >= 30:
        update_settings(latency_ms=float(g2e), latency_source="livefoley obs live (glass-to-ear p50)")
        print(f"  saved the measured latency {g2e:.0f} ms for `livefoley obs setup`", file=sys.stderr)
