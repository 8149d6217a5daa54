#!/usr/bin/env python3
"""The recipe of the shipped ``default`` model, end to end, on a 2-core CPU machine.

    python scripts/train_default.py --work runs/default            # everything, resumable
    python scripts/train_default.py --work runs/default --install  # … and copy it into the package

Stages (each one's output lives in WORK; a killed run continues where it stopped — finished stages
are skipped, training stages resume from their last checkpoint, `prepare` resumes by itself):

1. synth    — the arcade world as mp4 clips (`livefoley synth`, base seed 7: no clip uses the
              evaluation seeds 100–119)
2. codec    — the spectral codec (`livefoley train vae --preset spectral`)
3. prepare  — DINOv2 grids + codec latents of every frame (`livefoley prepare`; latents of the
              exact sound, not of the videos' AAC tracks)
4. stage1   — the generator's diffusion stage (`livefoley train stage1`)
   stage1-looks — more of the world drawn in other looks (`synth --looks invert hue small`: the
              same game and sound, other pictures; `gray` and `mirror` pictures are kept for the
              evaluation — the training mirrors half its windows in the cache, sound included),
              added to the cache (`prepare` again: only the new clips are read) and stage 1
              continued on everything
5. ect      — easy consistency tuning (`livefoley train ect`)
6. export   — the shipped form: large matrices int8, the rest fp16 (WORK/default)
7. eval     — `livefoley eval` of that folder on held-out world seeds, with the codec's ceiling
8. install  — (with --install) the same into model/weights/default, with a model card

Wall time of every stage goes to WORK/recipe.json.  The settings below are the shipped ones.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SYNTH = ["--minutes", "60", "--seed", "7", "--clip-seconds", "30", "--size", "320x180"]
CODEC = ["--preset", "spectral", "--steps", "5000", "--batch-size", "16", "--crop-seconds", "0.5",
         "--lr", "3e-4", "--save-every", "500", "--log-every", "100"]
CODEC_SETTINGS = {"betas": [0.9, 0.99], "monitor_every": 1000, "monitor_seconds": 10.0}
SYNTH_LOOKS = ["--minutes", "30", "--seed", "1007", "--clip-seconds", "30", "--size", "320x180",
               "--looks", "invert", "hue", "small"]
STAGE1_LOOKS = ["--steps", "11000"]  # stage 1 continued to this step on the world and its looks
STAGE1 = ["--model-config", "tiny", "--steps", "8000", "--mirror", "0.5", "--batch-size", "8", "--window-seconds", "2",
          "--lr", "5e-4", "--warmup", "200", "--ckpt-every", "250", "--val-every", "500",
          "--sample-every", "100000"]
ECT = ["--steps", "1000", "--batch-size", "8", "--window-seconds", "2", "--lr", "1e-4", "--warmup", "50",
       "--ect-stage-interval", "250", "--ckpt-every", "250", "--val-every", "500", "--sample-every", "100000"]
EVAL = ["--seeds", "100-119", "--seconds", "20", "--nfe", "1", "2", "4", "--vae-ceiling"]
EVAL_SHORT = ["--seeds", "100-119", "--seconds", "20", "--nfe", "1"]
EVAL_LOOKS = ["--seeds", "100-104", "--seconds", "20", "--nfe", "1"]
LOOKS = ("mirror", "invert", "hue", "gray", "small")


def livefoley(*args: str) -> None:
    cmd = [sys.executable, "-m", "plugin.cli", *args]
    print("$ livefoley " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("runs/default"), help="working folder (default runs/default)")
    p.add_argument("--install", action="store_true", help="copy the result into model/weights/default")
    p.add_argument("--skip-eval", action="store_true", help="stop after ECT (no evaluation)")
    args = p.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    record_path = work / "recipe.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"stages": {}}

    def stage(name: str, done: Path, run) -> None:
        if done.exists():
            print(f"== {name}: done ({done.relative_to(work)})", flush=True)
            return
        print(f"== {name}", flush=True)
        t = time.monotonic()
        run()
        entry = record["stages"].setdefault(name, {"seconds": 0.0})
        entry["seconds"] = round(entry["seconds"] + time.monotonic() - t, 1)
        done.write_text(json.dumps(entry) + "\n")
        record_path.write_text(json.dumps(record, indent=2) + "\n")

    def resumable(folder: Path, marker: str) -> list[str]:
        return ["--resume"] if (folder / marker).exists() else []

    world, world_audio, codec, cache = work / "world", work / "world_audio", work / "codec", work / "cache"
    stage1, ect = work / "stage1", work / "ect"
    stage("synth", work / ".synth.done", lambda: livefoley(
        "synth", "--out", str(world), "--audio-out", str(world_audio), *SYNTH))
    codec_settings = work / "codec_settings.json"
    codec_settings.write_text(json.dumps(CODEC_SETTINGS) + "\n")
    stage("codec", work / ".codec.done", lambda: livefoley(
        "train", "vae", "--data", str(world_audio), "--out", str(codec), "--no-progress", *CODEC,
        "--train-config", str(codec_settings), *resumable(codec, "train_state.pt")))
    stage("prepare", work / ".prepare.done", lambda: livefoley(
        "prepare", "--data", str(world), "--audio", str(world_audio), "--out", str(cache), "--vae", str(codec),
        "--model-config", "tiny"))
    stage("stage1", work / ".stage1.done", lambda: livefoley(
        "train", "stage1", "--cache", str(cache), "--out", str(stage1), "--no-progress", *STAGE1,
        *resumable(stage1, "state/state.json")))
    # the world in other looks, beside the world's own clips (same folder: prepare adds only them)
    stage("synth-looks", work / ".synth-looks.done", lambda: livefoley(
        "synth", "--out", str(world), "--audio-out", str(world_audio), *SYNTH_LOOKS))
    stage("prepare-looks", work / ".prepare-looks.done", lambda: livefoley(
        "prepare", "--data", str(world), "--audio", str(world_audio), "--out", str(cache), "--vae", str(codec),
        "--model-config", "tiny"))
    stage("stage1-looks", work / ".stage1-looks.done", lambda: livefoley(
        "train", "stage1", "--cache", str(cache), "--out", str(stage1), "--no-progress", "--resume",
        *STAGE1_LOOKS))
    stage("ect", work / ".ect.done", lambda: livefoley(
        "train", "ect", "--init", str(stage1), "--cache", str(cache), "--out", str(ect), "--no-progress", *ECT,
        *resumable(ect, "state/state.json")))
    from model.export import export_default, export_model

    shipped = work / "default"  # what ships: int8/fp16 weights, evaluated as such
    stage("export", work / ".export.done", lambda: export_model(ect, shipped))
    if not args.skip_eval:
        stage("eval", work / ".eval.done", lambda: livefoley(
            "eval", "--model", str(shipped), *EVAL, "--json", str(work / "eval.json"),
            "--plot", str(work / "eval.png")))
        # what guidance buys, and whether the sound follows events drawn differently from the world
        stage("eval-cfg-off", work / ".eval-cfg-off.done", lambda: livefoley(
            "eval", "--model", str(shipped), *EVAL_SHORT, "--cfg", "1", "--json", str(work / "eval_cfg_off.json")))
        for look in LOOKS:
            stage(f"eval-{look}", work / f".eval-{look}.done", lambda look=look: livefoley(
                "eval", "--model", str(shipped), *EVAL_LOOKS, "--look", look,
                "--json", str(work / f"eval_look_{look}.json")))
    if args.install:
        record["settings"] = {"synth": SYNTH, "codec": CODEC + [json.dumps(CODEC_SETTINGS)], "stage1": STAGE1,
                              "synth_looks": SYNTH_LOOKS, "stage1_looks": STAGE1_LOOKS, "ect": ECT}
        export_default(ect, work, record)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
