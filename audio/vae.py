"""The causal streaming audio VAE ("Oobleck" encoder/decoder, Sony SoundReactor variant).

48 kHz stereo waveform ``(B, 2, N)`` ⇄ 64-d latents ``(B, 64, N / 1600)``, one latent per 30-fps
video frame.  The architecture, the parameter names and the numerics follow Sony's released causal
VAE (``sr_ds_1600_dim_64_causal.json``; see ``tests/fixtures/sr_vae/README.md``), so the model's own
``state_dict`` *is* Sony's checkpoint layout: ``encoder.layers.0.bias / weight_g / weight_v …``.

Building blocks (all causal, no look-ahead):

* :class:`CausalConv1d` - weight-normed conv padded on the left only by ``(K-1)·d + 1 - S`` samples.
* :class:`CausalConvTranspose1d` - weight-normed transposed conv (kernel ``2S``) whose last
  ``K - S`` output samples are the overlap with the next input; offline they are cut off.
* :class:`Snake` - ``x + sin(a·x)² / (b + 1e-9)`` with log-scale per-channel ``a``, ``b``.

Streaming (STYLE.md patterns 1-4): inside ``with vae.streaming(batch_size):`` every causal conv owns
a small preallocated state - a conv its last ``(K-1)·d + 1 - S`` input samples, a transposed conv
its ``K - S`` overlap-add tail - updated in place with ``copy_``.  ``decode`` of one latent then
gives exactly 1600 samples and ``encode`` of 1600 samples one latent, and the concatenated output is
identical to offline processing, because the offline path *is* the streaming path started from a
zero state that is thrown away afterwards.

Lengths: the encoder takes whole frames only.  A length that is not a multiple of the hop is an
error that names the fix (:func:`pad_to_hop`, explicit right zero-padding).  We do not copy the
reference's per-layer "extra" right padding for such lengths: it is not the same as padding the
waveform, and the reference's own streaming script pads the waveform first.

Entry point: :func:`load_vae` (a preset name, a stable-audio-tools JSON, or a model folder; plus
optional ``.safetensors`` / Sony ``.ckpt`` weights).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio.checkpoint import CheckpointFileError, describe_mismatch, read_safetensors, read_torch_file
from audio.codec import StreamingCodec
from audio.contract import CONTRACT
from audio.errors import LivefoleyError
from audio.files import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "VAEConfig",
    "VAE_PRESETS",
    "CausalVAE",
    "CausalConv1d",
    "CausalConvTranspose1d",
    "Snake",
    "pad_to_hop",
    "load_vae",
    "load_vae_state_dict",
    "save_vae",
    "build_vae",
    "LOGVAR_RANGE",
]

LOGVAR_RANGE = (-30.0, 20.0)
"""The bottleneck clamps the encoder's log-variance to this range (Sony's VAE bottleneck)."""

SNAKE_EPS = 1e-9
"""Added to ``exp(beta)`` before dividing (after the exp, as in the reference)."""

DILATIONS = (1, 3, 9)
"""Dilations of the three kernel-7 residual units in every encoder/decoder block."""


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


def build_vae(config: Any) -> nn.Module:
    """A freshly initialised codec for ``config``: the Oobleck :class:`CausalVAE` for a
    :class:`VAEConfig`, the :class:`audio.spectral.SpectralCodec` for its config."""
    from audio.spectral import SpectralCodec, SpectralCodecConfig

    return SpectralCodec(config) if isinstance(config, SpectralCodecConfig) else CausalVAE(config)


_SR_CAUSAL = VAEConfig(channels=128, c_mults=(1, 2, 4, 8, 16), strides=(2, 4, 5, 5, 8))

VAE_PRESETS: dict[str, VAEConfig] = {
    # Sony's exact architecture: their sr_causal_ds_1600_dim_64.ckpt loads strictly (~150M params).
    "sr-causal": _SR_CAUSAL,
    # Same class and strides, 8 base channels (8→8→16→32→64→128): 0.34M + 0.35M parameters.
    # Chosen with scripts/measure_vae.py: ~1.7-2.0 ms per streamed latent on this 2-core machine
    # (budget 3 ms); 12 channels took ~2.2-2.3 ms, 16 channels ~3.1-3.8 ms.
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


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------


def _inference_cache_ok(module: nn.Module, param: Tensor) -> bool:
    """Whether a derived tensor (fused weight, exp of Snake params) may come from the cache: only
    in eval mode and when no gradient for the parameters is being recorded."""
    return not module.training and not (torch.is_grad_enabled() and param.requires_grad)


def _param_key(*params: Tensor) -> tuple:
    # data_ptr changes on .to()/.cuda(); _version on every in-place update (optimizer, load_state_dict).
    # Parameters created under inference_mode have no version counter; they cannot be updated
    # outside inference mode either, so their address alone identifies them.
    return tuple((p.data_ptr(), -1 if p.is_inference() else p._version, p.dtype, p.device) for p in params)


class _WeightNormed(nn.Module):
    """Weight norm with Sony's parameter names: ``weight = weight_g · weight_v / ‖weight_v‖``.

    The norm is over every dim except dim 0 (so for a transposed conv, whose weight is
    ``(in, out, K)``, ``weight_g`` is per *input* channel).  Parameters are registered in the
    checkpoint's order ``bias, weight_g, weight_v``.  In eval mode without autograd the fused
    weight is computed once and cached until the parameters change.
    """

    def _init_params(self, weight_shape: tuple[int, int, int], bias_size: int | None) -> None:
        v = torch.empty(weight_shape)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))  # torch's default conv init
        if bias_size is not None:
            fan_in = nn.init._calculate_fan_in_and_fan_out(v)[0]
            bound = 1 / math.sqrt(fan_in)
            self.bias = nn.Parameter(torch.empty(bias_size).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True))
        self.weight_v = nn.Parameter(v)
        self._fused: tuple[tuple, Tensor] | None = None

    def _compute_weight(self) -> Tensor:
        v = self.weight_v
        return v * (self.weight_g / torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True))

    def weight(self) -> Tensor:
        """The effective (fused) weight."""
        if not _inference_cache_ok(self, self.weight_v):
            return self._compute_weight()
        key = _param_key(self.weight_g, self.weight_v)
        if self._fused is None or self._fused[0] != key:
            # A normal (non-inference) tensor, so it may also serve a later no-grad call.
            with torch.inference_mode(False), torch.no_grad():
                self._fused = (key, self._compute_weight())
        return self._fused[1]

    def train(self, mode: bool = True) -> _WeightNormed:
        self._fused = None  # free it; training computes the weight from g and v every call
        return super().train(mode)


@dataclass
class _ConvTail:
    """Streaming state of a causal conv: its last ``size`` input samples, ``(B, C_in, size)``."""

    buf: Tensor

    def push(self, x: Tensor) -> Tensor:
        """``[tail ‖ x]`` for the conv, and keep the new tail (in place)."""
        full = torch.cat([self.buf, x], dim=-1)
        self.buf.copy_(full[..., full.shape[-1] - self.buf.shape[-1] :])
        return full


@dataclass
class _OverlapTail:
    """Streaming state of a transposed conv: the ``K - S`` output samples (without bias) that the
    next input's outputs overlap, ``(B, C_out, K - S)``."""

    buf: Tensor


