"""Capture: frame sources (screen, camera, file, OBS, synthetic) and the 30-fps capture thread."""

from capture.base import CaptureError, Frame, FrameSource
from capture.camera import CameraSource
from capture.file import FileSource, VideoInfo, iter_frames_30fps, probe_video
from capture.registry import SCHEMES, open_source, parse_source
from capture.resample import FrameResampler, output_frame_count
from capture.screen import ScreenSource
from capture.thread import CaptureThread

__all__ = [
    "SCHEMES", "CameraSource", "CaptureError", "CaptureThread", "FileSource", "Frame", "FrameResampler",
    "FrameSource", "ScreenSource", "VideoInfo", "iter_frames_30fps", "open_source", "output_frame_count",
    "parse_source", "probe_video",
]
