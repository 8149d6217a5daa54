"""``livefoley bench``: per-frame latency, Table-6 style.

Frames are captured from the source *before* the timed loop (capture is timed separately, once per
frame, and never inside the per-frame step unless asked), then every configuration (head NFE ×
CFG on/off) streams the same frames through a fresh session: warm-up frames first, then ``frames``
timed ones.  Per frame the session's clock records each component (preprocess, DINOv2,
aggregator, transformer token steps, head, VAE decode) with ``time.perf_counter`` — on CUDA after
a device synchronisation, which is the only way host wall time measures GPU work correctly.

Token-level latency = from feeding ``x_{i-1}`` until ``x_i`` exists, including encoding frame i;
waveform-level = token-level + decoding ``x_i`` to samples (REFERENCE.md, Table 6).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from audio.contract import CONTRACT
from audio.files import atomic_path
from audio.measure import choose_threads, competing_load, peak_rss_mib, percentiles

log = logging.getLogger(__name__)

# The paper's Table 6: one H100, batch 1, 30 FPS 480p, ω = 3 (mean ± std over 50 clips).
PAPER_TABLE6 = {
    1: {"token": (24.3, 1.97), "waveform": (26.3, 1.45)},
    2: {"token": (26.1, 2.02), "waveform": (28.2, 2.03)},
    4: {"token": (28.6, 1.79), "waveform": (31.5, 1.87)},
}


@dataclass(frozen=True)
class BenchConfig:
    model: str = "default"
    source: str = "synthetic:11"
    size: tuple[int, int] = (854, 480)  # 480p, as the paper
    frames: int = 300
    warmup: int = 30
    nfes: tuple[int, ...] = ()  # () = every NFE the model supports
    guidances: tuple[float, ...] = ()  # ω values (--cfg); () = the model's ω and 1 (off)
    device: str = "auto"
    dtype: str = "fp32"  # transformer / head / VAE compute dtype
    vision_dtype: str | None = None  # None = the model's own choice
    threads: int | None = None  # None: chosen per condition from the idle cores (audio.measure.choose_threads)
    loads: tuple[str, ...] = ("quiet", "loaded")  # "loaded": another process keeps one core busy
    dinov2_weights: str | None = None
    seed: int = 0
    optimize: bool = False  # also the optimised CPU path (model.optimize), its rows beside the eager ones
    extra: dict = field(default_factory=dict)


def capture_frames(spec: str, n: int, size: tuple[int, int]) -> tuple[list[np.ndarray], list[float]]:
    """Read ``n`` frames from a source (not paced) and the per-frame capture time in ms."""
    from capture import open_source
    from capture.registry import parse_source

    scheme, _ = parse_source(spec)
    opts = {"realtime": False} if scheme in ("synthetic", "file") else {}
    if scheme == "synthetic":
        opts["size"] = size
    frames, ms = [], []
    with open_source(spec, **opts) as src:
        while len(frames) < n:
            t = time.perf_counter()
            f = src.read()
            if f is None:
                if not frames:
                    raise RuntimeError(f"{spec} gave no frames")
                break
            ms.append((time.perf_counter() - t) * 1000)
            frames.append(f.image)
    while len(frames) < n:  # a short file: loop it
        frames.append(frames[len(frames) % len(ms)])
    return frames, ms


def run_bench(config: BenchConfig, *, progress=None) -> dict:
    import torch

    from model.generator import load_generator

    torch.set_num_threads(choose_threads(config.threads))
    gen = load_generator(config.model, device=config.device, vision_dtype=config.vision_dtype,
                         dinov2_weights=config.dinov2_weights)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[config.dtype]
    if dtype != torch.float32:
        gen.set_compute_dtype(dtype)
    frames, capture_ms = capture_frames(config.source, config.frames + config.warmup, config.size)
    nfes = config.nfes or gen.valid_nfe
    guidances = config.guidances or tuple(dict.fromkeys((gen.guidance, 1.0)))
    rows = []
    optimised = None
    for path in ("eager", "optimised") if config.optimize else ("eager",):
        if path == "optimised":
            from model.optimize import optimize_audio, optimize_vision

            eager_out = _stream_outputs(gen, frames[:ERROR_FRAMES], seed=config.seed)
            # a graph for every thread count a condition may choose (a busy core gets no thread)
            counts = (config.threads,) if config.threads else tuple(range(1, choose_threads() + 1))
            backbone = gen.model.tokenizer.backbone
            t = time.perf_counter()
            built_s = optimize_vision(backbone, counts)
            audio = optimize_audio(gen, counts) if gen.model.vision_in.weight.dtype == torch.float32 else None
            optimised = {"build_s": time.perf_counter() - t, "vision_build_s": built_s,
                         "vision": {str(n): c for n, c in sorted(backbone.fast_choice.items())},
                         "audio": audio and {"path": audio["path"], "ms": {str(n): m for n, m in audio["ms"].items()},
                                             "cached": audio["cached"]},
                         **_path_error(eager_out, _stream_outputs(gen, frames[:ERROR_FRAMES], seed=config.seed))}
        for load in config.loads:
            # the thread count is chosen again under each condition: the step must stay real time on a
            # machine that is also running a game or an encoder, with no flag from the user
            with competing_load(1) if load == "loaded" else contextlib.nullcontext():
                threads = choose_threads(config.threads)
                torch.set_num_threads(threads)
                for nfe in nfes:
                    for w in guidances:
                        row = _bench_one(gen, frames, nfe=nfe, guidance=w, warmup=config.warmup, seed=config.seed,
                                         progress=progress)
                        rows.append({"path": path, "load": load, "threads": threads, **row})
    peak = peak_rss_mib()
    return {
        "model": gen.config.name, "device": str(gen.device), "device_name": _device_name(gen.device),
        "dtype": config.dtype, "vision_dtype": gen.model.tokenizer.config.dtype,
        "threads": rows[0]["threads"], "source": config.source, "size": list(config.size),
        "frames": config.frames, "warmup": config.warmup, "budget_ms": CONTRACT.frame_ms,
        "capture_ms": percentiles(capture_ms), "peak_rss_mb": peak,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if gen.device.type == "cuda" else None,
        "rows": rows, "paper_table6": {str(k): v for k, v in PAPER_TABLE6.items()},
        "optimised": optimised,
    }


ERROR_FRAMES = 60  # frames streamed through both paths to measure how far the optimised one moves


def _stream_outputs(gen, frames, *, seed: int) -> dict:
    """Tokens ``(T, d)`` and audio ``(2, T·1600)`` of ``frames`` streamed from a fresh session."""
    import torch

    tokens, latents, audio = [], [], []
    with gen.stream(seed=seed, timing=False) as session:
        for frame in frames:
            token = session.encode(frame)
            tokens.append(token.float().clone())
            latents.append(session.latent(token).float().clone())
            audio.append(session.decode(latents[-1]))
    return {"tokens": torch.stack(tokens), "latents": torch.cat(latents), "audio": np.concatenate(audio, axis=1)}


AUDIO_ERROR_FRAMES = 8  # the audio error is taken over the stream's first frames: its latents feed
# back, so after a while two streams whose tokens differ at all go their own (equally valid) ways


def _path_error(eager: dict, other: dict) -> dict:
    """How far the optimised path moves the outputs: per-frame relative L2 error of the tokens
    (median, max), and over the first frames the relative L2 error of the latents and the relative
    RMS error of the audio (the VAE's phases follow the magnitudes' peaks, so a small change of a
    latent can move the waveform much more than what it sounds like)."""
    d = (other["tokens"] - eager["tokens"]).norm(dim=-1) / eager["tokens"].norm(dim=-1).clamp_min(1e-12)
    n = AUDIO_ERROR_FRAMES * CONTRACT.hop
    a, b = eager["audio"][:, :n], other["audio"][:, :n]
    x, y = eager["latents"][:AUDIO_ERROR_FRAMES], other["latents"][:AUDIO_ERROR_FRAMES]
    return {"token_rel_err_median": float(d.median()), "token_rel_err_max": float(d.max()),
            "latent_rel_err": float((y - x).norm() / x.norm().clamp_min(1e-12)),
            "audio_rel_err": float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-12)), "frames": len(d)}


def _device_name(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def _bench_one(gen, frames, *, nfe: int, guidance: float, warmup: int, seed: int, progress) -> dict:
    """One (NFE, ω) row.  Token- and waveform-level latency run from the frame to its token / audio;
    the previous latent is fed to the transformer between frames (``StreamSession.prefeed``, as the
    live engine does while it waits for the next frame), so it is a component of its own and not in
    them (it is in the throughput)."""
    import torch

    comps: dict[str, list[float]] = {}
    token, wave = [], []
    t_start = 0.0
    with gen.stream(seed=seed, nfe=nfe, guidance=guidance, timing=True) as session:
        for i, frame in enumerate(frames):
            if i == warmup:
                t_start = time.perf_counter()
            session.step(frame)
            t0 = time.perf_counter()
            session.prefeed()  # as the live engine does: the latent fed while the next frame is awaited
            if gen.device.type == "cuda":
                torch.cuda.synchronize(gen.device)
            prefeed_ms = (time.perf_counter() - t0) * 1000
            if i >= warmup:
                st = session.stats
                token.append(st.token_ms)
                wave.append(st.waveform_ms)
                for k, v in st.ms.items():
                    comps.setdefault(k, []).append(v)
                comps.setdefault("prefeed", []).append(prefeed_ms)
            if progress:
                progress(1)
    wall = time.perf_counter() - t_start
    n = len(frames) - warmup
    row = {
        "nfe": nfe, "cfg": guidance, "token_ms": percentiles(token), "waveform_ms": percentiles(wave),
        "components_ms": {k: percentiles(v) for k, v in comps.items()},
        "head_per_eval_ms": float(np.median(comps["head"])) / nfe if "head" in comps else None,
        "under_budget": float(np.mean(np.asarray(wave) < CONTRACT.frame_ms)),
        "throughput_fps": n / wall, "waveform_samples_ms": wave,
    }
    return row


def format_table(report: dict) -> str:
    """A readable table: ours per (NFE, CFG) beside the paper's Table 6."""
    lines = [
        f"livefoley bench — model {report['model']} on {report['device']} ({report['device_name']}), "
        f"{report['dtype']}, vision {report['vision_dtype']}, "
        f"{report['frames']} frames of {report['source']} at {report['size'][0]}×{report['size'][1]}",
        "",
        f"{'path':>9} {'load':>6} {'thr':>3} {'NFE':>3} {'CFG':>4} | {'token ms':>14} | {'waveform ms':>14} {'p50':>6} "
        f"{'p95':>6} {'p99':>6} {'max':>6} | {'<33.3':>6} {'fps':>6} | paper H100 token / waveform",
    ]
    for r in report["rows"]:
        t, w = r["token_ms"], r["waveform_ms"]
        paper = PAPER_TABLE6.get(r["nfe"]) if r["cfg"] != 1.0 else None
        ref = (f"{paper['token'][0]:.1f} ± {paper['token'][1]:.2f} / {paper['waveform'][0]:.1f} ± "
               f"{paper['waveform'][1]:.2f}") if paper else "—"
        lines.append(
            f"{r.get('path', 'eager'):>9} {r['load']:>6} {r['threads']:>3} {r['nfe']:>3} {r['cfg']:>4g} | "
            f"{t['mean']:>6.1f} ± {t['std']:<5.2f} | "
            f"{w['mean']:>6.1f} ± {w['std']:<5.2f} "
            f"{w['p50']:>6.1f} {w['p95']:>6.1f} {w['p99']:>6.1f} {w['max']:>6.1f} | {100 * r['under_budget']:>5.1f}% "
            f"{r['throughput_fps']:>6.1f} | {ref}"
        )
    lines.append("")
    opt = report.get("optimised")
    if opt:
        eager = {(r["load"], r["nfe"], r["cfg"]): r for r in report["rows"] if r["path"] == "eager"}
        ratios = [f"{r['load']} NFE {r['nfe']} CFG {r['cfg']:g}: "
                  f"{eager[k]['waveform_ms']['p50'] / r['waveform_ms']['p50']:.2f}× p50, "
                  f"{eager[k]['waveform_ms']['p95'] / r['waveform_ms']['p95']:.2f}× p95"
                  for r in report["rows"] if r["path"] == "optimised"
                  for k in [(r["load"], r["nfe"], r["cfg"])] if k in eager]
        chosen = "; ".join(f"{n} thread(s): {c['path']} (" + ", ".join(f"{k} {v:.1f}" for k, v in c["ms"].items())
                           + " ms)" for n, c in opt["vision"].items())
        lines.append("optimised path: eager / optimised waveform time — " + "; ".join(ratios))
        lines.append(f"  DINOv2, the fastest of eager and the compiled candidates measured on this CPU — {chosen}")
        how = ("chosen by an earlier run on this CPU, loaded (or compiled where its library was not kept)"
               if all(c.get("cached") for c in opt["vision"].values()) else "compiled and measured")
        audio = opt.get("audio")
        if audio:
            lines.append("  the audio path's linear layers, int8 where faster — " + audio["path"] + " (" + "; ".join(
                f"{n} thread(s): eager {m['eager']:.1f}, int8 {m['int8']:.1f} ms a frame"
                for n, m in audio["ms"].items()) + (", as measured by an earlier run on this CPU)" if audio["cached"]
                                                     else ")"))
        lines.append(f"  {how} in {opt['vision_build_s']:.1f} s (with the audio path's timing {opt['build_s']:.1f} s); "
                     f"over {opt['frames']} frames its tokens differ from the eager ones by "
                     f"{100 * opt['token_rel_err_median']:.2f} % (median relative L2; max "
                     f"{100 * opt['token_rel_err_max']:.2f} %), over the first {AUDIO_ERROR_FRAMES} frames the "
                     f"latents by {100 * opt['latent_rel_err']:.2f} % (relative L2) and the audio by "
                     f"{100 * opt['audio_rel_err']:.1f} % (relative RMS)")
        lines.append("")
    firsts: dict[str, dict] = {}
    for r in report["rows"]:
        firsts.setdefault(r.get("path", "eager"), r)
    for first in firsts.values():
        parts = ", ".join(f"{k} {v['p50']:.2f}" for k, v in first["components_ms"].items())
        lines.append(f"components ({first.get('path', 'eager')} {first['load']}, p50 ms, NFE {first['nfe']}, CFG "
                     f"{first['cfg']:g}): capture {report['capture_ms']['p50']:.2f}, {parts}; head per evaluation "
                     f"{first['head_per_eval_ms']:.2f}")
    lines.append(f"peak memory: {report['peak_rss_mb']:.0f} MiB RSS"
                 + (f", {report['peak_cuda_mb']:.0f} MiB CUDA" if report["peak_cuda_mb"] else ""))
    return "\n".join(lines)


def plot_latency(report: dict, path) -> None:
    """Waveform-level latency distribution per configuration against the 33.3 ms line (PNG)."""
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(9, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    data = [r["waveform_samples_ms"] for r in report["rows"]]
    labels = [f"NFE {r['nfe']}\nCFG {'on' if r['cfg'] != 1 else 'off'}\n{r['load']}, {r['threads']} thr"
              for r in report["rows"]]
    ax.violinplot(data, showmedians=True)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.axhline(CONTRACT.frame_ms, color="red", linestyle="--", label="33.3 ms real-time budget")
    for nfe, ref in PAPER_TABLE6.items():
        idx = [i for i, r in enumerate(report["rows"]) if r["nfe"] == nfe and r["cfg"] != 1.0]
        if idx:
            ax.plot([idx[0] + 1], [ref["waveform"][0]], "k*", markersize=10,
                    label="paper (H100)" if nfe == 1 else None)
    ax.set_ylabel("waveform-level latency per frame (ms)")
    ax.set_title(f"livefoley {report['model']} on {report['device_name']} (quiet, and one core kept busy)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
