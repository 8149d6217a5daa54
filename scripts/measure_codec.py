#!/usr/bin/env python3
"""Side by side on held-out world clips: codecs' reconstructions against the ground truth and
against a baseline that learns nothing (issue 1/6's yardstick).

    python scripts/measure_codec.py runs/default/codec [more codec folders …] --seeds 100 101 --seconds 20

The baseline ("band noise"): 32 log-spaced band energies per channel per 1600-sample frame — 64
numbers, the latent's size — resynthesised as band-shaped noise (random phase, the band's RMS
magnitude in every bin, 800/200 Hann overlap-add).

The floor ("same world, other noise"): the same clip synthesised again with every Gaussian noise
sample (gun, explosion, clicks, whoosh, ambience) drawn afresh and everything else — events,
pitches, tones' phases, envelopes — identical.  A codec that does not carry the noise's sample
values, however perfect otherwise, lands about there: MR-STFT's per-bin log-magnitude term between
two draws of the same noise is ~0.7 at every resolution.  Every row is measured in this one run with
``audio.metrics.evaluate_clip`` (F1 at ±50 ms, pan, quiet-stretch contrast, MR-STFT, log-mel L1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audio.contract import CONTRACT  # noqa: E402
from audio.metrics import aggregate, evaluate_clip  # noqa: E402

N_FFT, SUB = 800, 200


def band_noise(x: np.ndarray, bands: int = 32, seed: int = 0) -> np.ndarray:
    """The learn-nothing baseline: (2, N) → band-shaped noise with the same per-frame band energies."""
    c, n = x.shape
    win = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64)
    frames = torch.nn.functional.pad(torch.from_numpy(x).double(), (0, N_FFT - SUB)).unfold(-1, N_FFT, SUB)
    power = torch.fft.rfft(frames * win, dim=-1).abs() ** 2  # (C, K, F)
    k, f = power.shape[1:]
    per = CONTRACT.hop // SUB
    freqs = torch.arange(f, dtype=torch.float64) * CONTRACT.sample_rate / N_FFT
    edges = torch.logspace(np.log10(40.0), np.log10(CONTRACT.sample_rate / 2), bands + 1, dtype=torch.float64)
    band = torch.bucketize(freqs, edges[1:-1])
    count = torch.zeros(bands, dtype=torch.float64).index_add_(0, band, torch.ones(f, dtype=torch.float64))
    frame_power = power.reshape(c, k // per, per, f).mean(2)
    energy = torch.zeros(c, k // per, bands, dtype=torch.float64).index_add_(2, band, frame_power)
    energy = energy / count.clamp(min=1)  # the 2 × 32 numbers per frame
    mag = energy[..., band].sqrt().repeat_interleave(per, 1)
    phase = torch.rand(c, k, f, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 * np.pi
    y = torch.fft.irfft(mag * torch.exp(1j * phase), n=N_FFT, dim=-1) * win
    out = torch.zeros(c, n + N_FFT, dtype=torch.float64)
    for j in range(N_FFT // SUB):
        out[:, j * SUB : j * SUB + n] += y[:, :, j * SUB : (j + 1) * SUB].reshape(c, -1)
    norm = (win**2).reshape(N_FFT // SUB, SUB).sum(0).repeat(k)
    return (out[:, :n] / norm).float().numpy()


FLOOR = "same world, other noise (floor)"
KEYS = ("f1", "pan_accuracy", "quiet_contrast_db", "mrstft", "logmel_l1_db")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("codecs", nargs="*", help="codec folders (config.json + model.safetensors) or presets")
    p.add_argument("--seeds", type=int, nargs="+", default=[100, 101], help="world seeds (default 100 101)")
    p.add_argument("--seconds", type=float, default=20.0, help="clip length (default 20)")
    p.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = p.parse_args()
    from audio.codec import roundtrip
    from audio.vae import load_vae
    from capture.synthetic import world_audio

    n_frames = round(args.seconds * CONTRACT.fps)
    clips = [world_audio(s, n_frames) for s in args.seeds]
    redrawn = [world_audio(s, n_frames, noise_seed=10_000 + s)[0] for s in args.seeds]
    rows: dict[str, list] = {"ground truth": [], "band-noise baseline": [], FLOOR: []}
    timing: dict[str, float] = {}
    for (ref, events, quiet), other in zip(clips, redrawn, strict=True):
        rows["ground truth"].append(evaluate_clip(ref, ref, events, quiet_spans=quiet))
        rows["band-noise baseline"].append(evaluate_clip(band_noise(ref), ref, events, quiet_spans=quiet))
        rows[FLOOR].append(evaluate_clip(other, ref, events, quiet_spans=quiet))
    for spec in args.codecs:
        vae = load_vae(spec)
        t = time.perf_counter()
        rows[spec] = [evaluate_clip(roundtrip(vae, ref), ref, ev, quiet_spans=q) for ref, ev, q in clips]
        timing[spec] = time.perf_counter() - t
    out = {name: {k: aggregate(r)[k] for k in KEYS} for name, r in rows.items()}
    print(f"{'row':40s} " + " ".join(f"{k:>18s}" for k in KEYS))
    for name, vals in out.items():
        print(f"{name[-40:]:40s} " + " ".join(f"{'—' if v is None else f'{v:.3f}':>18s}" for v in vals.values()))
    base, floor = out["band-noise baseline"], out[FLOOR]
    for spec in [FLOOR, *args.codecs]:
        row = out[spec]
        print(f"{spec}: MR-STFT {100 * (1 - row['mrstft'] / base['mrstft']):.0f} % and log-mel "
              f"{100 * (1 - row['logmel_l1_db'] / base['logmel_l1_db']):.0f} % below the baseline", end="")
        if spec != FLOOR:
            gap = (base["mrstft"] - row["mrstft"]) / (base["mrstft"] - floor["mrstft"])
            print(f"; {100 * gap:.0f} % of the way from the baseline's MR-STFT to the floor's; "
                  f"round trip {timing[spec]:.1f} s for {len(clips) * args.seconds:.0f} s of audio", end="")
        print()
    if args.json:
        args.json.write_text(json.dumps({"seeds": args.seeds, "seconds": args.seconds, "rows": out}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
