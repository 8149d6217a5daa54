"""``livefoley prepare``: cache DINOv2 grids and VAE latents of a folder of gameplay videos."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from plugin.options import add_dinov2_weights, folder_dest, json_dest, write_json

HELP = "cache vision features and audio latents of a folder of videos for training"
DESCRIPTION = """\
Walk DATA for videos (mp4, mkv, mov, webm, avi; any frame rate, resolution and audio layout),
resample the picture to 30 fps and the sound to 48 kHz stereo, and store per frame the pooled
DINOv2 patch grid (float16) and the VAE latent (posterior mean) in shards under OUT.  Resumable:
files already done are skipped, a half-written shard is never trusted.  Files are split into
train / validation by file.  Files without an audio track or that cannot be decoded are skipped
with the reason in the summary.

examples:
  livefoley prepare --data recordings/ --out cache/ --vae runs/vae_tiny
  livefoley synth --out world/ --minutes 30 && livefoley prepare --data world/ --out cache/
  livefoley prepare --data world/ --out cache_v2/ --vae runs/codec_v2 --grids-from cache/   # new codec"""


def register(subparsers) -> None:
    p = subparsers.add_parser("prepare", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="DIR", help="folder of videos with sound (searched recursively)")
    p.add_argument("--out", type=folder_dest, required=True, metavar="CACHE_DIR",
                   help="cache folder (created; rerun to resume)")
    p.add_argument("--model-config", default="tiny", metavar="PRESET|FOLDER",
                   help="model preset (tiny, base) or a model folder whose vision/VAE config to use (default tiny)")
    p.add_argument("--vae", metavar="RUN_DIR|FILE",
                   help="trained VAE weights (a `livefoley train vae` run folder or .safetensors/.ckpt); "
                        "default: the one an existing --out cache was made with, else the model folder's "
                        "vae.safetensors, else the preset's untrained VAE (tests only)")
    p.add_argument("--audio", metavar="DIR", type=Path,
                   help="take each video's sound from DIR/<name>.flac|.wav when it exists (the exact sound "
                        "`livefoley synth --audio-out DIR` writes) instead of its lossy audio track")
    p.add_argument("--grids-from", metavar="CACHE_DIR", type=Path,
                   help="another cache of the same videos (same vision config): each video it holds unchanged "
                        "takes its DINOv2 grids from there, so only the sound is encoded — a cache for a new "
                        "codec (--vae) in a fraction of the time")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of files held out (default 0.1)")
    p.add_argument("--batch-size", type=int, default=32, help="frames per DINOv2 batch (default 32)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    add_dinov2_weights(p)
    p.add_argument("--json", nargs="?", const="-", type=json_dest, metavar="FILE",
                   help="summary as JSON (stdout or FILE)")
    p.set_defaults(func=run)


def resolve_model_config(spec: str):
    """A preset name or a model folder → GeneratorConfig (+ the folder's vae.safetensors if any)."""
    from pathlib import Path

    from audio.errors import UsageError
    from model.config import MODEL_PRESETS, GeneratorConfig, model_preset

    if spec in MODEL_PRESETS:
        return model_preset(spec), None
    folder = Path(spec)
    if not (folder / "config.json").exists():
        raise UsageError(f"--model-config {spec!r} is neither a preset ({', '.join(MODEL_PRESETS)}) "
                         "nor a model folder with config.json")
    vae = folder / "vae.safetensors"
    return GeneratorConfig.from_dict(json.loads((folder / "config.json").read_text())), (vae if vae.exists() else None)


def load_cache_vae(config, vae_arg: str | None, folder_vae):
    """The VAE whose latents are cached: a run folder, a weights file, the model folder's, or the preset's."""
    from pathlib import Path

    from audio.vae import load_vae

    if vae_arg and Path(vae_arg).is_dir():
        return load_vae(vae_arg)
    return load_vae(config.vae, vae_arg or folder_vae)


def run(args: argparse.Namespace) -> int:
    import contextlib
    import logging
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from audio.errors import LivefoleyError
    from capture.file import probe_video
    from model.generator import resolve_device, with_vision_overrides
    from model.training.cache import find_videos, prepare
    from model.vision import FrameTokenizer

    config, folder_vae = resolve_model_config(args.model_config)
    config = with_vision_overrides(config, dinov2_weights=args.dinov2_weights)
    device = resolve_device(args.device)
    cache_vae = Path(args.out) / "vae.safetensors"
    if args.vae is None and cache_vae.is_file():  # a cache continues with the VAE it was made with
        args.vae = str(cache_vae)
    if args.vae is None and folder_vae is None:
        logging.getLogger("livefoley").warning(
            "no --vae given: latents come from the preset's untrained VAE (random weights) (fine for tests, "
            "useless for a real model; train one with `livefoley train vae`)")
    vae = load_cache_vae(config, args.vae, folder_vae).to(device).eval()
    tokenizer = FrameTokenizer(config.vision).to(device).eval()
    total = 0
    for path in find_videos(Path(args.data)):
        with contextlib.suppress(LivefoleyError):  # reported per file by prepare() itself
            total += probe_video(path).n_frames_30fps
    with tqdm(total=total, unit="frame", file=sys.stderr, dynamic_ncols=True) as bar, torch.inference_mode():
        summary = prepare(args.data, args.out, tokenizer=tokenizer, vae=vae, val_fraction=args.val_fraction,
                          audio_dir=args.audio, grids_from=args.grids_from,
                          batch_size=args.batch_size, device=device, progress=bar.update)
    report = summary.to_dict()
    if args.json and write_json(report, args.json):
        return 0
    print(f"prepared {report['prepared_files']} file(s), {report['prepared_hours'] * 60:.1f} min of video "
          f"({report['reused_files']} already done"
          + (f", {report['grids_reused_files']} with grids from {args.grids_from}" if args.grids_from else "")
          + f") in {report['wall_seconds']:.1f} s"
          + (f" — {report['realtime_factor']:.2f}× real time" if report["realtime_factor"] else ""))
    if report["bytes_per_hour"]:
        print(f"cache cost: {report['bytes_per_hour'] / 1e9:.2f} GB per hour of video")
    for rel, why in report["skipped"].items():
        print(f"skipped {rel}: {why}")
    return 0
