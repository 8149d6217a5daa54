"""Training the causal VAE (``livefoley train vae``).

Recipe (Sony's ``sr_ds_1600_dim_64_causal.json`` training section, stable-audio-tools style):

* reconstruction: multi-resolution STFT loss (FFT 2048 … 32, hop = FFT/4, spectral convergence +
  log-magnitude L1, A-weighting FIR pre-filter) on the sum and difference of the two channels,
  plus half-weighted losses on left and right;
* KL of the VAE bottleneck (weight 1e-5), latents sampled ``mean + exp(logvar/2)·ε``;
* EnCodec-style multi-scale STFT discriminator (FFT 2048 … 128) with hinge losses: adversarial
  (weight 0.1) and feature matching (weight 5.0);
* AdamW lr 1.5e-4, betas (0.8, 0.99), weight decay 1e-3 (discriminator lr 3e-4); gradient-norm
  clipping (1000 / 10); an EMA of the generator weights (decay warm-up ``1 - (1+step)^-3/4``, capped
  at 0.9999) - the EMA is what gets exported;
* random 1 s crops of every audio file and video-with-sound under the data folder.

Deviation (marked): the reference alternates generator and discriminator updates on odd/even
steps; here both are updated on every step (discriminator first), which halves the number of
forward passes per generator update.  The reference's constant-free InverseLR schedule is not used.

A run folder holds ``config.json`` (the model config in stable-audio-tools layout plus the fully
resolved ``"training"`` section, so ``load_vae(run_dir)`` works), ``model.safetensors`` (EMA
weights), ``train_state.pt`` (everything needed to resume, tensors and plain containers only, read
with ``weights_only=True``) and ``log.jsonl`` (one JSON object per logged step).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio.checkpoint import CheckpointFileError, read_torch_file
from audio.errors import LivefoleyError, UsageError
from audio.files import atomic_path
from audio.spectral import SpectralCodec
from audio.vae import VAEConfig, build_vae, load_vae_state_dict, save_vae

log = logging.getLogger(__name__)

__all__ = [
    "VAETrainConfig",
    "VAETrainer",
    "MultiResolutionSTFTLoss",
    "StereoSTFTLoss",
    "MultiScaleSTFTDiscriminator",
    "CropDataset",
    "find_media",
    "train_vae",
    "read_run_config",
    "STATE_FILE",
    "LOG_FILE",
]

STATE_FILE = "train_state.pt"
LOG_FILE = "log.jsonl"
MONITOR_FILE = "monitor.jsonl"  # the held-out ceiling checks (monitor_every), one JSON object per check
MEDIA_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".mka"}
    | {".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".ts"}
)


class TrainError(LivefoleyError):
    """A training run that cannot start or continue (no data, bad run folder, bad settings)."""


@dataclass(frozen=True)
class VAETrainConfig:
    """Every training setting; written, fully resolved, into the run folder's ``config.json``."""

    steps: int = 100_000
    batch_size: int = 8
    crop_seconds: float = 1.0
    lr: float = 1.5e-4
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 1e-3
    grad_clip: float = 1000.0
    disc_lr: float = 3e-4
    disc_grad_clip: float = 10.0
    stft_weight: float = 1.0
    kl_weight: float = 1e-5
    adv_weight: float = 0.1
    fm_weight: float = 5.0
    fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64, 32)
    perceptual_weighting: bool = True
    disc_fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128)
    disc_filters: int = 64
    disc_start_step: int = 0
    monitor_every: int = 500  # steps between held-out ceiling checks (0: never)
    monitor_seconds: float = 10.0  # length of each held-out world clip of the check
    ema_beta: float = 0.9999
    ema_power: float = 0.75
    log_every: int = 20
    save_every: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "fft_sizes", tuple(int(n) for n in self.fft_sizes))
        object.__setattr__(self, "disc_fft_sizes", tuple(int(n) for n in self.disc_fft_sizes))
        problems = [
            f"{name} must be positive (got {getattr(self, name)})"
            for name in (
                "steps",
                "batch_size",
                "crop_seconds",
                "lr",
                "log_every",
                "save_every",
                "disc_filters",
            )
            if not getattr(self, name) > 0
        ]
        if not self.fft_sizes or any(n < 4 for n in self.fft_sizes + self.disc_fft_sizes):
            problems.append("fft_sizes need at least one size, each >= 4")
        if problems:
            raise TrainError("invalid training config: " + "; ".join(problems))

    def crop_samples(self, hop: int, sample_rate: int) -> int:
        """Crop length in samples: ``crop_seconds`` rounded to whole latent frames (>= 1)."""
        return max(1, round(self.crop_seconds * sample_rate / hop)) * hop

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAETrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TrainError(f"unknown training settings {unknown}; valid: {sorted(names)}")
        return cls(**d)


