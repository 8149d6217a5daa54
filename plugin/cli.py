"""The ``livefoley`` console script: discovers the subcommands in :mod:`plugin.commands`."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from importlib.metadata import PackageNotFoundError, version

import plugin.commands
from audio.errors import LivefoleyError

DESCRIPTION = """\
Real-time, frame-level video-to-audio: livefoley turns every video frame it sees into the next
33.3 ms of 48 kHz stereo sound, never looking at a future frame.

Run `livefoley COMMAND --help` for the options of each command."""


def _version() -> str:
    try:
        return version("livefoley")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livefoley", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"livefoley {_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(plugin.commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"plugin.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.INFO, logging.DEBUG)[min(args.verbose, 1)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except LivefoleyError as err:  # UsageError exits 2 (like argparse), a failure in the work 1
        print(f"livefoley: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("livefoley: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        if args.verbose:
            raise
        print("livefoley: error: out of memory; ask for less (a smaller --size, fewer --seconds or --minutes, "
              "a smaller --batch-size) or close other programs (-v shows where)", file=sys.stderr)
        return 1
    except OSError as err:  # a file or folder the system refused: name it, no traceback
        if args.verbose or not (err.filename or err.strerror):
            raise
        where = f": {err.filename}" if err.filename else ""
        print(f"livefoley: error: {err.strerror or err}{where} (check the path, its permissions and the free "
              "disk space; -v shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
