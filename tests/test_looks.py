"""Other looks of the world (capture/synthetic/looks.py) and `eval --look`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from capture.synthetic import World, world_audio
from capture.synthetic.looks import LOOKS, apply_look, mirror_truth
from plugin.cli import main


@pytest.fixture(scope="module")
def frame():
    world = World(3, width=320, height=180)
    for _ in range(40):
        img, _, _ = world.step()
    return img


@pytest.mark.parametrize("look", sorted(LOOKS))
def test_every_look_keeps_the_frame_shape_and_type(frame, look):
    out = apply_look(frame, look)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert (look == "world") == np.array_equal(out, frame)


def test_the_looks_do_what_they_say(frame):
    np.testing.assert_array_equal(apply_look(frame, "mirror")[:, 0], frame[:, -1])
    np.testing.assert_array_equal(apply_look(frame, "invert"), 255 - frame)
    gray = apply_look(frame, "gray")
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    small = apply_look(frame, "small")
    assert (small[0] == 128).all() and (small[:, 0] == 128).all()
    with pytest.raises(ValueError, match="unknown look"):
        apply_look(frame, "sepia")


def test_mirrored_truth_swaps_the_channels_and_the_sides():
    audio, events, _ = world_audio(3, 60)
    m_audio, m_events = mirror_truth(audio, events)
    np.testing.assert_array_equal(m_audio[0], audio[1])
    assert [round(e["x"] + m["x"], 6) for e, m in zip(events, m_events, strict=True)] == [1.0] * len(events)


def test_eval_runs_on_a_mirrored_world(tmp_path):
    out = tmp_path / "e.json"
    assert main(["eval", "--model", "tiny", "--seeds", "3", "--seconds", "1", "--size", "320x180",
                 "--look", "mirror", "--device", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["look"] == "mirror" and report["rows"][0]["name"] == "ground truth"
    assert report["rows"][0]["f1"] is None or report["rows"][0]["f1"] > 0.5  # the truth matches itself


def test_synth_draws_clips_in_turn_in_the_looks_asked_for(tmp_path):
    import av

    from capture.synthetic.clips import derive_seed, load_events

    out = tmp_path / "clips"
    assert main(["synth", "--out", str(out), "--minutes", str(4 / 60), "--clip-seconds", "2",
                 "--size", "320x180", "--seed", "5", "--looks", "invert", "small"]) == 0
    for i, look in enumerate(["invert", "small"]):
        video = out / f"synth_s5_{i:04d}.mp4"
        assert load_events(video)["look"] == look
        world = World(derive_seed(5, i), width=320, height=180)
        truth = [world.step()[0] for _ in range(30)]
        with av.open(str(video)) as container:
            frame = next(f.to_ndarray(format="rgb24") for k, f in enumerate(container.decode(video=0)) if k == 20)
        drawn = np.abs(frame.astype(np.int16) - apply_look(truth[20], look)).mean()
        plain = np.abs(frame.astype(np.int16) - truth[20]).mean()
        assert drawn < 8 < plain, (look, drawn, plain)  # the look's picture, not the world's
    with pytest.raises(SystemExit):  # mirror is training's business (the sound must swap too)
        main(["synth", "--out", str(out), "--looks", "mirror"])
