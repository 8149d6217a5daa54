#!/usr/bin/env python
"""Measure the vision path on this machine (issue 3, part 2): per-frame medians at batch 1.

    .venv/bin/python scripts/measure_vision.py [--threads 2] [--repeats 30] [--json out.json]

Reports, for the ``tiny`` input size and 224×392 (``base``), fp32 and bf16 autocast:
preprocessing of a 1280×720 frame, the DINOv2 forward, the aggregator, the whole streaming step
(preprocess + DINOv2 + aggregator), and the bf16-vs-fp32 token difference; then the whole path at
each candidate ``tiny`` input size (``--candidates``).  Wall-clock times are the median and 10th
percentile on ``--threads`` threads; ``*_cpu_ms_1thread`` is the CPU time on one thread, which
other work on shared cores barely affects.  Weights are the seeded stand-ins (no hub here): the timing is
that of the real architecture, the token difference is that of the seeded weights.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.vision import VISION_PRESETS, DinoBackbone, FrameTokenizer, VisionConfig  # noqa: E402

CANDIDATES = [(56, 112), (84, 140), (84, 168), (112, 196), (140, 252)]


def cpu_info() -> dict:
    flags: set[str] = set()
    model = "?"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
    return {
        "model": model,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def frames_720p(n: int, seed: int = 0) -> np.ndarray:
    """(n, 720, 1280, 3) uint8: a colour gradient with a few boxes moving across it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:720, 0:1280]
    base = np.stack([xx * 255 // 1279, yy * 255 // 719, (xx + yy) * 255 // 1998], -1).astype(np.uint8)
    boxes = rng.integers(0, 255, (6, 3), dtype=np.uint8)
    out = np.repeat(base[None], n, axis=0)
    for t in range(n):
        for j, colour in enumerate(boxes):
            x = (40 * t + 180 * j) % 1180
            y = 80 + 100 * j
            out[t, y:y + 80, x:x + 100] = colour
    return out


def median_ms(fn, repeats: int, warmup: int = 5) -> float:
    """Median wall time of ``fn`` in ms; the 10th percentile goes to ``LOW`` (less hit by other work
    on shared cores)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    LOW.append(1e3 * times[len(times) // 10])
    return 1e3 * statistics.median(times)


LOW: list[float] = []  # p10 of the latest median_ms calls


def cpu_ms(fn, repeats: int, warmup: int = 3) -> float:
    """Median CPU time (ms) of ``fn`` on ONE torch thread: hardly affected by other processes on
    shared cores, so it shows the cost itself when wall-clock medians are inflated."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            t0 = time.thread_time()
            fn()
            times.append(time.thread_time() - t0)
    finally:
        torch.set_num_threads(threads)
    return round(1e3 * statistics.median(times), 3)


def with_low(ms: float) -> dict:
    return {"median": round(ms, 3), "p10": round(LOW[-1], 3)}


def time_stream(tok: FrameTokenizer, frames: np.ndarray, repeats: int, *, cpu: bool = False) -> float:
    """Median ms of one streaming step (preprocess + DINOv2 + aggregator), cycling through frames;
    ``cpu``: single-thread CPU time instead of wall time."""
    counter = iter(range(10**9))
    with tok.streaming():
        step = lambda: tok.step(frames[next(counter) % len(frames)])  # noqa: E731
        return cpu_ms(step, max(5, repeats // 3)) if cpu else median_ms(step, repeats)


def time_parts(tok: FrameTokenizer, frames: np.ndarray, repeats: int) -> dict:
    bb = tok.backbone
    images = bb.preprocess([frames[0]])
    buf = torch.empty_like(images)
    grid = bb(images)
    prev = grid.clone()
    return {
        "preprocess_ms": with_low(median_ms(lambda: bb.preprocess([frames[0]], out=buf), repeats)),
        "dinov2_ms": with_low(median_ms(lambda: bb(images), repeats)),
        "dinov2_cpu_ms_1thread": cpu_ms(lambda: bb(images), max(5, repeats // 3)),
        "aggregator_ms": with_low(median_ms(lambda: tok.tokens_from_grids(grid[None], prev), repeats)),
        "whole_step_ms": with_low(time_stream(tok, frames, repeats)),
        "whole_step_cpu_ms_1thread": time_stream(tok, frames, repeats, cpu=True),
    }


def measure_size(size: tuple[int, int], frames: np.ndarray, repeats: int) -> dict:
    cfg32 = VISION_PRESETS["tiny"].replace(input_size=size, dtype="fp32")
    ph, pw = cfg32.patch_grid
    gh, gw = cfg32.grid_size
    res: dict = {"input_size": list(size), "patch_tokens": ph * pw, "aggregator_tokens": gh * gw}
    torch.manual_seed(0)
    tok32 = FrameTokenizer(cfg32)
    tok16 = FrameTokenizer(cfg32.replace(dtype="bf16"))
    tok16.load_state_dict(tok32.state_dict())  # same aggregator, only the backbone dtype differs
    res["fp32"] = time_parts(tok32, frames, repeats)
    res["bf16"] = time_parts(tok16, frames, repeats)
    a, b = tok32(frames), tok16(frames)
    res["bf16_vs_fp32"] = {
        "token_rel_l2": float((a - b).norm() / a.norm()),
        "token_max_abs": float((a - b).abs().max()),
        "token_rms": float(a.pow(2).mean().sqrt()),
        "token_min_cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min()),
    }
    return res


def measure_candidate(size: tuple[int, int], frames: np.ndarray, repeats: int) -> dict:
    cfg = VisionConfig(input_size=size, weights="seeded:0", dtype="bf16")
    tok = FrameTokenizer(cfg, backbone=DinoBackbone(config=cfg))
    gh, gw = cfg.grid_size
    return {"input_size": list(size), "patch_tokens": cfg.patch_grid[0] * cfg.patch_grid[1],
            "aggregator_tokens": gh * gw, "whole_step_bf16_ms": with_low(time_stream(tok, frames, repeats)),
            "whole_step_bf16_cpu_ms_1thread": time_stream(tok, frames, repeats, cpu=True)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--frames", type=int, default=8, help="frames of the 1280×720 test clip")
    ap.add_argument("--only-candidates", action="store_true", help="skip the fp32/bf16 comparison")
    ap.add_argument("--candidates", action="store_true",
                    help="also time the whole bf16 path at each candidate tiny input size")
    ap.add_argument("--json", type=Path, help="write the results here as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    frames = frames_720p(args.frames)
    out: dict = {"cpu": cpu_info(), "note": "cores shared with other work; ms per frame at batch 1",
                 "loadavg_start": os.getloadavg()[0]}
    with torch.inference_mode():
        for name, size in (("tiny", VISION_PRESETS["tiny"].input_size), ("base", (224, 392))):
            if args.only_candidates:
                break
            out[name] = measure_size(size, frames, args.repeats)
            print(f"{name} {size}: {json.dumps(out[name])}", flush=True)
        if args.candidates or args.only_candidates:
            out["candidates"] = []
            for size in CANDIDATES:
                row = measure_candidate(size, frames, args.repeats)
                out["candidates"].append(row)
                print(f"candidate {json.dumps(row)}", flush=True)
    out["loadavg_end"] = os.getloadavg()[0]
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(out, indent=2))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
