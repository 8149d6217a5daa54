"""Capture: frame sources (screen, camera, file, OBS, synthetic) and the 30-fps capture thread."""

from capture.base import CaptureError, Frame, FrameSource
from capture.registry import SCHEMES, open_source, parse_source

__all__ = ["SCHEMES", "CaptureError", "Frame", "FrameSource", "open_source", "parse_source"]
