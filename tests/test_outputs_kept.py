"""Nothing a user types loses their files: `--json` never swallows an input name, and outputs that
are inputs or exist already are refused before any work (issue 6/6, items 1-3)."""

from __future__ import annotations

import numpy as np
import pytest

from audio.errors import LivefoleyError
from audio.io import write_audio
from plugin.cli import main


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "x.wav"
    write_audio(path, np.zeros((2, 3200), np.float32))
    return path


@pytest.mark.parametrize("command", [
    ["generate", "IN", "-o", "OUT.wav", "--json", "VICTIM"],
    ["eval", "--model", "tiny", "--seeds", "1", "--json", "VICTIM"],
    ["demo", "--json", "VICTIM"],
    ["live", "--source", "synthetic", "--json", "VICTIM"],
])
def test_json_never_takes_a_file_that_is_not_json(tmp_path, wav, capsys, command):
    victim = tmp_path / "v2.mp4"
    victim.write_bytes(b"the user's video")
    args = [str(victim) if a == "VICTIM" else str(wav) if a == "IN" else str(tmp_path / a) if a == "OUT.wav"
            else a for a in command]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert "is not a .json file name" in capsys.readouterr().err
    assert victim.read_bytes() == b"the user's video"


def test_vae_reconstruct_keeps_its_input_and_existing_outputs(tmp_path, wav, capsys):
    before = wav.read_bytes()
    assert main(["vae", "reconstruct", str(wav), "-o", str(wav), "--config", "tiny", "--allow-random-weights"]) == 2
    assert "an input is never overwritten" in capsys.readouterr().err
    assert wav.read_bytes() == before
    other = tmp_path / "kept.wav"
    other.write_bytes(b"keep me")
    assert main(["vae", "reconstruct", str(wav), "-o", str(other), "--config", "tiny", "--allow-random-weights"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert other.read_bytes() == b"keep me"
    assert main(["vae", "reconstruct", str(wav), "-o", str(other), "--config", "tiny", "--allow-random-weights",
                 "--overwrite"]) == 0
    assert other.read_bytes() != b"keep me"


def test_live_record_keeps_an_existing_file(tmp_path, capsys):
    rec = tmp_path / "a.wav"
    rec.write_bytes(b"an earlier recording")
    assert main(["live", "--source", "synthetic", "--model", "tiny", "--sink", "null", "--record", str(rec),
                 "--duration", "1"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert rec.read_bytes() == b"an earlier recording"


@pytest.mark.parametrize("args, message", [
    (["generate", "x.mp4", "-o", "y.wav", "--cfg", "-1"], "guidance ω must be a finite number ≥ 0"),
    (["eval", "--model", "tiny", "--cfg", "nan"], "guidance ω must be a finite number ≥ 0"),
    (["live", "--source", "synthetic", "--cfg", "-0.5"], "guidance ω must be a finite number ≥ 0"),
    (["bench", "--frames", "0"], "give a whole number ≥ 1"),
    (["bench", "--warmup", "-1"], "give a whole number ≥ 0"),
])
def test_bad_numbers_are_refused_by_the_parser(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_huge_seed_range_is_refused_at_once(capsys):
    import time

    t0 = time.monotonic()
    assert main(["eval", "--model", "tiny", "--seeds", "0-99999999", "--seconds", "1"]) == 2
    assert "more than 10000 seeds" in capsys.readouterr().err
    assert time.monotonic() - t0 < 5


def test_an_output_named_with_a_trailing_slash_is_a_folder(tmp_path):
    from plugin.generate import plan_outputs

    src = tmp_path / "v1.mp4"
    outs = plan_outputs([src], f"{tmp_path}/out_k/", folder_mode=False, fmt=None)
    assert outs == [tmp_path / "out_k" / "v1.livefoley.mp4"] and (tmp_path / "out_k").is_dir()


@pytest.mark.parametrize("damage", ["empty", "random", "truncated"])
def test_a_damaged_weights_file_is_named_in_a_clear_error(tmp_path, damage):
    import os

    from audio.errors import LivefoleyError
    from model.generator import load_generator, save_model

    tiny = load_generator("tiny", device="cpu")
    folder = save_model(tmp_path / "m", tiny.model, tiny.vae)
    good = (folder / "model.safetensors").read_bytes()
    for name in ("model.safetensors", "vae.safetensors"):
        data = {"empty": b"", "random": os.urandom(4096), "truncated": good[:1000]}[damage]
        original = (folder / name).read_bytes()
        (folder / name).write_bytes(data)
        with pytest.raises(LivefoleyError, match=f"{name} could not be read: it is not a readable safetensors file"):
            load_generator(folder, device="cpu")
        (folder / name).write_bytes(original)


@pytest.mark.parametrize("command", [
    ["synth", "--out", "FILE"],
    ["synth", "--out", "DIR", "--audio-out", "FILE"],
    ["prepare", "--data", "DIR", "--out", "FILE"],
    ["train", "vae", "--data", "DIR", "--out", "FILE"],
    ["train", "stage1", "--cache", "DIR", "--out", "FILE"],
    ["train", "ect", "--init", "DIR", "--cache", "DIR", "--out", "FILE"],
])
def test_an_output_folder_that_is_an_existing_file_is_refused(tmp_path, capsys, command):
    victim = tmp_path / "notes.txt"
    victim.write_text("the user's notes")
    args = [str(victim) if a == "FILE" else str(tmp_path / "d") if a == "DIR" else a for a in command]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert "is an existing file, not a folder" in capsys.readouterr().err
    assert victim.read_text() == "the user's notes" and not (tmp_path / "d").exists()


def test_prepare_with_no_usable_video_fails_and_leaves_no_cache(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    (data / "notes.txt").write_text("no video here")
    assert main(["prepare", "--data", str(data), "--out", str(out)]) == 1  # a failure in the work
    assert "no videos (.mp4" in capsys.readouterr().err and not out.exists()
    (data / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    assert main(["prepare", "--data", str(data), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "none of the 1 video(s)" in err and "broken.mp4" in err and "nothing was cached" in err
    assert not out.exists()  # a cache that `train` would only fail on later is not left behind
    out.mkdir()
    (out / "mine.txt").write_text("kept")  # a folder the user made is kept, with what is in it
    assert main(["prepare", "--data", str(data), "--out", str(out)]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


@pytest.mark.parametrize("command, message", [
    (["synth", "--out", "OUT", "--size", "100000x100000"], "too large; use at most 7680x4320"),
    (["synth", "--out", "OUT", "--minutes", "1e9"], "at most 10080 (a week)"),
    (["synth", "--out", "OUT", "--minutes", "nan"], "positive number"),
    (["bench", "--model", "tiny", "--size", "100000x100000"], "too large"),
    (["eval", "--model", "tiny", "--seeds", "1", "--size", "100000x100000"], "too large"),
    (["eval", "--model", "tiny", "--seeds", "1", "--seconds", "1e9"], "at most 3600"),
])
def test_absurd_sizes_are_refused_before_any_allocation(tmp_path, capsys, command, message):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # synth leaves no empty folder behind


def test_a_path_the_system_refuses_is_one_line_without_a_traceback(tmp_path, capsys):
    """The CLI's error boundary: an OSError with a file name is one line naming it (exit 1);
    -v shows the traceback."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.mp4").write_bytes(b"x")
    refused = "/proc/livefoley-cache"  # no folder can be made there, not even by root
    assert main(["prepare", "--data", str(data), "--out", refused]) == 1
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("livefoley: error:")]
    assert len(lines) == 1 and refused in lines[0] and "Traceback" not in err
    with pytest.raises(OSError):
        main(["-v", "prepare", "--data", str(data), "--out", refused])


@pytest.mark.parametrize("section, key, value, message", [
    ("transformer", "n_heads", 3, "must split into 3 heads"),
    ("head", "width", "256", "head.width must be a whole number ≥ 0, got '256'"),
    ("transformer", "d_model", 1e9, "transformer.d_model must be a whole number"),
    ("head", "width", 1 << 20, "billion parameters"),
    ("head", "sigma_data", "NaN", "head.sigma_data must be a finite number"),
    ("vision", "agg_heads", -1, "vision.agg_heads must be a whole number"),
    ("transformer", None, None, "missing 'transformer'"),
])
def test_a_bad_config_json_is_named_not_a_traceback(tmp_path, section, key, value, message):
    """A model folder whose config.json was edited by hand: a clear error before anything is built."""
    import json

    from model.generator import load_generator

    folder = load_generator("tiny").save(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    if key is None:
        del config[section]
    else:
        config[section][key] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LivefoleyError, match="model config") as err:
        load_generator(folder)
    assert message in str(err.value)


@pytest.mark.parametrize("out", ["/sys/livefoley.mp4", "/proc/livefoley.wav", "/sys/livefoley-out/"])
def test_an_output_folder_the_system_refuses_is_named_before_any_work(tmp_path, capsys, out):
    """Not a muxer's complaint (with advice to write .mkv) or "System error." after the work: the
    folder is tried first, even by root (/sys refuses new files, /proc has no such entries)."""
    from audio.contract import CONTRACT
    from audio.media import write_video
    from capture.synthetic import render_clip

    frames, audio, _ = render_clip(1, 0.3, width=64, height=64)
    video = tmp_path / "in.mp4"
    write_video(video, list(frames), fps=CONTRACT.fps, audio=audio)
    assert main(["generate", str(video), "-o", out, "--model", "tiny"]) == 1
    err = capsys.readouterr().err
    assert "livefoley: error: cannot" in err and out.rstrip("/").rsplit("/", 1)[0] in err and "muxer" not in err


def test_exit_code_2_is_a_bad_command_line_and_1_a_failure_in_the_work(tmp_path, capsys):
    """The one error boundary's exit codes: 2 when the arguments themselves are wrong (nothing was
    done, as argparse does), 1 when the work met a problem (a missing or unreadable file, a refused
    folder); both are one line."""
    assert main(["live", "--source", "webcam:1", "--sink", "null"]) == 2
    assert main(["synth", "--out", str(tmp_path / "s"), "--seed", "-1"]) == 2
    usage = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("livefoley: error:")]
    assert len(usage) == 2 and "unknown source 'webcam:1'" in usage[0] and "--seed" in usage[1]
    ref = tmp_path / "ref"
    ref.mkdir()
    assert main(["eval", "--generated", str(tmp_path / "missing.wav"), "--reference", str(ref)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "a.mp4"), "-o", str(tmp_path / "x.wav")]) == 1
    assert "a.mp4: no such file" in capsys.readouterr().err
