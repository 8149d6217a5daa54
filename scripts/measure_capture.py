#!/usr/bin/env python
"""Per-frame cost of the capture sources: screen grab at 1280×720 and 720p H.264 file decode.

    .venv/bin/python scripts/measure_capture.py [--frames 150] [--threads 2] [--json]

* screen: a real X server (the current ``$DISPLAY`` if it is 1280×720 or larger, otherwise a
  private Xvfb at 1280×720×24 that this script starts and stops by PID); times
  ``ScreenSource.read()`` = mss grab (XShm) + BGRA→RGB, unpaced, and the two parts separately.
* file: a 720p30 H.264 yuv420p mp4 encoded here (a scrolling textured scene, so motion
  compensation and bitrate look like gameplay rather than noise); times ``FileSource.read()`` =
  demux + decode + conversion to RGB uint8, offline (unpaced), at full size and resized to
  392×224 in FFmpeg's scaler, and the whole ``iter_frames_30fps`` path.

Reports median and 90th percentile in milliseconds.  Numbers depend on what else runs on the
machine: say so when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def summary(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(1000 * s for s in samples_s)
    return {"median_ms": statistics.median(ms), "mean_ms": statistics.fmean(ms),
            "p90_ms": ms[int(0.9 * (len(ms) - 1))], "n": len(ms)}


def start_xvfb() -> tuple[subprocess.Popen | None, str]:
    """Use $DISPLAY if it is at least 1280×720, else start a private Xvfb (returned for stopping)."""
    import mss

    display = os.environ.get("DISPLAY")
    if display:
        try:
            with mss.MSS(display=display) as sct:
                mon = sct.monitors[1]
            if mon["width"] >= 1280 and mon["height"] >= 720:
                return None, display
        except mss.ScreenShotError:
            pass
    binary = shutil.which("Xvfb")
    if binary is None:
        raise SystemExit("Xvfb not found: install the Debian package 'xvfb'")
    number = 150
    while Path(f"/tmp/.X11-unix/X{number}").exists() or Path(f"/tmp/.X{number}-lock").exists():
        number += 1
    # -noreset: an X server otherwise resets when its last client disconnects, and a connection
    # made during the reset fails.
    proc = subprocess.Popen(
        [binary, f":{number}", "-screen", "0", "1280x720x24", "-nolisten", "tcp", "-noreset"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("Xvfb did not start")
        time.sleep(0.05)
    return proc, f":{number}"


def measure_screen(frames: int) -> dict:
    import cv2
    import mss

    from capture import ScreenSource

    proc, display = start_xvfb()
    try:
        source = ScreenSource(region=(0, 0, 1280, 720), fps=10_000, display=display)  # unpaced
        with source:
            for _ in range(5):
                source.read()  # warm up
            total = []
            for _ in range(frames):
                t = time.perf_counter()
                frame = source.read()
                total.append(time.perf_counter() - t)
            assert frame.image.shape == (720, 1280, 3)
        grab, convert = [], []
        with mss.MSS(display=display) as sct:
            box = {"left": 0, "top": 0, "width": 1280, "height": 720}
            for _ in range(frames):
                t = time.perf_counter()
                shot = sct.grab(box)
                t1 = time.perf_counter()
                bgra = np.frombuffer(shot.raw, np.uint8).reshape(720, 1280, 4)
                cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGB)
                t2 = time.perf_counter()
                grab.append(t1 - t)
                convert.append(t2 - t1)
            backend = "; ".join(sct.performance_status) if hasattr(sct, "performance_status") else "?"
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    return {"read_1280x720": summary(total), "mss_grab": summary(grab), "bgra_to_rgb": summary(convert),
            "display": display, "mss_backend": backend}


def encode_720p(path: Path, frames: int) -> None:
    import av

    rng = np.random.default_rng(0)
    coarse = np.kron(rng.integers(0, 256, (9, 40, 3)), np.ones((80, 80, 1)))    # (720, 3200, 3) blocks
    fine = np.kron(rng.integers(0, 256, (180, 800, 1)), np.ones((4, 4, 1)))     # 4-px detail
    texture = (0.6 * coarse + 0.4 * fine).astype(np.uint8)                      # a detailed world
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.codec_context.options = {"preset": "veryfast", "crf": "20"}
        for i in range(frames):
            x = (i * 12) % (3200 - 1280)
            img = np.ascontiguousarray(texture[:, x:x + 1280])
            cy, cx = 360 + int(200 * np.sin(i / 9)), 200 + (i * 17) % 880
            img[cy - 40:cy + 40, cx - 40:cx + 40] = (255, 240, 40)   # a moving sprite
            img[:, :, 0] = np.clip(img[:, :, 0].astype(np.int16) + int(20 * np.sin(i / 4)), 0, 255)  # flicker
            img[400:560, 900:1220] = rng.integers(0, 256, (160, 320, 3), dtype=np.uint8)  # particles / HUD
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def measure_file(frames: int) -> dict:
    from capture import FileSource, iter_frames_30fps

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gameplay720p.mp4"
        encode_720p(path, frames)
        out: dict = {"file_mb": path.stat().st_size / 1e6, "frames": frames}
        for label, size in (("read_1280x720_rgb", None), ("read_resized_392x224_rgb", (392, 224))):
            with FileSource(path, realtime=False, size=size) as source:
                times = []
                while True:
                    t = time.perf_counter()
                    frame = source.read()
                    if frame is None:
                        break
                    times.append(time.perf_counter() - t)
            out[label] = summary(times[3:])  # the first reads include decoder start-up
        t = time.perf_counter()
        n = sum(1 for _ in iter_frames_30fps(path))
        out["iter_frames_30fps_mean_ms"] = 1000 * (time.perf_counter() - t) / n
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=150, help="frames per measurement (default 150)")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for OpenCV and FFmpeg's decoder (default 2)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON only")
    args = parser.parse_args()

    import cv2

    cv2.setNumThreads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    # FFmpeg's decoder threads: FileSource asks for AUTO threading, whose count is the CPU count;
    # restrict the process to `threads` CPUs so the measurement matches the request.
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[: args.threads]
        os.sched_setaffinity(0, cpus)
    result = {"threads": args.threads, "cpus": os.cpu_count(), "screen": measure_screen(args.frames),
              "file": measure_file(args.frames)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    s, f = result["screen"], result["file"]
    print(f"threads={args.threads} (machine has {result['cpus']} CPUs; other work may share them)")
    print(f"screen 1280x720 read (grab + BGRA->RGB): median {s['read_1280x720']['median_ms']:.2f} ms, "
          f"mean {s['read_1280x720']['mean_ms']:.2f} ms, p90 {s['read_1280x720']['p90_ms']:.2f} ms")
    print(f"  mss grab {s['mss_grab']['median_ms']:.2f} ms, BGRA->RGB {s['bgra_to_rgb']['median_ms']:.2f} ms "
          f"[{s['mss_backend']}]")
    mbps = 8 * f["file_mb"] / (f["frames"] / 30)
    print(f"file 720p H.264 decode + RGB: median {f['read_1280x720_rgb']['median_ms']:.2f} ms, "
          f"mean {f['read_1280x720_rgb']['mean_ms']:.2f} ms, p90 {f['read_1280x720_rgb']['p90_ms']:.2f} ms "
          f"({mbps:.1f} Mbit/s, {f['frames']} frames)")
    print(f"  decode + resize to 392x224 RGB: median {f['read_resized_392x224_rgb']['median_ms']:.2f} ms, "
          f"mean {f['read_resized_392x224_rgb']['mean_ms']:.2f} ms")
    print(f"  iter_frames_30fps (decode + RGB + resample), mean "
          f"{f['iter_frames_30fps_mean_ms']:.2f} ms/frame")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