# ---- data --------------------------------------------------------------------------------------


def find_media(folder: str | Path) -> list[Path]:
    """Audio files and videos under ``folder`` (recursive, sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainError(f"data folder {folder} does not exist")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS)


class CropDataset:
    """Every usable file under a folder, decoded once to 48 kHz stereo and kept in memory;
    :meth:`sample` draws random fixed-length crops (files shorter than a crop are zero-padded)."""

    def __init__(self, folder: str | Path, *, crop_samples: int, sample_rate: int, channels: int) -> None:
        from audio.io import AudioReadError, read_audio

        files = find_media(folder)
        self.clips: list[np.ndarray] = []
        skipped = []
        for path in files:
            try:
                self.clips.append(read_audio(path, sample_rate=sample_rate, channels=channels))
            except AudioReadError as err:  # one bad file should not end a long run; it is reported
                skipped.append(str(err))
        for msg in skipped:
            log.warning("skipping %s", msg)
        if not self.clips:
            raise TrainError(
                f"no usable audio under {folder} ({len(files)} media files, {len(skipped)} unreadable); "
                "put wav/flac/mp3 files or videos with sound there "
                f"(extensions: {', '.join(sorted(MEDIA_EXTENSIONS))})"
            )
        self.crop = crop_samples
        lengths = np.array([c.shape[1] for c in self.clips], dtype=np.float64)
        self.weights = np.maximum(lengths, crop_samples) / np.maximum(lengths, crop_samples).sum()
        self.seconds = float(lengths.sum() / sample_rate)
        log.info("training data: %d files, %.1f s (%d skipped)", len(self.clips), self.seconds, len(skipped))

    def sample(self, batch_size: int, rng: np.random.Generator) -> Tensor:
        """``(batch_size, channels, crop)`` float32."""
        out = np.zeros((batch_size, self.clips[0].shape[0], self.crop), dtype=np.float32)
        for b in range(batch_size):
            clip = self.clips[rng.choice(len(self.clips), p=self.weights)]
            start = int(rng.integers(0, max(clip.shape[1] - self.crop, 0) + 1))
            piece = clip[:, start : start + self.crop]
            out[b, :, : piece.shape[1]] = piece
        return torch.from_numpy(out)


# ---- losses ------------------------------------------------------------------------------------


def a_weighting_fir(sample_rate: int, taps: int = 101) -> np.ndarray:
    """Linear-phase FIR (``taps`` long) approximating the IEC 61672 A-weighting curve: the analog
    filter, discretised bilinearly, then fitted by least squares (the "perceptual weighting" of
    stable-audio-tools' STFT loss)."""
    from scipy.signal import bilinear, firls, freqz

    f1, f2, f3, f4, a1000 = 20.598997, 107.65265, 737.86223, 12194.217, 1.9997
    num = [(2 * math.pi * f4) ** 2 * 10 ** (a1000 / 20), 0, 0, 0, 0]
    den = np.polymul(
        [1, 4 * math.pi * f4, (2 * math.pi * f4) ** 2], [1, 4 * math.pi * f1, (2 * math.pi * f1) ** 2]
    )
    den = np.polymul(np.polymul(den, [1, 2 * math.pi * f3]), [1, 2 * math.pi * f2])
    b, a = bilinear(num, den, fs=sample_rate)
    w, h = freqz(b, a, worN=512, fs=sample_rate)
    return firls(taps, w, np.abs(h), fs=sample_rate).astype(np.float32)


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over FFT sizes of spectral convergence + log-magnitude L1 (auraloss's definition).

    ``forward(pred, target)`` with ``(B, C, N)`` tensors → scalar.
    """

    def __init__(
        self, fft_sizes: Sequence[int], *, sample_rate: int, perceptual_weighting: bool = True
    ) -> None:
        super().__init__()
        self.fft_sizes = tuple(fft_sizes)
        for n in self.fft_sizes:
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)
        fir = torch.from_numpy(a_weighting_fir(sample_rate))[None, None] if perceptual_weighting else None
        self.register_buffer("fir", fir, persistent=False)

    def _magnitude(self, x: Tensor, n: int) -> Tensor:
        spec = torch.stft(
            x, n, hop_length=n // 4, win_length=n, window=getattr(self, f"window_{n}"), return_complex=True
        )
        return torch.sqrt(torch.clamp(spec.real.square() + spec.imag.square(), min=1e-8))

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        x, y = pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])
        if self.fir is not None:
            pad = self.fir.shape[-1] // 2
            x = F.conv1d(x[:, None], self.fir, padding=pad)[:, 0]
            y = F.conv1d(y[:, None], self.fir, padding=pad)[:, 0]
        total = pred.new_zeros(())
        for n in self.fft_sizes:
            xm, ym = self._magnitude(x, n), self._magnitude(y, n)
            sc = torch.linalg.vector_norm(ym - xm) / torch.linalg.vector_norm(ym)
            total = total + sc + F.l1_loss(torch.log(xm), torch.log(ym))
        return total / len(self.fft_sizes)


class StereoSTFTLoss(nn.Module):
    """Reconstruction loss for stereo: MRSTFT of (L+R) and (L−R) averaged, plus ½·MRSTFT of L and
    of R (stable-audio-tools' sum-and-difference + left/right terms).  Mono falls back to MRSTFT."""

    def __init__(
        self, fft_sizes: Sequence[int], *, sample_rate: int, perceptual_weighting: bool = True
    ) -> None:
        super().__init__()
        self.mrstft = MultiResolutionSTFTLoss(
            fft_sizes, sample_rate=sample_rate, perceptual_weighting=perceptual_weighting
        )

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape[1] != 2:
            return self.mrstft(pred, target)
        sd = 0.5 * (
            self.mrstft(pred[:, :1] + pred[:, 1:], target[:, :1] + target[:, 1:])
            + self.mrstft(pred[:, :1] - pred[:, 1:], target[:, :1] - target[:, 1:])
        )
        return (
            sd + 0.5 * self.mrstft(pred[:, :1], target[:, :1]) + 0.5 * self.mrstft(pred[:, 1:], target[:, 1:])
        )


def kl_loss(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, e^logvar) ‖ N(0, 1)) summed over latent channels, averaged over batch and time."""
    return (mean.square() + logvar.exp() - logvar - 1).sum(1).mean()


# ---- discriminator -----------------------------------------------------------------------------


class STFTDiscriminator(nn.Module):
    """One scale of EnCodec's MS-STFT discriminator: complex STFT (real ‖ imag as channels) →
    weight-normed 2-D convs over (time, frequency) with LeakyReLU(0.2) → a 1-channel logit map."""

    def __init__(self, *, in_channels: int, filters: int, n_fft: int, max_filters: int = 1024) -> None:
        super().__init__()
        wn = nn.utils.parametrizations.weight_norm
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        ch = [min(filters, max_filters)] * 4
        self.convs = nn.ModuleList([wn(nn.Conv2d(2 * in_channels, ch[0], (3, 9), padding=(1, 4)))])
        for i, d in enumerate((1, 2, 4)):
            self.convs.append(
                wn(nn.Conv2d(ch[i], ch[i + 1], (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4)))
            )
        self.convs.append(wn(nn.Conv2d(ch[-1], ch[-1], (3, 3), padding=(1, 1))))
        self.post = wn(nn.Conv2d(ch[-1], 1, (3, 3), padding=(1, 1)))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(B, C, N)`` → ``(logits (B, 1, frames, F'), feature maps)``."""
        b, c, n = x.shape
        spec = torch.stft(
            x.reshape(b * c, n),
            self.n_fft,
            self.hop,
            self.n_fft,
            window=self.window,
            normalized=True,
            center=False,
            return_complex=True,
        )  # (B·C, F, frames)
        z = torch.cat([spec.real, spec.imag], dim=0).reshape(2, b, c, *spec.shape[1:])
        z = z.permute(1, 0, 2, 4, 3).reshape(b, 2 * c, spec.shape[2], spec.shape[1])  # (B, 2C, frames, F)
        fmaps = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), 0.2)
            fmaps.append(z)
        return self.post(z), fmaps


