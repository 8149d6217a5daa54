"""Source strings → sources (DESIGN.md): screen, camera, file / bare path; unknown kinds list the
valid ones.  There is no camera on the build machines: ``camera:0`` must fail fast and clearly
(real-camera capture, including OBS's virtual camera, is a manual check)."""

from __future__ import annotations

import time

import pytest

from capture import SCHEMES, CameraSource, CaptureError, CaptureThread, FileSource, ScreenSource, open_source
from capture.registry import parse_source


def test_the_capture_schemes_are_registered():
    for scheme in ("screen", "camera", "file"):
        assert scheme in SCHEMES


@pytest.mark.parametrize(("spec", "parsed"), [
    ("screen", ("screen", None)),
    ("screen:2", ("screen", "2")),
    ("screen:10,20,640,360", ("screen", "10,20,640,360")),
    ("camera:0", ("camera", "0")),
    ("file:/videos/run.mp4", ("file", "/videos/run.mp4")),
    ("file:C:\\videos\\run.mp4", ("file", "C:\\videos\\run.mp4")),
    ("run.mp4", ("file", "run.mp4")),
    ("clips/run.mkv", ("file", "clips/run.mkv")),
    ("C:\\videos\\run.mp4", ("file", "C:\\videos\\run.mp4")),
])
def test_parse_source(spec, parsed):
    assert parse_source(spec) == parsed


def test_unknown_source_lists_the_valid_ones():
    with pytest.raises(CaptureError, match="unknown source 'webcam:1'") as err:
        open_source("webcam:1")
    for scheme in ("screen", "camera", "file"):
        assert f"{scheme}:" in str(err.value)


def test_factories_build_unopened_sources_with_options(tmp_path):
    screen = open_source("screen:2", fps=15)
    assert isinstance(screen, ScreenSource) and screen.monitor == 2 and screen.fps == 15
    assert isinstance(open_source("screen"), ScreenSource)
    region = open_source("screen:1,2,30,40")
    assert region.region == (1, 2, 30, 40) and region.name == "screen:1,2,30,40"
    camera = open_source("camera:3", width=640, height=480)
    assert isinstance(camera, CameraSource) and camera.index == 3 and camera.name == "camera:3"
    assert open_source("camera").index == 0
    video = open_source(f"file:{tmp_path / 'x.mp4'}", realtime=False, size=(64, 48))
    assert isinstance(video, FileSource) and not video.live and video.path.endswith("x.mp4")
    with pytest.raises(TypeError):
        open_source("screen", colour="blue")   # a misspelt option is an error, not ignored


@pytest.mark.parametrize("spec", ["camera:front", "camera:-1", "camera:1.5"])
def test_malformed_camera_specs(spec):
    with pytest.raises(CaptureError, match="camera"):
        open_source(spec)


def test_missing_camera_is_a_clear_error_not_a_hang(capfd):
    t0 = time.monotonic()
    source = open_source("camera:0")
    capfd.readouterr()
    with pytest.raises(CaptureError, match="camera:0") as err:
        source.open()
    message = str(err.value)
    assert "no camera could be opened at index 0" in message and "connected" in message
    assert "WARN" not in capfd.readouterr().err  # OpenCV's own warnings do not leak beside ours
    assert time.monotonic() - t0 < 10
    source.close()                                   # closing a never-opened camera is harmless
    with pytest.raises(CaptureError, match="read\\(\\) before open"):
        source.read()
    # Through the capture thread the same error reaches the caller at start().
    t0 = time.monotonic()
    with pytest.raises(CaptureError, match="camera:0"):
        CaptureThread("camera:0").start()
    assert time.monotonic() - t0 < 10
