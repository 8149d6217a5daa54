"""The causal multimodal transformer over ``BOS, v1, x1, v2, x2, …``.

Two ways to run the same weights (STYLE.md pattern 2):

* :meth:`CausalTransformer.forward` — the teacher-forced full sequence (training), plain causal
  attention with absolute RoPE positions ``0 … L-1``.
* :meth:`CausalTransformer.step` — one token at a time against a :class:`KVCache` (streaming).

The cache is preallocated: ``sink`` slots that are never evicted (an attention-sink prefix, the
first tokens of the stream) followed by a ring of ``window`` slots.  Keys are stored *un-rotated*;
every step rotates the cached keys by their *position inside the cache* (sinks ``0…S-1``, ring
slots ``S…`` in age order, StreamingLLM-style), so relative distances never exceed the window and
a stream can run for hours in flat memory.  As long as the stream is no longer than
``sink + window`` tokens those positions equal the absolute ones, which is why the step path
reproduces the teacher-forced forward exactly (tested).

Latent CFG runs several *branches* of the same token over one shared cache: ``step`` takes
``(B, G, d)``; every branch attends to the cache and to its own key, and only branch
``commit`` (the conditional one) is written into the cache.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class TransformerConfig:
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    mlp_hidden: int = 704  # SwiGLU hidden width (≈ 8/3·d, rounded to a multiple of 64)
    rope_base: float = 10_000.0
    train_context: int = 480  # tokens per training clip (240 frames · 2)
    window: int = 478  # ring slots of the streaming KV cache (positions then span 0 … train_context-1)
    sink: int = 1  # never-evicted prefix slots (the BOS token)
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model {self.d_model} must split into {self.n_heads} heads of even width")
        if self.window < 2:
            raise ValueError("window must hold at least 2 tokens")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def cache_len(self) -> int:
        return self.sink + self.window

    @property
    def effective_rope_base(self) -> float:
        """NTK-aware scaling: stretch the RoPE base when the cache spans more positions than training
        did, so long-range frequencies interpolate while short ones (rhythm, footsteps) keep their
        period.  Plain position interpolation would slow periodic sounds, so it is not used."""
        span = self.cache_len + 1  # positions 0 … cache_len (see KVCache.next_slot)
        if span <= self.train_context:
            return self.rope_base
        dim = self.head_dim
        return self.rope_base * (span / self.train_context) ** (dim / (dim - 2))

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


def rope_tables(n_pos: int, dim: int, base: float, *, device=None) -> tuple[Tensor, Tensor]:
    """cos/sin tables ``(n_pos, dim/2)``, computed in float64 so long tables stay exact."""
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim))
    ang = torch.arange(n_pos, dtype=torch.float64, device=device)[:, None] * inv[None, :]
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs ``(x[..., :d/2], x[..., d/2:])``; ``cos``/``sin`` broadcast to ``x[..., :d/2]``."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class KVCache:
    """Preallocated per-layer keys/values ``(n_layers, B, H, sink + window, Dh)`` plus bookkeeping.

    Slot ``j < sink`` holds the j-th token of the stream; ring slot ``sink + k`` holds tokens in
    round-robin order.  ``positions`` gives every slot's RoPE position for the current step and
    ``valid`` which slots hold a token; both are updated in place, so memory never grows.
    """

    def __init__(self, config: TransformerConfig, *, batch_size: int, device, dtype) -> None:
        c = config
        shape = (c.n_layers, batch_size, c.n_heads, c.cache_len, c.head_dim)
        self.config = config
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.valid = torch.zeros(c.cache_len, dtype=torch.bool, device=device)
        self.positions = torch.zeros(c.cache_len, dtype=torch.long, device=device)
        self.n_seen = 0  # tokens committed so far (host-side counter)

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()
        self.valid.zero_()
        self.positions.zero_()
        self.n_seen = 0

    def next_slot(self) -> tuple[int, int]:
        """(slot the next token is written to, RoPE position of the next token)."""
        c = self.config
        n = self.n_seen
        if n < c.sink:
            return n, n
        ring_i = (n - c.sink) % c.window
        # Once the ring is full the oldest token is evicted, the survivors keep positions
        # sink+1 … cache_len-1 and the new token takes cache_len: relative distances are preserved.
        return c.sink + ring_i, min(n, c.cache_len)

    def advance(self) -> None:
        """Mark the slot returned by :meth:`next_slot` filled and re-number ring slots by age."""
        c = self.config
        slot, _ = self.next_slot()
        self.valid[slot] = True
        self.n_seen += 1
        n_ring = min(max(self.n_seen - c.sink, 0), c.window)
        if n_ring == 0:
            self.positions[: self.n_seen] = torch.arange(self.n_seen, device=self.positions.device)
            return
        newest = slot - c.sink
        # ring slot k's age rank: oldest gets sink+0 … newest gets sink+n_ring-1
        ks = torch.arange(c.window, device=self.positions.device)
        rank = (ks - newest - 1) % c.window - (c.window - n_ring)
        self.positions[c.sink :] = c.sink + rank.clamp(min=0)
        self.positions[: c.sink] = torch.arange(c.sink, device=self.positions.device)


class Block(nn.Module):
    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.c = c
        self.attn_norm = RMSNorm(c.d_model, eps=c.norm_eps)
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model, bias=False)
        self.proj = nn.Linear(c.d_model, c.d_model, bias=False)
        self.mlp_norm = RMSNorm(c.d_model, eps=c.norm_eps)
        self.mlp = SwiGLU(c.d_model, c.mlp_hidden)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., L, d) → three (..., H, L, Dh)."""
        *lead, L, _ = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(*lead, L, 3, self.c.n_heads, self.c.head_dim).unbind(-3)
        return q.transpose(-3, -2), k.transpose(-3, -2), v.transpose(-3, -2)

    def _out(self, x: Tensor, att: Tensor) -> Tensor:
        att = att.transpose(-3, -2).flatten(-2)  # (..., L, H, Dh) → (..., L, d)
        x = x + self.proj(att)
        return x + self.mlp(self.mlp_norm(x))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Teacher-forced: x (B, L, d); cos/sin (L, Dh/2)."""
        q, k, v = self._qkv(x)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return self._out(x, F.scaled_dot_product_attention(q, k, v, is_causal=True))

    def step(
        self, x: Tensor, layer: int, cache: KVCache, cos_k: Tensor, sin_k: Tensor, cos_q: Tensor,
        sin_q: Tensor, slot: int, commit: int,
    ) -> Tensor:
        """One token, G branches: x (B, G, d) → (B, G, d).  Attends to the valid cache slots and to
        the branch's own key; branch ``commit`` is written into ``slot``."""
        B, G, _ = x.shape
        q, k, v = self._qkv(x[:, :, None, :])  # (B, G, H, 1, Dh)
        q = apply_rope(q, cos_q, sin_q)
        k_rot = apply_rope(k, cos_q, sin_q)
        ck = apply_rope(cache.k[layer], cos_k, sin_k)  # (B, H, N, Dh), rotated by slot position
        keys = torch.cat((ck[:, None].expand(B, G, *ck.shape[1:]), k_rot), dim=-2)
        vals = torch.cat((cache.v[layer][:, None].expand(B, G, *ck.shape[1:]), v), dim=-2)
        mask = torch.cat((cache.valid, cache.valid.new_ones(1)))
        # The slot about to be (re)written is excluded: its old content is an evicted token.
        mask = mask.clone()
        mask[slot] = False
        att = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask)
        cache.k[layer, :, :, slot].copy_(k[:, commit, :, 0])
        cache.v[layer, :, :, slot].copy_(v[:, commit, :, 0])
        return self._out(x[:, :, None, :], att)[:, :, 0]


