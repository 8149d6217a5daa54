"""A real OBS Studio under Xvfb for the ``obs``-marked tests (see ../shared/TESTING.md).

Import the fixture in a test module (``from tests.obs_fixtures import obs``).  OBS gets its own
temporary HOME (config: global.ini with the websocket server on a free port and a random password)
but the PulseAudio server of the ``pulse`` fixture (same ``XDG_RUNTIME_DIR``, ``PULSE_SERVER``,
cookie), so its Audio Output Capture of ``livefoley.monitor`` hears what livefoley plays.  OBS is
started by PID and killed by PID; ``obs.log`` is printed when it does not come up.  A missing
``obs`` binary is a failure that says to install ``obs-studio``, never a skip.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class ObsProcess:
    """A running (or restartable) OBS.  ``env``: the environment it runs with (and that a
    ``livefoley`` subprocess needs to reach the same PulseAudio)."""

    binary: str
    home: Path
    port: int
    password: str = field(repr=False)
    env: dict = field(repr=False)
    log: Path
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def target(self, password: str | None = None):
        from capture.obs.client import ObsTarget

        return ObsTarget(host=self.host, port=self.port, password=self.password if password is None else password)

    def client(self):
        from capture.obs.client import ObsClient

        return ObsClient(target=self.target(), timeout=5.0).connect()

    def cli_env(self, **extra: str) -> dict:
        """Environment for a ``livefoley`` subprocess that talks to this OBS."""
        return dict(self.env, LIVEFOLEY_OBS_HOST=self.host, LIVEFOLEY_OBS_PORT=str(self.port),
                    LIVEFOLEY_OBS_PASSWORD=self.password, **extra)

    def start(self, timeout: float = 30.0) -> None:
        self.starts += 1
        with self.log.open("a") as f:
            f.write(f"\n===== start {self.starts} =====\n")
        self.proc = subprocess.Popen(
            [self.binary, "--multi", "--verbose", "--websocket_port", str(self.port),
             "--websocket_password", self.password, "--websocket_ipv4_only"],
            env=self.env, cwd=str(self.home), stdout=self.log.open("a"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if _listening(self.port):
                return
            time.sleep(0.1)
        text = self.log.read_text(errors="replace")[-6000:]
        self.kill()
        pytest.fail(f"OBS did not open its websocket on port {self.port} within {timeout:.0f} s "
                    f"(exit code {self.proc.returncode if self.proc else None})\n--- {self.log} ---\n{text}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop OBS by its PID (SIGKILL by default: a crash)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        # wait for the port to be released so a restart can bind it
        deadline = time.monotonic() + 5
        while _listening(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)


def write_obs_config(home: Path, *, port: int, password: str, scripts: list[dict] | None = None) -> None:
    """global.ini with the websocket on, and (optionally) a scene collection that loads ``scripts``
    (``[{"path": ..., "settings": {...}}]``) through the Scripts tool when OBS starts."""
    cfg = home / ".config" / "obs-studio"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "global.ini").write_text(
        "[General]\nFirstRun=true\n"
        "[Basic]\nSceneCollection=Untitled\nSceneCollectionFile=Untitled\nProfile=Untitled\nProfileDir=Untitled\n"
        # no preview in OBS's window: OBS renders in software here (llvmpipe), where drawing the
        # preview costs a large part of a core that users' GPUs give for free
        "[BasicWindow]\nPreviewEnabled=false\n"
        "[OBSWebSocket]\nFirstLoad=false\nServerEnabled=true\n"
        f"ServerPort={port}\nAlertsEnabled=false\nAuthRequired=true\nServerPassword={password}\n"
    )
    if scripts is not None:
        scenes = cfg / "basic" / "scenes"
        scenes.mkdir(parents=True, exist_ok=True)
        collection = {
            "name": "Untitled", "current_scene": "Scene", "current_program_scene": "Scene",
            "scene_order": [{"name": "Scene"}],
            "sources": [{"id": "scene", "versioned_id": "scene", "name": "Scene", "uuid": secrets.token_hex(8),
                         "settings": {"items": [], "id_counter": 0}}],
            "modules": {"scripts-tool": scripts},
        }
        (scenes / "Untitled.json").write_text(json.dumps(collection))


def start_obs(pulse_env: dict, *, scripts: list[dict] | None = None) -> ObsProcess:
    binary = shutil.which("obs")
    if binary is None:
        pytest.fail("obs not found: install the Debian package 'obs-studio' "
                    "(apt-get install -y --no-install-recommends obs-studio xvfb; scripts/test.sh does)")
    home = Path(tempfile.mkdtemp(prefix="obs-home-"))
    port = _free_port()
    password = secrets.token_urlsafe(12)
    write_obs_config(home, port=port, password=password, scripts=scripts)
    runtime = pulse_env["XDG_RUNTIME_DIR"]
    env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=runtime, LIBGL_ALWAYS_SOFTWARE="1",
               QT_QPA_PLATFORM="xcb", PULSE_SERVER=f"unix:{runtime}/pulse/native")
    env.pop("XDG_CONFIG_HOME", None)
    cookie = Path(pulse_env["HOME"]) / ".config" / "pulse" / "cookie"
    if cookie.exists():
        env["PULSE_COOKIE"] = str(cookie)
    obs = ObsProcess(binary=binary, home=home, port=port, password=password, env=env, log=home / "obs.log")
    obs.start()
    return obs


@pytest.fixture(scope="module")
def obs(xvfb, pulse):
    """A real OBS (websocket on a free port, random password) under the session's Xvfb, sharing its
    PulseAudio server; killed by PID when the module's tests are done.  Not kept for the session: an
    OBS left idle renders in software here and keeps a fifth to a third of a core busy, which the
    timing-bound tests after it (the engine's, the outside measurement's) would share."""
    server = start_obs(pulse.env)
    yield server
    server.kill(signal.SIGTERM)
    shutil.rmtree(server.home, ignore_errors=True)


__all__ = ["ObsProcess", "obs", "start_obs", "write_obs_config"]
