"""``livefoley demo``: the synthetic arcade world through the default model, end to end.

Every frame of the world goes through the same streaming step as ``livefoley live`` (frame →
token → transformer → head → VAE chunk); the result is written as ``livefoley-demo.mp4`` (the
world's picture + the generated stereo track) and a PNG that puts frames, the generated and the
ground-truth spectrograms and the event marks on one time axis.  With ``play`` the chunks also go
to the sound device as they are made, paced to the wall clock.  The figures (per-frame latency,
speed) are returned as a dict.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audio.contract import CONTRACT
from audio.measure import percentiles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    model: str = "default"
    seconds: float = 10.0
    seed: int = 7
    size: tuple[int, int] = (640, 360)
    nfe: int | None = None
    guidance: float | None = None  # ω (--cfg)
    device: str = "auto"
    dinov2_weights: str | None = None
    video: Path = Path("livefoley-demo.mp4")
    png: Path | None = Path("livefoley-demo.png")
    play: bool = False


def run_demo(config: DemoConfig, *, progress=None) -> dict:
    import torch

    from audio.measure import choose_threads
    from audio.media import write_video
    from capture.synthetic.world import World
    from model.generator import load_generator

    torch.set_num_threads(choose_threads())  # one per idle core: a busy core gets no thread of ours
    gen = load_generator(config.model, device=config.device, dinov2_weights=config.dinov2_weights)
    world = World(config.seed, width=config.size[0], height=config.size[1])
    n = max(1, round(config.seconds * CONTRACT.fps))
    sink = _open_device() if config.play else None
    frames: list[np.ndarray] = []
    generated: list[np.ndarray] = []
    reference: list[np.ndarray] = []
    token_ms: list[float] = []
    wave_ms: list[float] = []
    t0 = time.monotonic()
    try:
        with gen.stream(seed=config.seed, nfe=config.nfe, guidance=config.guidance) as session:
            for i in range(n):
                frame, truth, _ = world.step()
                if sink is not None:  # live: the world shows frame i at t0 + i/30
                    delay = t0 + i / CONTRACT.fps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                chunk = session.step(frame)
                if sink is not None:
                    sink.write(chunk)
                frames.append(frame)
                generated.append(chunk)
                reference.append(truth)
                token_ms.append(session.stats.token_ms)
                wave_ms.append(session.stats.waveform_ms)
                if progress:
                    progress(1)
    finally:
        if sink is not None:
            sink.close()
    wall = time.monotonic() - t0
    audio = np.concatenate(generated, axis=1)
    write_video(config.video, frames, fps=CONTRACT.fps, audio=audio)
    if config.png is not None:
        from audio.plots import plot_clip, thumbnail_count

        k = thumbnail_count(*config.size)
        picks = np.linspace(0, n - 1, k).round().astype(int)
        plot_clip(config.png, generated={f"livefoley ({gen.config.name})": audio},
                  reference=np.concatenate(reference, axis=1), events=world.events,
                  thumbnails=[(i / CONTRACT.fps, frames[i]) for i in picks],
                  title=f"livefoley demo — synthetic world seed {config.seed}")
    return {
        "model": gen.config.name, "device": str(gen.device), "frames": n, "seconds": n / CONTRACT.fps,
        "nfe": gen.nfe if config.nfe is None else config.nfe,
        "cfg": gen.guidance if config.guidance is None else config.guidance,
        "wall_s": wall, "realtime_factor": (n / CONTRACT.fps) / wall,
        "token_ms": percentiles(token_ms), "waveform_ms": percentiles(wave_ms),
        "under_budget": float(np.mean(np.asarray(wave_ms) < CONTRACT.frame_ms)),
        "played": sink is not None, "video": str(config.video), "png": str(config.png) if config.png else None,
    }


def _open_device():
    """The default sound device, or None (with a note) when this machine has none."""
    from audio.devices import list_devices
    from audio.errors import LivefoleyError
    from audio.sinks import DeviceSink

    try:
        if not list_devices():
            log.warning("no sound output device: writing the demo files without playing")
            return None
        sink = DeviceSink()
        sink.open()
        return sink
    except LivefoleyError as err:
        log.warning("not playing (%s); writing the demo files only", err)
        return None
