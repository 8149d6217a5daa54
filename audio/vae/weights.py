"""Reading and writing VAE weights: our model folders, ``.safetensors`` and Sony's ``.ckpt`` (Lightning
prefixes, old weight-norm names), loaded strictly with every mismatch listed."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from audio.checkpoint import CheckpointFileError, describe_mismatch, read_safetensors, read_torch_file
from audio.files import atomic_path
from audio.vae.config import VAE_PRESETS, VAEConfig, VAEConfigError, VAEWeightsError
from audio.vae.model import CausalVAE, build_vae

log = logging.getLogger("audio.vae")

# --------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------

_LIGHTNING_EMA = "autoencoder_ema.ema_model."
_LIGHTNING_RAW = "autoencoder."
_IGNORED_PREFIXES = ("discriminator.", "autoencoder_ema.initted", "autoencoder_ema.step")
# torch.nn.utils.parametrizations.weight_norm names → the checkpoint's (old hook API) names.
_PARAMETRIZATION_NAMES = {
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
}


def _read_weights(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise VAEWeightsError(
            f"VAE weights {path} do not exist; pass the path of a .safetensors or .ckpt file"
        )
    if path.suffix == ".safetensors":
        try:
            return read_safetensors(path, what="VAE weights")
        except CheckpointFileError as err:
            raise VAEWeightsError(str(err)) from None
    try:
        obj = read_torch_file(path, what="VAE checkpoint")
    except CheckpointFileError as err:
        raise VAEWeightsError(f"{err}; use Sony's exported .ckpt (a dict with 'state_dict') or a "
                              ".safetensors file") from None
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise VAEWeightsError(f"{path} holds no 'state_dict' of tensors; is it a VAE checkpoint?")
    return dict(obj)


def _normalise_keys(sd: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """Strip Lightning wrapper prefixes (preferring the EMA copy), drop discriminator / EMA
    bookkeeping entries, and map torch-parametrization names to ``weight_g`` / ``weight_v``."""
    ema = {k[len(_LIGHTNING_EMA) :]: v for k, v in sd.items() if k.startswith(_LIGHTNING_EMA)}
    raw = {k[len(_LIGHTNING_RAW) :]: v for k, v in sd.items() if k.startswith(_LIGHTNING_RAW)}
    rest = {
        k: v
        for k, v in sd.items()
        if not k.startswith((_LIGHTNING_EMA, _LIGHTNING_RAW)) and not k.startswith(_IGNORED_PREFIXES)
    }
    if ema:
        log.info("%s: using the EMA weights (%s*)", source, _LIGHTNING_EMA)
        chosen = {**rest, **ema}
    elif raw:
        log.info("%s: using the training weights (%s*)", source, _LIGHTNING_RAW)
        chosen = {**rest, **raw}
    else:
        chosen = rest
    out = {}
    for k, v in chosen.items():
        for old, new in _PARAMETRIZATION_NAMES.items():
            if k.endswith(old):
                k = k[: -len(old)] + new
        out[k] = v
    return out


def load_vae_state_dict(
    model: CausalVAE, state_dict: Mapping[str, Tensor], *, source: str = "weights"
) -> None:
    """Copy ``state_dict`` into ``model`` strictly: every key mapped explicitly and shape-checked.

    Raises :class:`LivefoleyError` listing (the first 10 of) the missing, unexpected and
    mis-shaped keys.
    """
    sd = _normalise_keys(state_dict, source)
    expected = model.state_dict()
    problems = describe_mismatch(expected, sd)
    if problems:
        raise VAEWeightsError(
            f"{source} does not match the VAE config ({model.config}): "
            + problems
            + ". Use the config these weights were trained with."
        )
    with torch.no_grad():
        model.load_state_dict({k: sd[k] for k in expected}, strict=True)


def _resolve_config(config: str | Path | VAEConfig) -> tuple[VAEConfig, Path | None]:
    """→ (config, model folder or None)."""
    from audio.spectral import SpectralCodecConfig

    if isinstance(config, VAEConfig | SpectralCodecConfig):
        return config, None
    if isinstance(config, str) and config in VAE_PRESETS:
        return VAE_PRESETS[config], None
    path = Path(config)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise VAEConfigError(f"model folder {path} has no config.json")
        return VAEConfig.from_json(path / "config.json"), path
    if path.suffix == ".json" or path.exists():
        return VAEConfig.from_json(path), None
    raise VAEConfigError(
        f"unknown VAE preset {str(config)!r}; valid presets: {', '.join(sorted(VAE_PRESETS))} "
        "(or pass the path of a stable-audio-tools JSON config or of a model folder)"
    )


def load_vae(
    config: str | Path | VAEConfig = "tiny",
    weights: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
) -> CausalVAE:
    """Build the VAE and load its weights; returns it in eval mode with gradients off.

    ``config``: a preset name (:data:`VAE_PRESETS`), a stable-audio-tools JSON (Sony's
    ``sr_ds_1600_dim_64_causal.json`` as-is), a :class:`VAEConfig`, or a model folder holding
    ``config.json`` + ``model.safetensors`` (the latter used when ``weights`` is None).
    ``weights``: ``.safetensors`` (Sony's ``weight_g``/``weight_v`` layout, which is also ours) or
    Sony's ``.ckpt`` (read with ``weights_only=True``; its ``"state_dict"``; bare keys or a raw
    Lightning checkpoint's ``autoencoder.`` / ``autoencoder_ema.ema_model.`` prefixes).
    Without weights the model keeps its random initialisation (logged).
    """
    cfg, folder = _resolve_config(config)
    model = build_vae(cfg)
    if weights is None and folder is not None:
        weights = folder / "model.safetensors"
    if weights is not None:
        weights = Path(weights)
        load_vae_state_dict(model, _read_weights(weights), source=str(weights))
        log.info("loaded VAE weights from %s", weights)
    else:
        log.info("VAE built without weights (random initialisation); pass weights=… for real audio")
    return model.to(device).eval().requires_grad_(False)


def save_vae(model: CausalVAE, folder: str | Path, *, extra_config: Mapping[str, Any] | None = None) -> Path:
    """Write a model folder ``config.json`` + ``model.safetensors`` (each via a temp name + rename)
    that :func:`load_vae` reads back.  ``extra_config`` adds top-level sections (e.g. "training")."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(tensors, str(tmp))
    data = {**model.config.to_dict(), **(extra_config or {})}
    with atomic_path(folder / "config.json") as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return folder
