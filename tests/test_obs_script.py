"""The OBS script's process control (plugin/obs/process.py), outside OBS: it launches the real
``livefoley`` console script with ``obs live`` against a real OBS, reports its status line, and
stops it (terminate → wait → kill) with the recording finalised."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.obs_fixtures import obs  # noqa: F401 - the fixture

pytestmark = pytest.mark.obs


def test_options_argv_never_carries_the_password():
    from plugin.obs.process import EngineOptions

    argv = EngineOptions(source="Game", model="tiny", nfe=2, cfg=2.5, volume=0.5, port=4456).argv("/x/livefoley")
    assert argv[:5] == ["/x/livefoley", "obs", "live", "--source", "Game"]
    assert argv[argv.index("--nfe") + 1] == "2" and argv[argv.index("--cfg") + 1] == "2.5"
    assert argv[argv.index("--port") + 1] == "4456" and not any("pass" in a for a in argv)
    with pytest.raises(ValueError, match="choose the OBS source"):
        EngineOptions(source="").argv("/x/livefoley")


def test_missing_executable_is_a_clear_error(tmp_path):
    from plugin.obs.process import EngineOptions, EngineProcess

    with pytest.raises(RuntimeError, match="livefoley executable not found"):
        EngineProcess().start(EngineOptions(source="Game"), livefoley=str(tmp_path / "nope"))


def test_engine_process_starts_and_stops_the_real_engine(obs, tmp_path):  # noqa: F811
    import soundfile as sf

    from plugin.obs.process import EngineOptions, EngineProcess, find_livefoley

    with obs.client() as client:
        client.call("CreateInput", {"sceneName": client.current_scene(), "inputName": "script color",
                                    "inputKind": "color_source_v3", "inputSettings": {"color": 0xFF00FF00}})
    exe = find_livefoley()
    assert exe and Path(exe).parent == Path(sys.executable).parent, exe
    rec = tmp_path / "script.wav"
    engine = EngineProcess(stop_timeout=10)
    env = dict(obs.cli_env(XDG_CONFIG_HOME=str(tmp_path / "cfg")), LIVEFOLEY_OBS_PASSWORD="")
    engine.start(EngineOptions(source="script color", output="null", model="tiny", host=obs.host, port=obs.port,
                               extra=("--threads", "2", "--record", str(rec))),
                 livefoley=exe, password=obs.password, env=env)
    assert engine.running
    ok = engine.wait_for(lambda lines: any(ln.startswith("live ") for ln in lines), 90)
    assert ok, "\n".join(engine.lines)
    assert engine.status.startswith("running: live ")
    code = engine.stop()
    assert code == 0 and not engine.running and engine.status == "stopped", "\n".join(engine.lines)
    audio, sr = sf.read(rec)
    assert sr == 48000 and len(audio) >= 1600 and len(audio) % 1600 == 0


def _engine_pids(port: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"live" in cmd and b"--port" in cmd and str(port).encode() in cmd:
                pids.append(int(d.name))
    return pids


def test_script_loads_in_obs_starts_engine_and_stops_it_when_obs_quits(xvfb, pulse, tmp_path, monkeypatch):
    """The script, loaded by a headless OBS from the scene collection's scripts list (with the hidden
    ``autostart`` setting), launches the engine; OBS quitting stops it."""
    import signal
    import time

    import tests.obs_fixtures as fx

    script = str(Path(__file__).resolve().parents[1] / "plugin" / "obs" / "livefoley_obs.py")
    exe = str(Path(sys.executable).parent / "livefoley")
    orig = fx.write_obs_config

    def with_script(home, *, port, password, scripts=None):
        orig(home, port=port, password=password, scripts=[{"path": script, "settings": {
            "source": "Scene", "output": "null", "model": "tiny", "autostart": True, "livefoley": exe,
            "port": port, "password": password}}])

    monkeypatch.setattr(fx, "write_obs_config", with_script)
    server = fx.start_obs(pulse.env)
    try:
        deadline = time.monotonic() + 90
        while "livefoley: running: live " not in server.log.read_text(errors="replace"):
            assert time.monotonic() < deadline, server.log.read_text(errors="replace")[-4000:]
            time.sleep(0.25)
        assert _engine_pids(server.port), "the engine process is not running"
    finally:
        server.kill(signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _engine_pids(server.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _engine_pids(server.port), "the engine outlived OBS"