class MultiScaleSTFTDiscriminator(nn.Module):
    """EnCodec's multi-scale STFT discriminator: one :class:`STFTDiscriminator` per FFT size."""

    def __init__(self, *, in_channels: int, filters: int, fft_sizes: Sequence[int]) -> None:
        super().__init__()
        self.scales = nn.ModuleList(
            STFTDiscriminator(in_channels=in_channels, filters=filters, n_fft=n) for n in fft_sizes
        )

    def forward(self, x: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        return [d(x) for d in self.scales]


def discriminator_hinge_loss(real: list, fake: list) -> Tensor:
    return sum(F.relu(1 - r[0]).mean() + F.relu(1 + f[0]).mean() for r, f in zip(real, fake, strict=True))


def generator_hinge_loss(fake: list) -> Tensor:
    return sum(F.relu(1 - f[0]).mean() for f in fake)


def feature_matching_loss(real: list, fake: list) -> Tensor:
    """Per scale, the mean over layers of ``mean |real − fake|`` (real detached), summed over scales."""
    return sum(
        sum(F.l1_loss(ff, fr.detach()) for fr, ff in zip(r[1], f[1], strict=True)) / len(r[1])
        for r, f in zip(real, fake, strict=True)
    )


# ---- the trainer -------------------------------------------------------------------------------


class VAETrainer:
    """Owns the generator (the VAE), its EMA copy, the discriminator, the losses and optimisers.

    :meth:`train_step` does one discriminator + one generator update on a ``(B, C, N)`` batch
    and returns the losses as floats; :meth:`state_dict` / :meth:`load_state_dict` carry
    everything a resumed run needs.  Construction seeds torch's global RNG with ``config.seed``
    (initialisation and the bottleneck noise draw from it).
    """

    def __init__(
        self, *, model_config: VAEConfig, train_config: VAETrainConfig, device: str | torch.device = "cpu"
    ):
        self.model_config, self.config, self.device = model_config, train_config, torch.device(device)
        cfg = train_config
        torch.manual_seed(cfg.seed)
        self.model = build_vae(model_config).to(self.device).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        # The spectral codec fits magnitudes directly (SpectralCodec.magnitude_loss) and has no
        # waveform to discriminate: its crops carry `lookahead` extra samples for the last frames.
        self.spectral = isinstance(self.model, SpectralCodec)
        self.lookahead = self.model.config.lookahead if self.spectral else 0
        self.disc = MultiScaleSTFTDiscriminator(
            in_channels=model_config.audio_channels, filters=cfg.disc_filters, fft_sizes=cfg.disc_fft_sizes
        ).to(self.device)
        self.recon = StereoSTFTLoss(
            cfg.fft_sizes, sample_rate=model_config.sample_rate, perceptual_weighting=cfg.perceptual_weighting
        ).to(self.device)
        self.opt_g = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        self.opt_d = torch.optim.AdamW(
            self.disc.parameters(), lr=cfg.disc_lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        self.step = 0

    @property
    def adversarial(self) -> bool:
        return not self.spectral and self.step >= self.config.disc_start_step and (
            self.config.adv_weight > 0 or self.config.fm_weight > 0
        )

    def train_step(self, batch: Tensor) -> dict[str, float]:
        cfg = self.config
        batch = batch.to(self.device)
        audio = batch[..., : batch.shape[-1] - self.lookahead]
        mean, logvar = self.model.encode_dist(audio)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        if self.spectral:
            losses = {"stft": self.model.magnitude_loss(z, batch), "kl": kl_loss(mean, logvar)}
        else:
            decoded = self.model.decode(z)
            losses = {"stft": self.recon(decoded, batch), "kl": kl_loss(mean, logvar)}
        if self.adversarial:
            real = self.disc(batch)
            d_loss = discriminator_hinge_loss(real, self.disc(decoded.detach()))
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            losses["disc_grad_norm"] = nn.utils.clip_grad_norm_(self.disc.parameters(), cfg.disc_grad_clip)
            self.opt_d.step()
            losses["disc"] = d_loss.detach()
            self.disc.requires_grad_(False)  # the generator's update needs no discriminator gradients
            fake = self.disc(decoded)
            self.disc.requires_grad_(True)
            losses["adv"] = generator_hinge_loss(fake)
            losses["fm"] = feature_matching_loss(real, fake)
        gen = cfg.stft_weight * losses["stft"] + cfg.kl_weight * losses["kl"]
        if self.adversarial:
            gen = gen + cfg.adv_weight * losses["adv"] + cfg.fm_weight * losses["fm"]
        self.opt_g.zero_grad(set_to_none=True)
        gen.backward()
        losses["grad_norm"] = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt_g.step()
        self._update_ema()
        self.step += 1
        losses["loss"] = gen
        losses["latent_std"] = mean.std()
        return {k: float(v.detach()) for k, v in losses.items()}

    def _update_ema(self) -> None:
        ema_update(self.ema, self.model, min(self.config.ema_beta, 1.0 - (1.0 + self.step) ** -self.config.ema_power))

    # ---- checkpoints ---------------------------------------------------------------------------

    def state_dict(self, rng: np.random.Generator) -> dict[str, Any]:
        return {
            "step": self.step,
            "generator": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "discriminator": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(rng.bit_generator.state),
        }

    def load_state_dict(self, state: dict[str, Any], rng: np.random.Generator) -> None:
        load_vae_state_dict(self.model, state["generator"], source=f"{STATE_FILE} (generator)")
        load_vae_state_dict(self.ema, state["ema"], source=f"{STATE_FILE} (ema)")
        self.disc.load_state_dict(state["discriminator"], strict=True)
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        self.step = int(state["step"])


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema ← decay · ema + (1 − decay) · model`` for every parameter; buffers copied (the one EMA
    of both trainers: this codec's and the generator's, model/training/trainer.py)."""
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


# ---- the run -----------------------------------------------------------------------------------


def monitor_ceiling(model: nn.Module, clips: Sequence[tuple]) -> dict:
    """Put held-out ``clips`` — ``(reference (2, N), events, quiet spans)`` each, e.g. world clips of
    seeds no training corpus holds — through ``model`` (encode the mean, decode) and return the
    ceiling figures averaged over them: F1 at ±50 ms, pan accuracy, quiet-stretch contrast (and the
    ground truth's), MR-STFT and log-mel distances — a collapse shows within minutes."""
    from audio.codec import roundtrip
    from audio.metrics import aggregate, evaluate_clip

    results = []
    was_training = model.training
    model.eval()
    try:
        for reference, events, quiet in clips:
            results.append(evaluate_clip(roundtrip(model, reference), reference, events, quiet_spans=quiet))
    finally:
        model.train(was_training)
    agg = aggregate(results)
    keys = ("f1", "pan_accuracy", "quiet_contrast_db", "ref_quiet_contrast_db", "mrstft", "logmel_l1_db")
    return {k: agg.get(k) for k in keys}


def read_run_config(run_dir: str | Path) -> tuple[VAEConfig, VAETrainConfig, dict[str, Any]]:
    """``(model config, training config, run info {"data": …})`` from a run folder's config.json."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise TrainError(f"{run_dir} is not a VAE training run (no config.json); start one without --resume")
    data = json.loads(path.read_text())
    training = dict(data.get("training", {}))
    run = training.pop("run", {})
    return VAEConfig.from_dict(data, source=str(path)), VAETrainConfig.from_dict(training), run


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _save(trainer: VAETrainer, out: Path, rng: np.random.Generator, run: dict[str, Any]) -> None:
    training = {**trainer.config.to_dict(), "run": {**run, "step": trainer.step}}
    save_vae(trainer.ema, out, extra_config={"training": training})
    _atomic_torch_save(trainer.state_dict(rng), out / STATE_FILE)
    log.info("saved step %d to %s", trainer.step, out)


def train_vae(
    *,
    data: str | Path,
    out: str | Path,
    model_config: VAEConfig,
    train_config: VAETrainConfig,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = True,
    held_out: Sequence[tuple] = (),
) -> dict[str, Any]:
    """Train (or, with ``resume``, continue) a VAE run in ``out``; returns a summary dict.

    ``held_out``: clips for the ceiling check every ``monitor_every`` steps (see
    :func:`monitor_ceiling`; ``livefoley train vae`` passes held-out world clips); none: no check.

    Without ``resume`` the run folder must not hold a run yet; with it, the folder's model config
    must equal ``model_config`` and training continues from the saved step up to
    ``train_config.steps``.
    """
    out = Path(out)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if resume:
        saved_model, _, _ = read_run_config(out)
        if saved_model != model_config:
            raise TrainError(
                f"{out} was trained with a different model config ({saved_model}); "
                "resume without --preset/--config"
            )
        if not (out / STATE_FILE).is_file():
            raise TrainError(f"{out} has no {STATE_FILE} to resume from")
    elif (out / STATE_FILE).exists() or (out / "config.json").exists():
        raise UsageError(
            f"{out} already holds a training run; pass --resume to continue it or choose another --out"
        )
    crop = train_config.crop_samples(model_config.hop, model_config.sample_rate)
    spectral = not isinstance(model_config, VAEConfig)
    longest = 0 if spectral else max(
        train_config.fft_sizes
        + (train_config.disc_fft_sizes if train_config.adv_weight or train_config.fm_weight else ())
    )
    if crop < longest:
        raise TrainError(
            f"crops of {crop} samples are shorter than the largest FFT ({longest}); use longer --crop-seconds"
        )
    trainer = VAETrainer(model_config=model_config, train_config=train_config, device=device)
    dataset = CropDataset(
        data, crop_samples=crop + trainer.lookahead, sample_rate=model_config.sample_rate,
        channels=model_config.audio_channels,
    )
    rng = np.random.default_rng(train_config.seed)
    if resume:
        try:
            state = read_torch_file(out / STATE_FILE, what="training state", device=trainer.device)
        except CheckpointFileError as err:
            raise TrainError(f"{err}; or start a new run without --resume") from None
        trainer.load_state_dict(state, rng)
        log.info("resuming %s at step %d", out, trainer.step)
    out.mkdir(parents=True, exist_ok=True)
    run = {"data": str(Path(data).resolve()), "device": str(trainer.device), "crop_samples": crop}
    n_params = trainer.model.num_parameters()["total"]
    log.info("training VAE (%d parameters) on %s for %d steps", n_params, trainer.device, train_config.steps)

    from tqdm import tqdm

    bar = tqdm(
        total=train_config.steps, initial=trainer.step, disable=not progress, unit="step", dynamic_ncols=True
    )
    last: dict[str, float] = {}
    started = time.monotonic()
    with open(out / LOG_FILE, "a" if resume else "w") as log_file:
        while trainer.step < train_config.steps:
            last = trainer.train_step(dataset.sample(train_config.batch_size, rng))
            bar.update(1)
            if not all(math.isfinite(v) for v in last.values()):
                _save(trainer, out, rng, run)
                raise TrainError(
                    f"training diverged at step {trainer.step} (losses {last}); lower --lr and --resume"
                )
            if trainer.step % train_config.log_every == 0 or trainer.step == train_config.steps:
                record = {"step": trainer.step, "time": round(time.monotonic() - started, 3), **last}
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                bar.set_postfix({k: f"{last[k]:.3g}" for k in ("loss", "stft", "adv", "fm") if k in last})
                log.info("step %d %s", trainer.step, " ".join(f"{k}={v:.4g}" for k, v in last.items()))
            if held_out and train_config.monitor_every and trainer.step % train_config.monitor_every == 0:
                check = monitor_ceiling(trainer.ema, held_out)
                with open(out / MONITOR_FILE, "a") as monitor_file:
                    monitor_file.write(json.dumps({"step": trainer.step, "time": round(time.monotonic() - started, 3),
                                                   **check}) + "\n")
                log.info("step %d held-out ceiling: %s", trainer.step,
                         " ".join(f"{k}={v:.3g}" for k, v in check.items() if isinstance(v, float)))
            if trainer.step % train_config.save_every == 0 and trainer.step < train_config.steps:
                _save(trainer, out, rng, run)
    bar.close()
    _save(trainer, out, rng, run)
    return {
        "run_dir": str(out),
        "step": trainer.step,
        "parameters": n_params,
        "data_seconds": dataset.seconds,
        "last": last,
    }
