"""Sound output devices: which ones PortAudio sees (:func:`list_devices`), which one a
``device:NAME_OR_INDEX`` means (:func:`resolve_device`), and the errors of sound output.

sounddevice is imported lazily, in :func:`_sounddevice` only, because importing it loads and
initialises PortAudio (which enumerates the devices at that moment, and fails when PortAudio is
missing).  The sinks that play to a device are in :mod:`audio.sinks`.
"""

from __future__ import annotations

from typing import Any

from audio.errors import LivefoleyError, UsageError

PORTAUDIO_MISSING = (
    "PortAudio is not installed: on Debian/Ubuntu `sudo apt-get install libportaudio2`; "
    "on Fedora portaudio; on macOS brew install portaudio"
)


class SinkError(LivefoleyError):
    """A sink could not be opened, written or closed; the message names the sink and the fix."""


class SinkSpecError(SinkError, UsageError):
    """A sink string, recording name or volume that means nothing (exit 2: nothing was opened)."""


_SD: Any = None


def _sounddevice():
    """Import :mod:`sounddevice` (once); a missing PortAudio becomes one clear :class:`SinkError`."""
    global _SD
    if _SD is None:
        try:
            import sounddevice
        except OSError as err:  # sounddevice raises OSError when libportaudio cannot be loaded
            raise SinkError(PORTAUDIO_MISSING) from err
        _SD = sounddevice
    return _SD


def _query_devices() -> tuple[list[dict], int | None]:
    sd = _sounddevice()
    try:
        devices = [dict(d) for d in sd.query_devices()]
        hostapis = sd.query_hostapis()
        default = sd.default.device[1]
    except sd.PortAudioError as err:
        raise SinkError(f"could not list the audio devices: {err}") from err
    for d in devices:
        d["hostapi_name"] = hostapis[d["hostapi"]]["name"]
    default = default if isinstance(default, int) and default >= 0 else None
    return devices, default


def list_devices() -> list[dict]:
    """The output devices PortAudio sees: ``index, name, hostapi, max_output_channels,
    default_samplerate, is_default`` for each."""
    devices, default = _query_devices()
    return [
        {
            "index": d["index"],
            "name": d["name"],
            "hostapi": d["hostapi_name"],
            "max_output_channels": d["max_output_channels"],
            "default_samplerate": d["default_samplerate"],
            "is_default": d["index"] == default,
        }
        for d in devices
        if d["max_output_channels"] > 0
    ]


def _device_listing(devices: list[dict]) -> str:
    if not devices:
        return "no output devices were found (is a sound server running / a sound card present?)"
    return "output devices: " + "; ".join(
        f"{d['index']} {d['name']!r} ({d['hostapi']}){' [default]' if d['is_default'] else ''}"
        for d in devices
    )


def resolve_device(device: int | str | None) -> dict:
    """The output device (an entry of :func:`list_devices`) for an index, a name substring or None."""
    outputs = list_devices()
    hint = ("; pass --sink device:NAME_OR_INDEX with one of them (`livefoley devices` lists them)" if outputs else
            "; without a sound device, record with --sink file:OUT.flac (or --record OUT.flac), or play "
            "nowhere with --sink null")
    if device is None:
        for d in outputs:
            if d["is_default"]:
                return d
        raise SinkError(f"there is no default output device; {_device_listing(outputs)}{hint}")
    if isinstance(device, str) and device.strip().lstrip("-").isdigit():
        device = int(device.strip())
    if isinstance(device, int):
        for d in outputs:
            if d["index"] == device:
                return d
        raise SinkError(f"no output device with index {device}; {_device_listing(outputs)}{hint}")
    wanted = device.strip().lower()
    exact = [d for d in outputs if d["name"].lower() == wanted]
    matches = exact or [d for d in outputs if wanted in d["name"].lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise SinkError(f"no output device matches {device!r}; {_device_listing(outputs)}{hint}")
    raise SinkError(f"{device!r} matches several output devices; {_device_listing(matches)}{hint}")


__all__ = ["PORTAUDIO_MISSING", "SinkError", "list_devices", "resolve_device"]
