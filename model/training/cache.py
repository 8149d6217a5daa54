"""Feature caching (`livefoley prepare`): a folder of videos → sharded DINOv2 grids + VAE latents.

Layout of a cache folder::

    cache.json            vision + VAE config, vision fingerprint, window length, per-file index
    vae.safetensors       the VAE whose latents are cached (a trained model needs it)
    shards/<key>.safetensors
        grids    (T, gh, gw, 384) float16   pooled DINOv2 patch grid per 30-fps frame
        latents  (T, 64)          float32   VAE posterior means, one per frame
        latents_mirror (T, 64)    float32   the same of the sound with left and right swapped

``latents_mirror`` is what mirror augmentation trains on (``read_window(..., mirror=True)``): the
grid flipped left↔right with the channels of its sound swapped, so the same scene is heard from the
other side — the model must look at *where* an event is to place its sound.  The flipped grid is the
pooled DINOv2 grid read right to left, not DINOv2 of a mirrored picture (the patch features keep
their own content; the aggregator's learned positions and the frame difference carry the side).
Caches made before it existed get it on the next `livefoley prepare` of the same folders.

Pooled grids are exactly what the vision path needs to train without re-running the backbone:
the projection and the 2×2 average pool are both linear, so pooling first is identical (see
``model.vision``).  Shards are written under a temporary name and renamed when complete; the index
is updated after each rename, so an interrupted run never trusts a half-written shard and a rerun
skips the files already done.  Files are split into train / validation *by file* with a stable
hash of their relative path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file

from audio.contract import CONTRACT
from audio.errors import LivefoleyError
from audio.files import atomic_path
from audio.vae import CausalVAE
from model.vision import FrameTokenizer, VisionConfig

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".webm", ".avi")
CACHE_FORMAT = "livefoley-feature-cache"


@dataclass
class PrepareSummary:
    prepared_files: int = 0
    prepared_seconds: float = 0.0
    reused_files: int = 0
    grids_reused_files: int = 0  # prepared with another cache's grids (--grids-from): no DINOv2 run
    skipped: dict[str, str] = field(default_factory=dict)  # relative path → reason
    bytes_written: int = 0
    wall_seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "prepared_files": self.prepared_files,
            "prepared_hours": self.prepared_seconds / 3600,
            "reused_files": self.reused_files,
            "grids_reused_files": self.grids_reused_files,
            "skipped": self.skipped,
            "bytes_written": self.bytes_written,
            "wall_seconds": self.wall_seconds,
            "realtime_factor": self.prepared_seconds / self.wall_seconds if self.wall_seconds else None,
            "bytes_per_hour": self.bytes_written / (self.prepared_seconds / 3600) if self.prepared_seconds else None,
        }


def split_of(relpath: str, val_fraction: float) -> str:
    """Stable train/val assignment by file."""
    h = int(hashlib.sha256(relpath.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def _file_key(path: Path, relpath: str) -> str:
    st = path.stat()
    return hashlib.sha256(f"{relpath}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]


def find_videos(data: Path) -> list[Path]:
    if not data.is_dir():
        raise LivefoleyError(f"--data {data} is not a folder of videos")
    return sorted(p for p in data.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


class FeatureCache:
    """Read/write access to a cache folder's index and shards."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.index_path = self.root / "cache.json"
        self.shards = self.root / "shards"
        if self.index_path.exists():
            self.index = json.loads(self.index_path.read_text())
            if self.index.get("format") != CACHE_FORMAT:
                raise LivefoleyError(f"{self.root} is not a livefoley feature cache")
        else:
            self.index = {}

    @property
    def exists(self) -> bool:
        return bool(self.index)

    def require(self) -> FeatureCache:
        if not self.exists:
            raise LivefoleyError(f"{self.root} has no cache.json: run `livefoley prepare --data DIR --out {self.root}`")
        return self

    def save_index(self) -> None:
        with atomic_path(self.index_path) as tmp:
            tmp.write_text(json.dumps(self.index, indent=1))

    def entries(self, split: str | None = None) -> list[dict]:
        files = self.index.get("files", {}).values()
        return [e for e in files if split is None or e["split"] == split]

    def shard_path(self, entry: dict) -> Path:
        return self.shards / entry["shard"]

    def read_window(self, entry: dict, start: int, length: int, *, mirror: bool = False,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(grids (L, gh, gw, C) float32, latents (L, 64), prev_grid (gh, gw, C): frame start-1 or zeros).

        ``mirror``: the grids flipped left↔right and the latents of the channel-swapped sound."""
        key = "latents_mirror" if mirror else "latents"
        with safe_open(str(self.shard_path(entry)), framework="pt") as f:
            if key not in f.keys():  # noqa: SIM118 (safe_open has no __contains__)
                raise LivefoleyError(f"{self.root} was prepared before mirror augmentation existed: run "
                                     f"`livefoley prepare` again with the same --data/--out to add it (fast: "
                                     f"no frame is decoded again), or train with --mirror 0")
            g = f.get_slice("grids")
            lo = max(start - 1, 0)
            grids = g[lo : start + length].float()
            latents = f.get_slice(key)[start : start + length].float()
        if mirror:
            grids = grids.flip(2)  # (L, gh, gw, C): columns right to left
        if start > 0:
            prev, grids = grids[0], grids[1:]
        else:
            prev = torch.zeros_like(grids[0])
        return grids, latents, prev


def prepare(
    data: str | Path, out: str | Path, *, tokenizer: FrameTokenizer, vae: CausalVAE, val_fraction: float = 0.1,
    batch_size: int = 32, device: torch.device | str = "cpu", progress: Callable[[int], object] | None = None,
    audio_dir: str | Path | None = None, grids_from: str | Path | None = None,
) -> PrepareSummary:
    """Cache every video under ``data`` into ``out`` (resumable); ``progress(n)`` after every n frames.
    ``audio_dir``: take a video's sound from ``audio_dir/<stem>.flac`` (or ``.wav``) when that file
    exists — the exact sound that `livefoley synth --audio-out` writes — instead of its AAC track.
    ``grids_from``: another cache of the same videos with the same vision config; a video it holds
    unchanged (same path, size and time) takes its grids from there and only its sound is encoded
    (a new codec's cache without running DINOv2 again)."""
    from capture.file import iter_frames_30fps, probe_video

    data, out = Path(data), Path(out)
    videos = find_videos(data)
    if not videos:
        raise LivefoleyError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {data}; point --data at a folder "
                             "of videos with sound (e.g. made by `livefoley synth`)")
    cache = FeatureCache(out)
    made = [p for p in (out, out / "cache.json", out / "vae.safetensors", out / "shards") if not p.exists()]
    vision, vae_cfg = tokenizer.resolved_config(), vae.config.to_dict()  # the fingerprint recorded
    vision_cfg = vision.to_dict()
    donor = None
    if grids_from is not None:
        donor = FeatureCache(grids_from).require()
        if donor.root.resolve() == out.resolve():
            raise LivefoleyError(f"--grids-from {grids_from} is the cache being prepared; name another cache")
        if not VisionConfig.from_dict(donor.index["vision"]).same_grids(vision):
            raise LivefoleyError(f"--grids-from {grids_from} was prepared with a different vision config; its grids "
                                 "do not fit this cache")
    if cache.exists:
        if not VisionConfig.from_dict(cache.index["vision"]).same_grids(vision) or cache.index["vae"] != vae_cfg:
            raise LivefoleyError(
                f"{out} was prepared with a different vision or VAE config; use a new --out folder"
            )
        kept = load_file(str(out / "vae.safetensors"))
        if any(not torch.equal(kept[k], v.detach().cpu()) for k, v in vae.state_dict().items()):
            raise LivefoleyError(f"{out} was prepared with other VAE weights; continue it with "
                                 f"--vae {out / 'vae.safetensors'}, or use a new --out folder")
    else:
        out.mkdir(parents=True, exist_ok=True)
        cache.index = {"format": CACHE_FORMAT, "version": 1, "vision": vision_cfg, "vae": vae_cfg,
                       "fps": CONTRACT.fps, "hop": CONTRACT.hop, "files": {}, "skipped": {}}
        with atomic_path(out / "vae.safetensors") as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}, str(tmp))
        cache.save_index()
    cache.shards.mkdir(exist_ok=True)
    for stale in cache.shards.glob("*.partial*"):  # left by a killed run: never trusted
        stale.unlink()

    summary = PrepareSummary()
    t0 = time.monotonic()
    todo: list[tuple[Path, str, str]] = []
    for path in videos:
        rel = path.relative_to(data).as_posix()
        key = _file_key(path, rel)
        done = cache.index["files"].get(rel)
        if done and done["key"] == key and cache.shard_path(done).exists():
            summary.reused_files += 1
            _add_mirror(cache.shard_path(done), path, audio_dir, done["frames"], vae, device)
            continue
        todo.append((path, rel, key))

    for path, rel, key in todo:
        try:
            info = probe_video(path)
            if not info.has_audio:
                raise LivefoleyError("no audio track (nothing to learn from)")
            grids = _donor_grids(donor, rel, key)
            if grids is None:
                grids_list = []
                for block in _batched(iter_frames_30fps(path), batch_size):
                    with torch.inference_mode():
                        grids_list.append(tokenizer.grids(np.stack([f.image for f in block])).to(torch.float16).cpu())
                    if progress:
                        progress(len(block))  # frames
                if not grids_list:
                    raise LivefoleyError("no decodable video frames")
                grids = torch.cat(grids_list)
            else:
                summary.grids_reused_files += 1
                if progress:
                    progress(grids.shape[0])
            n = grids.shape[0]
            wav = _sound(path, audio_dir, n)
            latents = encode_long(vae, wav, device=device)
            latents_mirror = encode_long(vae, wav.flip(0), device=device)
        except LivefoleyError as err:
            summary.skipped[rel] = str(err)
            cache.index["skipped"][rel] = str(err)
            cache.save_index()
            log.warning("skipping %s: %s", rel, err)
            continue
        shard = f"{key}.safetensors"
        with atomic_path(cache.shards / shard) as tmp:
            save_file({"grids": grids.contiguous(), "latents": latents.contiguous(),
                       "latents_mirror": latents_mirror.contiguous()}, str(tmp),
                      metadata={"source": rel, "fps": str(CONTRACT.fps)})
        cache.index["files"][rel] = {"shard": shard, "key": key, "frames": n, "seconds": n / CONTRACT.fps,
                                     "split": split_of(rel, val_fraction)}
        cache.index["skipped"].pop(rel, None)
        cache.save_index()
        summary.prepared_files += 1
        summary.prepared_seconds += n / CONTRACT.fps
        summary.bytes_written += (cache.shards / shard).stat().st_size
    if not cache.index["files"]:  # nothing to train on: leave no cache that fails later in `train`
        for path in reversed(made):  # only what this run created: shards/, the files, then the folder
            if path == out:
                with contextlib.suppress(OSError):  # kept when anything else is in it
                    path.rmdir()
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        reasons = "; ".join(f"{name}: {why}" for name, why in list(summary.skipped.items())[:3])
        raise LivefoleyError(f"none of the {len(videos)} video(s) under {data} could be prepared ({reasons}); "
                             "nothing was cached")
    _ensure_val_split(cache)
    summary.wall_seconds = time.monotonic() - t0
    return summary


