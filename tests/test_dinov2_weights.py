"""A model whose DINOv2 weights come from the Hugging Face hub, on a machine that cannot reach it:
every command that loads a model refuses with the way out (``--dinov2-weights``), runs with a local
weights file, and refuses a file that is not the one the model was trained with (the fingerprint).

The model folder is the ``tiny`` preset saved with ``vision.weights = "hub"`` and the fingerprint of
the seeded weights; the local file holds those seeded weights in timm's layout (a real
model.safetensors of that architecture, 518×518 position grid)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import save_file

from plugin.cli import main
from tests.test_mux import make_video


@pytest.fixture(scope="module")
def hub_model(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(model folder with hub vision weights, the right local weights file, a wrong one)."""
    from model.dinov2 import seeded_state_dict
    from model.generator import load_generator
    from model.vision import DinoBackbone

    root = tmp_path_factory.mktemp("hub_model")
    gen = load_generator("tiny", "cpu")
    folder = gen.save(root / "model")
    config = json.loads((folder / "config.json").read_text())
    backbone = DinoBackbone(config=gen.model.config.vision)
    assert config["vision"]["fingerprint"] == backbone.fingerprint
    config["vision"]["weights"] = "hub"
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    right, wrong = root / "dinov2.safetensors", root / "other.safetensors"
    save_file(seeded_state_dict(backbone.vit, 0), str(right))
    save_file(seeded_state_dict(backbone.vit, 1), str(wrong))
    return folder, right, wrong


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub: offline mode and an empty HF cache."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def commands(tmp_path: Path, model: Path) -> dict[str, list[str]]:
    video = make_video(tmp_path / "clip.mp4", n=20, size=(96, 64), audio_channels=2)
    return {
        "generate": ["generate", str(video), "-o", str(tmp_path / "out.wav"), "--model", str(model),
                     "--device", "cpu", "--no-progress"],
        "live": ["live", "--source", "synthetic:3", "--sink", "null", "--duration", "0.4", "--model", str(model),
                 "--device", "cpu"],
        "eval": ["eval", "--model", str(model), "--seeds", "101-101", "--seconds", "0.4", "--size", "160x90",
                 "--device", "cpu", "--json", str(tmp_path / "eval.json")],
        "bench": ["bench", "--model", str(model), "--frames", "2", "--warmup", "1", "--nfe", "1", "--cfg", "1",
                  "--device", "cpu"],
        "demo": ["demo", "--model", str(model), "--seconds", "0.4", "--no-play", "-o", str(tmp_path / "demo.mp4"),
                 "--device", "cpu"],
        "prepare": ["prepare", "--data", str(video.parent), "--out", str(tmp_path / "cache"), "--model-config",
                    str(model), "--device", "cpu"],
    }


@pytest.mark.parametrize("command", ["generate", "live", "eval", "bench", "demo", "prepare"])
def test_every_model_command_takes_local_dinov2_weights(command, hub_model, offline, tmp_path, capsys):
    folder, right, wrong = hub_model
    args = commands(tmp_path, folder)[command]

    assert main(args) == 1  # the hub cannot be reached: a clear error, nothing done
    err = capsys.readouterr().err
    assert "DINOv2 weights not found" in err and "--dinov2-weights" in err, err

    assert main([*args, "--dinov2-weights", str(wrong)]) == 1  # not the weights the model was trained with
    err = capsys.readouterr().err
    assert "fingerprint" in err and "different DINOv2 weights" in err, err

    assert main([*args, "--dinov2-weights", str(right)]) == 0, capsys.readouterr().err
    produced = {"generate": tmp_path / "out.wav", "eval": tmp_path / "eval.json", "demo": tmp_path / "demo.mp4",
                "prepare": tmp_path / "cache" / "cache.json"}
    if command in produced:
        assert produced[command].stat().st_size > 0


def test_a_cache_records_which_dinov2_weights_made_it(hub_model, offline, tmp_path, capsys):
    """The cache records the weights' fingerprint, not only where they were read from: resuming with the
    same weights elsewhere is fine, other weights are refused, and a model trained on it records the
    fingerprint too (a preset with hub weights names none)."""
    import shutil

    folder, right, wrong = hub_model
    args = commands(tmp_path, folder)["prepare"]
    assert main([*args, "--dinov2-weights", str(right)]) == 0
    index = json.loads((tmp_path / "cache" / "cache.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    assert index["vision"]["fingerprint"] == config["vision"]["fingerprint"]
    moved = shutil.copy(right, tmp_path / "elsewhere.safetensors")
    assert main([*args, "--dinov2-weights", str(moved)]) == 0
    assert "(1 already done)" in capsys.readouterr().out
    other = tmp_path / "other-model"
    shutil.copytree(folder, other)
    config["vision"]["fingerprint"] = None
    (other / "config.json").write_text(json.dumps(config))
    assert main([*args[:-4], "--model-config", str(other), "--dinov2-weights", str(wrong), "--device", "cpu"]) == 1
    assert "different vision or VAE config" in capsys.readouterr().err

    # training reads the cached grids: no DINOv2 weights needed (offline, none given), and the model
    # trained from a config that names no fingerprint records the cache's
    run = tmp_path / "run"
    assert main(["train", "stage1", "--cache", str(tmp_path / "cache"), "--out", str(run), "--model-config",
                 str(other), "--steps", "1", "--batch-size", "1", "--window-seconds", "0.3", "--val-every", "1",
                 "--sample-every", "1", "--no-progress", "--device", "cpu"]) == 0, capsys.readouterr().err
    trained = json.loads((run / "config.json").read_text())["vision"]
    assert trained["weights"] == "hub" and trained["fingerprint"] == index["vision"]["fingerprint"]
