"""The two training stages on a feature cache: diffusion (EDM2) and Easy Consistency Tuning.

One code path for CPU, one GPU and many GPUs: under ``torchrun --nproc_per_node N`` the model is
wrapped in DistributedDataParallel, every rank draws its own share of each global batch, and only
rank 0 writes.  On CPU the same code runs as a single process (or under torchrun with gloo).

Determinism: the batch and the noise of step ``s`` come from a generator seeded with
``(seed, s, rank)``, so a resumed run continues exactly where an uninterrupted one would be.

A run folder holds ``config.json`` + ``model.safetensors`` + ``vae.safetensors`` (the EMA weights:
a model folder that ``load_generator`` and every CLI command accept), ``train.json`` (the fully
resolved training config), ``log.jsonl``, ``samples/step_*.wav``, ``checkpoints/step_*/`` and
``state/`` (optimizer, raw weights, step) for ``--resume``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from audio.checkpoint import read_safetensors
from audio.contract import CONTRACT
from audio.errors import LivefoleyError, UsageError
from audio.files import atomic_path
from audio.vae import load_vae
from audio.vae_train import ema_update
from model.config import GeneratorConfig
from model.generator import Generator, _load_state, build_model, save_model
from model.training.cache import FeatureCache, latent_stats
from model.vision import VisionConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    stage: str = "diffusion"  # "diffusion" (stage 1) or "consistency" (ECT, stage 2)
    steps: int = 10_000
    batch_size: int = 16  # global batch (split across ranks)
    window_frames: int = 240  # 8 s clips
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 500
    min_lr_ratio: float = 0.1  # cosine decay to lr·ratio
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ect_stage_interval: int = 2_000  # ECT: t − r halves every this many steps
    mirror: float = 0.5  # share of training windows seen mirrored (grid flipped, channels swapped)
    val_every: int = 500
    val_batches: int = 4
    sample_every: int = 1_000
    ckpt_every: int = 1_000
    log_every: int = 10
    seed: int = 0
    amp: str = "auto"  # "auto" (bf16 on CUDA), "bf16", "off"

    def __post_init__(self) -> None:
        counts = ("steps", "batch_size", "window_frames", "ect_stage_interval", "val_every", "val_batches",
                  "sample_every", "ckpt_every", "log_every")
        bad = [f"{name} = {getattr(self, name)}" for name in counts if getattr(self, name) < 1]
        if bad:  # the intervals too: the last step always validates, samples and checkpoints
            raise UsageError(f"training settings must be positive: {', '.join(bad)}")
        if not 0 <= self.mirror <= 1:
            raise UsageError(f"mirror is a probability in [0, 1], got {self.mirror}")
        if not (self.lr > 0 and 0 <= self.ema_decay < 1 and self.warmup >= 0 and self.grad_clip > 0):
            raise UsageError(f"need lr > 0, 0 ≤ ema_decay < 1, warmup ≥ 0 and grad_clip > 0 (got lr {self.lr}, "
                                 f"ema_decay {self.ema_decay}, warmup {self.warmup}, grad_clip {self.grad_clip})")
        if self.stage not in ("diffusion", "consistency") or self.amp not in ("auto", "bf16", "off"):
            raise UsageError(f"unknown stage {self.stage!r} or amp {self.amp!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- distributed --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them this is a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if world > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank=rank, world=world, device=dev)


# --- data ---------------------------------------------------------------------------------------
class WindowSampler:
    """Training windows of ``window_frames`` frames cut from every cached file of a split."""

    def __init__(self, cache: FeatureCache, split: str, window_frames: int) -> None:
        self.cache = cache
        self.windows: list[tuple[dict, int]] = []
        entries = cache.entries(split)
        if not entries:
            raise LivefoleyError(f"the cache {cache.root} has no {split!r} files; prepare more videos")
        shortest = min(e["frames"] for e in entries)
        self.length = min(window_frames, shortest)
        for e in entries:
            for start in range(0, e["frames"] - self.length + 1, self.length):
                self.windows.append((e, start))

    def batch(self, n: int, generator: torch.Generator, device, *, mirror: float = 0.0) -> tuple[torch.Tensor, ...]:
        """``n`` random windows; each is mirrored (see :meth:`FeatureCache.read_window`) with
        probability ``mirror``."""
        idx = torch.randint(len(self.windows), (n,), generator=generator).tolist()
        flips = (torch.rand(n, generator=generator) < mirror).tolist() if mirror > 0 else [False] * n
        items = [self.cache.read_window(*self.windows[i], self.length, mirror=f)
                 for i, f in zip(idx, flips, strict=True)]
        grids, latents, prev = (torch.stack(x).to(device) for x in zip(*items, strict=True))
        return grids, latents, prev


# --- the loop -----------------------------------------------------------------------------------
def lr_at(step: int, tc: TrainConfig) -> float:
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    progress = (step - tc.warmup) / max(tc.steps - tc.warmup, 1)
    return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _step_generator(tc: TrainConfig, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((tc.seed * 1_000_003 + step) * 1_009 + rank)


def train(
    cache_dir: str | Path, out: str | Path, *, model_config: GeneratorConfig, tc: TrainConfig,
    init: str | Path | None = None, resume: bool = False, device: str = "auto", progress: bool = True,
) -> Path:
    """Run one stage; returns the run folder (a loadable model folder)."""
    d = setup_distributed(device)
    out = Path(out)
    cache = FeatureCache(cache_dir).require()
    # The model records the fingerprint of the DINOv2 weights its cache was made with (a preset that
    # names no fingerprint — "hub" — takes the cache's), and keeps its own weights location.
    cached_vision, vision = VisionConfig.from_dict(cache.index["vision"]), model_config.vision
    if vision.fingerprint is None:
        vision = vision.replace(fingerprint=cached_vision.fingerprint)
    if not cached_vision.same_grids(vision):
        raise LivefoleyError("the cache was prepared with a different vision config (or DINOv2 weights) than "
                             "the model uses")
    model_config = model_config.replace(vision=vision)
    vae = load_vae(model_config.vae.__class__.from_dict(cache.index["vae"]), cache.root / "vae.safetensors")
    model_config = model_config.replace(vae=vae.config, stage=tc.stage)

    model = build_model(model_config, with_backbone=False)
    if init is not None:  # ECT starts from a stage-1 run
        init = Path(init)
        init_cfg = GeneratorConfig.from_dict(json.loads((init / "config.json").read_text()))
        if init_cfg.replace(stage=tc.stage, notes={}) != model_config.replace(notes={}):
            model_config = init_cfg.replace(stage=tc.stage)
            model = build_model(model_config, with_backbone=False)
        _load_state(model, read_safetensors(init / "model.safetensors", what="--init weights"),
                    init / "model.safetensors")
    elif tc.stage == "diffusion":
        mean, std = latent_stats(cache)
        model.latent_mean.copy_(mean)
        model.latent_std.copy_(std)
    else:
        raise LivefoleyError("ECT needs --init STAGE1_RUN (a run folder of `livefoley train stage1`)")
    model.to(d.device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=(0.9, 0.99))
    start_step = 0
    state_dir = out / "state"
    if resume:
        if not (state_dir / "state.json").exists():
            raise LivefoleyError(f"--resume: {out} has no saved training state")
        start_step = _load_state_dir(state_dir, model, ema, opt)
        log.info("resuming %s at step %d", out, start_step)
    elif d.main and (out / "state").exists():
        raise UsageError(f"{out} already holds a run; pass --resume to continue it or choose a new --out")

    train_data = WindowSampler(cache, "train", tc.window_frames)
    val_data = WindowSampler(cache, "val", tc.window_frames) if cache.entries("val") else None
    net = model
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.device.index] if d.device.type == "cuda" else None,
            find_unused_parameters=True,  # the EDM2 uncertainty MLP is idle during ECT
        )
    amp = tc.amp == "bf16" or (tc.amp == "auto" and d.device.type == "cuda")
    per_rank = max(tc.batch_size // d.world, 1)

    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train.json").write_text(json.dumps({
            "train": tc.to_dict(), "model": model_config.to_dict(), "cache": str(cache.root),
            "init": str(init) if init else None, "world_size": d.world, "device": str(d.device),
            "window_frames": train_data.length,
        }, indent=2))
    writer = _tensorboard(out) if d.main else None
    bar = _progress(tc.steps, start_step) if (d.main and progress) else None
    t_last = time.monotonic()
    for step in range(start_step, tc.steps):
        g = _step_generator(tc, step, d.rank)
        grids, latents, prev = train_data.batch(per_rank, g, d.device, mirror=tc.mirror)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tc)
        with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=amp):
            per_item = _forward(net, grids, model.normalize(latents), prev, tc, step, g)
        loss = per_item.mean()
        if not torch.isfinite(loss):
            raise LivefoleyError(f"loss became {loss.item()} at step {step}; lower --lr or check the data")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        opt.step()
        ema_update(ema, model, tc.ema_decay)
        done = step + 1
        if d.main:
            record = {"step": done, "loss": loss.item(), "grad_norm": float(gnorm), "lr": lr_at(step, tc)}
            if done % tc.log_every == 0 or done == tc.steps:
                now = time.monotonic()
                record["steps_per_s"] = tc.log_every / max(now - t_last, 1e-9)
                t_last = now
                _log(out, record, writer)
            if val_data is not None and (done % tc.val_every == 0 or done == tc.steps):
                _log(out, {"step": done, "val_loss": _validate(ema, val_data, tc, step, d.device)}, writer)
            if done % tc.sample_every == 0 or done == tc.steps:
                _write_sample(ema, vae, val_data or train_data, out / "samples" / f"step_{done:07d}.wav", d.device)
            if done % tc.ckpt_every == 0 or done == tc.steps:
                save_model(out / "checkpoints" / f"step_{done:07d}", ema, vae)
                save_model(out, ema, vae)
                _save_state_dir(state_dir, model, ema, opt, done)
            if bar:
                bar.set_postfix(loss=f"{loss.item():.4f}")
                bar.update(1)
    if bar:
        bar.close()
    if d.world > 1:
        dist.barrier()
    return out


def _forward(net, grids, latents, prev, tc: TrainConfig, step: int, g: torch.Generator) -> torch.Tensor:
    """Through ``net(...)`` so that DDP all-reduces the gradients."""
    return net(grids, latents, stage=tc.stage, ect_stage=step // tc.ect_stage_interval, prev_grid=prev, generator=g)


@torch.no_grad()
def _validate(model, data: WindowSampler, tc: TrainConfig, step: int, device) -> float:
    losses = []
    for i in range(tc.val_batches):
        g = torch.Generator().manual_seed(10_000 + i)  # the same validation batches every time
        grids, latents, prev = data.batch(min(tc.batch_size, 4), g, device)
        losses.append(model.training_loss(grids, model.normalize(latents), stage=tc.stage,
                                          ect_stage=step // tc.ect_stage_interval, prev_grid=prev, generator=g).mean())
    return float(torch.stack(losses).mean())


def _write_sample(model, vae, data: WindowSampler, path: Path, device) -> None:
    """Generate audio for the first window from its cached grids (the streaming path) → wav."""
    from audio.io import write_audio

    entry, start = data.windows[0]
    grids, _, prev = data.cache.read_window(entry, start, data.length)
    gen = Generator(model=copy.deepcopy(model), vae=vae, device=torch.device(device))
    with torch.inference_mode():
        tokens = gen.model.tokenizer.tokens_from_grids(grids.to(device), prev.to(device))
        nfe = gen.valid_nfe[0]
        with gen.stream(seed=0, nfe=nfe, timing=False) as s:
            wav = torch.cat([torch.from_numpy(s.step_token(v)) for v in tokens], dim=1).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_audio(path, wav, CONTRACT.sample_rate)


def _save_state_dir(state_dir: Path, model, ema, opt, step: int) -> None:
    with atomic_path(state_dir) as tmp:
        tmp.mkdir(parents=True)
        _write_state(tmp, model, ema, opt, step)


def _write_state(tmp: Path, model, ema, opt, step: int) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    save_file({k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}, str(tmp / "ema.safetensors"))
    flat, meta = {}, {"step": step, "param_groups": []}
    sd = opt.state_dict()
    for pid, st in sd["state"].items():
        for name, val in st.items():
            flat[f"{pid}.{name}"] = val.detach().cpu().contiguous() if torch.is_tensor(val) else torch.tensor(val)
    meta["param_groups"] = sd["param_groups"]
    save_file(flat, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps(meta))


def _load_state_dir(state_dir: Path, model, ema, opt) -> int:
    meta = json.loads((state_dir / "state.json").read_text())
    _load_state(model, read_safetensors(state_dir / "model.safetensors", what="training state"),
                state_dir / "model.safetensors")
    _load_state(ema, read_safetensors(state_dir / "ema.safetensors", what="training state"),
                state_dir / "ema.safetensors")
    flat = read_safetensors(state_dir / "optimizer.safetensors", what="training state")
    state: dict[int, dict] = {}
    for key, val in flat.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"])


def _log(out: Path, record: dict, writer) -> None:
    with (out / "log.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    log.info("%s", record)
    if writer is not None:
        for k, v in record.items():
            if k != "step":
                writer.add_scalar(k, v, record["step"])


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # TensorBoard is optional
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _progress(total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
