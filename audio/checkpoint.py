"""Strict checkpoint comparison shared by every loader (VAE, generator): one description of what
differs between a module's state dict and a file's tensors."""

from __future__ import annotations

from collections.abc import Mapping


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
