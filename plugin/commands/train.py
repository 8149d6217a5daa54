"""``livefoley train MODEL``: training runs, one sub-command per trainable model.

Each trainer is a pair of functions in :data:`TRAINERS`: ``register(sub)`` adds the sub-command's
parser to ``sub`` (the ``train`` sub-parsers), ``run(args) -> int`` runs it.  Adding a trainer
(e.g. ``stage1``, ``ect``) is one more entry there; the ``train`` command dispatches by name.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from plugin.options import count, folder_dest


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=count(1), metavar="N",
                   help="CPU threads for torch (default: one per core that is idle when training starts; "
                        "under torchrun or with OMP_NUM_THREADS set, that setting). A thread on a core "
                        "another process keeps busy makes every step wait for it (measured: 3.2 → 0.25 "
                        "steps/s on 2 cores)")


def _set_threads(requested: int | None) -> None:
    """Torch's CPU threads for a training run: ``requested``, else one per idle core (all of them on a
    quiet machine) unless the environment already decided (torchrun, OMP_NUM_THREADS)."""
    import logging
    import os

    import torch

    from audio.measure import choose_threads, usable_cores

    if requested is None and ("OMP_NUM_THREADS" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        return
    cores = len(usable_cores())
    n = choose_threads(requested, most=cores)
    torch.set_num_threads(n)
    logging.getLogger(__name__).info("training on %d CPU thread(s)%s", n,
                                     "" if requested else f" ({n} of {cores} cores idle)")

HELD_OUT_SEEDS = (100, 101)
"""World seeds of the clips the codec's ceiling is checked on while it trains (never in a corpus made
with the recipe's `synth` seeds; also the first two seeds of the README's evaluation)."""

HELP = "train the VAE, then the generator: stage1 (diffusion) and ect (consistency tuning)"


# ---- train vae ---------------------------------------------------------------------------------

_VAE_DESCRIPTION = """\
Train the causal audio VAE on a folder of audio files and/or videos with sound (read recursively,
resampled to 48 kHz stereo).  Two kinds of codec:

  --preset spectral   the codec that trains on a CPU (the shipped default uses it): learned
                      log-magnitude spectrogram coding at the frame rate + causal phase-vocoder
                      synthesis; magnitude, band-energy and KL losses; ~0.1 s a step on 2 cores,
                      useful after ~1000 steps.  Give it exact sound: AAC-coded audio lacks the top
                      octave (`livefoley synth --audio-out DIR` writes the world's exact sound).
  --preset tiny / sr-causal (Oobleck, Sony's architecture): multi-resolution STFT + multi-scale
                      STFT discriminator (adversarial and feature matching) + KL; needs a GPU and
                      10^5-10^6 steps.

Both: AdamW, EMA, gradient clipping, and every --train-config monitor_every steps a check of the
EMA weights on held-out world clips (F1, pan, quiet contrast, MR-STFT, log-mel in monitor.jsonl), so a
collapse shows within minutes.  RUN_DIR receives config.json (model +
fully resolved training settings), model.safetensors (EMA weights; `livefoley vae reconstruct
--config RUN_DIR` and `audio.vae.load_vae(RUN_DIR)` read them), train_state.pt (for --resume) and
log.jsonl (losses).

examples:
  livefoley synth --out world/ --audio-out world_audio/ --minutes 40 --size 320x180
  livefoley train vae --data world_audio/ --preset spectral --out runs/codec --steps 8000 \
      --batch-size 16 --crop-seconds 0.5 --lr 3e-4
  livefoley train vae --data sounds/ --preset tiny --out runs/vae_tiny --steps 20000
  livefoley train vae --out runs/vae_tiny --resume --steps 40000      # continue to 40k steps"""

# flag name → VAETrainConfig field, for the settings that have their own flag
_VAE_FLAGS = {
    "steps": "steps",
    "batch_size": "batch_size",
    "lr": "lr",
    "crop_seconds": "crop_seconds",
    "save_every": "save_every",
    "log_every": "log_every",
    "seed": "seed",
    "disc_filters": "disc_filters",
}


def _register_vae(sub) -> None:
    p = sub.add_parser(
        "vae",
        help="the causal audio VAE (tiny preset for CPU real time)",
        description=_VAE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data", metavar="DIR", help="folder of audio files / videos (default on --resume: the run's)"
    )
    p.add_argument("--out", type=folder_dest, metavar="RUN_DIR", required=True, help="run folder (created)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", help="VAE preset (spectral, tiny, sr-causal); default tiny")
    g.add_argument("--config", metavar="JSON", help="stable-audio-tools style VAE config instead of a preset")
    p.add_argument(
        "--train-config",
        metavar="JSON",
        help="JSON object with training settings (any VAETrainConfig field, e.g. fft_sizes, disc_filters)",
    )
    p.add_argument("--steps", type=int, help="total optimisation steps (default 100000)")
    p.add_argument("--batch-size", type=int, help="crops per step (default 8)")
    p.add_argument("--lr", type=float, help="generator learning rate (default 1.5e-4)")
    p.add_argument("--crop-seconds", type=float, help="crop length, rounded to whole frames (default 1.0)")
    p.add_argument("--save-every", type=int, help="checkpoint interval in steps (default 1000)")
    p.add_argument("--log-every", type=int, help="log interval in steps (default 20)")
    p.add_argument("--seed", type=int, help="seed for init, crops and noise (default 0)")
    p.add_argument(
        "--disc-filters",
        type=int,
        help="discriminator width (default 64, Sony's); it dominates the cost of a step: on a CPU, 16 "
        "makes steps ~6x faster",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    _add_threads(p)
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")


def _run_vae(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from audio.contract import CONTRACT
    from audio.errors import LivefoleyError, UsageError
    from audio.vae import VAEConfig, get_preset
    from audio.vae_train import VAETrainConfig, read_run_config, train_vae

    overrides: dict = {}
    if args.train_config:
        try:
            overrides = json.loads(Path(args.train_config).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise LivefoleyError(
                f"--train-config {args.train_config}: not a readable JSON file ({err})"
            ) from None
        if not isinstance(overrides, dict):
            raise LivefoleyError(f"--train-config {args.train_config}: expected a JSON object of settings")
    overrides |= {
        field: getattr(args, flag) for flag, field in _VAE_FLAGS.items() if getattr(args, flag) is not None
    }

    chosen = (
        VAEConfig.from_json(args.config) if args.config else get_preset(args.preset) if args.preset else None
    )
    if args.resume:
        saved_model, saved_train, run = read_run_config(args.out)
        model_config = chosen or saved_model
        base = saved_train.to_dict()
        data = args.data or run.get("data")
        if not data:
            raise LivefoleyError(f"{args.out} does not record its data folder; pass --data")
    else:
        if not args.data:
            raise UsageError("--data DIR is required for a new run (a folder of audio files or videos)")
        model_config = chosen or get_preset("tiny")
        base, data = {}, args.data
    train_config = VAETrainConfig.from_dict({**base, **overrides})
    held_out = []
    if train_config.monitor_every:  # the world clips of seeds no `synth` corpus of the recipe holds
        from capture.synthetic.world import world_audio

        n_frames = max(2, round(train_config.monitor_seconds * CONTRACT.fps))
        held_out = [world_audio(seed, n_frames) for seed in HELD_OUT_SEEDS]
    _set_threads(args.threads)
    summary = train_vae(
        data=data,
        out=args.out,
        model_config=model_config,
        train_config=train_config,
        resume=args.resume,
        device=args.device,
        progress=not args.no_progress,
        held_out=held_out,
    )
    summary["train_config"] = dataclasses.asdict(train_config)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        last = " ".join(
            f"{k}={v:.4g}" for k, v in summary["last"].items() if k in ("loss", "stft", "kl", "adv", "fm")
        )
        print(f"trained {summary['run_dir']} to step {summary['step']}: {last}")
    return 0


# ---- train stage1 / ect ------------------------------------------------------------------------

_STAGE_DESCRIPTIONS = {
    "stage1": """\
Stage 1: train the generator (vision aggregator + causal transformer + diffusion head, jointly) with
the EDM2 loss on a feature cache made by `livefoley prepare`.  Latent statistics are measured on the
cache and stored with the weights.  RUN_DIR becomes a model folder (config.json, model.safetensors
with the EMA weights, vae.safetensors) plus train.json (the fully resolved settings), log.jsonl,
samples/step_*.wav, checkpoints/step_*/ and state/ (for --resume).  Under
`torchrun --nproc_per_node N` the same command trains with DistributedDataParallel.

examples:
  livefoley train stage1 --cache cache/ --out runs/stage1 --steps 20000
  torchrun --nproc_per_node 4 -m plugin.cli train stage1 --cache cache/ --out runs/stage1
  livefoley train stage1 --cache cache/ --out runs/stage1 --resume --steps 40000""",
    "ect": """\
Stage 2: Easy Consistency Tuning of a stage-1 run (head and transformer together), so that the head
samples in 1, 2 or 4 steps.  The result in RUN_DIR is the model folder every command accepts
(`livefoley live --model RUN_DIR`, `generate`, `bench`, `eval`).

examples:
  livefoley train ect --init runs/stage1 --cache cache/ --out runs/ect --steps 10000
  livefoley train ect --out runs/ect --resume --steps 20000""",
}

# flag → TrainConfig field
_STAGE_FLAGS = ("steps", "batch_size", "lr", "warmup", "grad_clip", "ema_decay", "val_every", "sample_every",
                "ckpt_every", "log_every", "seed", "ect_stage_interval", "mirror")


def _register_stage(name: str):
    def register_stage(sub) -> None:
        p = sub.add_parser(name, help="the generator, " + ("diffusion stage" if name == "stage1" else
                                                          "consistency tuning (after stage1)"),
                           description=_STAGE_DESCRIPTIONS[name], formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--cache", metavar="CACHE_DIR",
                       help="feature cache from `livefoley prepare` (default on --resume: the run's)")
        p.add_argument("--out", type=folder_dest, metavar="RUN_DIR", required=True, help="run folder (created)")
        if name == "ect":
            p.add_argument("--init", metavar="STAGE1_RUN", help="the stage-1 run folder to start from")
        else:
            p.add_argument("--model-config", default="tiny", metavar="PRESET|FOLDER",
                           help="model preset (tiny, base) or a model folder's config (default tiny)")
        p.add_argument("--steps", type=int, help="total optimisation steps (default 10000)")
        p.add_argument("--batch-size", type=int, help="global batch of clips (split across ranks; default 16)")
        p.add_argument("--window-seconds", type=float, help="clip length in seconds (default 8)")
        p.add_argument("--lr", type=float, help="peak AdamW learning rate (default 3e-4)")
        p.add_argument("--warmup", type=int, help="linear warm-up steps, then cosine decay (default 500)")
        p.add_argument("--grad-clip", type=float, help="gradient-norm clip (default 1.0)")
        p.add_argument("--ema-decay", type=float, help="EMA decay of the exported weights (default 0.999)")
        p.add_argument("--val-every", type=int, help="validation interval in steps (default 500)")
        p.add_argument("--sample-every", type=int, help="audio sample interval in steps (default 1000)")
        p.add_argument("--ckpt-every", type=int, help="checkpoint interval in steps (default 1000)")
        p.add_argument("--log-every", type=int, help="log interval in steps (default 10)")
        p.add_argument("--seed", type=int, help="seed for batches and noise (default 0)")
        p.add_argument("--mirror", type=float, metavar="P",
                       help="share of windows seen mirrored: picture flipped left-right, sound's channels "
                            "swapped, so the model must place sounds by where events are (default 0.5)")
        if name == "ect":
            p.add_argument("--ect-stage-interval", type=int,
                           help="steps per ECT stage: t − r halves each (default 2000)")
        p.add_argument("--device", default="auto", help="cpu, cuda or auto (default; torchrun picks cuda:LOCAL_RANK)")
        _add_threads(p)
        p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("--json", action="store_true", help="print a JSON summary at the end")

    return register_stage


def _run_stage(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from audio.contract import CONTRACT
    from audio.errors import LivefoleyError, UsageError
    from model.config import GeneratorConfig
    from model.training.trainer import TrainConfig, train
    from plugin.commands.prepare import resolve_model_config

    stage = "diffusion" if args.train_model == "stage1" else "consistency"
    out = Path(args.out)
    base: dict = {"stage": stage}
    saved: dict = {}
    if args.resume:
        if not (out / "train.json").exists():
            raise LivefoleyError(f"--resume: {out} has no train.json; start a new run without --resume")
        saved = json.loads((out / "train.json").read_text())
        base = saved["train"]
    overrides = {f: getattr(args, f) for f in _STAGE_FLAGS if getattr(args, f, None) is not None}
    if args.window_seconds is not None:
        overrides["window_frames"] = max(1, round(args.window_seconds * CONTRACT.fps))
    tc = TrainConfig(**{**base, **overrides, "stage": stage})
    cache = args.cache or saved.get("cache")
    if not cache:
        raise UsageError("--cache CACHE_DIR is required (a folder made by `livefoley prepare`)")
    init = getattr(args, "init", None) or saved.get("init")
    if saved:
        model_config = GeneratorConfig.from_dict(saved["model"])
    elif stage == "consistency":
        if not init:
            raise UsageError("ECT starts from stage 1: pass --init STAGE1_RUN")
        if not (Path(init) / "config.json").exists():
            raise LivefoleyError(f"--init {init} is not a run folder of `livefoley train stage1` (no config.json)")
        model_config = GeneratorConfig.from_dict(json.loads((Path(init) / "config.json").read_text()))
    else:
        model_config = resolve_model_config(args.model_config)[0]
    _set_threads(args.threads)
    run_dir = train(cache, out, model_config=model_config, tc=tc, init=init, resume=args.resume,
                    device=args.device, progress=not args.no_progress)
    summary = {"run_dir": str(run_dir), "train": dataclasses.asdict(tc)}
    log_path = run_dir / "log.jsonl"
    if log_path.exists():
        records = [json.loads(line) for line in log_path.read_text().splitlines()]
        summary["last"] = next((r for r in reversed(records) if "loss" in r), None)
        summary["last_val"] = next((r for r in reversed(records) if "val_loss" in r), None)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        last = summary.get("last") or {}
        print(f"trained {run_dir} ({stage}) to step {last.get('step')}: loss {last.get('loss', float('nan')):.4g}")
    return 0


# ---- the `train` command -----------------------------------------------------------------------

TRAINERS: dict[str, tuple[Callable, Callable[[argparse.Namespace], int]]] = {
    "vae": (_register_vae, _run_vae),
    "stage1": (_register_stage("stage1"), _run_stage),
    "ect": (_register_stage("ect"), _run_stage),
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help=HELP,
        description="Training runs.  Pick what to train; `livefoley train MODEL --help` shows its options.",
    )
    sub = p.add_subparsers(title="models", dest="train_model", metavar="MODEL")
    for reg, _ in TRAINERS.values():
        reg(sub)
    p.set_defaults(func=run, train_parser=p)


def run(args: argparse.Namespace) -> int:
    if args.train_model is None:
        args.train_parser.print_help()
        return 2
    return TRAINERS[args.train_model][1](args)
