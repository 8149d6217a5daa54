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


def write_json(report: dict, dest: str) -> bool:
    """A command's ``--json`` output: ``dest`` "-" prints ``report`` to stdout (then the command
    prints nothing else there: returns True); a path gets the file written atomically (complete or
    not at all).  Non-finite numbers become null (JSON has no NaN)."""
    import json
    import math
    import os
    from pathlib import Path

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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_text(text + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return False
