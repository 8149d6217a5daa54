"""Source strings → frame sources.

``screen``, ``screen:N``, ``screen:X,Y,W,H``, ``camera:N``, ``obs:NAME``, ``synthetic[:SEED]``,
``file:PATH`` or a bare path.  Each scheme maps to ``"module:factory"`` so that heavy backends are
imported only when used; a factory takes ``(arg: str | None, **options)`` and returns an unopened
:class:`~capture.base.FrameSource`.  New backends add one line to :data:`SCHEMES`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from capture.base import CaptureError, FrameSource, SourceSpecError

SCHEMES: dict[str, str] = {
    # filled in as each backend becomes real
    "synthetic": "capture.synthetic.source:open_synthetic",
    "screen": "capture.screen:from_spec",
    "camera": "capture.camera:from_spec",
    "file": "capture.file:from_spec",
    "obs": "capture.obs:from_spec",
}


def parse_source(spec: str) -> tuple[str, str | None]:
    """Split a source string into ``(scheme, argument)``; a bare path becomes ``("file", path)``."""
    spec = spec.strip()
    if not spec:
        raise SourceSpecError("empty source string; try 'screen', 'file:VIDEO.mp4' or 'synthetic'")
    scheme, sep, arg = spec.partition(":")
    if scheme in SCHEMES:
        return scheme, (arg if sep else None)
    # Windows drive letters ("C:\\x.mp4") and plain paths are files.
    if not sep or len(scheme) == 1 or Path(spec).exists() or "/" in scheme or "." in scheme:
        return "file", spec
    raise SourceSpecError(
        f"unknown source {spec!r}; valid forms: "
        + ", ".join(sorted(f"{s}:…" for s in SCHEMES))
        + ", or a path to a video file"
    )


def open_source(spec: str, **options) -> FrameSource:
    """Build the (unopened) source for ``spec``; ``options`` go to the backend's factory."""
    scheme, arg = parse_source(spec)
    if scheme not in SCHEMES:
        raise CaptureError(f"source kind {scheme!r} is not available in this build")
    module_name, _, factory_name = SCHEMES[scheme].partition(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    return factory(arg, **options)
