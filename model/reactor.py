"""The trainable SoundReactor model: vision aggregator + causal transformer + diffusion head.

Sequence layout (one vision token and one audio latent per frame)::

    position  0    1    2    3    4   …  2T-2    2T-1
    token     BOS  v1   x1   v2   x2  …  x_{T-1} v_T

The head's condition for frame i is ``concat(F[2i-2], F[2i-1])``: the output at the previous audio
position (BOS for i = 1) and at the current vision position.  Latents inside the model are
normalised with the per-channel statistics stored as buffers (they travel with the weights).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.config import GeneratorConfig
from model.head import DiffusionHead
from model.transformer import CausalTransformer
from model.vision import FrameTokenizer


class SoundReactor(nn.Module):
    def __init__(self, config: GeneratorConfig, *, with_backbone: bool = True) -> None:
        super().__init__()
        self.config = config
        d = config.transformer.d_model
        self.tokenizer = FrameTokenizer(config.vision, with_backbone=with_backbone)
        self.vision_in = nn.Linear(config.vision.d_token, d)
        self.audio_in = nn.Linear(config.vae.latent_dim, d)
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.null_vision = nn.Parameter(torch.randn(d) * 0.02)  # latent CFG's learned null token
        self.transformer = CausalTransformer(config.transformer)
        self.head = DiffusionHead(config.head, consistency=config.stage == "consistency")
        self.register_buffer("latent_mean", torch.zeros(config.vae.latent_dim))
        self.register_buffer("latent_std", torch.ones(config.vae.latent_dim))

    # --- latent statistics ------------------------------------------------------------------------
    def normalize(self, z: Tensor) -> Tensor:
        """VAE latents (..., 64) → model space."""
        return (z - self.latent_mean) / self.latent_std

    def denormalize(self, x: Tensor) -> Tensor:
        return x * self.latent_std + self.latent_mean

    # --- teacher-forced path (training) -----------------------------------------------------------
    def condition(self, v_tokens: Tensor, latents: Tensor, *, drop: Tensor | None = None) -> Tensor:
        """v_tokens (B, T, d_token), normalised latents (B, T, 64) → head conditions (B, T, 2d).

        ``drop`` (B,) bool replaces the whole clip's vision tokens by the null token (CFG training)."""
        B, T, _ = latents.shape
        v = self.vision_in(v_tokens)
        if drop is not None:
            v = torch.where(drop[:, None, None], self.null_vision.expand_as(v), v)
        a = self.audio_in(latents)
        interleaved = torch.stack((v, a), dim=2).reshape(B, 2 * T, -1)  # v1, x1, v2, x2, …
        seq = torch.cat((self.bos.expand(B, 1, -1), interleaved[:, :-1]), dim=1)  # BOS, v1, x1, …, v_T
        h = self.transformer(seq)  # (B, 2T, d)
        return torch.cat((h[:, 0::2], h[:, 1::2]), dim=-1)

    def training_loss(
        self, grids: Tensor, latents: Tensor, *, stage: str, ect_stage: int = 0, prev_grid: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Per-item loss.  grids (B, T, gh, gw, C) pooled DINOv2 grids; latents (B, T, 64) normalised.

        ``stage`` "diffusion" → EDM2 (Algorithm 1); "consistency" → ECT (Algorithm 2), which tunes
        the transformer and the head together (the condition is not detached on the online branch).
        """
        B = latents.shape[0]
        v = self.tokenizer.tokens_from_grids(grids, prev_grid)
        drop = torch.rand(B, generator=generator, device=latents.device) < self.config.p_uncond
        cond = self.condition(v, latents, drop=drop).flatten(0, 1)
        x0 = latents.flatten(0, 1)
        if stage == "diffusion":
            return self.head.diffusion_loss(x0, cond, generator=generator)
        if stage == "consistency":
            return self.head.ect_loss(x0, cond, stage=ect_stage, generator=generator)
        raise ValueError(f"unknown stage {stage!r}")

    forward = training_loss  # so DistributedDataParallel sees the training computation

    # --- streaming path (inference) ---------------------------------------------------------------
    def embed_vision(self, v_token: Tensor, *, guided: bool) -> Tensor:
        """v_token (B, d_token) → branches (B, G, d): [real] or [real, null] for latent CFG."""
        v = self.vision_in(v_token)[:, None]
        if not guided:
            return v
        return torch.cat((v, self.null_vision.expand_as(v)), dim=1)
