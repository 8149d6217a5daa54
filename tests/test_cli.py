"""The command line as a whole: every command and subcommand teaches with ``--help``."""

from __future__ import annotations

import argparse

import pytest

from plugin.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*prefix, name))
    return found


COMMANDS = _commands(build_parser())


def test_the_walk_finds_every_command() -> None:
    names = {" ".join(c) for c in COMMANDS}
    for expected in ("live", "generate", "eval", "bench", "demo", "synth", "prepare", "train vae",
                     "train stage1", "train ect", "obs setup", "obs live", "vae reconstruct"):
        assert expected in names


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "livefoley")
def test_help_of_every_command(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    # help text goes through %-formatting: one stray '%' in a choice's description broke `eval --help`
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: livefoley")
    assert len(out.splitlines()) > 3
