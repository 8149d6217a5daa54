"""What every streaming audio codec of livefoley is: the interface and lifecycle both codecs share.

A codec turns 48 kHz audio ``(B, C, N)`` into one latent ``(B, latent_dim, N / hop)`` per video frame
and back.  :class:`StreamingCodec` holds what does not depend on how: the input checks at the edge
(whole frames, finite samples, the streaming batch size) and the streaming lifecycle —
``with codec.streaming(batch_size):`` makes consecutive ``encode``/``decode`` calls continue one
stream per batch row; ``reset_streaming()`` starts a new stream inside the block; leaving the block
drops the state.  A codec supplies ``encode``, ``decode`` and three hooks that own its state:
``_start_stream(batch_size)``, ``_reset_stream()``, ``_stop_stream()``.

The two codecs: :class:`audio.vae.CausalVAE` (Sony's Oobleck VAE: per-layer conv tails) and
:class:`audio.spectral.SpectralCodec` (the CPU-trainable spectral codec: an STFT tail and phase).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio.errors import LivefoleyError

__all__ = ["StreamingCodec", "roundtrip"]


class StreamingCodec(nn.Module):
    """Base of the codecs (see the module docstring); not used on its own."""

    def __init__(self, *, hop: int, latent_dim: int, sample_rate: int, audio_channels: int) -> None:
        super().__init__()
        self.hop, self.latent_dim = hop, latent_dim
        self.sample_rate, self.audio_channels = sample_rate, audio_channels
        self._stream_batch: int | None = None

    # ---- the interface -------------------------------------------------------------------------

    def encode(self, wav: Tensor) -> Tensor:
        """``(B, C, N)`` with ``N % hop == 0`` → latents ``(B, latent_dim, N / hop)``."""
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        """``(B, latent_dim, T)`` → waveform ``(B, C, T · hop)``."""
        raise NotImplementedError

    def decoding_modules(self) -> list[nn.Module]:
        """The modules :meth:`decode` runs (the optimised CPU path quantises their linear layers)."""
        raise NotImplementedError

    def forward(self, wav: Tensor) -> Tensor:
        """Deterministic reconstruction: ``decode(encode(wav))``."""
        return self.decode(self.encode(wav))

    # ---- input checks at the edge --------------------------------------------------------------

    def _check_wave(self, wav: Tensor) -> None:
        if not isinstance(wav, Tensor) or wav.dim() != 3 or wav.shape[1] != self.audio_channels:
            shape = tuple(wav.shape) if isinstance(wav, Tensor) else type(wav).__name__
            raise LivefoleyError(
                f"the VAE encodes waveforms shaped (batch, {self.audio_channels}, samples); got {shape}")
        n = wav.shape[-1]
        if n == 0 or n % self.hop:
            raise LivefoleyError(
                f"got {n} samples; the VAE encodes whole frames of {self.hop} samples: pad to a multiple "
                f"of {self.hop} (audio.vae.pad_to_hop) or cut the input to whole frames")
        if not bool(torch.isfinite(wav).all()):
            raise LivefoleyError("the waveform contains NaN or infinite samples; clean the input audio first")
        self._check_batch(wav.shape[0])

    def _check_latents(self, z: Tensor) -> None:
        if not isinstance(z, Tensor) or z.dim() != 3 or z.shape[1] != self.latent_dim or z.shape[-1] == 0:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise LivefoleyError(f"the VAE decodes latents shaped (batch, {self.latent_dim}, frames>0); got {shape}")
        self._check_batch(z.shape[0])

    def _check_batch(self, batch: int) -> None:
        if self._stream_batch is not None and batch != self._stream_batch:
            raise LivefoleyError(
                f"streaming was started for batch size {self._stream_batch}, got a batch of {batch}; "
                "open vae.streaming(batch_size) with the batch size you feed")

    # ---- streaming -----------------------------------------------------------------------------

    @property
    def is_streaming(self) -> bool:
        return self._stream_batch is not None

    @contextmanager
    def streaming(self, batch_size: int = 1) -> Iterator[StreamingCodec]:
        """Inside the block, :meth:`encode` and :meth:`decode` continue one stream per batch row;
        the joined outputs equal one offline call over the joined inputs."""
        if self._stream_batch is not None:
            raise RuntimeError("this VAE is already streaming; leave the current streaming() block first")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._start_stream(batch_size)
        self._stream_batch = batch_size
        try:
            yield self
        finally:
            self._stop_stream()
            self._stream_batch = None

    def reset_streaming(self) -> None:
        """Zero every streaming state (start a new stream without leaving the block)."""
        if self._stream_batch is not None:
            self._reset_stream()

    def _start_stream(self, batch_size: int) -> None:
        raise NotImplementedError

    def _reset_stream(self) -> None:
        raise NotImplementedError

    def _stop_stream(self) -> None:
        raise NotImplementedError

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts of ``encoder``, ``decoder`` and ``total``."""
        raise NotImplementedError


def roundtrip(codec: nn.Module, audio) -> np.ndarray:
    """Audio ``(2, N)`` (numpy) through ``codec`` — encode the mean, decode — cut back to ``N``: what
    the codec keeps of a sound (the ceiling of any model that speaks in its latents)."""
    param = next(codec.parameters())
    with torch.inference_mode():
        wav = torch.from_numpy(np.ascontiguousarray(audio, np.float32))[None]
        wav = F.pad(wav, (0, -wav.shape[-1] % codec.hop))  # whole frames
        out = codec.decode(codec.encode(wav.to(device=param.device, dtype=param.dtype)))
    return out[0, :, : audio.shape[1]].float().cpu().numpy()
