"""Strict checkpoint comparison shared by every loader (VAE, generator): one description of what
differs between a module's state dict and a file's tensors."""

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
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise CheckpointFileError(
            f"{what} {path} is not a readable safetensors file ({reason}): it is damaged or was never "
            "finished — copy it again, or re-export / re-train the model") from None
