"""Set OBS up for livefoley, idempotently: list what can be captured, capture our sound, delay the
picture so that it lines up with our sound.

* **Audio.**  An input ``livefoley audio`` in the current scene that hears livefoley's output.  On
  Linux an Audio Output Capture (``pulse_output_capture``) of the PulseAudio sink's monitor
  (``<sink>.monitor``; run the engine with ``PULSE_SINK=<sink>`` or a device on that sink).  On
  Windows and macOS there is no sink to name from here: :func:`manual_audio_steps` prints the exact
  steps (Application Audio Capture / a virtual cable on Windows, a loopback device on macOS).
* **Delay.**  OBS can delay pictures but not advance sound, so a Render Delay filter
  (``gpu_delay``, at most 500 ms) named ``livefoley delay`` delays the video by livefoley's
  measured glass-to-ear latency.  It must *not* sit on the source livefoley captures: measured
  here, ``GetSourceScreenshot`` returns the filtered (delayed) picture, so a filter on the
  captured source would delay what livefoley sees by the same amount and fix nothing.  It goes on
  the scene that shows the captured input (the current program scene by default, or
  ``delay_on``); capturing a whole scene therefore cannot be compensated inside OBS (an error says
  so and what to do instead).  Everything else in that scene is delayed too: give a microphone
  the same delay (Advanced Audio Properties → Sync Offset) to keep a webcam's lip sync.
* Each step reports ``created`` / ``updated`` / ``unchanged``: running setup twice changes nothing.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from capture.obs.client import NOT_FOUND, ObsClient, ObsError, ObsRequestError
from plugin.obs.settings import DEFAULT_DELAY_MS, MAX_DELAY_MS

log = logging.getLogger(__name__)

AUDIO_INPUT = "livefoley audio"
DELAY_FILTER = "livefoley delay"
PULSE_KIND = "pulse_output_capture"
DELAY_KIND = "gpu_delay"


class ObsSetupError(ObsError):
    """OBS cannot be set up as asked (the message says why and what to do)."""


@dataclass
class SetupReport:
    """What setup did.  ``actions``: (what, outcome) pairs, outcome one of created / updated /
    unchanged / manual; ``delay_ms``: the Render Delay applied and where it came from."""

    actions: list[tuple[str, str]] = field(default_factory=list)
    delay_ms: int | None = None
    delay_from: str = ""
    delay_on: str | None = None
    manual_steps: str | None = None

    @property
    def changed(self) -> bool:
        return any(outcome in ("created", "updated") for _, outcome in self.actions)

    def to_dict(self) -> dict[str, Any]:
        return {"actions": [{"what": w, "outcome": o} for w, o in self.actions], "changed": self.changed,
                "delay_ms": self.delay_ms, "delay_from": self.delay_from, "delay_on": self.delay_on,
                "manual_steps": self.manual_steps}


def list_sources(client: ObsClient) -> dict[str, Any]:
    """``{"current_scene", "scenes": [{"name", "items": [{"name", "kind", "enabled"}]}], "inputs":
    [{"name", "kind"}]}`` — everything ``obs:NAME`` can capture."""
    kinds = {i["inputName"]: i.get("unversionedInputKind") or i.get("inputKind") for i in client.inputs()}
    scenes = []
    for name in client.scenes():
        items = [{"name": it["sourceName"], "kind": it.get("inputKind") or kinds.get(it["sourceName"])
                  or it.get("sourceType", "").replace("OBS_SOURCE_TYPE_", "").lower(),
                  "enabled": bool(it.get("sceneItemEnabled", True))}
                 for it in reversed(client.scene_items(name))]
        scenes.append({"name": name, "items": items})
    return {"current_scene": client.current_scene(), "scenes": scenes,
            "inputs": [{"name": n, "kind": k} for n, k in kinds.items()]}


def manual_audio_steps(platform: str, sink: str) -> str:
    """The exact steps to capture livefoley's sound in OBS where setup cannot do it itself."""
    if platform == "win32":
        return (f"In OBS: Sources → + → Application Audio Capture (BETA) → name it '{AUDIO_INPUT}' → Window: "
                "[python.exe / livefoley.exe]: the livefoley process → OK.  (OBS < 28: install VB-CABLE, run "
                "livefoley with --sink device:'CABLE Input', and add Audio Input Capture → Device: 'CABLE "
                "Output'.)  Then set the livefoley process not to play to your speakers twice: Settings → "
                "Audio → Monitoring Device stays your headphones.")
    if platform == "darwin":
        return (f"Install a loopback device (BlackHole 2ch: `brew install blackhole-2ch`), run livefoley with "
                f"--sink device:BlackHole, then in OBS: Sources → + → Audio Input Capture → name it '{AUDIO_INPUT}' "
                "→ Device: 'BlackHole 2ch' → OK; set its Audio Monitoring to 'Monitor and Output' "
                "(Edit → Advanced Audio Properties) to hear it.  macOS 13+ with OBS 30+: macOS Audio Capture → "
                "Application → the livefoley process works without a loopback device.")
    return (f"Add an Audio Output Capture of '{sink}.monitor' named '{AUDIO_INPUT}' "
            "(Sources → + → Audio Output Capture).")


