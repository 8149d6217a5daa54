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