def _small_cpu_inference(x: Tensor) -> bool:
    """Whether ``x`` is a streaming-sized CPU input without autograd (see :func:`_dilated_conv1d_matmul`)."""
    return (
        x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and (x.numel() <= 1 << 15 or x.shape[-1] <= 256)
    )


def _dilated_conv1d_matmul(
    x: Tensor, weight: Tensor, bias: Tensor | None, *, stride: int, dilation: int
) -> Tensor:
    """``F.conv1d(x, weight, bias, stride, dilation)`` (no padding) as im2col + one matmul.

    Why: on CPU, PyTorch runs dilated convs through a slow generic kernel (``slow_conv_dilated2d``)
    that costs 2-4× more than this for the short inputs of streaming (one latent per call);
    for long inputs the library kernel is faster, so callers use this only for small inputs.
    ``x (B, C_in, L)``, ``weight (C_out, C_in, K)`` → ``(B, C_out, L_out)``.
    """
    c_out, c_in, k = weight.shape
    cols = x.unfold(-1, (k - 1) * dilation + 1, stride)[..., ::dilation]  # (B, C_in, L_out, K) view
    b, _, l_out, _ = cols.shape
    cols = cols.transpose(2, 3).reshape(b, c_in * k, l_out)  # (B, C_in·K, L_out), matches weight's (C_in, K)
    w2 = weight.reshape(c_out, c_in * k)
    if bias is None:
        return torch.matmul(w2, cols)
    if b == 1:
        return torch.addmm(bias[:, None], w2, cols[0]).unsqueeze(0)
    return torch.matmul(w2, cols) + bias[:, None]


