"""``livefoley devices``: list the sound output devices PortAudio can play to."""

from __future__ import annotations

import argparse
import json

HELP = "list the sound output devices (for --sink device:NAME_OR_INDEX)"
DESCRIPTION = """\
List the output devices PortAudio sees, with the index and name to pass as
`--sink device:NAME_OR_INDEX` (a case-insensitive name substring works too). The default
output device is marked with *. Under PulseAudio/PipeWire the devices are usually `pulse`
and `default`; choose the actual sink with the PULSE_SINK environment variable."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "devices", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from audio.devices import list_devices

    devices = list_devices()
    if args.json:
        print(json.dumps({"devices": devices}, indent=2))
        return 0
    if not devices:
        print("no output devices found (is a sound server running, or a sound card present?)")
        return 0
    rows = [("", "index", "name", "host API", "channels", "default rate")] + [
        ("*" if d["is_default"] else "", str(d["index"]), d["name"], d["hostapi"],
         str(d["max_output_channels"]), f"{d['default_samplerate']:g} Hz")
        for d in devices
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    print("\nplay to one with --sink device:NAME_OR_INDEX (* = default)")
    return 0
