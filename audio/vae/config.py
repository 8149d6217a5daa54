"""The VAE's configuration: :class:`VAEConfig` (read from and written as stable-audio-tools JSON, so
Sony's ``sr_ds_1600_dim_64_causal.json`` loads as-is), the named presets and the config errors."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audio.contract import CONTRACT
from audio.errors import LivefoleyError


class VAEConfigError(LivefoleyError):
    """A VAE config file/dict that cannot describe a model we build."""


class VAEWeightsError(LivefoleyError):
    """A weights file that does not fit the model (missing, unexpected or mis-shaped keys)."""


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VAEConfig:
    """Everything that determines the VAE's architecture.

    ``c_mults`` is given as in stable-audio-tools: a leading 1 is prepended internally, so with
    ``channels=C`` and ``c_mults=(1, 2, 4, 8, 16)`` the encoder widths are C→C→2C→4C→8C→16C.
    ``strides[i]`` is the down/up-sampling factor of block i; their product is the hop.
    """

    channels: int
    c_mults: tuple[int, ...]
    strides: tuple[int, ...]
    latent_dim: int = CONTRACT.latent_dim
    audio_channels: int = CONTRACT.channels
    sample_rate: int = CONTRACT.sample_rate
    causal: bool = True
    final_tanh: bool = False

    def __post_init__(self) -> None:
        # JSON lists arrive as lists; keep the dataclass hashable and immutable.
        object.__setattr__(self, "c_mults", tuple(int(c) for c in self.c_mults))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        problems = []
        if self.channels < 1:
            problems.append(f"channels must be >= 1 (got {self.channels})")
        if not self.strides or len(self.c_mults) != len(self.strides):
            problems.append(
                f"c_mults and strides need the same non-zero length (got {len(self.c_mults)} and "
                f"{len(self.strides)})"
            )
        if any(c < 1 for c in self.c_mults) or any(s < 1 for s in self.strides):
            problems.append(f"c_mults and strides must be positive (got {self.c_mults}, {self.strides})")
        if self.latent_dim < 1 or self.audio_channels < 1 or self.sample_rate < 1:
            problems.append("latent_dim, audio_channels and sample_rate must be positive")
        if not self.causal:
            problems.append(
                "causal=false: only the causal VAE is implemented (it is the one that streams); use "
                "Sony's causal config sr_ds_1600_dim_64_causal.json and its checkpoint"
            )
        if problems:
            raise VAEConfigError("invalid VAE config: " + "; ".join(problems))

    @property
    def hop(self) -> int:
        """Waveform samples per latent frame (product of the strides)."""
        return math.prod(self.strides)

    @property
    def widths(self) -> tuple[int, ...]:
        """Channel widths at each block boundary, encoder order: ``channels · (1, *c_mults)``."""
        return tuple(self.channels * m for m in (1, *self.c_mults))

    # ---- serialisation: the stable-audio-tools layout (Sony's JSON), so one format everywhere --

    def to_dict(self) -> dict[str, Any]:
        """A stable-audio-tools style model config (the layout of Sony's JSON files)."""
        common = {
            "channels": self.channels,
            "c_mults": list(self.c_mults),
            "strides": list(self.strides),
            "use_snake": True,
            "causal": self.causal,
        }
        return {
            "model_type": "autoencoder",
            "sample_size": self.sample_rate,
            "sample_rate": self.sample_rate,
            "audio_channels": self.audio_channels,
            "model": {
                "encoder": {
                    "type": "oobleck",
                    "config": {
                        "in_channels": self.audio_channels,
                        **common,
                        "latent_dim": 2 * self.latent_dim,
                    },
                },
                "decoder": {
                    "type": "oobleck",
                    "config": {
                        "out_channels": self.audio_channels,
                        **common,
                        "latent_dim": self.latent_dim,
                        "final_tanh": self.final_tanh,
                    },
                },
                "bottleneck": {"type": "vae"},
                "latent_dim": self.latent_dim,
                "downsampling_ratio": self.hop,
                "io_channels": self.audio_channels,
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "config") -> VAEConfig:
        """Parse a stable-audio-tools style autoencoder config (other top-level sections such as
        ``"training"`` are ignored).  Anything we cannot build exactly raises, naming the field."""

        def need(mapping: Any, key: str, where: str) -> Any:
            if not isinstance(mapping, Mapping) or key not in mapping:
                raise VAEConfigError(
                    f"{source}: missing '{where}{key}'; expected a stable-audio-tools autoencoder "
                    "config like Sony's sr_ds_1600_dim_64_causal.json"
                )
            return mapping[key]

        if _is_spectral(d):  # the CPU-trainable codec behind the same interface (audio.spectral)
            from audio.spectral import SpectralCodecConfig

            return SpectralCodecConfig.from_dict(d, source=source)
        model_type = d.get("model_type", "autoencoder") if isinstance(d, Mapping) else None
        if model_type != "autoencoder":
            raise VAEConfigError(f"{source}: model_type is {model_type!r}, expected 'autoencoder'")
        model = need(d, "model", "")
        enc_t = need(need(model, "encoder", "model."), "type", "model.encoder.")
        dec_t = need(need(model, "decoder", "model."), "type", "model.decoder.")
        if enc_t != "oobleck" or dec_t != "oobleck":
            raise VAEConfigError(
                f"{source}: encoder/decoder type {enc_t!r}/{dec_t!r}; only 'oobleck' is built"
            )
        enc = need(model["encoder"], "config", "model.encoder.")
        dec = need(model["decoder"], "config", "model.decoder.")
        bottleneck = model.get("bottleneck", {}).get("type")
        if bottleneck != "vae":
            raise VAEConfigError(f"{source}: bottleneck type {bottleneck!r}; only 'vae' is supported")
        for key in ("channels", "c_mults", "strides"):
            a, b = need(enc, key, "model.encoder.config."), need(dec, key, "model.decoder.config.")
            if (list(a) if isinstance(a, list | tuple) else a) != (
                list(b) if isinstance(b, list | tuple) else b
            ):
                raise VAEConfigError(f"{source}: encoder and decoder differ in {key!r} ({a} vs {b})")
        for side, conf in (("encoder", enc), ("decoder", dec)):
            if not conf.get("use_snake", False):
                raise VAEConfigError(f"{source}: model.{side}.config.use_snake is false; only Snake is built")
            if conf.get("use_nearest_upsample", False):
                raise VAEConfigError(f"{source}: use_nearest_upsample is not supported")
        latent_dim = int(need(dec, "latent_dim", "model.decoder.config."))
        enc_latent = int(need(enc, "latent_dim", "model.encoder.config."))
        if enc_latent != 2 * latent_dim:
            raise VAEConfigError(
                f"{source}: the VAE encoder must emit mean ‖ logvar = 2 × {latent_dim} channels, "
                f"its latent_dim is {enc_latent}"
            )
        if "latent_dim" in model and int(model["latent_dim"]) != latent_dim:
            raise VAEConfigError(
                f"{source}: model.latent_dim {model['latent_dim']} != decoder's {latent_dim}"
            )
        audio_channels = int(d.get("audio_channels", model.get("io_channels", CONTRACT.channels)))
        in_ch = int(enc.get("in_channels", audio_channels))
        out_ch = int(dec.get("out_channels", audio_channels))
        if not in_ch == out_ch == audio_channels:
            raise VAEConfigError(
                f"{source}: in/out/audio channels differ ({in_ch}/{out_ch}/{audio_channels})"
            )
        causal = bool(enc.get("causal", False))
        if bool(dec.get("causal", False)) != causal:
            raise VAEConfigError(f"{source}: encoder and decoder disagree on 'causal'")
        sample_rate = int(need(d, "sample_rate", ""))
        try:
            cfg = cls(
                channels=int(enc["channels"]),
                c_mults=tuple(enc["c_mults"]),
                strides=tuple(enc["strides"]),
                latent_dim=latent_dim,
                audio_channels=audio_channels,
                sample_rate=sample_rate,
                causal=causal,
                final_tanh=bool(dec.get("final_tanh", False)),
            )
        except VAEConfigError as err:
            raise VAEConfigError(f"{source}: {err}") from None
        ratio = model.get("downsampling_ratio")
        if ratio is not None and int(ratio) != cfg.hop:
            raise VAEConfigError(f"{source}: downsampling_ratio {ratio} != product of strides {cfg.hop}")
        return cfg

    @classmethod
    def from_json(cls, path: str | Path) -> VAEConfig:
        """Read a stable-audio-tools style JSON (Sony's ``sr_ds_1600_dim_64_causal.json`` as-is)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise VAEConfigError(f"VAE config {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise VAEConfigError(f"VAE config {path} is not readable JSON ({err})") from None
        return cls.from_dict(data, source=str(path))


def _is_spectral(d: Any) -> bool:
    from audio.spectral import SPECTRAL_TYPE

    try:
        return d["model"]["encoder"]["type"] == SPECTRAL_TYPE
    except (KeyError, TypeError):
        return False


_SR_CAUSAL = VAEConfig(channels=128, c_mults=(1, 2, 4, 8, 16), strides=(2, 4, 5, 5, 8))

VAE_PRESETS: dict[str, VAEConfig] = {
    # Sony's exact architecture: their sr_causal_ds_1600_dim_64.ckpt loads strictly (~150M params).
    "sr-causal": _SR_CAUSAL,
    # Same class and strides, 8 base channels (8→8→16→32→64→128): 0.34M + 0.35M parameters.
    # The widest that streams a latent within a 3 ms share of the frame budget on two CPU cores
    # (scripts/measure_vae.py measures 8, 12 and 16 channels on the machine at hand).
    "tiny": VAEConfig(channels=8, c_mults=(1, 2, 4, 8, 16), strides=(2, 4, 5, 5, 8)),
}
# The codec that trains on two CPU cores (audio/spectral.py): learned log-magnitude spectrogram
# coding at the frame rate, causal phase-vocoder synthesis.  The shipped default model uses it.
from audio.spectral import SpectralCodecConfig  # noqa: E402  (it imports nothing from this module)

VAE_PRESETS["spectral"] = SpectralCodecConfig()
for _name, _cfg in VAE_PRESETS.items():
    assert _cfg.hop == CONTRACT.hop and _cfg.latent_dim == CONTRACT.latent_dim, _name


def get_preset(name: str) -> VAEConfig:
    """The preset ``name``; unknown names raise listing the valid ones."""
    try:
        return VAE_PRESETS[name]
    except KeyError:
        raise VAEConfigError(
            f"unknown VAE preset {name!r}; valid presets: {', '.join(sorted(VAE_PRESETS))} "
            "(or pass a stable-audio-tools JSON config or a model folder)"
        ) from None
