"""Feature caching and the two training stages, end to end on CPU (issue 4/9)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from audio.contract import CONTRACT
from audio.media import write_video
from capture.file import probe_video
from capture.synthetic import render_clip
from model.generator import load_generator
from plugin.cli import main

ROOT = Path(__file__).resolve().parents[1]
TRAIN_FLAGS = ["--batch-size", "2", "--window-seconds", "0.5", "--log-every", "1", "--val-every", "2",
               "--sample-every", "4", "--ckpt-every", "2", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two synthetic-world clips, a clip without audio, a corrupt file and a non-video file."""
    root = tmp_path_factory.mktemp("data")
    for seed in (1, 2):
        frames, audio, _ = render_clip(seed, 1.5, width=160, height=90)
        write_video(root / f"clip{seed}.mp4", list(frames), fps=CONTRACT.fps, audio=audio)
    frames, _, _ = render_clip(3, 1.0, width=160, height=90)
    write_video(root / "silent.mp4", list(frames), fps=CONTRACT.fps, audio=None)
    good = (root / "clip1.mp4").read_bytes()
    (root / "sub").mkdir()
    (root / "sub" / "broken.mkv").write_bytes(b"\x1a\x45\xdf\xa3" + os.urandom(4000))
    (root / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (root / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="module")
def cache(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "cache"
    assert main(["prepare", "--data", str(data), "--out", str(out), "--json", str(out.parent / "s.json")]) == 0
    return out


def test_prepare_caches_clips_and_reports_skipped_files(data, cache):
    summary = json.loads((cache.parent / "s.json").read_text())
    assert summary["prepared_files"] == 2
    skipped = summary["skipped"]
    assert set(skipped) == {"silent.mp4", "sub/broken.mkv", "truncated.mp4"}
    assert "no audio" in skipped["silent.mp4"]
    index = json.loads((cache / "cache.json").read_text())
    assert set(index["files"]) == {"clip1.mp4", "clip2.mp4"}
    assert {e["split"] for e in index["files"].values()} == {"train", "val"}  # split by file
    entry = index["files"]["clip1.mp4"]
    shard = load_file(str(cache / "shards" / entry["shard"]))
    n = probe_video(data / "clip1.mp4").n_frames_30fps
    assert entry["frames"] == n == 45
    gh, gw = index["vision"]["input_size"][0] // 28, index["vision"]["input_size"][1] // 28
    assert shard["grids"].shape == (n, gh, gw, 384) and str(shard["grids"].dtype) == "torch.float16"
    assert shard["latents"].shape == (n, CONTRACT.latent_dim)
    assert (cache / "vae.safetensors").exists()


def test_prepare_is_resumable_and_never_trusts_a_partial_shard(data, cache, capsys):
    stale = cache / "shards" / "deadbeef.safetensors.partial"
    stale.write_bytes(b"half a shard")
    assert main(["prepare", "--data", str(data), "--out", str(cache), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["prepared_files"] == 0 and summary["reused_files"] == 2
    assert not stale.exists()
    os.utime(data / "clip2.mp4", ns=(1, 1))  # a changed file is prepared again
    assert main(["prepare", "--data", str(data), "--out", str(cache), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["prepared_files"] == 1 and summary["reused_files"] == 1


def test_prepare_with_grids_from_another_cache_encodes_only_the_sound(data, cache, tmp_path, capsys):
    """A cache for another codec (`--vae`) from the same videos: `--grids-from` takes every unchanged
    video's grids from the first cache (DINOv2 is not run) and encodes the sound with the new codec;
    a video changed since is prepared in full."""
    import torch

    import model.vision
    from audio.vae import load_vae, save_vae
    from model.training.cache import _sound, encode_long

    torch.manual_seed(7)
    codec = save_vae(load_vae("spectral"), tmp_path / "codec")
    out = tmp_path / "cache_v2"
    real_grids = model.vision.FrameTokenizer.grids
    calls = []

    def counted(self, *a, **k):
        calls.append(1)
        return real_grids(self, *a, **k)

    model.vision.FrameTokenizer.grids = counted
    try:
        assert main(["prepare", "--data", str(data), "--out", str(out), "--vae", str(codec), "--grids-from",
                     str(cache), "--json"]) == 0
    finally:
        model.vision.FrameTokenizer.grids = real_grids
    summary = json.loads(capsys.readouterr().out)
    assert summary["prepared_files"] == 2 and summary["grids_reused_files"] == 2 and not calls
    old, new = (json.loads((c / "cache.json").read_text())["files"] for c in (cache, out))
    vae = load_vae(str(codec))
    for name in ("clip1.mp4", "clip2.mp4"):
        a = load_file(str(cache / "shards" / old[name]["shard"]))
        b = load_file(str(out / "shards" / new[name]["shard"]))
        assert torch.equal(a["grids"], b["grids"]) and new[name]["split"] == old[name]["split"]
        wav = _sound(data / name, None, b["latents"].shape[0])
        torch.testing.assert_close(b["latents"], encode_long(vae, wav, device="cpu"), atol=1e-4, rtol=1e-3)
    # a donor made with other vision settings does not fit; the cache being prepared is no donor
    bad = json.loads((cache / "cache.json").read_text())
    bad["vision"]["input_size"] = [bad["vision"]["input_size"][0] + 28, bad["vision"]["input_size"][1]]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cache.json").write_text(json.dumps(bad))
    for donor, message in ((tmp_path / "bad", "different vision config"), (out, "the cache being prepared")):
        assert main(["prepare", "--data", str(data), "--out", str(out), "--vae", str(codec),
                     "--grids-from", str(donor)]) == 1
        assert message in capsys.readouterr().err


def test_two_stages_end_to_end_and_the_result_loads_and_generates(cache, tmp_path):
    s1, ect = tmp_path / "stage1", tmp_path / "ect"
    assert main(["train", "stage1", "--cache", str(cache), "--out", str(s1), "--steps", "4", *TRAIN_FLAGS]) == 0
    log = [json.loads(x) for x in (s1 / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert any("val_loss" in r for r in log)
    assert (s1 / "samples" / "step_0000004.wav").exists()
    assert (s1 / "checkpoints" / "step_0000002" / "model.safetensors").exists()
    resolved = json.loads((s1 / "train.json").read_text())
    assert resolved["train"]["stage"] == "diffusion" and resolved["model"]["stage"] == "diffusion"
    assert main(["train", "ect", "--init", str(s1), "--cache", str(cache), "--out", str(ect), "--steps", "2",
                 *TRAIN_FLAGS]) == 0
    gen = load_generator(ect, device="cpu")
    assert gen.config.stage == "consistency" and gen.valid_nfe == (1, 2, 4)
    stats = load_file(str(ect / "model.safetensors"))
    assert stats["latent_std"].min() > 0 and not np.allclose(stats["latent_std"].numpy(), 1.0)
    frames, _, _ = render_clip(5, 0.3, width=160, height=90)
    audio = gen.generate(list(frames), nfe=2)
    assert audio.shape == (2, len(frames) * CONTRACT.hop) and np.isfinite(audio).all()


def test_resume_gives_the_same_result_as_an_uninterrupted_run(cache, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["train", "stage1", "--cache", str(cache), "--out", str(whole), "--steps", "4", *TRAIN_FLAGS]) == 0
    assert main(["train", "stage1", "--cache", str(cache), "--out", str(parts), "--steps", "2", *TRAIN_FLAGS]) == 0
    assert main(["train", "stage1", "--out", str(parts), "--resume", "--steps", "4", "--no-progress"]) == 0
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(parts / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=1e-6, err_msg=k)
    # an existing run is never overwritten without --resume
    assert main(["train", "stage1", "--cache", str(cache), "--out", str(whole), "--steps", "4", *TRAIN_FLAGS]) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes_train_with_ddp_and_gloo(cache, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "plugin.cli", "-q", "train", "stage1", "--cache", str(cache),
           "--out", str(out), "--steps", "2", "--device", "cpu", *TRAIN_FLAGS]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    resolved = json.loads((out / "train.json").read_text())
    assert resolved["world_size"] == 2
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]  # only rank 0 writes
    load_generator(out, device="cpu")


def test_training_settings_are_checked_before_any_work(cache, tmp_path, capsys):
    out = tmp_path / "never"
    for flags, words in ((["--sample-every", "0"], "sample_every = 0"), (["--steps", "-3"], "steps = -3"),
                         (["--lr", "0"], "lr > 0"), (["--ema-decay", "1"], "ema_decay"),
                         (["--mirror", "1.5"], "mirror is a probability")):
        assert main(["train", "stage1", "--cache", str(cache), "--out", str(out), *flags, "--no-progress"]) == 2
        assert words in capsys.readouterr().err
        assert not out.exists()


def test_prepare_takes_the_exact_sound_when_given_audio(tmp_path):
    """`prepare --audio DIR`: latents of DIR/<name>.flac (the sound before AAC), not of the video's
    lossy track; a video without such a file keeps its own track."""
    import torch

    from audio.io import read_audio, write_audio
    from audio.vae import load_vae
    from model.training.cache import encode_long

    frames, audio, _ = render_clip(4, 1.0, width=160, height=90)
    data = tmp_path / "data"
    data.mkdir()
    write_video(data / "a.mp4", list(frames), fps=CONTRACT.fps, audio=audio)
    write_video(data / "b.mp4", list(frames), fps=CONTRACT.fps, audio=audio)
    write_audio(tmp_path / "exact" / "a.flac", audio)
    out = tmp_path / "cache"
    assert main(["prepare", "--data", str(data), "--audio", str(tmp_path / "exact"), "--out", str(out),
                 "--val-fraction", "0", "--json", str(tmp_path / "s.json")]) == 0
    index = json.loads((out / "cache.json").read_text())
    vae = load_vae("tiny", out / "vae.safetensors")
    for name, source in (("a.mp4", tmp_path / "exact" / "a.flac"), ("b.mp4", data / "b.mp4")):
        cached = load_file(str(out / "shards" / index["files"][name]["shard"]))["latents"]
        wav = read_audio(source)[:, : cached.shape[0] * CONTRACT.hop]
        expected = encode_long(vae, torch.from_numpy(np.ascontiguousarray(wav)), device="cpu")
        torch.testing.assert_close(cached, expected, atol=1e-4, rtol=1e-3)
        mirrored = load_file(str(out / "shards" / index["files"][name]["shard"]))["latents_mirror"]
        expected = encode_long(vae, torch.from_numpy(np.ascontiguousarray(wav[::-1])), device="cpu")
        torch.testing.assert_close(mirrored, expected, atol=1e-4, rtol=1e-3)  # left and right swapped
    a = load_file(str(out / "shards" / index["files"]["a.mp4"]["shard"]))["latents"]
    b = load_file(str(out / "shards" / index["files"]["b.mp4"]["shard"]))["latents"]
    assert (a - b).abs().max() > 1e-5  # AAC changed the sound: the two differ (an untrained VAE: slightly)


def test_mirrored_windows_flip_the_grid_and_swap_the_sound(data, cache, tmp_path, capsys):
    """Mirror augmentation reads the grid right to left (the previous frame's too) with the latents of
    the channel-swapped sound; a cache from before it existed says how to add them, and `prepare` of
    the same folders adds them without preparing any clip again."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from audio.errors import LivefoleyError
    from model.training.cache import FeatureCache

    fc = FeatureCache(cache)
    entry = fc.entries()[0]
    shard = load_file(str(fc.shard_path(entry)))
    grids, latents, prev = fc.read_window(entry, 5, 10)
    m_grids, m_latents, m_prev = fc.read_window(entry, 5, 10, mirror=True)
    torch.testing.assert_close(m_grids, grids.flip(2), atol=0, rtol=0)
    torch.testing.assert_close(m_prev, prev.flip(1), atol=0, rtol=0)
    torch.testing.assert_close(m_prev, shard["grids"][4].float().flip(1), atol=0, rtol=0)
    torch.testing.assert_close(latents, shard["latents"][5:15], atol=0, rtol=0)
    torch.testing.assert_close(m_latents, shard["latents_mirror"][5:15], atol=0, rtol=0)
    assert not torch.allclose(m_latents, latents, atol=1e-3)  # the world's sounds are panned

    old = tmp_path / "old"
    shutil.copytree(cache, old)
    old_fc = FeatureCache(old)
    for e in old_fc.entries():  # as `prepare` wrote shards before mirror augmentation
        tensors = load_file(str(old_fc.shard_path(e)))
        del tensors["latents_mirror"]
        save_file(tensors, str(old_fc.shard_path(e)))
    with pytest.raises(LivefoleyError, match="run `livefoley prepare` again"):
        old_fc.read_window(entry, 5, 10, mirror=True)
    assert main(["prepare", "--data", str(data), "--out", str(old), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["prepared_files"] == 0 and summary["reused_files"] == 2
    for e in old_fc.entries():
        torch.testing.assert_close(load_file(str(old_fc.shard_path(e)))["latents_mirror"],
                                   load_file(str(fc.shard_path(e)))["latents_mirror"], atol=1e-5, rtol=1e-4)


def test_training_threads_come_from_the_idle_cores_unless_decided(monkeypatch, cache, tmp_path):
    """A training run gives itself one thread per core that is idle when it starts (a thread on a busy
    core made every step wait: 3.2 → 0.25 steps/s); --threads decides; torchrun's or the user's
    OMP_NUM_THREADS is left alone."""
    import torch

    from plugin.commands.train import _set_threads

    before = torch.get_num_threads()
    try:
        assert main(["train", "stage1", "--cache", str(cache), "--out", str(tmp_path / "s"), "--steps", "1",
                     "--threads", "1", *TRAIN_FLAGS]) == 0
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        _set_threads(None)  # the suite sets OMP_NUM_THREADS: that decision stands
        assert torch.get_num_threads() == 2
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setenv("WORLD_SIZE", "2")
        _set_threads(None)  # a torchrun rank: torchrun decided
        assert torch.get_num_threads() == 2
        monkeypatch.delenv("WORLD_SIZE")
        _set_threads(None)
        assert 1 <= torch.get_num_threads() <= os.cpu_count()  # one per idle core, whatever is idle now
    finally:
        torch.set_num_threads(before)