class CausalTransformer(nn.Module):
    """Pre-norm RMSNorm / SwiGLU / RoPE decoder over already-embedded tokens (B, L, d)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, eps=config.norm_eps)
        n_tab = max(config.train_context, config.cache_len) + 1
        cos, sin = rope_tables(n_tab, config.head_dim, config.effective_rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._cache: KVCache | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = 0.02
        for name, p in self.named_parameters():
            if p.dim() == 2:
                # GPT-2 style: residual output projections scaled down with depth.
                scale = 1 / math.sqrt(2 * self.config.n_layers) if name.endswith(("proj.weight", "down.weight")) else 1
                nn.init.normal_(p, std=std * scale)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, d) → (B, L, d); causal; positions 0 … L-1."""
        L = x.shape[1]
        if L > self.rope_cos.shape[0]:
            raise ValueError(f"sequence of {L} tokens exceeds the RoPE table ({self.rope_cos.shape[0]})")
        cos, sin = self.rope_cos[:L], self.rope_sin[:L]
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.norm(x)

    # --- streaming -------------------------------------------------------------------------------
    @contextmanager
    def streaming(self, batch_size: int = 1):
        """Give the module a fresh, preallocated KV cache for the duration of the block."""
        p = next(self.parameters())
        self._cache = KVCache(self.config, batch_size=batch_size, device=p.device, dtype=p.dtype)
        try:
            yield self._cache
        finally:
            self._cache = None

    def reset_streaming(self) -> None:
        self._require_cache().reset()

    def _require_cache(self) -> KVCache:
        if self._cache is None:
            raise RuntimeError("step() needs an active `with transformer.streaming():` block")
        return self._cache

    def step(self, x: Tensor, *, commit: int = 0) -> Tensor:
        """x (B, G, d): one new token in G branches → outputs (B, G, d).  Branch ``commit`` enters
        the cache (the others — e.g. the CFG null token — are evaluated and forgotten)."""
        cache = self._require_cache()
        slot, pos = cache.next_slot()
        cos_k, sin_k = self.rope_cos[cache.positions], self.rope_sin[cache.positions]
        cos_q, sin_q = self.rope_cos[pos], self.rope_sin[pos]
        for i, block in enumerate(self.blocks):
            x = block.step(x, i, cache, cos_k, sin_k, cos_q, sin_q, slot, commit)
        cache.advance()
        return self.norm(x)
