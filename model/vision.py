"""The frame tokenizer: one vision token per video frame (the vision path of SoundReactor).

Pipeline for frame ``i`` (REFERENCE.md, "Vision path")::

    RGB uint8 (H, W, 3)
      └─ DinoBackbone.preprocess: letterbox to ``input_size`` (h, w), normalise      → (3, h, w)
      └─ DinoBackbone.forward: frozen DINOv2 ViT-S/14-reg4, last-layer patch grid
         (not the CLS token), average-pooled ``pool``×``pool``                       → g_i (gh, gw, 384)
      └─ FrameTokenizer.tokens_from_grids (the trainable part):
         concat(g_i, g_i − g_{i−1}) (Δ = 0 for the first frame)                     → (gh, gw, 768)
         linear projection                                                           → (gh, gw, d_proj)
         + learned 2-D position embedding, one learned query token, pre-norm
           transformer aggregator (``agg_layers`` blocks), the query's output
           → LayerNorm → linear                                                      → v_i (d_token,)
         (+ with ``cell_readout`` r > 0: each cell's projection → r numbers, the gh·gw·r
           of them in screen order → linear, added to v_i)

The paper projects and then downsamples.  Projection and average pooling are both linear, so they
commute: pooling the 384-d grid first and projecting after gives the same numbers at a quarter of
the projection cost, and it is why caching the *pooled* grid (``FrameTokenizer.grids``) for
training is exact.  The difference to the previous grid is linear too, so taking it on pooled grids
is also exact.

Resizing: frames are **letterboxed** — scaled to fit inside (h, w) keeping their aspect ratio,
centred, the border filled with the normalisation mean (0 after normalising).  Nothing on screen is
cropped away (events near the edges matter for sync and for stereo panning by on-screen x); a 16:9
frame fills a 16:9-ish input almost completely.

Weights (``VisionConfig.weights``: ``"hub"``, a local file, or ``"seeded:SEED"`` stand-ins) and their
``fingerprint`` — checked at load whenever set, so that a model never runs with vision features
other than those it was trained on — are :mod:`model.dinov2`'s business.  With the seeded weights
(layer scale 1e-5: the blocks barely touch the residual stream) the features are essentially the
final LayerNorm of a random linear patch embedding plus position: frozen low-level random features
(colour, texture, position), not DINOv2's semantics — enough for the synthetic world, and the
timing is that of the real network.

Speed (scripts/measure_vision.py, 2 CPU threads): the ViT forward has a fixed cost of about 7 ms
per frame even for a handful of patches, so the ``tiny`` preset uses a small input (see
``VISION_PRESETS``) and bf16 autocast, which is about twice as fast as fp32 on CPUs with AMX /
AVX512-BF16 (on CPUs without them bf16 is emulated and slower — use ``dtype="fp32"`` there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.dinov2 import VisionError, load_weights, source_weights, tensors_fingerprint

log = logging.getLogger(__name__)

DTYPES = ("fp32", "bf16")
_SEEDED = re.compile(r"seeded:(\d+)")


# ------------------------------------------------------------------------------------------------
# config and presets
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VisionConfig:
    """Everything that determines the vision tokens (serialised into a model's config.json)."""

    backbone: str = "vit_small_patch14_reg4_dinov2"  # timm name; the real weights are its .lvd142m tag
    input_size: tuple[int, int] = (224, 392)  # model input (height, width): letterboxed, multiples of 14·pool
    weights: str = "seeded:0"  # "seeded:SEED" | "hub" | path to a .safetensors / .pth file
    weights_sha256: str | None = None  # sha256 of the weights *file* (checked for file and hub weights)
    fingerprint: str | None = None  # sha256 of the weight tensors; checked at load when set
    pool: int = 2  # spatial average-pool factor on the patch grid
    d_proj: int = 192  # projection width of grid‖Δgrid (the aggregator's width)
    agg_layers: int = 1
    agg_heads: int = 4
    d_token: int = 256  # output token width
    cell_readout: int = 0  # per-cell width of the position-specific readout (0: none; see FrameTokenizer)
    dtype: str = "fp32"  # backbone compute dtype: "fp32" | "bf16" (autocast)

    def __post_init__(self) -> None:
        # from_dict / JSON give lists; keep the dataclass hashable and comparable
        object.__setattr__(self, "input_size", tuple(int(s) for s in self.input_size))
        m = re.search(r"patch(\d+)", self.backbone)
        if m is None:
            raise VisionError(f"backbone {self.backbone!r} is not a timm ViT name with a patch size "
                              "(e.g. vit_small_patch14_reg4_dinov2)")
        step = self.patch_size * self.pool
        if self.pool < 1:
            raise VisionError(f"vision pool must be >= 1, got {self.pool}")
        if len(self.input_size) != 2 or any(s <= 0 or s % step for s in self.input_size):
            raise VisionError(
                f"vision input_size {self.input_size} must be two positive multiples of "
                f"patch {self.patch_size} × pool {self.pool} = {step} (e.g. (84, 140), (224, 392))"
            )
        if self.dtype not in DTYPES:
            raise VisionError(f"vision dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.cell_readout < 0:
            raise VisionError(f"vision cell_readout must be >= 0, got {self.cell_readout}")
        if self.agg_layers < 1 or self.agg_heads < 1 or self.d_proj % self.agg_heads:
            raise VisionError(f"aggregator needs agg_layers >= 1 and d_proj ({self.d_proj}) divisible by "
                              f"agg_heads ({self.agg_heads})")
        if not self.weights or (self.weights.startswith("seeded") and not _SEEDED.fullmatch(self.weights)):
            raise VisionError(f"vision weights {self.weights!r}: write seeded:SEED with an integer SEED, "
                              "'hub', or a path to a weights file")

    @property
    def patch_size(self) -> int:
        return int(re.search(r"patch(\d+)", self.backbone).group(1))

    @property
    def patch_grid(self) -> tuple[int, int]:
        """ViT patch grid before pooling: (h / 14, w / 14)."""
        return (self.input_size[0] // self.patch_size, self.input_size[1] // self.patch_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        """(gh, gw): the pooled grid the aggregator sees (and the feature cache stores)."""
        ph, pw = self.patch_grid
        return (ph // self.pool, pw // self.pool)

    def same_grids(self, other: VisionConfig) -> bool:
        """Whether ``other`` turns frames into the same pooled grids (what a feature cache stores):
        the same backbone, input size, pool and dtype, and the same weights — decided by the
        fingerprints when both are known, else the weights must be named alike.  The trainable
        aggregator (``d_proj``, ``agg_*``, ``d_token``, ``cell_readout``) may differ."""
        if (self.backbone, self.input_size, self.pool, self.dtype) != (
                other.backbone, other.input_size, other.pool, other.dtype):
            return False
        if self.fingerprint is None or other.fingerprint is None:
            return self.weights == other.weights
        return self.fingerprint == other.fingerprint

    @property
    def seed(self) -> int | None:
        m = _SEEDED.fullmatch(self.weights)
        return int(m.group(1)) if m else None

    def replace(self, **changes) -> VisionConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VisionConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise VisionError(f"unknown vision config keys {unknown}; valid: {', '.join(sorted(names))}")
        return cls(**d)


VISION_PRESETS: dict[str, VisionConfig] = {
    # CPU preset (the shipped default model): 84×140 input = 6×10 = 60 patches, pooled to 3×5 = 15
    # aggregator tokens: the ViT has a large fixed cost per frame, so fewer patches save little while
    # more cost CPU in proportion (scripts/measure_vision.py compares input sizes and dtypes on the
    # machine at hand; bf16 pays where the CPU has AMX / AVX512-BF16).  Seeded weights (no model
    # hub on the build machines), fingerprint checked at load.
    "tiny": VisionConfig(
        input_size=(84, 140),
        weights="seeded:0",
        fingerprint="62bfa41f2e67e0da1a439182b14e434b56fc94342761dd77d84869e4b390aefd",
        dtype="bf16",
        cell_readout=8,
    ),
    # paper-sized (GPUs): 224×392 = 16×28 = 448 patches → 8×14 = 112 tokens, real DINOv2 weights
    "base": VisionConfig(input_size=(224, 392), weights="hub", dtype="bf16"),
}


def vision_preset(name: str) -> VisionConfig:
    try:
        return VISION_PRESETS[name]
    except KeyError:
        valid = ", ".join(sorted(VISION_PRESETS))
        raise VisionError(f"unknown vision preset {name!r}; valid: {valid}") from None


def _cpu_has_native_bf16() -> bool:
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe()) if probe is not None else False


class _PackedLinear(nn.Linear):
    """A frozen bf16 linear layer whose weight is also kept in oneDNN's blocked layout, so that the
    CPU's AMX / AVX512-BF16 units get it without a reorder on every call: DINOv2's products at one
    frame's 65 tokens ran in 0.54× the time of ``F.linear`` (the same kernel, bit-identical
    results).  The packed copy is a cache: dropped when the module is copied or pickled, and not
    used for inputs elsewhere than on the CPU or a weight cast to another dtype."""

    def pack(self) -> None:
        w = self.weight.detach()
        self._packed = torch.ops.mkldnn._reorder_linear_weight(w, None) if w.dtype == torch.bfloat16 else None

    def forward(self, x: Tensor) -> Tensor:
        packed = getattr(self, "_packed", None)
        if packed is None or x.device.type != "cpu" or self.weight.dtype != torch.bfloat16:
            return super().forward(x)
        return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), packed, self.bias, "none", [], "")

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_packed", None)  # an opaque oneDNN tensor: it cannot be copied, and pack() rebuilds it
        return state


def _pack_linears(model: nn.Module) -> None:
    """Every ``nn.Linear`` of ``model`` (bf16 weights, frozen) becomes a :class:`_PackedLinear`
    with the same parameters (the state dict keeps its keys)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                packed = _PackedLinear(child.in_features, child.out_features, bias=child.bias is not None,
                                       device="meta")
                packed.weight, packed.bias = child.weight, child.bias
                packed.pack()
                setattr(parent, name, packed)


# ------------------------------------------------------------------------------------------------
# the frozen backbone
# ------------------------------------------------------------------------------------------------
class DinoBackbone(nn.Module):
    """Frozen DINOv2 (timm): preprocessing + last-layer patch grid, average-pooled.

    Always in eval mode, no parameter requires grad, ``forward`` runs under ``torch.no_grad``.
    ``fingerprint`` is the sha256 of the weight tensors it was loaded from.
    """

    def __init__(self, *, config: VisionConfig) -> None:
        super().__init__()
        import timm

        self.config = config
        if not timm.is_model(config.backbone):
            raise VisionError(f"timm has no model {config.backbone!r} (the default is "
                              f"{VisionConfig.backbone})")
        # Built on the meta device (no initialisation work, no draw from the global RNG), then
        # materialised and filled strictly from the chosen weights.
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = timm.create_model(config.backbone, pretrained=False, num_classes=0,
                                      img_size=config.input_size)
        model.to_empty(device="cpu")
        if tuple(model.patch_embed.patch_size) != (config.patch_size, config.patch_size):
            raise VisionError(f"{config.backbone} has patch size {model.patch_embed.patch_size}, "
                              f"not {config.patch_size}")
        state, source = source_weights(config, model)
        self.fingerprint = tensors_fingerprint(state)
        if config.fingerprint is not None and config.fingerprint != self.fingerprint:
            raise VisionError(
                f"vision weights {source} have fingerprint {self.fingerprint[:16]}…, but this model was "
                f"trained with vision weights of fingerprint {config.fingerprint[:16]}…: the checkpoint "
                "was trained with different DINOv2 weights (or a timm/torch version that builds them "
                "differently). Use the weights the model was trained with, or retrain it."
            )
        load_weights(model, state, source)
        model.requires_grad_(False)
        if config.dtype == "bf16":
            # autocast would cast every linear / conv weight to bf16 on *every* call (its cast cache
            # only keeps tensors that require grad): ≈ 40 % of the bf16 forward on CPU.  Storing
            # them in bf16 once gives the same numbers; norms, position embedding and tokens stay fp32.
            for m in model.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    m.to(torch.bfloat16)
            if _cpu_has_native_bf16():
                _pack_linears(model)
        self.vit = model.eval()
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self.embed_dim = int(model.embed_dim)
        mean = torch.tensor(model.pretrained_cfg["mean"], dtype=torch.float32)
        std = torch.tensor(model.pretrained_cfg["std"], dtype=torch.float32)
        self.mean, self.std = tuple(mean.tolist()), tuple(std.tolist())
        # the optimised one-frame forward per CPU thread count (model.optimize.optimize_vision)
        self.fast_features: dict[int, Callable[[Tensor], Tensor]] | None = None
        self.fast_choice: dict[int, dict] | None = None  # what optimize_vision measured and kept
        # uint8 → normalised: x·(1 / (255·std)) − mean/std, kept on the CPU where frames arrive
        self._scale = (1.0 / (255.0 * std)).view(3, 1, 1)
        self._shift = (-mean / std).view(3, 1, 1)
        if config.dtype == "bf16" and not _cpu_has_native_bf16():
            log.warning("vision dtype bf16 on a CPU without native bf16 (AMX / AVX512-BF16): it is emulated "
                        "and slower than fp32; set dtype='fp32' for this machine")

    def train(self, mode: bool = True) -> DinoBackbone:
        return super().train(False)  # frozen: eval mode forever

    @property
    def device(self) -> torch.device:
        return self.vit.pos_embed.device

    def fit(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 → the same picture scaled to fit the input size, aspect ratio kept (area
        interpolation when shrinking, bicubic when enlarging); a frame already that size is returned
        as it is, so fitting ahead of :meth:`preprocess` (in another thread) gives the same tokens."""
        h, w = self.config.input_size
        H, W = image.shape[:2]
        s = min(h / H, w / W)
        return _resize(image, min(h, max(1, round(H * s))), min(w, max(1, round(W * s))))

    def preprocess(self, frames, *, out: Tensor | None = None) -> Tensor:
        """RGB uint8 frames → normalised images (T, 3, h, w) float32 on the backbone's device.

        ``frames``: a (T, H, W, 3) numpy array or tensor, or a sequence of (H, W, 3) frames of any
        sizes.  Each is letterboxed: scaled to fit (h, w) keeping its aspect ratio (area
        interpolation when shrinking, bicubic when enlarging), centred, the border at the mean
        colour.  ``out`` is an optional (T, 3, h, w) CPU float32 buffer to fill (no allocation).
        """
        frames = _frame_list(frames)
        h, w = self.config.input_size
        if out is None:
            out = torch.empty((len(frames), 3, h, w), dtype=torch.float32)
        elif out.shape != (len(frames), 3, h, w):
            raise ValueError(f"out buffer {tuple(out.shape)} != {(len(frames), 3, h, w)}")
        for i, img in enumerate(frames):
            img = self.fit(img)
            nh, nw = img.shape[:2]
            top, left = (h - nh) // 2, (w - nw) // 2
            dst = out[i]
            dst.zero_()  # border = mean colour after normalising
            region = dst[:, top:top + nh, left:left + nw]
            region.copy_(torch.from_numpy(img).permute(2, 0, 1))  # (3, nh, nw), uint8 → float
            region.mul_(self._scale).add_(self._shift)
        return out.to(self.device, non_blocking=True)

    def forward(self, images: Tensor) -> Tensor:
        """Normalised images (T, 3, h, w) → pooled patch grid (T, gh, gw, C) float32 (C = 384)."""
        h, w = self.config.input_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, h, w):
            raise ValueError(f"images must be (T, 3, {h}, {w}), got {tuple(images.shape)}; use preprocess()")
        ph, pw = self.config.patch_grid
        fast = self.fast_features.get(torch.get_num_threads()) if self.fast_features and len(images) == 1 else None
        if fast is not None:
            tokens = fast(images.float())  # model.optimize: a compiled package, fp32 in and out
        else:
            with torch.no_grad():
                tokens = vit_features(self.vit, images, bf16=self.config.dtype == "bf16")
        grid = tokens[:, self.num_prefix_tokens:].float()  # drop CLS + registers: (T, ph·pw, C)
        grid = grid.transpose(1, 2).reshape(len(images), self.embed_dim, ph, pw)  # (T, C, ph, pw)
        p = self.config.pool
        if p > 1:
            grid = F.avg_pool2d(grid, p)  # (T, C, gh, gw)
        return grid.permute(0, 2, 3, 1).contiguous()  # (T, gh, gw, C)


