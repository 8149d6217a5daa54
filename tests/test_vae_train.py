"""VAE training: a tiny model overfits a fixed batch, resuming equals an uninterrupted run, the
run folder loads with ``load_vae``, and the ``livefoley train vae`` command drives it all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from audio.errors import LivefoleyError
from audio.vae import VAEConfig, load_vae
from audio.vae_train import LOG_FILE, STATE_FILE, StereoSTFTLoss, VAETrainConfig, train_vae
from plugin.cli import main as cli
from tests.conftest import SR_VAE_FIXTURES

SR = 48_000
# channels 4: the same architecture as the presets at a size that trains in seconds on a CPU
SMALL = VAEConfig(channels=4, c_mults=(1, 2, 4, 8, 16), strides=(2, 4, 5, 5, 8))
FAST = {
    "batch_size": 2,
    "crop_seconds": 0.1,  # 4800 samples = 3 latents
    "fft_sizes": [128, 64, 32],
    "disc_fft_sizes": [64, 32],
    "disc_filters": 4,
    "log_every": 1,
}


pytestmark = pytest.mark.usefixtures("one_thread")


def clip(n: int = 4800) -> np.ndarray:
    t = np.arange(n) / SR
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
    right = 0.2 * np.sin(2 * np.pi * 660 * t) * np.exp(-t * 10)
    return np.stack([left, right]).astype(np.float32)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    sf.write(d / "tone.wav", clip().T, SR, subtype="FLOAT")
    return d


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / LOG_FILE).read_text().splitlines()]


def test_tiny_vae_overfits_a_fixed_batch(tmp_path, data_dir):
    cfg = VAETrainConfig(steps=25, lr=3e-3, save_every=1000, **FAST)
    summary = train_vae(
        data=data_dir, out=tmp_path / "run", model_config=SMALL, train_config=cfg, progress=False
    )
    assert summary["step"] == 25
    records = read_log(tmp_path / "run")
    assert [r["step"] for r in records] == list(range(1, 26))
    stft = [r["stft"] for r in records]
    print("stft loss per step:", " ".join(f"{v:.2f}" for v in stft))
    assert np.mean(stft[-3:]) < 0.6 * np.mean(stft[:3]), stft
    assert all(k in records[-1] for k in ("kl", "adv", "fm", "disc", "grad_norm"))

    # The run folder is a model folder: the exported EMA weights reconstruct the clip far better
    # than the initial weights do.
    trained = load_vae(tmp_path / "run")
    assert trained.config == SMALL
    torch.manual_seed(cfg.seed)  # the trainer seeds its initialisation the same way
    untrained = load_vae(SMALL)
    x = torch.from_numpy(clip())[None]
    loss = StereoSTFTLoss(FAST["fft_sizes"], sample_rate=SR)
    with torch.no_grad():
        after, before = loss(trained(x), x), loss(untrained(x), x)
    print(f"reconstruction loss of the clip: trained {float(after):.3f}, initial {float(before):.3f}")
    assert after < 0.7 * before, (float(after), float(before))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["training"]["lr"] == 3e-3 and saved["training"]["run"]["step"] == 25
    assert saved["model"]["encoder"]["config"]["channels"] == 4


def test_resume_continues_from_the_saved_step_like_an_uninterrupted_run(tmp_path, data_dir):
    cfg = VAETrainConfig(steps=4, lr=1e-3, save_every=2, **FAST)
    train_vae(data=data_dir, out=tmp_path / "straight", model_config=SMALL, train_config=cfg, progress=False)

    half = VAETrainConfig(**{**cfg.to_dict(), "steps": 2})
    train_vae(data=data_dir, out=tmp_path / "split", model_config=SMALL, train_config=half, progress=False)
    state = torch.load(tmp_path / "split" / STATE_FILE, weights_only=True)
    assert state["step"] == 2
    train_vae(
        data=data_dir,
        out=tmp_path / "split",
        model_config=SMALL,
        train_config=cfg,
        resume=True,
        progress=False,
    )

    straight, split = read_log(tmp_path / "straight"), read_log(tmp_path / "split")
    assert [r["step"] for r in split] == [1, 2, 3, 4]
    for a, b in zip(straight, split, strict=True):
        assert a["stft"] == pytest.approx(b["stft"], rel=1e-5), (a, b)
    ema_a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    ema_b = load_file(str(tmp_path / "split" / "model.safetensors"))
    for k in ema_a:
        torch.testing.assert_close(ema_b[k], ema_a[k], atol=1e-6, rtol=1e-5)


def test_run_folder_and_data_mistakes_are_clear_errors(tmp_path, data_dir):
    cfg = VAETrainConfig(steps=1, **FAST)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    with pytest.raises(LivefoleyError, match="no usable audio"):
        train_vae(data=empty, out=tmp_path / "r0", model_config=SMALL, train_config=cfg, progress=False)
    (empty / "broken.wav").write_bytes(b"RIFF" + bytes(100))
    with pytest.raises(LivefoleyError, match="1 unreadable"):
        train_vae(data=empty, out=tmp_path / "r0", model_config=SMALL, train_config=cfg, progress=False)
    with pytest.raises(LivefoleyError, match="does not exist"):
        train_vae(
            data=tmp_path / "nope", out=tmp_path / "r0", model_config=SMALL, train_config=cfg, progress=False
        )
    with pytest.raises(LivefoleyError, match="no config.json"):
        train_vae(data=data_dir, out=tmp_path / "r1", model_config=SMALL, train_config=cfg, resume=True)
    train_vae(data=data_dir, out=tmp_path / "r2", model_config=SMALL, train_config=cfg, progress=False)
    with pytest.raises(LivefoleyError, match="already holds a training run"):
        train_vae(data=data_dir, out=tmp_path / "r2", model_config=SMALL, train_config=cfg, progress=False)
    (tmp_path / "r2" / STATE_FILE).write_bytes((tmp_path / "r2" / STATE_FILE).read_bytes()[:200])  # cut short
    with pytest.raises(LivefoleyError, match="training state") as err:
        train_vae(data=data_dir, out=tmp_path / "r2", model_config=SMALL, train_config=cfg, resume=True)
    assert str(tmp_path / "r2" / STATE_FILE) in str(err.value) and "weights_only=False" not in str(err.value)
    too_long_fft = VAETrainConfig(**{**cfg.to_dict(), "fft_sizes": [8192]})  # longer than the 0.1 s crops
    with pytest.raises(LivefoleyError, match="shorter than the largest FFT"):
        train_vae(data=data_dir, out=tmp_path / "r3", model_config=SMALL, train_config=too_long_fft)
    with pytest.raises(LivefoleyError, match="unknown training settings"):
        VAETrainConfig.from_dict({"stepz": 3})


def test_cli_trains_resumes_and_the_run_reconstructs(tmp_path, data_dir, capsys):
    settings = tmp_path / "fast.json"
    settings.write_text(json.dumps(FAST))
    run = tmp_path / "run"
    common = [
        "--out",
        str(run),
        "--train-config",
        str(settings),
        "--device",
        "cpu",
        "--no-progress",
        "--json",
    ]
    tiny_config = str(SR_VAE_FIXTURES / "tiny_causal_config.json")  # 4 channels
    assert (
        cli(["train", "vae", "--data", str(data_dir), "--config", tiny_config, "--steps", "2", *common]) == 0
    )
    first = json.loads(capsys.readouterr().out)
    assert first["step"] == 2 and first["train_config"]["fft_sizes"] == FAST["fft_sizes"]
    assert cli(["train", "vae", "--resume", "--steps", "3", *common]) == 0  # data and model from the run
    second = json.loads(capsys.readouterr().out)
    assert second["step"] == 3 and [r["step"] for r in read_log(run)] == [1, 2, 3]
    assert cli(["train", "vae", "--data", str(data_dir), "--steps", "1", *common]) == 2  # run exists
    assert "--resume" in capsys.readouterr().err

    out = tmp_path / "recon.flac"
    assert (
        cli(
            ["vae", "reconstruct", str(data_dir / "tone.wav"), "-o", str(out), "--config", str(run), "--json"]
        )
        == 0
    )
    figures = json.loads(capsys.readouterr().out)
    assert figures["latent_frames"] == 3 and figures["duration_s"] == 0.1
    data, rate = sf.read(out, always_2d=True)
    assert rate == SR and data.shape == (4800, 2)


def test_cli_checks_the_ceiling_on_held_out_world_clips_while_it_trains(tmp_path, data_dir, capsys):
    """`train vae` puts the held-out world clips (seeds 100, 101) through the EMA codec every
    monitor_every steps and writes the figures to monitor.jsonl (a collapse shows within minutes)."""
    from audio.vae_train import MONITOR_FILE

    settings = tmp_path / "monitor.json"
    settings.write_text(json.dumps({**FAST, "monitor_every": 1, "monitor_seconds": 0.5}))
    run = tmp_path / "run"
    assert cli(["train", "vae", "--data", str(data_dir), "--preset", "spectral", "--steps", "2", "--out", str(run),
                "--train-config", str(settings), "--no-progress"]) == 0
    checks = [json.loads(line) for line in (run / MONITOR_FILE).read_text().splitlines()]
    assert [c["step"] for c in checks] == [1, 2]
    for c in checks:
        assert 0 <= c["f1"] <= 1 and c["mrstft"] > 0 and c["logmel_l1_db"] > 0
