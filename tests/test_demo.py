"""`livefoley demo`: the synthetic world through a model into a video with sound and a PNG."""

import json

import av
import numpy as np
from PIL import Image

from audio.contract import CONTRACT
from plugin.cli import main


def test_demo_writes_a_video_with_generated_sound_and_a_png(tmp_path, capsys):
    video = tmp_path / "demo.mp4"
    code = main(["demo", "--model", "tiny", "--seconds", "1", "--no-play", "-o", str(video), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 30 and report["played"] is False
    assert report["waveform_ms"]["p50"] >= report["token_ms"]["p50"] > 0
    with av.open(str(video)) as f:
        v, a = f.streams.video[0], f.streams.audio[0]
        assert (v.width, v.height) == (640, 360) and a.rate == CONTRACT.sample_rate and a.channels == 2
        frames = sum(1 for _ in f.decode(video=0))
        assert frames == 30
    with av.open(str(video)) as f:
        pcm = np.concatenate([fr.to_ndarray().reshape(2, -1) if fr.format.is_planar
                              else fr.to_ndarray().reshape(-1, 2).T for fr in f.decode(audio=0)], axis=1)
    assert pcm.shape[1] >= 30 * CONTRACT.hop - 1024 and np.abs(pcm).max() > 1e-3  # real, non-silent audio
    with Image.open(tmp_path / "demo.png") as im:
        assert im.format == "PNG" and im.size[0] > 600