def _scene_of(client: ObsClient, source: str, scene: str | None) -> str:
    scene = scene or client.current_scene()
    if source == scene or source in client.scenes():
        raise ObsSetupError(
            f"'{source}' is a scene: a Render Delay on it would delay what livefoley sees as well, which "
            "cancels out. Capture the input that shows the game (e.g. obs:'Game Capture'; `livefoley obs "
            "sources` lists them) and let setup delay its scene, or pass --no-delay")
    names = [it["sourceName"] for it in client.scene_items(scene)]
    if source not in names:
        have = ", ".join(map(repr, names)) or "nothing"
        raise ObsSetupError(f"'{source}' is not in scene '{scene}' (it has: {have}); "
                            "add it there, or name its scene with --scene / the filter's target with --delay-on")
    return scene


def resolve_delay(delay_ms: float | None, measured_ms: float | None) -> tuple[int, str]:
    """The Render Delay to apply: ``delay_ms`` given, else the last measured latency, else
    :data:`DEFAULT_DELAY_MS`; clamped to 0 … :data:`MAX_DELAY_MS` (a warning when it had to be cut)."""
    if delay_ms is not None:
        value, origin = float(delay_ms), "--delay-ms"
    elif measured_ms is not None:
        value, origin = float(measured_ms), "measured (last `livefoley obs live` run)"
    else:
        value, origin = float(DEFAULT_DELAY_MS), "default (no latency measured yet: run `livefoley obs live` once)"
    if value < 0:
        raise ObsSetupError(f"a delay cannot be negative; got {value:g} ms")
    if value > MAX_DELAY_MS:
        log.warning("latency %.0f ms exceeds what OBS's Render Delay can do; using %d ms (sound stays %.0f ms late)",
                    value, MAX_DELAY_MS, value - MAX_DELAY_MS)
        value = MAX_DELAY_MS
    return int(round(value)), origin


def setup_obs(client: ObsClient, *, source: str, sink: str = "livefoley", delay_ms: float | None = None,
              measured_ms: float | None = None, scene: str | None = None, delay_on: str | None = None,
              delay: bool = True, platform: str = sys.platform) -> SetupReport:
    """Create / update the audio capture and the Render Delay filter (see the module docstring)."""
    report = SetupReport()
    known = client.source_names()
    if source not in known:
        raise ObsSetupError(f"OBS has no source named {source!r}; available: {', '.join(map(repr, known))} "
                            "(`livefoley obs sources`)")
    scene = scene or client.current_scene()
    # -- audio ----------------------------------------------------------------------------------------
    if platform.startswith("linux"):
        ensure_audio(client, report, scene=scene, sink=sink)
    else:
        report.manual_steps = manual_audio_steps(platform, sink)
        report.actions.append((f"audio input '{AUDIO_INPUT}'", "manual"))
    # -- delay ----------------------------------------------------------------------------------------
    if delay:
        target = delay_on or _scene_of(client, source, scene)
        if target == source:
            raise ObsSetupError(f"--delay-on {source!r} is the captured source itself: livefoley would see the "
                                "delayed picture too (the delay cancels out); put it on the scene that shows it")
        if target not in known:
            raise ObsSetupError(f"--delay-on {target!r}: no such source or scene in OBS")
        value, origin = resolve_delay(delay_ms, measured_ms)
        report.delay_ms, report.delay_from, report.delay_on = value, origin, target
        ensure_filter(client, report, target=target, delay_ms=value)
    return report


