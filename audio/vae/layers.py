"""The VAE's building blocks: weight-normed causal convolutions with streaming state, Snake, and the
Oobleck encoder and decoder made of them (see :mod:`audio.vae` for the streaming contract)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio.vae.config import VAEConfig

SNAKE_EPS = 1e-9
"""Added to ``exp(beta)`` before dividing (after the exp, as in the reference)."""

DILATIONS = (1, 3, 9)
"""Dilations of the three kernel-7 residual units in every encoder/decoder block."""


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------


def _inference_cache_ok(module: nn.Module, param: Tensor) -> bool:
    """Whether a derived tensor (fused weight, exp of Snake params) may come from the cache: only
    in eval mode and when no gradient for the parameters is being recorded — and not while
    torch.compile traces the step (the cache's key reads host-side tensor properties; a compiled
    graph computes the derived tensor itself, which its compiler may fold)."""
    return (not module.training and not (torch.is_grad_enabled() and param.requires_grad)
            and not torch.compiler.is_compiling())


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


class _StreamingConv(_WeightNormed):
    """A weight-normed conv that carries a tail of samples between streaming calls: ``_tail`` names
    the state's type and its (channels, samples); no samples, no state."""

    _state: _ConvTail | _OverlapTail | None = None

    def _tail(self) -> tuple[type, int, int]:
        raise NotImplementedError

    def start_streaming(self, batch_size: int, *, device: torch.device, dtype: torch.dtype) -> None:
        kind, channels, size = self._tail()
        if size:
            self._state = kind(torch.zeros(batch_size, channels, size, device=device, dtype=dtype))

    def stop_streaming(self) -> None:
        self._state = None

    def reset_streaming(self) -> None:
        if self._state is not None:
            self._state.buf.zero_()


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


class CausalConv1d(_StreamingConv):
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

    def _tail(self) -> tuple[type, int, int]:
        return _ConvTail, self.in_channels, self.context

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


class CausalConvTranspose1d(_StreamingConv):
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

    def _tail(self) -> tuple[type, int, int]:
        return _OverlapTail, self.out_channels, self.overlap

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
