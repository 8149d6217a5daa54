"""Where the frozen DINOv2 weights come from, and proof that they are the ones a model was trained
with (kept apart from the tokenizer, as timm keeps its hub code apart from its models).

``VisionConfig.weights``:

- ``"hub"``: the real ``lvd142m`` weights, ``model.safetensors`` of the Hugging Face repository
  ``timm/vit_small_patch14_reg4_dinov2.lvd142m``, from the HF cache or downloaded into it;
- a local ``.safetensors`` / ``.pth`` file (timm's or the original DINOv2 layout), checked against
  ``weights_sha256`` when given and loaded strictly;
- ``"seeded:SEED"``: deterministic stand-in weights of the same architecture for machines with no
  hub (the shipped CPU model), bit-identical on every CPU (see :func:`seeded_state_dict`).

All sources give a full 518×518-grid state dict that goes through one path (:func:`load_weights`:
timm's ``checkpoint_filter_fn`` resamples the position embedding, then a strict load).
:func:`tensors_fingerprint` (sha256 over names, dtypes, shapes and bytes) is what a checkpoint
records and what loading checks.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from audio.checkpoint import CheckpointFileError, read_safetensors, read_torch_file
from audio.errors import LivefoleyError

if TYPE_CHECKING:
    from model.vision import VisionConfig

log = logging.getLogger("model.vision")

HUB_TAG = "lvd142m"


class VisionError(LivefoleyError):
    """Bad vision configuration, missing or wrong DINOv2 weights, or frames the tokenizer cannot take."""


def hub_repo(backbone: str) -> str:
    """The Hugging Face repository of the real weights, from timm's pretrained config."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(f"{backbone}.{HUB_TAG}")
    if cfg is None or not cfg.hf_hub_id:
        raise VisionError(f"timm knows no {backbone}.{HUB_TAG} weights on the Hugging Face hub")
    return cfg.hf_hub_id


