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
    """Preallocated keys/values ``(n_layers, B, G, H, sink + window, Dh)`` plus bookkeeping.

    Slot ``j < sink`` holds the j-th token of the stream; ring slot ``sink + k`` holds tokens in
    round-robin order.  Keys are stored already rotated by their absolute position (angles taken
    modulo 2π in float64, so they stay exact for hours), which makes every ring distance the true
    one.  Only the ``sink`` keys are re-rotated each step once the ring has wrapped, to the
    position they would have if the cache were renumbered from 0 (distance ``cache_len - j``), so
    no query ever sees a distance beyond the cache length.  ``G`` branch copies let CFG's null
    branch attend to its own key in the slot being written without copying the cache; after each
    step every branch holds the committed key.  Memory is fixed at construction.

    The stream position lives on the device (``pos``, a 0-d long tensor) and every slot index is
    computed from it there, so a step reads nothing back to the host and has no data-dependent
    Python branch: ``torch.compile(transformer.step, fullgraph=True)`` captures it whole (tested).
    """

    def __init__(self, config: TransformerConfig, *, batch_size: int, branches: int = 2, device, dtype) -> None:
        c = config
        self.config = config
        self.branches = branches
        shape = (c.n_layers, batch_size, branches, c.n_heads, c.cache_len, c.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.sink_k = torch.zeros((c.n_layers, batch_size, c.n_heads, c.sink, c.head_dim), device=device, dtype=dtype)
        self.valid = torch.zeros(c.cache_len, dtype=torch.bool, device=device)
        self.inv_freq = 1.0 / (
            c.effective_rope_base ** (torch.arange(0, c.head_dim, 2, dtype=torch.float64, device=device) / c.head_dim)
        )
        self.pos = torch.zeros((), dtype=torch.long, device=device)  # tokens committed so far
        self.sink_offsets = torch.arange(c.sink, device=device)

    @property
    def n_seen(self) -> int:
        """Tokens committed so far (reads the device counter: for inspection, not for the step)."""
        return int(self.pos)

    @n_seen.setter
    def n_seen(self, value: int) -> None:
        self.pos.fill_(value)

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()
        self.sink_k.zero_()
        self.valid.zero_()
        self.pos.zero_()

    def next_slot(self) -> Tensor:
        """The slot the next token is written to (its position is ``pos``), a 1-element tensor."""
        c = self.config
        n = self.pos.view(1)
        return torch.where(n < c.sink, n, c.sink + (n - c.sink).remainder(c.window))

    def rope(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos/sin ``(len(positions), Dh/2)`` for absolute positions, exact at any stream length."""
        ang = torch.remainder(positions.to(torch.float64)[:, None] * self.inv_freq[None], 2 * math.pi)
        return ang.cos().to(self.k.dtype), ang.sin().to(self.k.dtype)

    def rotate_sinks(self) -> None:
        """After the ring wrapped, move the sink keys to distance ``cache_len - j`` from the query
        (before that the stored keys are already at their true positions and stay as they are)."""
        c = self.config
        if c.sink == 0:
            return
        cos, sin = self.rope(self.pos - c.cache_len + self.sink_offsets)
        sinks = self.k[..., : c.sink, :]
        sinks.copy_(torch.where(self.pos > c.cache_len, apply_rope(self.sink_k, cos, sin)[:, :, None], sinks))


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

    def step(self, x: Tensor, layer: int, cache: KVCache, cos: Tensor, sin: Tensor, slot: Tensor,
             commit: int) -> Tensor:
        """One token, G branches: x (B, G, d) → (B, G, d).  Each branch attends to the cache plus its
        own key (written into ``slot`` — a 1-element index tensor — of its branch copy); afterwards
        every branch copy holds the key of branch ``commit``."""
        G = x.shape[1]
        q, k, v = self._qkv(x[:, :, None, :])  # (B, G, H, 1, Dh)
        q, k_rot = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        ck, cv = cache.k[layer], cache.v[layer]  # (B, Gmax, H, N, Dh)
        ck[:, :G].index_copy_(3, slot, k_rot)
        cv[:, :G].index_copy_(3, slot, v)
        att = F.scaled_dot_product_attention(q, ck[:, :G], cv[:, :G], attn_mask=cache.valid)
        gmax = ck.shape[1]
        ck.index_copy_(3, slot, k_rot[:, commit : commit + 1].expand(-1, gmax, -1, -1, -1))
        cv.index_copy_(3, slot, v[:, commit : commit + 1].expand(-1, gmax, -1, -1, -1))
        sink = self.c.sink
        if sink:  # a sink slot also keeps its key un-rotated (see KVCache.rotate_sinks)
            at = slot.clamp(max=sink - 1)
            sk = cache.sink_k[layer]  # (B, H, sink, Dh)
            sk.index_copy_(2, at, torch.where(slot < sink, k[:, commit], sk.index_select(2, at)))
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
        if self.rope_cos.shape[0] < L:
            raise ValueError(f"sequence of {L} tokens exceeds the RoPE table ({self.rope_cos.shape[0]})")
        cos, sin = self.rope_cos[:L], self.rope_sin[:L]
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.norm(x)

    # --- streaming -------------------------------------------------------------------------------
    @contextmanager
    def streaming(self, batch_size: int = 1, *, branches: int = 2):
        """Give the module a fresh, preallocated KV cache for the duration of the block."""
        p = next(self.parameters())
        self._cache = KVCache(self.config, batch_size=batch_size, branches=branches, device=p.device, dtype=p.dtype)
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
        if x.shape[1] > cache.branches:
            raise ValueError(f"{x.shape[1]} branches but the cache was made for {cache.branches}")
        slot = cache.next_slot()
        cache.rotate_sinks()
        cos, sin = cache.rope(cache.pos.view(1))
        cache.valid.index_fill_(0, slot, True)  # its old content (an evicted token) is overwritten in every layer
        for i, block in enumerate(self.blocks):
            x = block.step(x, i, cache, cos, sin, slot, commit)
        cache.pos.add_(1)
        return self.norm(x)