class CausalConv1d(_WeightNormed):
    """Weight-normed Conv1d, zero-padded on the left only (no look-ahead).

    ``(B, C_in, L) → (B, C_out, L / stride)``; ``L`` must be a multiple of ``stride``.  The left
    context is ``(K-1)·dilation + 1 - stride`` samples: zeros offline (and at stream start), the
    previous chunk's last input samples while streaming.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.context = (kernel_size - 1) * dilation + 1 - stride
        if self.context < 0:
            raise ValueError(f"kernel {kernel_size} shorter than stride {stride}")
        self._init_params((out_channels, in_channels, kernel_size), out_channels if bias else None)
        self._state: _ConvTail | None = None

    def start_streaming(self, batch_size: int, *, device: torch.device, dtype: torch.dtype) -> None:
        if self.context:
            self._state = _ConvTail(
                torch.zeros(batch_size, self.in_channels, self.context, device=device, dtype=dtype)
            )

    def stop_streaming(self) -> None:
        self._state = None

    def reset_streaming(self) -> None:
        if self._state is not None:
            self._state.buf.zero_()

    def forward(self, x: Tensor) -> Tensor:
        if self.context:
            # Offline is the same computation from a zero state that is thrown away afterwards.
            x = F.pad(x, (self.context, 0)) if self._state is None else self._state.push(x)
        if self.dilation > 1 and _small_cpu_inference(x):
            return _dilated_conv1d_matmul(
                x, self.weight(), self.bias, stride=self.stride, dilation=self.dilation
            )
        return F.conv1d(x, self.weight(), self.bias, stride=self.stride, dilation=self.dilation)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, dilation={self.dilation}, context={self.context}"
        )


class CausalConvTranspose1d(_WeightNormed):
    """Weight-normed ConvTranspose1d (padding 0) that emits exactly ``stride`` samples per input.

    ``(B, C_in, T) → (B, C_out, T · stride)``.  The full transposed conv gives ``(T-1)·S + K``
    samples; the last ``K - S`` belong to the future (they overlap the next input's outputs):
    offline they are cut, while streaming they are kept (without the bias) and added to the first
    ``K - S`` outputs of the next call.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int, bias: bool = True
    ):
        super().__init__()
        if not stride <= kernel_size <= 2 * stride:
            # K <= 2S keeps the overlap within one input step (Oobleck uses K = 2S).
            raise ValueError(f"kernel {kernel_size} must be between stride {stride} and 2·stride")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.overlap = kernel_size - stride
        self._init_params((in_channels, out_channels, kernel_size), out_channels if bias else None)
        self._state: _OverlapTail | None = None

    def start_streaming(self, batch_size: int, *, device: torch.device, dtype: torch.dtype) -> None:
        if self.overlap:
            self._state = _OverlapTail(
                torch.zeros(batch_size, self.out_channels, self.overlap, device=device, dtype=dtype)
            )

    def stop_streaming(self) -> None:
        self._state = None

    def reset_streaming(self) -> None:
        if self._state is not None:
            self._state.buf.zero_()

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[-1] * self.stride
        y = F.conv_transpose1d(x, self.weight(), None, stride=self.stride)  # (B, C_out, n + overlap)
        if self._state is not None:
            y[..., : self.overlap] += self._state.buf
            self._state.buf.copy_(y[..., n:])
        y = y[..., :n]
        return y if self.bias is None else y + self.bias[:, None]

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        )


