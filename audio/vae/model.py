"""The causal Oobleck VAE (:class:`CausalVAE`), ``build_vae`` for any codec config, and
:func:`pad_to_hop`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from audio.codec import StreamingCodec
from audio.contract import CONTRACT
from audio.vae.config import VAEConfig
from audio.vae.layers import _STATEFUL, OobleckDecoder, OobleckEncoder

LOGVAR_RANGE = (-30.0, 20.0)
"""The bottleneck clamps the encoder's log-variance to this range (Sony's VAE bottleneck)."""


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

    def decoding_modules(self) -> list[nn.Module]:
        return [self.decoder]

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


def build_vae(config: Any) -> nn.Module:
    """A freshly initialised codec for ``config``: the Oobleck :class:`CausalVAE` for a
    :class:`VAEConfig`, the :class:`audio.spectral.SpectralCodec` for its config."""
    from audio.spectral import SpectralCodec, SpectralCodecConfig

    return SpectralCodec(config) if isinstance(config, SpectralCodecConfig) else CausalVAE(config)
