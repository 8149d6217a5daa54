"""livefoley for OBS Studio — load via Tools → Scripts → + (needs OBS's Python scripting set up).

Settings: the OBS source to watch, the output device, model, NFE, guidance, volume, the path to the
``livefoley`` executable, the WebSocket port and password (kept by OBS with the script's settings,
handed to the engine in its environment, never on a command line).  Buttons start and stop the
engine; a hotkey ("livefoley: start / stop", Settings → Hotkeys) toggles it; the status line shows
the engine's own status (fps, latency, rung).  The engine runs as a separate process
(``livefoley obs live …``, see :mod:`plugin.obs.process`); it is stopped on Stop, when the script is
unloaded or reloaded, and when OBS quits.  OBS persists the settings; the choices are also written
to livefoley's settings file so the CLI and the script share them.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

import obspython as obs  # noqa: E402  (only exists inside OBS)

from plugin.obs.process import EngineOptions, EngineProcess, find_livefoley  # noqa: E402

ENGINE = EngineProcess()
_state: dict = {"settings": None, "hotkey": None, "status": "stopped"}
MODELS = ("default", "tiny", "base")


def script_description() -> str:
    return ("<b>livefoley</b> — live sound for what an OBS source shows.<br>Pick a source and press Start. "
            "Run <code>livefoley obs setup --source NAME</code> once to capture the sound in OBS and delay "
            "the picture to match.")


def script_defaults(settings) -> None:
    obs.obs_data_set_default_string(settings, "output", "device")
    obs.obs_data_set_default_string(settings, "model", "default")
    obs.obs_data_set_default_int(settings, "nfe", 0)
    obs.obs_data_set_default_double(settings, "cfg", 3.0)
    obs.obs_data_set_default_double(settings, "volume", 1.0)
    obs.obs_data_set_default_int(settings, "port", 4455)
    obs.obs_data_set_default_string(settings, "livefoley", find_livefoley() or "")


def script_properties():
    props = obs.obs_properties_create()
    src = obs.obs_properties_add_list(props, "source", "Source to watch", obs.OBS_COMBO_TYPE_EDITABLE,
                                      obs.OBS_COMBO_FORMAT_STRING)
    for name in _source_names():
        obs.obs_property_list_add_string(src, name, name)
    obs.obs_properties_add_text(props, "output", "Output device (--sink)", obs.OBS_TEXT_DEFAULT)
    model = obs.obs_properties_add_list(props, "model", "Model", obs.OBS_COMBO_TYPE_EDITABLE,
                                        obs.OBS_COMBO_FORMAT_STRING)
    for m in MODELS:
        obs.obs_property_list_add_string(model, m, m)
    obs.obs_properties_add_int(props, "nfe", "NFE (0 = model default)", 0, 4, 1)
    obs.obs_properties_add_float_slider(props, "cfg", "Guidance ω", 1.0, 6.0, 0.1)
    obs.obs_properties_add_float_slider(props, "volume", "Volume", 0.0, 4.0, 0.05)
    obs.obs_properties_add_path(props, "livefoley", "livefoley executable", obs.OBS_PATH_FILE, "", None)
    obs.obs_properties_add_int(props, "port", "WebSocket port", 1, 65535, 1)
    obs.obs_properties_add_text(props, "password", "WebSocket password", obs.OBS_TEXT_PASSWORD)
    obs.obs_properties_add_button(props, "start", "Start", lambda *_: _start() or True)
    obs.obs_properties_add_button(props, "stop", "Stop", lambda *_: _stop() or True)
    status = obs.obs_properties_add_text(props, "status", "Status", obs.OBS_TEXT_INFO)
    obs.obs_property_set_long_description(status, "the engine's status line")
    return props


def script_update(settings) -> None:
    _state["settings"] = settings


def script_load(settings) -> None:
    _state["settings"] = settings
    hk = obs.obs_hotkey_register_frontend("livefoley.toggle", "livefoley: start / stop", _on_hotkey)
    _state["hotkey"] = hk
    arr = obs.obs_data_get_array(settings, "livefoley.toggle")
    obs.obs_hotkey_load(hk, arr)
    obs.obs_data_array_release(arr)
    obs.obs_frontend_add_event_callback(_on_event)
    obs.timer_add(_tick, 1000)
    if obs.obs_data_get_bool(settings, "autostart"):
        _start()


def script_save(settings) -> None:
    if _state["hotkey"] is not None:
        arr = obs.obs_hotkey_save(_state["hotkey"])
        obs.obs_data_set_array(settings, "livefoley.toggle", arr)
        obs.obs_data_array_release(arr)


def script_unload() -> None:
    obs.timer_remove(_tick)
    ENGINE.stop()


def _on_event(event) -> None:
    if event == obs.OBS_FRONTEND_EVENT_EXIT:
        ENGINE.stop()


def _on_hotkey(pressed) -> None:
    if pressed:
        _stop() if ENGINE.running else _start()


def _options(settings) -> EngineOptions:
    nfe = obs.obs_data_get_int(settings, "nfe")
    return EngineOptions(source=obs.obs_data_get_string(settings, "source"),
                         output=obs.obs_data_get_string(settings, "output") or "device",
                         model=obs.obs_data_get_string(settings, "model") or "default",
                         nfe=nfe or None, cfg=obs.obs_data_get_double(settings, "cfg"),
                         volume=obs.obs_data_get_double(settings, "volume"), host="localhost",
                         port=obs.obs_data_get_int(settings, "port"))


def _start() -> None:
    settings = _state["settings"]
    try:
        options = _options(settings)
        ENGINE.start(options, livefoley=obs.obs_data_get_string(settings, "livefoley") or None,
                     password=obs.obs_data_get_string(settings, "password") or None)
        _set_status("starting…")
    except (RuntimeError, ValueError, OSError) as err:
        _set_status(f"cannot start: {err}")


def _stop() -> None:
    ENGINE.stop()
    _set_status("stopped")


def _tick() -> None:
    ENGINE.poll()
    _set_status(ENGINE.status)


def _set_status(text: str) -> None:
    if text != _state["status"]:
        _state["status"] = text
        print(f"livefoley: {text}")
        if _state["settings"] is not None:
            obs.obs_data_set_string(_state["settings"], "status", text)


def _source_names() -> list[str]:
    names: list[str] = []
    sources = obs.obs_enum_sources()
    if sources:
        for s in sources:
            names.append(obs.obs_source_get_name(s))
        obs.source_list_release(sources)
    scenes = obs.obs_frontend_get_scene_names() or []
    return sorted(set(names) | set(scenes))