class Snake(nn.Module):
    """Snake activation with log-scale parameters: ``x + sin(e^α·x)² / (e^β + 1e-9)``, α, β ``(C,)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self._cached: tuple[tuple, Tensor, Tensor] | None = None

    def _coefficients(self) -> tuple[Tensor, Tensor]:
        """``(e^α, 1/(e^β + eps))`` shaped ``(C, 1)`` for broadcasting over ``(B, C, L)``."""
        if not _inference_cache_ok(self, self.alpha):
            return self.alpha.exp()[:, None], 1.0 / (self.beta.exp()[:, None] + SNAKE_EPS)
        key = _param_key(self.alpha, self.beta)
        if self._cached is None or self._cached[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                self._cached = (key, self.alpha.exp()[:, None], 1.0 / (self.beta.exp()[:, None] + SNAKE_EPS))
        return self._cached[1], self._cached[2]

    def forward(self, x: Tensor) -> Tensor:
        a, inv_b = self._coefficients()
        return torch.addcmul(x, torch.sin(a * x).square(), inv_b)

    def train(self, mode: bool = True) -> Snake:
        self._cached = None
        return super().train(mode)

    def extra_repr(self) -> str:
        return str(self.alpha.shape[0])


class ResidualUnit(nn.Module):
    """Snake → conv k7 (dilation d) → Snake → conv k1, plus the input.  ``(B, C, L) → (B, C, L)``."""

    def __init__(self, channels: int, *, dilation: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            Snake(channels),
            CausalConv1d(channels, channels, 7, dilation=dilation),
            Snake(channels),
            CausalConv1d(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class EncoderBlock(nn.Module):
    """Three residual units → Snake → strided conv (kernel 2S).  ``(B, C_in, L) → (B, C_out, L/S)``."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *(ResidualUnit(in_channels, dilation=d) for d in DILATIONS),
            Snake(in_channels),
            CausalConv1d(in_channels, out_channels, 2 * stride, stride=stride),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class DecoderBlock(nn.Module):
    """Snake → transposed conv (kernel 2S) → three residual units.  ``(B, C_in, T) → (B, C_out, T·S)``."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            Snake(in_channels),
            CausalConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride),
            *(ResidualUnit(out_channels, dilation=d) for d in DILATIONS),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class OobleckEncoder(nn.Module):
    """``(B, audio_channels, N) → (B, 2·latent_dim, N / hop)`` (mean ‖ logvar, before the bottleneck)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        w = config.widths
        self.layers = nn.Sequential(
            CausalConv1d(config.audio_channels, w[0], 7),
            *(EncoderBlock(w[i], w[i + 1], stride=s) for i, s in enumerate(config.strides)),
            Snake(w[-1]),
            CausalConv1d(w[-1], 2 * config.latent_dim, 3),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class OobleckDecoder(nn.Module):
    """``(B, latent_dim, T) → (B, audio_channels, T · hop)``."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        w = config.widths
        blocks = [
            DecoderBlock(w[i + 1], w[i], stride=config.strides[i])
            for i in reversed(range(len(config.strides)))
        ]
        self.layers = nn.Sequential(
            CausalConv1d(config.latent_dim, w[-1], 7),
            *blocks,
            Snake(w[0]),
            CausalConv1d(w[0], config.audio_channels, 7, bias=False),
            nn.Tanh() if config.final_tanh else nn.Identity(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(z)


_STATEFUL = (CausalConv1d, CausalConvTranspose1d)


# --------------------------------------------------------------------------------------------
# the VAE
# --------------------------------------------------------------------------------------------


class CausalVAE(StreamingCodec):
    """Causal Oobleck VAE with a streaming mode (the lifecycle and input checks of
    :class:`~audio.codec.StreamingCodec`).

    * :meth:`encode` ``(B, C, N) → (B, latent_dim, N / hop)``: the bottleneck *mean* (deterministic).
    * :meth:`encode_dist` → ``(mean, logvar)``, logvar clamped to :data:`LOGVAR_RANGE` (training).
    * :meth:`decode` ``(B, latent_dim, T) → (B, C, T · hop)``.
    * ``with vae.streaming(batch_size):`` - consecutive calls continue one stream; the joined
      outputs equal one offline call over the joined inputs (any chunk size that is a whole
      number of frames).  Every causal conv gets a zeroed, preallocated state (conv: input tail;
      transposed conv: overlap-add tail) that is updated in place; leaving the block drops it.
      Encoder and decoder states are independent, so one stream may encode and decode at once.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(hop=config.hop, latent_dim=config.latent_dim, sample_rate=config.sample_rate,
                         audio_channels=config.audio_channels)
        self.config = config
        self.encoder = OobleckEncoder(config)
        self.decoder = OobleckDecoder(config)

    def encode_dist(self, wav: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, N)`` → ``(mean, logvar)``, each ``(B, latent_dim, N / hop)``; logvar clamped."""
        self._check_wave(wav)
        h = self.encoder(wav)  # (B, 2·latent_dim, T) = mean ‖ logvar
        mean, logvar = h.split(self.latent_dim, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, wav: Tensor) -> Tensor:
        """``(B, C, N)`` with ``N % hop == 0`` → mean latents ``(B, latent_dim, N / hop)``."""
        self._check_wave(wav)
        return self.encoder(wav)[:, : self.latent_dim]

    def decode(self, z: Tensor) -> Tensor:
        """``(B, latent_dim, T)`` → waveform ``(B, C, T · hop)``."""
        self._check_latents(z)
        return self.decoder(z)

    # ---- streaming state: one per causal conv --------------------------------------------------

    def _stateful(self) -> Iterator[nn.Module]:
        return (m for m in self.modules() if isinstance(m, _STATEFUL))

    def _start_stream(self, batch_size: int) -> None:
        p = self.decoder.layers[0].weight_v
        for m in self._stateful():
            m.start_streaming(batch_size, device=p.device, dtype=p.dtype)

    def _reset_stream(self) -> None:
        for m in self._stateful():
            m.reset_streaming()

    def _stop_stream(self) -> None:
        for m in self._stateful():
            m.stop_streaming()

    # ---- bookkeeping -------------------------------------------------------------------------

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts (weight_g and weight_v counted separately, as in the checkpoint)."""
        enc = sum(p.numel() for p in self.encoder.parameters())
        dec = sum(p.numel() for p in self.decoder.parameters())
        return {"encoder": enc, "decoder": dec, "total": enc + dec}


def pad_to_hop(wav: Tensor, hop: int = CONTRACT.hop) -> Tensor:
    """Right-pad the last axis with zeros to the next multiple of ``hop`` (unchanged if already one).

    ``(…, N) → (…, ceil(N / hop) · hop)``.  This is the explicit alternative to the error that
    :meth:`CausalVAE.encode` raises for partial frames; cut the decoded output back to ``N``.
    """
    n = wav.shape[-1]
    extra = -n % hop
    return F.pad(wav, (0, extra)) if extra else wav


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