def ensure_audio(client: ObsClient, report: SetupReport, *, scene: str, sink: str) -> None:
    """The audio input that hears ``sink``'s monitor in ``scene``: created, updated or unchanged."""
    device = f"{sink}.monitor"
    what = f"audio input '{AUDIO_INPUT}' ({PULSE_KIND} of {device})"
    existing = {i["inputName"]: i for i in client.inputs()}
    if AUDIO_INPUT not in existing:
        client.call("CreateInput", {"sceneName": scene, "inputName": AUDIO_INPUT, "inputKind": PULSE_KIND,
                                    "inputSettings": {"device_id": device}, "sceneItemEnabled": True})
        report.actions.append((what, "created"))
        return
    kind = existing[AUDIO_INPUT].get("unversionedInputKind") or existing[AUDIO_INPUT].get("inputKind")
    if kind != PULSE_KIND:
        raise ObsSetupError(f"OBS already has an input named '{AUDIO_INPUT}' of kind {kind!r}; rename or remove it "
                            "and run setup again")
    settings = client.call("GetInputSettings", {"inputName": AUDIO_INPUT}).get("inputSettings", {})
    outcome = "unchanged"
    if settings.get("device_id") != device:
        client.call("SetInputSettings", {"inputName": AUDIO_INPUT, "inputSettings": {"device_id": device}})
        outcome = "updated"
    if client.call("GetInputMute", {"inputName": AUDIO_INPUT}).get("inputMuted"):
        client.call("SetInputMute", {"inputName": AUDIO_INPUT, "inputMuted": False})
        outcome = "updated"
    try:
        client.call("GetSceneItemId", {"sceneName": scene, "sourceName": AUDIO_INPUT})
    except ObsRequestError as err:
        if err.code != NOT_FOUND:
            raise
        client.call("CreateSceneItem", {"sceneName": scene, "sourceName": AUDIO_INPUT})
        outcome = "updated"
    report.actions.append((what, outcome))


def ensure_filter(client: ObsClient, report: SetupReport, *, target: str, delay_ms: int) -> None:
    """The Render Delay filter on ``target`` at ``delay_ms``, enabled: created, updated or unchanged."""
    what = f"Render Delay '{DELAY_FILTER}' on '{target}' ({delay_ms} ms)"
    try:
        current = client.call("GetSourceFilter", {"sourceName": target, "filterName": DELAY_FILTER})
    except ObsRequestError as err:
        if err.code != NOT_FOUND:
            raise
        client.call("CreateSourceFilter", {"sourceName": target, "filterName": DELAY_FILTER,
                                           "filterKind": DELAY_KIND, "filterSettings": {"delay_ms": delay_ms}})
        report.actions.append((what, "created"))
        return
    if current.get("filterKind") != DELAY_KIND:
        raise ObsSetupError(f"'{target}' has a filter named '{DELAY_FILTER}' of kind {current.get('filterKind')!r}; "
                            "rename or remove it and run setup again")
    outcome = "unchanged"
    if int(current.get("filterSettings", {}).get("delay_ms", -1)) != delay_ms:
        client.call("SetSourceFilterSettings", {"sourceName": target, "filterName": DELAY_FILTER,
                                                "filterSettings": {"delay_ms": delay_ms}})
        outcome = "updated"
    if not current.get("filterEnabled", True):
        client.call("SetSourceFilterEnabled", {"sourceName": target, "filterName": DELAY_FILTER, "filterEnabled": True})
        outcome = "updated"
    report.actions.append((what, outcome))


__all__ = ["AUDIO_INPUT", "DELAY_FILTER", "ObsSetupError", "SetupReport", "ensure_audio", "ensure_filter",
           "list_sources",
           "manual_audio_steps",
           "resolve_delay", "setup_obs"]
