"""Checkpoint files, shared by every loader (VAE, generator, DINOv2, training state): reading
safetensors and PyTorch files with one clear error for a damaged or foreign file, int8 storage, and
one description of what differs between a module's state dict and a file's tensors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from audio.errors import LivefoleyError


def describe_mismatch(expected: Mapping, tensors: Mapping) -> str | None:
    """``None`` when ``tensors`` has exactly the keys and shapes of ``expected`` (a state dict);
    otherwise "N missing: …; N unexpected: …; N with the wrong shape: …" (first 10 of each)."""
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    misshaped = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)
    ]

    def first(items: list[str]) -> str:
        more = f" … (+{len(items) - 10} more)" if len(items) > 10 else ""
        return ", ".join(items[:10]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {first(unexpected)}")
    if misshaped:
        parts.append(f"{len(misshaped)} with the wrong shape: {first(misshaped)}")
    return "; ".join(parts) or None


class CheckpointFileError(LivefoleyError):
    """A weights file that cannot be read at all (missing, truncated, not safetensors)."""


def read_safetensors(path, *, what: str = "weights") -> dict:
    """Every tensor of the safetensors file ``path`` on the CPU; a missing, empty, truncated or
    foreign file raises :class:`CheckpointFileError` naming the file and the way out."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointFileError(f"{what} {path} does not exist")
    try:
        return dequantize(load_file(str(path), device="cpu"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise CheckpointFileError(
            f"{what} {path} could not be read: it is not a readable safetensors file ({reason}), damaged "
            "or never finished — copy, download or make it again") from None


def read_torch_file(path, *, what: str = "checkpoint", device="cpu"):
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, never arbitrary
    objects.  A missing, damaged or foreign file raises :class:`CheckpointFileError` naming the file;
    torch's own advice to load with ``weights_only=False`` (which would run code from the file) is
    not passed on."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointFileError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
        reason = ("it holds objects other than tensors, or is no PyTorch checkpoint"
                  if isinstance(err, pickle.UnpicklingError)
                  else f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:160]}")
        raise CheckpointFileError(
            f"{what} {path} could not be read as a tensors-only checkpoint ({reason}); it is damaged, "
            "unfinished or not what was expected — copy, download or make it again") from None


QUANT_SCALE = ".int8_scale"
"""A tensor stored as int8 has a companion ``<name>.int8_scale`` (fp16, one scale per output row):
``weight = int8 · scale``.  :func:`quantize` writes the pair, :func:`dequantize` (inside
:func:`read_safetensors`, so every loader) turns it back into one float32 tensor of the same name."""


def quantize(tensors: Mapping, *, min_elements: int = 16384) -> dict:
    """Weight-only int8 (symmetric, per output row) of every float matrix with at least
    ``min_elements`` entries; other float tensors become fp16.  Halves an fp16 file again."""
    import torch

    out = {}
    for name, t in tensors.items():
        if t.is_floating_point() and t.dim() >= 2 and t.numel() >= min_elements:
            rows = t.float().reshape(t.shape[0], -1)
            scale = (rows.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-12)
            out[name] = torch.round(rows / scale).clamp(-127, 127).to(torch.int8).reshape(t.shape).contiguous()
            out[name + QUANT_SCALE] = scale.to(torch.float16)
        elif t.is_floating_point():
            out[name] = t.to(torch.float16).contiguous()
        else:
            out[name] = t.contiguous()
    return out


def dequantize(tensors: dict) -> dict:
    """Undo :func:`quantize`: ``name`` + ``name.int8_scale`` → float32 ``name``; others unchanged."""
    import torch

    for scale_name in [k for k in tensors if k.endswith(QUANT_SCALE)]:
        name = scale_name[: -len(QUANT_SCALE)]
        q, scale = tensors.pop(name, None), tensors.pop(scale_name)
        if q is None or q.dtype != torch.int8 or scale.shape[0] != q.shape[0]:
            raise ValueError(f"{scale_name} has no matching int8 tensor {name}")
        tensors[name] = (q.float().reshape(q.shape[0], -1) * scale.float()).reshape(q.shape)
    return tensors
