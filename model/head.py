"""The diffusion head: a MAR-style MLP with AdaLN that denoises one 64-d latent given a condition.

The head is stateless and owns its losses and samplers (STYLE.md pattern 10):

* :meth:`DiffusionHead.diffusion_loss` — EDM2 loss with a learned per-noise-level uncertainty
  (Algorithm 1 of the paper);
* :meth:`DiffusionHead.ect_loss` — Easy Consistency Tuning (Algorithm 2);
* :meth:`DiffusionHead.sample` — Heun (EDM) for a diffusion-stage head, the consistency sampler
  for NFE 1/2/4 after ECT.

Preconditioning (EDM) is kept apart from the raw network; the consistency parameterisation is the
same preconditioning shifted by ``sigma_min`` so that ``f(x, sigma_min) = x`` (with
``sigma_min = 0`` it *is* EDM, which is why ECT can start from the stage-1 weights).
All latents here are *normalised* (zero mean, unit variance per channel; ``sigma_data = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from audio.errors import LivefoleyError


@dataclass(frozen=True)
class HeadConfig:
    latent_dim: int = 64
    cond_dim: int = 512  # 2 · d_model: concat(out at previous audio position, out at vision position)
    width: int = 256
    depth: int = 3
    freq_dim: int = 256  # sinusoidal noise-level embedding
    sigma_data: float = 1.0
    # stage 1 (EDM2) noise distribution: ln t ~ N(p_mean, p_std)
    p_mean: float = -0.4
    p_std: float = 1.0
    batch_mul: int = 4  # MAR: each token is trained this many times with independent noise
    # sampling
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    heun_steps: int = 18  # → 35 head evaluations
    # consistency sampler: the noise level of every evaluation, per NFE (recorded with the model)
    consistency_sigmas: dict[int, tuple[float, ...]] = field(
        default_factory=lambda: {1: (80.0,), 2: (80.0, 0.821), 4: (80.0, 2.0, 0.821, 0.25)}
    )
    # ECT (stage 2)
    ect_p_mean: float = -1.1
    ect_p_std: float = 2.0
    ect_q: float = 2.0
    ect_k: float = 8.0
    ect_b: float = 1.0
    ect_distance: str = "huber"  # "l2" | "huber" (pseudo-Huber)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["consistency_sigmas"] = {str(k): list(v) for k, v in self.consistency_sigmas.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> HeadConfig:
        d = dict(d)
        if "consistency_sigmas" in d:
            d["consistency_sigmas"] = {int(k): tuple(v) for k, v in d["consistency_sigmas"].items()}
        return cls(**d)


def precondition(sigma: Tensor, *, sigma_data: float, sigma_min: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) for noise levels ``sigma`` (any shape).  ``sigma_min = 0`` is
    EDM; ``sigma_min > 0`` is the consistency parameterisation with ``f(x, sigma_min) = x``."""
    sd2 = sigma_data**2
    shifted = sigma - sigma_min
    c_skip = sd2 / (shifted**2 + sd2)
    c_out = shifted * sigma_data / (sigma**2 + sd2).sqrt()
    c_in = 1 / (sigma**2 + sd2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of a scalar per row: t (N,) → (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * 1000 * freqs[None]  # c_noise is O(1); ×1000 spreads the phases (as MAR/DiT)
    return torch.cat((args.cos(), args.sin()), dim=-1)


class ResBlock(nn.Module):
    """AdaLN residual MLP block: the condition produces (shift, scale, gate), zero-initialised."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale, gate = self.ada(c).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class DiffusionHead(nn.Module):
    """MAR ``SimpleMLPAdaLN`` with EDM preconditioning, its losses and its samplers."""

    def __init__(self, config: HeadConfig, *, consistency: bool = False) -> None:
        """``consistency``: the head of a consistency-tuned (ECT) model — the ``sigma_min`` shift of
        the consistency parameterisation and the 1/2/4-step sampler; else EDM and Heun.  Fixed at
        construction (the model's ``stage`` decides it)."""
        super().__init__()
        c = config
        self.config = c
        self._consistency = bool(consistency)
        self.in_proj = nn.Linear(c.latent_dim, c.width)
        self.t_embed = nn.Sequential(nn.Linear(c.freq_dim, c.width), nn.SiLU(), nn.Linear(c.width, c.width))
        self.c_embed = nn.Linear(c.cond_dim, c.width)
        self.blocks = nn.ModuleList(ResBlock(c.width) for _ in range(c.depth))
        self.out_norm = nn.LayerNorm(c.width, elementwise_affine=False, eps=1e-6)
        self.out_ada = nn.Sequential(nn.SiLU(), nn.Linear(c.width, 2 * c.width))
        self.out = nn.Linear(c.width, c.latent_dim)
        # EDM2 learned uncertainty u(sigma): Fourier features of c_noise → scalar.
        self.u_freqs = nn.Parameter(torch.randn(c.freq_dim // 2, generator=torch.Generator().manual_seed(0)),
                                    requires_grad=False)
        self.u_out = nn.Linear(c.freq_dim, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.t_embed[0].weight, std=0.02)
        nn.init.normal_(self.t_embed[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        for lin in (self.out_ada[-1], self.out, self.u_out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    @property
    def consistency(self) -> bool:
        """A consistency-tuned head (see ``__init__``); read-only."""
        return self._consistency

    @property
    def sigma_min_shift(self) -> float:
        return self.config.sigma_min if self.consistency else 0.0

    # --- network --------------------------------------------------------------------------------
    def embed_condition(self, cond: Tensor) -> Tensor:
        """cond (N, cond_dim) → (N, width).  Computed once per frame, reused by every sampler step."""
        return self.c_embed(cond)

    def denoise(self, x: Tensor, sigma: Tensor, c_emb: Tensor, *, sigma_min: float | None = None) -> Tensor:
        """Preconditioned D(x, sigma): x (N, 64), sigma (N,), c_emb (N, width) → (N, 64)."""
        smin = self.sigma_min_shift if sigma_min is None else sigma_min
        c_skip, c_out, c_in, c_noise = precondition(sigma[:, None], sigma_data=self.config.sigma_data,
                                                    sigma_min=smin)
        h = self.in_proj(x * c_in)
        c = self.t_embed(timestep_embedding(c_noise[:, 0], self.config.freq_dim).to(h.dtype)) + c_emb
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.out_ada(c).chunk(2, dim=-1)
        raw = self.out(self.out_norm(h) * (1 + scale) + shift)
        return c_skip * x + c_out * raw

    def uncertainty(self, sigma: Tensor) -> Tensor:
        """EDM2's learned log-variance u(sigma): (N,) → (N,)."""
        ang = 2 * math.pi * (sigma.log() / 4)[:, None] * self.u_freqs[None]
        return self.u_out(torch.cat((ang.cos(), ang.sin()), dim=-1) * math.sqrt(2))[:, 0]

    # --- losses (per item; the caller reduces) ----------------------------------------------------
    def _repeat(self, x0: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        m = self.config.batch_mul
        return x0.repeat(m, 1), cond.repeat(m, 1)

    def diffusion_loss(self, x0: Tensor, cond: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Algorithm 1 (EDM2): x0 (N, 64), cond (N, cond_dim) → per-item loss (N·batch_mul,)."""
        c = self.config
        x0, cond = self._repeat(x0, cond)
        n = x0.shape[0]
        sigma = (torch.randn(n, device=x0.device, generator=generator) * c.p_std + c.p_mean).exp()
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        denoised = self.denoise(x0 + sigma[:, None] * noise, sigma, self.embed_condition(cond), sigma_min=0.0)
        weight = (sigma**2 + c.sigma_data**2) / (sigma * c.sigma_data) ** 2  # λ = 1 / c_out²
        u = self.uncertainty(sigma)
        return weight * (denoised - x0).pow(2).mean(dim=1) / u.exp() + u

    def ect_r(self, t: Tensor, stage: int) -> Tensor:
        """The shrinking t → r map of ECT: t − r halves (q = 2) every stage."""
        c = self.config
        adj = 1 + c.ect_k * torch.sigmoid(-c.ect_b * t)
        return (t * (1 - adj / c.ect_q ** (stage + 1))).clamp(min=0)

    def ect_loss(
        self, x0: Tensor, cond: Tensor, *, stage: int, generator: torch.Generator | None = None,
        target: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Algorithm 2 (ECT): consistency between f(x_t, t) and stopgrad f(x_r, r) with shared noise.

        ``target(x_r, r, cond)`` evaluates the target function (e.g. an EMA copy); by default the
        head itself under ``no_grad`` with the condition detached.  Returns per-item loss (N·batch_mul,).
        """
        c = self.config
        x0, cond = self._repeat(x0, cond)
        n = x0.shape[0]
        t = (torch.randn(n, device=x0.device, generator=generator) * c.ect_p_std + c.ect_p_mean).exp()
        t = t.clamp(min=c.sigma_min * 1.01, max=c.sigma_max)
        r = self.ect_r(t, stage)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        x_t, x_r = x0 + t[:, None] * noise, x0 + r[:, None] * noise
        smin = c.sigma_min
        f_t = self.denoise(x_t, t, self.embed_condition(cond), sigma_min=smin)
        with torch.no_grad():
            r_eval = r.clamp(min=smin)
            if target is None:
                f_r = self.denoise(x_r, r_eval, self.embed_condition(cond.detach()), sigma_min=smin)
            else:
                f_r = target(x_r, r_eval, cond.detach())
            f_r = torch.where((r <= smin)[:, None], x_r, f_r)  # boundary: f(x, sigma_min) = x
        diff2 = (f_t - f_r).pow(2).sum(dim=1)
        if c.ect_distance == "l2":
            dist = diff2 / x0.shape[1]
        elif c.ect_distance == "huber":
            hc = 0.00054 * math.sqrt(x0.shape[1])  # iCT's pseudo-Huber constant
            dist = (diff2 + hc**2).sqrt() - hc
        else:
            raise ValueError(f"unknown ect_distance {c.ect_distance!r}; use 'l2' or 'huber'")
        return dist / (t - r)

    # --- sampling ---------------------------------------------------------------------------------
    def valid_nfe(self) -> tuple[int, ...]:
        c = self.config
        return tuple(sorted(c.consistency_sigmas)) if self.consistency else (2 * c.heun_steps - 1,)

    def sample(self, cond: Tensor, *, nfe: int | None = None, noise: Tensor) -> Tensor:
        """cond (N, cond_dim) → a normalised latent (N, 64).

        ``noise`` (S, N, 64) holds the standard-normal draws, one slice per evaluation that needs
        one (S = NFE for the consistency sampler, 1 for Heun): drawing them outside keeps the
        sampler free of RNG state and lets streaming and offline generation share the exact noise.
        """
        c_emb = self.embed_condition(cond)
        if self.consistency:
            return consistency_sample(self, c_emb, self.consistency_schedule(nfe), noise)
        if nfe is not None and nfe != 2 * self.config.heun_steps - 1:
            raise LivefoleyError(
                f"this is a diffusion-stage model (Heun, NFE {2 * self.config.heun_steps - 1}); "
                f"NFE {nfe} needs a consistency-tuned model (`livefoley train ect`)"
            )
        return heun_sample(self, c_emb, edm_sigmas(self.config), noise[0])

    def consistency_schedule(self, nfe: int | None) -> tuple[float, ...]:
        sigmas = self.config.consistency_sigmas
        nfe = min(sigmas) if nfe is None else nfe
        if nfe not in sigmas:
            raise LivefoleyError(f"NFE {nfe} is not supported by this model; valid values: {sorted(sigmas)}")
        return sigmas[nfe]

    def noise_draws(self, nfe: int | None) -> int:
        """How many (N, 64) standard-normal slices :meth:`sample` consumes for ``nfe``."""
        return len(self.consistency_schedule(nfe)) if self.consistency else 1


def edm_sigmas(c: HeadConfig) -> Tensor:
    """Karras et al. schedule, ``heun_steps`` levels from sigma_max to sigma_min, then 0."""
    i = torch.arange(c.heun_steps, dtype=torch.float64)
    lo, hi = c.sigma_min ** (1 / c.rho), c.sigma_max ** (1 / c.rho)
    ramp = hi + i / max(c.heun_steps - 1, 1) * (lo - hi)
    return torch.cat((ramp**c.rho, torch.zeros(1, dtype=torch.float64))).float()


@torch.no_grad()
def heun_sample(head: DiffusionHead, c_emb: Tensor, sigmas: Tensor, noise: Tensor) -> Tensor:
    """EDM's deterministic 2nd-order sampler (Algorithm 2 of Karras et al., no churn)."""
    x = noise * sigmas[0]
    n = x.shape[0]
    for i in range(len(sigmas) - 1):
        t, t_next = float(sigmas[i]), float(sigmas[i + 1])
        d = (x - head.denoise(x, x.new_full((n,), t), c_emb)) / t
        x_next = x + (t_next - t) * d
        if t_next > 0:
            d2 = (x_next - head.denoise(x_next, x.new_full((n,), t_next), c_emb)) / t_next
            x_next = x + (t_next - t) * (d + d2) / 2
        x = x_next
    return x


@torch.no_grad()
def consistency_sample(head: DiffusionHead, c_emb: Tensor, sigmas: tuple[float, ...], noise: Tensor) -> Tensor:
    """Multistep consistency sampling: x = f(σ₀ε₀); then re-noise to σ_k and apply f again."""
    n = c_emb.shape[0]
    smin = head.config.sigma_min
    x = head.denoise(noise[0] * sigmas[0], c_emb.new_full((n,), sigmas[0]), c_emb)
    for k, s in enumerate(sigmas[1:], start=1):
        x_s = x + math.sqrt(max(s * s - smin * smin, 0.0)) * noise[k]
        x = head.denoise(x_s, c_emb.new_full((n,), s), c_emb)
    return x