def _donor_grids(donor: FeatureCache | None, rel: str, key: str) -> torch.Tensor | None:
    """The grids another cache holds of this very file (same relative path and file key), else None."""
    entry = donor.index["files"].get(rel) if donor is not None else None
    if entry is None or entry["key"] != key or not donor.shard_path(entry).exists():
        return None
    with safe_open(str(donor.shard_path(entry)), framework="pt") as f:
        return f.get_tensor("grids")


def _ensure_val_split(cache: FeatureCache) -> None:
    """With two or more files, make sure both splits are non-empty (smallest file → val)."""
    files = cache.index["files"]
    if len(files) >= 2 and not any(e["split"] == "val" for e in files.values()):
        min(files.values(), key=lambda e: e["frames"])["split"] = "val"
    if len(files) >= 2 and not any(e["split"] == "train" for e in files.values()):
        max(files.values(), key=lambda e: e["frames"])["split"] = "train"
    cache.save_index()


def _batched(it, n):
    block = []
    for x in it:
        block.append(x)
        if len(block) == n:
            yield block
            block = []
    if block:
        yield block


def _fit_length(wav: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad audio to exactly ``n`` samples (video duration decides)."""
    if wav.shape[1] >= n:
        return wav[:, :n]
    return np.pad(wav, ((0, 0), (0, n - wav.shape[1])))


def _sound(video: Path, audio_dir: str | Path | None, n_frames: int) -> torch.Tensor:
    """The sound cached for ``video``: its exact sound from ``audio_dir`` when there, else its own
    track; (2, n_frames · hop) float32 at 48 kHz."""
    from audio.io import read_audio

    wav = read_audio(_exact_sound(audio_dir, video) or video)
    return torch.from_numpy(_fit_length(wav, n_frames * CONTRACT.hop))


def _add_mirror(shard: Path, video: Path, audio_dir: str | Path | None, n_frames: int, vae: CausalVAE,
                device) -> None:
    """Give a shard made before mirror augmentation its ``latents_mirror`` (atomically)."""
    with safe_open(str(shard), framework="pt") as f:
        if "latents_mirror" in f.keys():  # noqa: SIM118 (safe_open has no __contains__)
            return
        metadata = f.metadata()
    tensors = load_file(str(shard))
    tensors["latents_mirror"] = encode_long(vae, _sound(video, audio_dir, n_frames).flip(0), device=device).contiguous()
    with atomic_path(shard) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _exact_sound(audio_dir: str | Path | None, video: Path) -> Path | None:
    if audio_dir is None:
        return None
    for ext in (".flac", ".wav"):
        candidate = Path(audio_dir) / f"{video.stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


@torch.inference_mode()
def encode_long(vae: CausalVAE, wav: torch.Tensor, *, device, chunk_frames: int = 300) -> torch.Tensor:
    """Encode (2, N) audio of any length in chunks with the streaming encoder → means (T, 64).

    The streaming encoder carries its state across chunks, so this equals one offline pass."""
    hop = vae.hop
    out = []
    with vae.streaming(batch_size=1):
        for lo in range(0, wav.shape[1], chunk_frames * hop):
            chunk = wav[None, :, lo : lo + chunk_frames * hop].to(device)
            out.append(vae.encode(chunk)[0].T.float().cpu())
    return torch.cat(out)


def latent_stats(cache: FeatureCache, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean / std of the cached latents (stored with the model's weights)."""
    total = torch.zeros(CONTRACT.latent_dim, dtype=torch.float64)
    sq = torch.zeros_like(total)
    n = 0
    for e in cache.entries(split) or cache.entries():
        lat = load_file(str(cache.shard_path(e)))["latents"].double()
        total += lat.sum(0)
        sq += (lat**2).sum(0)
        n += lat.shape[0]
    if n == 0:
        raise LivefoleyError(f"{cache.root} holds no prepared clips")
    mean = total / n
    std = (sq / n - mean**2).clamp(min=1e-8).sqrt()
    return mean.float(), std.float()
