"""Install a trained model folder as the package's ``default`` model (fp16 weights + model card).

The shipped folder (``model/weights/default``) is a normal model folder — ``config.json``,
``model.safetensors``, ``vae.safetensors`` — with its large matrices stored as weight-only int8
(per-row scales, :func:`audio.checkpoint.quantize`) and the other float tensors in fp16, so that
generator and codec fit the package's 16 MB; every loader reads them back into the fp32 model,
strictly (:func:`audio.checkpoint.read_safetensors`).  A ``README.md`` model card is written from
the recipe's record (data, steps, wall time, evaluation).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from audio.checkpoint import quantize
from audio.files import atomic_path
from model.generator import DEFAULT_MODEL_DIR

__all__ = ["export_default", "export_model"]

KEEP_FP32 = ("latent_mean", "latent_std")
"""Buffers kept in fp32: the latent statistics that every output is de-normalised with."""


def _compact(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    keep = {k: v.float().contiguous() for k, v in tensors.items() if k.endswith(KEEP_FP32)}
    return {**quantize({k: v for k, v in tensors.items() if k not in keep}), **keep}


def export_model(src: str | Path, dst: str | Path, *, notes: dict | None = None, card: str | None = None,
                 name: str = "default") -> Path:
    """Copy model folder ``src`` to ``dst`` with compact (int8 / fp16) weights, ``notes`` merged into the config's
    ``notes`` and ``card`` written as ``README.md``.  ``dst`` is written beside itself and swapped
    in at the end, so an interrupted export leaves the previous model in place."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        tmp.mkdir()
        _write_folder(src, tmp, name, notes, card)
    return dst


def _write_folder(src: Path, tmp: Path, name: str, notes: dict | None, card: str | None) -> None:
    for file in ("model.safetensors", "vae.safetensors"):
        save_file(_compact(load_file(str(src / file))), str(tmp / file))
    config = json.loads((src / "config.json").read_text())
    config["name"] = name  # the shipped model calls itself by the name users type
    config["notes"] = {**config.get("notes", {}), **(notes or {})}
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if card:
        (tmp / "README.md").write_text(card)
    for f in tmp.iterdir():  # package data: readable by every user (safetensors writes 0600)
        f.chmod(0o644)


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def _eval_args(evaluation: dict) -> str:
    """The --nfe / --vae-ceiling part of the eval command that made ``evaluation``."""
    nfes = [str(r["nfe"]) for r in evaluation.get("rows", []) if r.get("kind") == "generated" and "nfe" in r]
    ceiling = any(r.get("name") == "vae ceiling" for r in evaluation.get("rows", []))
    return "--nfe " + " ".join(nfes) + (" --vae-ceiling" if ceiling else "")


def export_default(run: str | Path, work: str | Path, record: dict, dst: str | Path = DEFAULT_MODEL_DIR) -> Path:
    """The recipe's last step (``scripts/train_default.py --install``): ``run`` (the ECT folder)
    → ``dst`` with a model card built from ``record`` and ``work/eval.json`` when present."""
    work = Path(work)
    stages = record.get("stages", {})
    total_s = sum(s.get("seconds", 0.0) for s in stages.values())
    evaluation = json.loads((work / "eval.json").read_text()) if (work / "eval.json").exists() else None
    notes = {"recipe": "scripts/train_default.py", "stages_seconds": {k: v["seconds"] for k, v in stages.items()},
             "total_seconds": round(total_s, 1), "data": ("synthetic arcade world, 60 min (livefoley synth --seed 7) "
                      "+ 30 min of it drawn in other looks"),
             "machine": "2 CPU cores (no GPU)"}
    lines = ["# livefoley `default` model", "",
             "The `tiny` architecture (DINOv2-S/14 with seeded weights at 84×140, 4-layer d=256 causal transformer, "
             "3×256 consistency head) over the spectral codec (`audio/spectral.py`), trained on the synthetic "
             "arcade world only, on 2 CPU cores, by `python scripts/train_default.py`.", "",
             "| stage | wall time (s) |", "|---|---|"]
    lines += [f"| {k} | {v['seconds']:.0f} |" for k, v in stages.items()]
    lines += [f"| total | {total_s:.0f} |", ""]
    settings = record.get("settings", {})
    if settings:
        notes["settings"] = settings
        lines += ["Settings (the command-line options of each stage):", ""]
        lines += [f"- {k}: `{' '.join(v)}`" for k, v in settings.items()]
        lines += [""]
    lines += ["Weights: large matrices as int8 with one fp16 scale per row (`audio/checkpoint.py`), the rest "
              "fp16; they load strictly into the fp32 model.", ""]
    if evaluation is not None:
        lines += [f"Evaluation (`livefoley eval --seeds 100-119 --seconds 20 {_eval_args(evaluation)}`, world seeds "
                  "never used in training):", "",
                  "| row | F1 ±50 ms | median onset offset ms | A/V offset ms | pan | quiet contrast dB | MR-STFT "
                  "| log-mel L1 dB |", "|---|---|---|---|---|---|---|---|"]
        for row in evaluation.get("rows", []):
            lines.append(
                f"| {row.get('name')} | {_fmt(row.get('f1'))} | {_fmt(row.get('onset_offset_median_ms'))} | "
                f"{_fmt(row.get('av_offset_ms'))} | {_fmt(row.get('pan_accuracy'))} | "
                f"{_fmt(row.get('quiet_contrast_db'))} | {_fmt(row.get('mrstft'))} | {_fmt(row.get('logmel_l1_db'))} |")
        notes["eval"] = {row.get("name"): {k: row.get(k) for k in ("f1", "pan_accuracy", "quiet_contrast_db",
                                                                     "av_offset_ms", "onset_offset_median_ms")}
                         for row in evaluation.get("rows", [])}
    lines += ["", "Training data: the synthetic world only — sound that follows other pictures is not promised.", ""]
    return export_model(run, dst, notes=notes, card="\n".join(lines))
