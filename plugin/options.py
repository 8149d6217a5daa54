"""Command-line options that several ``livefoley`` commands share (one definition each)."""

from __future__ import annotations

DINOV2_WEIGHTS_HELP = (
    "local DINOv2 weights file (model.safetensors of timm/vit_small_patch14_reg4_dinov2.lvd142m) for "
    "a model whose vision weights come from the Hugging Face hub, on a machine that cannot reach it; "
    "refused when it differs from the weights the model was trained with"
)


def add_dinov2_weights(parser) -> None:
    """``--dinov2-weights PATH`` on ``parser`` (or an argument group), stored as ``dinov2_weights``."""
    parser.add_argument("--dinov2-weights", metavar="PATH", help=DINOV2_WEIGHTS_HELP)


def same_file(a, b) -> bool:
    """True when paths ``a`` and ``b`` name the same file (by path, or by inode when both exist)."""
    import os
    from pathlib import Path

    a, b = Path(a), Path(b)
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_writable(folder, *, what: str = "-o") -> None:
    """Refuse, before any work, an output folder the system will not let us write in (read-only,
    no permission, not a folder): one message naming it, not a muxer's or a codec's complaint later."""
    import os
    import tempfile
    from pathlib import Path

    from audio.errors import LivefoleyError

    folder = Path(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".livefoley-write-test.", dir=folder)
    except OSError as err:
        raise LivefoleyError(f"cannot write in {folder} ({err.strerror or err}); choose another {what}") from None
    os.close(fd)
    os.unlink(probe)


def check_output(out, *, inputs=(), overwrite: bool = False, what: str = "the output") -> None:
    """Refuse, before any work, an output that is one of the ``inputs`` (never overwritten), that
    exists without ``overwrite`` (the user's file is kept: pass --overwrite to replace it), or whose
    folder cannot be written."""
    from pathlib import Path

    from audio.errors import UsageError

    out = Path(out)
    for src in inputs:
        if same_file(src, out):
            raise UsageError(f"{what} {out} is the input {src}; an input is never overwritten — choose "
                                 "another name")
    if out.is_dir():
        raise UsageError(f"{what} {out} is a folder; give a file name")
    if out.exists() and not overwrite:
        raise UsageError(f"{what} {out} exists; pass --overwrite to replace it (or choose another name)")
    check_writable(out.parent, what=f"name for {what}")


def guidance(value: str) -> float:
    """argparse type of ``--cfg``: a finite ω ≥ 0 (1 = no guidance), the same rule in every command."""
    import argparse
    import math

    try:
        w = float(value)
    except ValueError:
        w = math.nan
    if not (math.isfinite(w) and w >= 0):
        raise argparse.ArgumentTypeError(f"{value!r}: the guidance ω must be a finite number ≥ 0 (1 = no guidance)")
    return w


def count(minimum: int):
    """argparse type: an integer ≥ ``minimum`` (``count(1)`` for frames, ``count(0)`` for warm-ups)."""
    import argparse

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = minimum - 1
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{value!r}: give a whole number ≥ {minimum}")
        return n

    return parse


def folder_dest(value: str):
    """argparse type of an output folder (``--out`` of synth, prepare, train): created when missing;
    an existing *file* of that name is refused before any work (it is the user's, and no folder)."""
    import argparse
    from pathlib import Path

    path = Path(value)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is an existing file, not a folder; give a folder name "
                                         "(it is created when missing)")
    return path


def json_dest(value: str) -> str:
    """argparse type of an optional ``--json [FILE]``: "-" (stdout) or a name ending in ``.json``.
    Anything else is refused before the command runs: ``--json`` would otherwise swallow the next
    input name (``generate a.mp4 --json b.mp4``) and replace that file with the report."""
    import argparse

    if value == "-" or value.lower().endswith(".json"):
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r} is not a .json file name: --json writes its report to stdout, or to FILE.json when one "
        "is given; put --json after the inputs, or write --json=- / --json report.json")


def write_json(report: dict, dest: str) -> bool:
    """A command's ``--json`` output: ``dest`` "-" prints ``report`` to stdout (then the command
    prints nothing else there: returns True); a path gets the file written atomically (complete or
    not at all).  Non-finite numbers become null (JSON has no NaN)."""
    import json
    import math
    from pathlib import Path

    from audio.files import atomic_path

    def finite(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: finite(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [finite(v) for v in x]
        return x

    text = json.dumps(finite(report), indent=1, allow_nan=False)
    if dest == "-":
        print(text)
        return True
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return False
