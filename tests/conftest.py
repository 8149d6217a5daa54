"""Shared fixtures that start the real parts the tests use: an X server (Xvfb) and a PulseAudio
server with a null sink.  Each is started by PID and stopped at the end of the session.  A missing
system package is a test *failure* that says how to install it, never a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# One OpenMP thread per process: the suite runs CLIs in subprocesses beside pytest on 2 cores, and
# oversubscribed OpenMP threads busy-wait each other into 10-20x slowdowns (measured).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# What `--optimize` measured is remembered per CPU (model/optimize.py): the suite keeps its own, in a
# folder of its own, so no test reads a choice made outside it or leaves one in the user's cache.
os.environ["LIVEFOLEY_CACHE_DIR"] = tempfile.mkdtemp(prefix="livefoley-test-cache-")

SR_VAE_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sr_vae"


def _require(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} not found: install the Debian package {package!r} (scripts/test.sh does)")
    return path


def _wait(predicate, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    extra = f"\n--- {log} ---\n{log.read_text(errors='replace')[-4000:]}" if log and log.exists() else ""
    pytest.fail(f"{what} did not come up within {timeout:.0f} s{extra}")


@dataclass
class XDisplay:
    display: str
    width: int
    height: int

    def show_image(self, rgb) -> subprocess.Popen:
        """Paint ``rgb`` ((H, W, 3) uint8) full-screen on this display; returns the painter process.

        Uses a tiny Tk window without decorations (no window manager runs), so what a screen grab
        sees is exactly these pixels."""
        import numpy as np

        path = Path(tempfile.mkdtemp()) / "picture.ppm"
        h, w, _ = rgb.shape
        path.write_bytes(b"P6 %d %d 255\n" % (w, h) + np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
        script = (
            "import tkinter as tk, sys\n"
            "r = tk.Tk(); r.overrideredirect(True); r.geometry('%dx%d+0+0')\n"
            "img = tk.PhotoImage(file=sys.argv[1]); tk.Label(r, image=img, bd=0).pack()\n"
            "r.after(100, lambda: print('shown', flush=True)); r.mainloop()\n"
        ).replace("%dx%d", f"{w}x{h}")
        env = dict(os.environ, DISPLAY=self.display)
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(path)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "shown"
        time.sleep(0.3)
        return proc


@pytest.fixture
def one_thread():
    """One intra-op torch thread for the test: the small models of the codec and VAE tests run fastest
    (and deterministically) on one, and far faster than on two when other work shares the cores.
    Use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def xvfb() -> XDisplay:
    """A real X server (Xvfb) at 1280×720×24; sets ``DISPLAY`` for the session."""
    binary = _require("Xvfb", "xvfb")
    number = 99
    while Path(f"/tmp/.X11-unix/X{number}").exists() or Path(f"/tmp/.X{number}-lock").exists():
        number += 1
    log = Path(tempfile.mkdtemp()) / "xvfb.log"
    proc = subprocess.Popen(
        [binary, f":{number}", "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    _wait(lambda: Path(f"/tmp/.X11-unix/X{number}").exists(), 15, "Xvfb", log)
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{number}"
    yield XDisplay(display=f":{number}", width=1280, height=720)
    proc.terminate()
    proc.wait(timeout=10)
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old


@dataclass
class PulseSink:
    sink: str
    monitor: str
    env: dict

    def record(self, path: Path) -> subprocess.Popen:
        """Start recording the sink's monitor as raw float32le stereo 48 kHz into ``path``."""
        return subprocess.Popen(
            ["parec", "-d", self.monitor, "--format=float32le", "--rate=48000", "--channels=2",
             "--raw", "--latency-msec=10", str(path)],
            env=self.env,
        )


@pytest.fixture(scope="session")
def pulse() -> PulseSink:
    """A real PulseAudio server with a null sink ``livefoley`` (48 kHz); the process environment is
    pointed at it (``XDG_RUNTIME_DIR``, ``PULSE_SINK``) *before* any test imports sounddevice."""
    binary = _require("pulseaudio", "pulseaudio")
    _require("pactl", "pulseaudio-utils")
    runtime = Path(tempfile.mkdtemp())
    runtime.chmod(0o700)
    home = Path(tempfile.mkdtemp())
    env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(runtime), PULSE_SINK="livefoley")
    log = runtime / "pulse.log"
    proc = subprocess.Popen(
        [binary, "--daemonize=no", "--exit-idle-time=-1", "-n", "--load=module-native-protocol-unix",
         "--load=module-null-sink sink_name=livefoley rate=48000", "--log-target=stderr"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        return subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode == 0

    _wait(up, 20, "PulseAudio", log)
    saved = {k: os.environ.get(k) for k in ("HOME", "XDG_RUNTIME_DIR", "PULSE_SINK")}
    os.environ.update(HOME=str(home), XDG_RUNTIME_DIR=str(runtime), PULSE_SINK="livefoley")
    yield PulseSink(sink="livefoley", monitor="livefoley.monitor", env=env)
    proc.terminate()
    proc.wait(timeout=10)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def in_fresh_process(fn, *args):
    """``fn(*args)`` (a module-level function) in a spawned child with this process's environment;
    its result comes back, its exceptions (assertions too) are raised here.  For timing-bound
    checks: what earlier tests did to this process (an int8 graph built by inductor, measured to
    leave eager ops slower for the rest of the process's life) must not tilt them."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # an executor, not a Pool: a child that dies (a crash in native code) fails the test, where a
    # Pool would wait for it for ever
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def pytest_collection_modifyitems(config, items):
    """GPU tests run only where CUDA exists (TESTING.md: CI never has a GPU)."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        marker = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(marker)
