"""Settings that persist across runs, shared by the ``livefoley obs`` commands and the OBS script.

Stored as JSON in the user's config directory:

* Linux / BSD: ``$XDG_CONFIG_HOME/livefoley/settings.json`` (default ``~/.config/livefoley``)
* macOS: ``~/Library/Application Support/livefoley/settings.json``
* Windows: ``%APPDATA%\\livefoley\\settings.json``

``LIVEFOLEY_CONFIG_DIR`` overrides the folder.  The password is never stored here: it comes from
``LIVEFOLEY_OBS_PASSWORD`` or an interactive prompt.  Writes go to a temporary file that is
renamed into place, so a crash never leaves a half-written file; an unreadable file is reported
with its path and the fix (delete it) instead of being silently replaced.

This module imports only the standard library, so the OBS script can use it inside OBS's Python.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from audio.files import atomic_path

try:  # inside OBS's interpreter the package may be importable without audio/ (it is, via sys.path)
    from audio.errors import LivefoleyError
except ImportError:  # pragma: no cover - only when the script runs from a bare copy of plugin/obs
    class LivefoleyError(Exception):  # type: ignore[no-redef]
        """A problem the user can act on."""

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 4455
#: Render Delay used by ``obs setup`` when no latency was ever measured and none is given (ms).
#: Of the order of a CPU model's glass-to-ear latency through PulseAudio (the README's measured table);
#: `livefoley obs live` replaces it with the latency it measures.
DEFAULT_DELAY_MS = 150
MAX_DELAY_MS = 500  # OBS's Render Delay filter cannot delay more


class SettingsError(LivefoleyError):
    """The settings file cannot be read or written (the message names the file and the fix)."""


@dataclass(frozen=True)
class ObsSettings:
    """What persists.  ``latency_ms``: the glass-to-ear p50 of the last ``livefoley obs live`` run
    (None until measured); ``latency_source``: where it came from."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    source: str | None = None
    sink: str = "livefoley"
    output: str = "device"  # the engine's --sink (sound output device string)
    model: str = "default"
    nfe: int | None = None
    cfg: float | None = None
    volume: float = 1.0
    latency_ms: float | None = None
    latency_source: str | None = None
    livefoley_path: str | None = None  # the `livefoley` console script the OBS script launches

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise SettingsError(f"OBS websocket port must be 1–65535; got {self.port!r}")
        if not (isinstance(self.volume, (int, float)) and math.isfinite(self.volume) and self.volume >= 0):
            raise SettingsError(f"volume must be a number ≥ 0; got {self.volume!r}")
        if self.nfe is not None and (not isinstance(self.nfe, int) or self.nfe < 1):
            raise SettingsError(f"nfe must be a whole number ≥ 1; got {self.nfe!r}")

    def replace(self, **changes) -> ObsSettings:
        return replace(self, **{k: v for k, v in changes.items()})


def config_dir() -> Path:
    """The per-user livefoley config folder (see the module docstring)."""
    override = os.environ.get("LIVEFOLEY_CONFIG_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "livefoley"


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


def load_settings(path: Path | None = None) -> ObsSettings:
    """The saved settings, or the defaults when there is no file.  Unknown keys are ignored (a newer
    version may have written them); a corrupt file raises :class:`SettingsError`."""
    path = settings_path() if path is None else Path(path)
    if not path.exists():
        return ObsSettings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = {f.name for f in fields(ObsSettings)}
        return ObsSettings(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError) as err:
        raise SettingsError(f"livefoley settings {path} cannot be read ({err}); fix or delete the file "
                            "(it is recreated with the defaults)") from err


def save_settings(settings: ObsSettings, path: Path | None = None) -> Path:
    """Write ``settings`` atomically; returns the file."""
    path = settings_path() if path is None else Path(path)
    data = asdict(settings)
    assert "password" not in data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as err:
        raise SettingsError(f"cannot write livefoley settings {path} ({err}); check that the folder is "
                            "writable or set LIVEFOLEY_CONFIG_DIR") from err
    log.debug("saved settings to %s", path)
    return path


def update_settings(path: Path | None = None, **changes) -> ObsSettings:
    """Load, change the given fields, save; returns the new settings."""
    new = load_settings(path).replace(**changes)
    save_settings(new, path)
    return new


__all__ = ["DEFAULT_DELAY_MS", "MAX_DELAY_MS", "ObsSettings", "SettingsError", "config_dir", "load_settings",
           "save_settings", "settings_path", "update_settings"]