def tensors_fingerprint(state: dict[str, Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _seeded_scale(name: str, shape: tuple[int, ...]) -> tuple[str, float]:
    """How timm initialises DINOv2 tensor ``name``: ("const", value) or ("uniform", std)."""
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith(("ls1.gamma", "ls2.gamma")):
        return "const", 1e-5  # DINOv2 layer-scale init_values
    if re.search(r"(^|\.)norm\d?\.weight$", name):
        return "const", 1.0
    if leaf == "bias":
        return "const", 0.0
    if name == "patch_embed.proj.weight":  # PyTorch's default conv init: U(±1/sqrt(fan_in))
        return "uniform", 1.0 / math.sqrt(3 * math.prod(shape[1:]))
    if name in ("cls_token", "reg_token"):
        return "uniform", 1e-6
    if name == "pos_embed" or (leaf == "weight" and len(shape) == 2):
        return "uniform", 0.02
    raise RuntimeError(f"no seeded initialisation rule for backbone tensor {name!r} {shape}; "
                       "timm's ViT layout changed — extend _seeded_scale")


def seeded_state_dict(model: nn.Module, seed: int) -> dict[str, Tensor]:
    """Deterministic weights for ``model``'s layout at the canonical (pretrained) resolution.

    Every random tensor is U(−a, a) with a = std·√3, built from 24-bit integers of a private
    generator: (2k + 1 − 2²⁴)·2⁻²⁴ is exact in float64 and one multiplication by ``a`` plus one
    rounding to float32 are exactly rounded IEEE operations, so the bytes do not depend on the CPU's
    vector units (unlike ``normal_`` / ``erfinv_``).  The position embedding has the pretrained
    grid (37×37 for 518×518), like the real file; loading resamples it to ``input_size``.
    """
    from timm.models.vision_transformer import get_pretrained_grid_size

    g = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    full = model.pretrained_cfg["input_size"][-2:]
    patch = model.patch_embed.patch_size
    canonical_tokens = (full[0] // patch[0]) * (full[1] // patch[1])
    for name, ref in sorted(model.state_dict().items()):
        shape = tuple(ref.shape)
        if name == "pos_embed":
            shape = (shape[0], canonical_tokens, shape[2])
        rule, value = _seeded_scale(name, shape)
        if rule == "const":
            out[name] = torch.full(shape, value, dtype=torch.float32)
            continue
        k = torch.randint(0, 1 << 24, shape, generator=g, dtype=torch.int64)
        u = (2 * k + 1 - (1 << 24)).to(torch.float64) * 2.0**-24  # exact, in (−1, 1)
        out[name] = (u * (value * math.sqrt(3.0))).to(torch.float32)
    if get_pretrained_grid_size(model, out["patch_embed.proj.weight"], canonical_tokens) is None:
        raise RuntimeError("timm did not recognise the seeded position-embedding grid")
    return out


def _hub_file(backbone: str) -> Path:
    """Path of the real weights in the HF cache, downloading them when the hub is reachable."""
    import huggingface_hub
    from huggingface_hub import constants as hf_constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo = hub_repo(backbone)
    # the environment is read now, not only when huggingface_hub was imported
    env = os.environ.get("HF_HUB_OFFLINE", "").upper()
    offline = hf_constants.HF_HUB_OFFLINE or env in ("1", "ON", "YES", "TRUE")
    try:
        try:  # the cache first: no network round trip (nor retries) when the file is already there
            path = huggingface_hub.hf_hub_download(repo, "model.safetensors", local_files_only=True)
        except LocalEntryNotFoundError:
            if offline:
                raise
            log.info("downloading %s/model.safetensors from the Hugging Face hub", repo)
            path = huggingface_hub.hf_hub_download(repo, "model.safetensors")
        return Path(path)
    except OSError as err:  # LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError are OSErrors
        first_line = (str(err).splitlines() or [""])[0][:200]
        reason = "offline mode (HF_HUB_OFFLINE)" if offline else f"{type(err).__name__}: {first_line}"
        raise VisionError(
            f"DINOv2 weights not found: weights='hub' needs model.safetensors of the Hugging Face "
            f"repository {repo} in the HF cache ({hf_constants.HF_HUB_CACHE}), and the hub could not "
            f"be reached ({reason}). Either download it once on a machine with internet "
            f"(`hf download {repo} model.safetensors`, then copy the cache folder "
            f"models--{repo.replace('/', '--')} into {hf_constants.HF_HUB_CACHE}), or download "
            f"https://huggingface.co/{repo}/resolve/main/model.safetensors anywhere and pass "
            f"--dinov2-weights PATH (VisionConfig.weights=PATH)."
        ) from err


def _read_weights_file(path: Path, sha256: str | None) -> dict[str, Tensor]:
    if not path.is_file():
        raise VisionError(f"DINOv2 weights file {path} does not exist; pass the path of model.safetensors "
                          "(or the original .pth) with --dinov2-weights PATH")
    if sha256 is not None:
        got = file_sha256(path)
        if got != sha256.lower():
            raise VisionError(f"DINOv2 weights file {path} has sha256 {got}, expected {sha256}; the file is "
                              "corrupt or different weights — download it again")
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".pth", ".pt", ".bin", ".ckpt"):
        raise VisionError(f"DINOv2 weights file {path}: unknown format {suffix!r}; use .safetensors or .pth")
    try:
        read = read_safetensors if suffix == ".safetensors" else read_torch_file
        state = read(path, what="DINOv2 weights file")
    except CheckpointFileError as err:
        raise VisionError(str(err)) from None
    if isinstance(state, dict):
        state = state.get("model", state)
        state = state.get("state_dict", state)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise VisionError(f"DINOv2 weights file {path} does not hold a state dict of tensors")
    return state


def source_weights(config: VisionConfig, model: nn.Module) -> tuple[dict[str, Tensor], str]:
    """The state dict ``config.weights`` names for ``model``'s layout, and a description of its source."""
    if config.seed is not None:
        return seeded_state_dict(model, config.seed), f"'seeded:{config.seed}'"
    path = _hub_file(config.backbone) if config.weights == "hub" else Path(config.weights).expanduser()
    return _read_weights_file(path, config.weights_sha256), str(path)


def load_weights(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """``state`` into the timm ViT ``model``: layout conversion, position-embedding resampling, strict."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:
        state = checkpoint_filter_fn(dict(state), model)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError) as err:
        raise VisionError(f"vision weights {source} do not fit {type(model).__name__} "
                          f"({str(err).splitlines()[0]} …); pass the weights of "
                          "vit_small_patch14_reg4_dinov2.lvd142m") from err