def vit_features(vit: nn.Module, images: Tensor, *, bf16: bool) -> Tensor:
    """The ViT's tokens ``(T, prefix + ph·pw, C)``, final norm applied, as the eager path computes
    them (products in bf16 under autocast when ``bf16``); :mod:`model.optimize` compiles the same."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
        return vit.forward_features(images.to(vit.pos_embed.dtype))  # in case the module was cast (.half(), …)


def _resize(img: np.ndarray, nh: int, nw: int) -> np.ndarray:
    """(H, W, 3) uint8 → (nh, nw, 3): area-averaging when shrinking (antialiased), bicubic when enlarging.

    OpenCV's area resize is slow for non-integer ratios but fast for integer ones, so a large
    reduction first box-averages by the integer factor k (after centre-cropping fewer than k pixels
    so that the ratio is exact), then area-resizes the small remainder (several times faster from
    720p or 1080p)."""
    H, W = img.shape[:2]
    if (nh, nw) == (H, W):
        return img
    if nh > H or nw > W:
        return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_CUBIC)
    k = min(W // nw, H // nh)
    if k >= 2:
        hk, wk = H - H % k, W - W % k
        top, left = (H - hk) // 2, (W - wk) // 2
        img = cv2.resize(img[top:top + hk, left:left + wk], (wk // k, hk // k), interpolation=cv2.INTER_AREA)
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)


def _frame_list(frames) -> list[np.ndarray]:
    """Validate frames → list of contiguous (H, W, 3) uint8 numpy arrays."""
    if isinstance(frames, (np.ndarray, Tensor)):
        if frames.ndim != 4:
            raise VisionError(f"frames must be (T, H, W, 3) or a list of (H, W, 3) RGB images; got an array "
                              f"of shape {tuple(frames.shape)}")
        frames = list(frames)
    elif not isinstance(frames, Sequence):
        raise VisionError(f"frames must be an array or a list of RGB images, got {type(frames).__name__}")
    if not frames:
        raise VisionError("no frames given (an empty clip); pass at least one RGB (H, W, 3) image")
    out = []
    for i, f in enumerate(frames):
        if isinstance(f, Tensor):
            f = f.detach().cpu().numpy()
        if not isinstance(f, np.ndarray):
            raise VisionError(f"frame {i} is a {type(f).__name__}, not an RGB image array")
        if f.ndim != 3 or f.shape[2] != 3 or f.shape[0] < 1 or f.shape[1] < 1:
            raise VisionError(f"frame {i} has shape {f.shape}; frames must be RGB (H, W, 3) — convert "
                              "grey / RGBA / BGRA images to RGB first")
        if f.dtype != np.uint8:
            raise VisionError(f"frame {i} has dtype {f.dtype}; frames must be uint8 RGB (0–255) — "
                              "convert with (x * 255).clip(0, 255).astype(np.uint8)")
        out.append(np.ascontiguousarray(f))
    return out


# ------------------------------------------------------------------------------------------------
# the trainable aggregator
# ------------------------------------------------------------------------------------------------
class _AggregatorBlock(nn.Module):
    """Pre-norm transformer encoder block (bidirectional attention + GELU MLP)."""

    def __init__(self, *, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: Tensor, *, query_only: bool = False) -> Tensor:
        """x (N, L, D) → (N, L, D), or (N, 1, D) for token 0 alone when ``query_only``.

        The last block's only used output is the query token's, so it attends from that token
        alone and runs the MLP on it alone: the same numbers for a fraction of the work."""
        N, L, D = x.shape
        qkv = self.qkv(self.norm1(x)).view(N, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (N, heads, L, D / heads)
        if query_only:
            x, q = x[:, :1], q[:, :, :1]
        a = F.scaled_dot_product_attention(q, k, v)  # (N, heads, Lq, D / heads)
        x = x + self.proj(a.transpose(1, 2).reshape(N, -1, D))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


@dataclass
class _StreamState:
    """Streaming state: the previous pooled grid and the preprocessing buffer, preallocated."""

    prev_grid: Tensor  # (gh, gw, C)
    image: Tensor  # (1, 3, h, w) CPU float32
    has_prev: bool = False


class FrameTokenizer(nn.Module):
    """Frames → one d_token vector per frame.  See the module docstring for the pipeline.

    The frozen backbone is held outside the module tree: its weights come from
    ``config.weights``, so they are not in ``state_dict()`` / ``parameters()``; ``.to()`` still
    moves it.  ``backbone`` may be shared between tokenizers of the same vision config.
    ``with_backbone=False`` builds only the trainable part (training reads cached grids, so it needs
    no DINOv2 weights); encoding frames then raises :class:`VisionError`.
    """

    def __init__(self, config: VisionConfig | None = None, *, backbone: DinoBackbone | None = None,
                 with_backbone: bool = True) -> None:
        super().__init__()
        config = VisionConfig() if config is None else config
        if backbone is None and with_backbone:
            backbone = DinoBackbone(config=config)
        elif backbone is not None and _backbone_fields(backbone.config) != _backbone_fields(config):
            raise ValueError("the shared backbone was built for another vision config")
        self.config = config
        object.__setattr__(self, "_backbone", backbone)  # not a submodule (see class docstring)
        self.embed_dim = backbone.embed_dim if backbone is not None else backbone_width(config.backbone)
        gh, gw = config.grid_size
        c, d = self.embed_dim, config.d_proj
        self.proj = nn.Linear(2 * c, d)  # on concat(grid, Δgrid)
        self.pos = nn.Parameter(torch.randn(1, gh * gw, d) * 0.02)  # learned 2-D positions, row-major
        self.query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.blocks = nn.ModuleList(_AggregatorBlock(dim=d, heads=config.agg_heads)
                                    for _ in range(config.agg_layers))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, config.d_token)
        # Where on screen something changed.  Attention pooling is permutation-invariant up to the
        # learned positions, and in training it stayed so: the tiny model's tokens barely changed
        # when the grid was mirrored (|Δtoken| 0.06 against a norm of 10), and its stereo placement
        # was at chance.  A readout whose weights differ per cell cannot be blind to position.
        r = config.cell_readout
        self.cells = nn.Linear(d, r) if r else None
        self.where = nn.Linear(gh * gw * r, config.d_token) if r else None
        self._stream: _StreamState | None = None

    @property
    def backbone(self) -> DinoBackbone:
        if self._backbone is None:
            raise VisionError("this frame tokenizer was built without its DINOv2 backbone (for training on "
                              "cached grids); load the model with load_generator() to encode frames")
        return self._backbone

    def resolved_config(self) -> VisionConfig:
        """The config with the backbone's fingerprint filled in (what a checkpoint should record)."""
        return self.config.replace(fingerprint=self.backbone.fingerprint)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if self._backbone is not None:
            self._backbone._apply(fn, recurse)
        return self

    # --- batched ----------------------------------------------------------------------------------
    def grids(self, frames, *, batch_size: int = 32) -> Tensor:
        """RGB frames (T, H, W, 3) / list → pooled DINOv2 grids (T, gh, gw, C) float32.

        This is what the feature cache stores (fp16 is fine); run in chunks of ``batch_size``."""
        frames = _frame_list(frames)
        return torch.cat([self.backbone(self.backbone.preprocess(frames[i:i + batch_size]))
                          for i in range(0, len(frames), batch_size)])

    def grid_and_delta(self, grids: Tensor, prev_grid: Tensor | None = None) -> Tensor:
        """(B, T, gh, gw, C) grids → (B, T, gh, gw, 2C) = concat(grid, grid − previous grid).

        The previous grid of t = 0 is ``prev_grid`` (B, gh, gw, C) when given (a clip continued),
        else Δ = 0 there (the first frame of a stream)."""
        if prev_grid is None:
            first = torch.zeros_like(grids[:, :1])
        else:
            first = grids[:, :1] - prev_grid.to(grids.dtype)[:, None]
        delta = torch.cat((first, grids[:, 1:] - grids[:, :-1]), dim=1)
        return torch.cat((grids, delta), dim=-1)

    def tokens_from_grids(self, grids: Tensor, prev_grid: Tensor | None = None) -> Tensor:
        """Pooled grids (B, T, gh, gw, C) or (T, gh, gw, C) → tokens (B, T, d_token) / (T, d_token).

        The trainable part.  ``prev_grid``: (B, gh, gw, C) / (gh, gw, C), the grid of the frame before
        ``grids[..., 0]``; None → Δ = 0 for the first frame."""
        single = grids.ndim == 4
        if single:
            grids = grids[None]
            prev_grid = None if prev_grid is None else prev_grid[None]
        gh, gw = self.config.grid_size
        c = self.embed_dim
        if grids.ndim != 5 or tuple(grids.shape[2:]) != (gh, gw, c):
            raise ValueError(f"grids must be (B, T, {gh}, {gw}, {c}), got {tuple(grids.shape)}")
        B, T = grids.shape[:2]
        grids = grids.to(self.proj.weight.dtype)  # the cache may hold fp16
        # pooled-then-projected == projected-then-pooled (both linear; see the module docstring)
        cells = self.proj(self.grid_and_delta(grids, prev_grid)).reshape(B * T, gh * gw, -1)  # (B·T, gh·gw, d)
        x = torch.cat((self.query.expand(B * T, -1, -1), cells + self.pos), dim=1)  # (B·T, 1 + gh·gw, d)
        for i, block in enumerate(self.blocks):
            x = block(x, query_only=i == len(self.blocks) - 1)
        tokens = self.out(self.norm(x[:, 0]))  # (B·T, d_token)
        if self.where is not None:
            tokens = tokens + self.where(self.cells(cells).flatten(1))  # row-major: screen order
        tokens = tokens.view(B, T, -1)  # (B, T, d_token)
        return tokens[0] if single else tokens

    def forward(self, frames) -> Tensor:
        """A whole clip of RGB frames → tokens (T, d_token); the first frame has Δ = 0."""
        return self.tokens_from_grids(self.grids(frames))

    # --- streaming --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def streaming(self) -> Iterator[FrameTokenizer]:
        """Within the block, :meth:`step` takes one frame at a time and remembers the previous grid;
        the tokens equal :meth:`forward` over the same frames."""
        if self._stream is not None:
            raise RuntimeError("FrameTokenizer is already streaming")
        h, w = self.config.input_size
        gh, gw = self.config.grid_size
        with torch.inference_mode(False):  # ordinary tensors even when entered under inference mode
            self._stream = _StreamState(
                prev_grid=torch.zeros((gh, gw, self.embed_dim), device=self.proj.weight.device),
                image=torch.empty((1, 3, h, w), dtype=torch.float32),
            )
        try:
            yield self
        finally:
            self._stream = None

    def reset_streaming(self) -> None:
        """Start a new stream: the next frame is a first frame again (Δ = 0)."""
        if self._stream is None:
            raise RuntimeError("reset_streaming() outside `with tokenizer.streaming():`")
        self._stream.has_prev = False

    def step(self, frame, *, lap: Callable[[str], None] | None = None) -> Tensor:
        """One RGB uint8 (H, W, 3) frame → its token (d_token,).  ``lap(name)`` (a timing hook, e.g.
        the generator's clock) is called after "preprocess", "dinov2" and "aggregator"."""
        st = self._stream
        if st is None:
            raise RuntimeError("step() outside `with tokenizer.streaming():`")
        if st.prev_grid.device != self.backbone.device:  # moved with .to() while streaming
            st.prev_grid = st.prev_grid.to(self.backbone.device)
        image = self.backbone.preprocess([frame], out=st.image)
        if lap:
            lap("preprocess")
        grid = self.backbone(image)  # (1, gh, gw, C)
        if lap:
            lap("dinov2")
        token = self.tokens_from_grids(grid[None], st.prev_grid[None] if st.has_prev else None)  # (1, 1, d)
        if lap:
            lap("aggregator")
        st.prev_grid.copy_(grid[0])
        st.has_prev = True
        return token[0, 0]


def backbone_width(name: str) -> int:
    """The embedding width of timm backbone ``name`` (built on the meta device: no weights, no work)."""
    import timm

    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return int(timm.create_model(name, pretrained=False, num_classes=0).embed_dim)


def _backbone_fields(c: VisionConfig) -> tuple:
    return (c.backbone, c.input_size, c.weights, c.weights_sha256, c.pool, c.dtype)
