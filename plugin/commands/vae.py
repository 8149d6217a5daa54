"""``livefoley vae``: the audio VAE on its own - reconstruct a file through it, show its figures."""

from __future__ import annotations

import argparse
import json
import time

HELP = "the audio VAE: reconstruct a file through it (encode → decode), show its size"
DESCRIPTION = """\
The causal 48 kHz stereo VAE turns every 1600 samples (one 30-fps video frame) into one 64-d latent
and back.  Models: --preset tiny (CPU real time; train it with `livefoley train vae`) or
--preset sr-causal with Sony's checkpoint (--weights sr_causal_ds_1600_dim_64.ckpt), or --config with
a stable-audio-tools JSON or a model/run folder (config.json + model.safetensors).

examples:
  livefoley vae reconstruct voice.flac -o voice_vae.wav \\
      --preset sr-causal --weights sr_causal_ds_1600_dim_64.ckpt
  livefoley vae reconstruct clip.mp4 -o clip_audio.wav --config runs/vae_tiny
  livefoley vae info --preset sr-causal --json"""


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", help="VAE preset: tiny (default) or sr-causal")
    g.add_argument(
        "--config",
        metavar="PATH",
        help="a stable-audio-tools JSON config, or a model/run folder with config.json",
    )
    p.add_argument(
        "--weights", metavar="FILE", help=".safetensors or Sony's .ckpt (default: the folder's weights)"
    )
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, auto); default cpu")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "vae", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(title="actions", dest="vae_action", metavar="ACTION")
    r = sub.add_parser(
        "reconstruct",
        help="encode an audio file (or a video's sound) and decode it again into a wav/flac",
        description="Read INPUT (wav, flac, mp3, or the audio track of a video), resample to 48 kHz stereo, "
        "run it through the VAE in streaming chunks (identical to offline), and write OUTPUT (.wav/.flac) "
        "with the input's length.  Nothing is written if the input cannot be read.",
    )
    r.add_argument("input", help="audio file or video with sound")
    r.add_argument("-o", "--output", required=True, help="output .wav or .flac")
    _model_args(r)
    r.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists (never the input)")
    r.add_argument("--chunk-seconds", type=float, default=10.0, help="streaming chunk length (memory bound)")
    r.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="run even without trained weights (the output is then noise; for smoke tests only)",
    )
    r.add_argument("--json", action="store_true", help="print the figures as JSON")
    i = sub.add_parser("info", help="config, hop and parameter counts of a VAE")
    _model_args(i)
    i.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run, vae_parser=p)


def run(args: argparse.Namespace) -> int:
    if args.vae_action == "reconstruct":
        return _reconstruct(args)
    if args.vae_action == "info":
        return _info(args)
    args.vae_parser.print_help()
    return 2


def _load(args: argparse.Namespace, *, need_weights: bool):
    from pathlib import Path

    import torch

    from audio.errors import UsageError
    from audio.vae import load_vae

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    config = args.config or args.preset or "tiny"
    has_weights = args.weights is not None or (args.config is not None and Path(args.config).is_dir())
    if need_weights and not has_weights:
        raise UsageError(
            "reconstructing needs trained weights: pass --weights FILE (e.g. --preset sr-causal --weights "
            "sr_causal_ds_1600_dim_64.ckpt), or --config RUN_DIR from `livefoley train vae`; "
            "--allow-random-weights runs an untrained model"
        )
    return load_vae(config, args.weights, device=device), config


def _reconstruct(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    import torch

    from audio.errors import UsageError
    from audio.io import WRITE_FORMATS, read_audio, write_audio
    from audio.vae import pad_to_hop
    from plugin.options import check_output

    out = Path(args.output)
    if out.suffix.lower() not in WRITE_FORMATS:
        raise UsageError(
            f"{out}: cannot write {out.suffix or 'files without extension'}; use .wav or .flac"
        )
    check_output(out, inputs=[args.input], overwrite=args.overwrite)
    vae, config = _load(args, need_weights=not args.allow_random_weights)
    wav = read_audio(args.input, sample_rate=vae.sample_rate, channels=vae.audio_channels)
    n = wav.shape[1]
    device = next(vae.parameters()).device
    x = pad_to_hop(torch.from_numpy(wav)[None], vae.hop).to(device)
    step = max(1, round(args.chunk_seconds * vae.sample_rate / vae.hop)) * vae.hop
    started = time.perf_counter()
    parts = []
    with torch.inference_mode(), vae.streaming(1):  # chunked streaming == offline, memory stays bounded
        for i in range(0, x.shape[-1], step):
            parts.append(vae.decode(vae.encode(x[..., i : i + step]))[0].float().cpu())
    seconds = time.perf_counter() - started
    y = torch.cat(parts, dim=-1)[:, :n].numpy()
    write_audio(out, y, vae.sample_rate)
    noise = float(np.mean((y - wav) ** 2))
    figures = {
        "input": str(args.input),
        "output": str(out),
        "model": str(config),
        "weights": str(args.weights) if args.weights else None,
        "duration_s": round(n / vae.sample_rate, 4),
        "latent_frames": int(x.shape[-1] // vae.hop),
        "compute_s": round(seconds, 4),
        "realtime_factor": round((n / vae.sample_rate) / max(seconds, 1e-9), 2),
        "snr_db": round(10 * float(np.log10(max(float(np.mean(wav**2)), 1e-12) / max(noise, 1e-12))), 2),
        "peak_in": round(float(np.abs(wav).max()), 4),
        "peak_out": round(float(np.abs(y).max()), 4),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(
            f"wrote {out}: {figures['duration_s']} s ({figures['latent_frames']} latents) "
            f"in {figures['compute_s']} s ({figures['realtime_factor']}× real time), "
            f"SNR {figures['snr_db']} dB"
        )
    return 0


def _info(args: argparse.Namespace) -> int:
    vae, config = _load(args, need_weights=False)
    cfg = vae.config
    counts = vae.num_parameters()
    figures = {
        "model": str(config),
        "weights": str(args.weights) if args.weights else None,
        "channels": cfg.channels,
        "c_mults": list(cfg.c_mults),
        "strides": list(cfg.strides),
        "latent_dim": cfg.latent_dim,
        "audio_channels": cfg.audio_channels,
        "sample_rate": cfg.sample_rate,
        "hop": cfg.hop,
        "latent_rate_hz": cfg.sample_rate / cfg.hop,
        "params_encoder": counts["encoder"],
        "params_decoder": counts["decoder"],
        "params_total": counts["total"],
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for k, v in figures.items():
            print(f"{k:>16}: {v:,}" if isinstance(v, int) else f"{k:>16}: {v}")
    return 0
