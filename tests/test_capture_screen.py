"""Screen capture against a real X server (Xvfb, 1280×720×24) showing a known picture."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from capture import CaptureError, CaptureThread, ScreenSource, open_source
from capture.screen import parse_screen_spec


def known_picture(width: int, height: int) -> np.ndarray:
    """Blocks of distinct colours plus a gradient: any offset or channel swap shows."""
    rng = np.random.default_rng(42)
    img = np.zeros((height, width, 3), np.uint8)
    for y in range(0, height, 40):
        for x in range(0, width, 40):
            img[y:y + 40, x:x + 40] = rng.integers(0, 256, 3)
    img[:, :, 2] = (np.arange(width) * 255 // (width - 1)).astype(np.uint8)[None, :]
    return img


@pytest.fixture(scope="module")
def shown(xvfb):
    picture = known_picture(xvfb.width, xvfb.height)
    painter = xvfb.show_image(picture)
    yield picture
    painter.terminate()
    painter.wait(timeout=10)


def grab(spec: str, **options) -> np.ndarray:
    with open_source(spec, **options) as source:
        frame = source.read()
    assert frame.image.dtype == np.uint8 and frame.image.flags.c_contiguous
    return frame.image


@pytest.mark.parametrize("spec", ["screen", "screen:1", "screen:0"])
def test_full_screen_matches_the_picture(shown, spec):
    image = grab(spec)
    assert image.shape == shown.shape == (720, 1280, 3)
    np.testing.assert_array_equal(image, shown)


def test_region_matches_the_picture(shown):
    source = open_source("screen:100,50,320,200")
    assert isinstance(source, ScreenSource) and source.name == "screen:100,50,320,200"
    with source:
        assert source.size == (320, 200)
        image = source.read().image
    assert image.shape == (200, 320, 3)
    np.testing.assert_array_equal(image, shown[50:250, 100:420])


def test_paced_to_its_frame_rate(shown):
    with ScreenSource(region=(0, 0, 64, 48), fps=30) as source:
        t0 = time.monotonic()
        frames = [source.read() for _ in range(10)]
        elapsed = time.monotonic() - t0
    ticks = [round(f.pts * 30) for f in frames]
    assert ticks == sorted(set(ticks)) and ticks[0] == 0      # whole ticks, strictly increasing
    assert [f.pts for f in frames] == pytest.approx([t / 30 for t in ticks])
    assert elapsed >= 9 / 30 - 0.005                            # never faster than 30 fps
    assert [f.index for f in frames] == list(range(10))
    np.testing.assert_array_equal(frames[-1].image, shown[:48, :64])


def test_through_the_capture_thread(shown):
    with CaptureThread("screen:640,360,96,64", queue_size=2) as capture:
        frames = [capture.get(timeout=5) for _ in range(6)]
        stats = capture.stats()
    assert [f.index for f in frames] == sorted(f.index for f in frames)
    for frame in frames:
        np.testing.assert_array_equal(frame.image, shown[360:424, 640:736])
    assert stats["captured"] >= 6 and stats["queue_max"] <= 2 and stats["state"] == "running"


def test_bad_monitor_index(xvfb):
    with pytest.raises(CaptureError, match="no monitor 7") as err:
        grab("screen:7")
    message = str(err.value)
    assert "screen:7" in message and "1280x720" in message and "screen:N" in message


def test_region_outside_the_desktop(xvfb):
    with pytest.raises(CaptureError, match="outside the desktop") as err:
        grab("screen:1200,700,200,100")
    assert "1280x720" in str(err.value)


@pytest.mark.parametrize("spec", ["screen:abc", "screen:1,2", "screen:0,0,0,10", "screen:-1"])
def test_malformed_specs(spec):
    with pytest.raises(CaptureError, match="screen"):
        open_source(spec)


def test_parse_screen_spec():
    assert parse_screen_spec(None) == (None, None)
    assert parse_screen_spec("2") == (2, None)
    assert parse_screen_spec("10, 20, 30, 40") == (None, (10, 20, 30, 40))


def test_no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(CaptureError, match="DISPLAY is not set") as err:
        grab("screen")
    assert "screen" in str(err.value)


def test_display_that_does_not_exist(monkeypatch):
    number = 180
    while Path(f"/tmp/.X11-unix/X{number}").exists():
        number += 1
    monkeypatch.setenv("DISPLAY", f":{number}")
    t0 = time.monotonic()
    with pytest.raises(CaptureError, match="cannot connect to the display") as err:
        grab("screen")
    assert f":{number}" in str(err.value) and time.monotonic() - t0 < 10
    # The same failure through the capture thread surfaces at start(), in the caller's thread.
    with pytest.raises(CaptureError, match="cannot connect"):
        CaptureThread("screen").start()
    assert os.environ["DISPLAY"] == f":{number}"
