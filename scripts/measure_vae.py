#!/usr/bin/env python3
"""Measure the streaming VAE: time per streamed latent (decode) and per 1600-sample chunk (encode).

Each call is timed on its own (``time.perf_counter``, CUDA synchronised when on a GPU) inside one
``vae.streaming(1)`` session under ``torch.inference_mode()``; the median over ``--calls`` calls is
reported after ``--warmup`` untimed calls.  With ``--repeats R`` the whole measurement runs R times
and the repeat with the lowest median is reported (all medians are in the JSON): on a shared machine
the least disturbed repeat is the best estimate.  Weights are the random initialisation (the timing
does not depend on them).  Examples::

    .venv/bin/python scripts/measure_vae.py                       # tiny + sr-causal, 2 threads
    .venv/bin/python scripts/measure_vae.py --channels 4 8 12 16  # sweep tiny-like sizes
    .venv/bin/python scripts/measure_vae.py --device cuda --dtype bfloat16 --presets sr-causal --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _time_calls(fn, inputs, *, warmup: int, sync) -> list[float]:
    times = []
    for i, x in enumerate(inputs):
        sync()
        t0 = time.perf_counter()
        fn(x)
        sync()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def measure(name: str, config, *, calls: int, warmup: int, repeats: int, device: str, dtype: str) -> dict:
    import torch

    from audio.vae import CausalVAE

    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    vae = CausalVAE(config).to(device=device, dtype=dt).eval().requires_grad_(False)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    n = warmup + calls
    latents = [torch.randn(1, vae.latent_dim, 1, device=device, dtype=dt) for _ in range(n)]
    chunks = [0.1 * torch.randn(1, vae.audio_channels, vae.hop, device=device, dtype=dt) for _ in range(n)]
    decs, encs = [], []
    for _ in range(repeats):  # on a shared machine the least disturbed repeat is the best estimate
        with torch.inference_mode(), vae.streaming(1):
            decs.append(_time_calls(vae.decode, latents, warmup=warmup, sync=sync))
            encs.append(_time_calls(vae.encode, chunks, warmup=warmup, sync=sync))
    dec = min(decs, key=statistics.median)
    enc = min(encs, key=statistics.median)
    counts = vae.num_parameters()
    return {
        "name": name,
        "channels": config.channels,
        "c_mults": list(config.c_mults),
        "strides": list(config.strides),
        "params_encoder": counts["encoder"],
        "params_decoder": counts["decoder"],
        "params_total": counts["total"],
        "decode_ms_per_latent_median": statistics.median(dec),
        "decode_ms_p90": sorted(dec)[int(0.9 * len(dec))],
        "encode_ms_per_chunk_median": statistics.median(enc),
        "encode_ms_p90": sorted(enc)[int(0.9 * len(enc))],
        "decode_ms_medians_per_repeat": [round(statistics.median(d), 4) for d in decs],
        "encode_ms_medians_per_repeat": [round(statistics.median(e), 4) for e in encs],
        "calls": calls,
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="*", default=["tiny", "sr-causal"], help="VAE presets to measure")
    p.add_argument(
        "--channels",
        nargs="*",
        type=int,
        default=[],
        help="also measure the tiny preset with these base widths",
    )
    p.add_argument("--calls", type=int, default=200, help="timed calls per measurement (>= 100)")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls first")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="repeat each measurement; report the repeat with the lowest median",
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (the CPU budget)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)

    import torch

    from audio.vae import VAE_PRESETS, get_preset

    torch.set_num_threads(args.threads)
    targets = [(name, get_preset(name)) for name in args.presets]
    targets += [(f"tiny@C={c}", dataclasses.replace(VAE_PRESETS["tiny"], channels=c)) for c in args.channels]
    results = [
        measure(
            n,
            c,
            calls=args.calls,
            warmup=args.warmup,
            repeats=args.repeats,
            device=args.device,
            dtype=args.dtype,
        )
        for n, c in targets
    ]
    meta = {"threads": args.threads, "device": args.device, "dtype": args.dtype, "torch": torch.__version__}
    if args.json:
        print(json.dumps({**meta, "results": results}, indent=2))
        return 0
    print(f"# {meta}")
    print(f"{'model':<14}{'params enc/dec':>22}{'decode ms/latent':>20}{'encode ms/1600':>18}")
    for r in results:
        print(
            f"{r['name']:<14}{r['params_encoder']:>11,}/{r['params_decoder']:<10,}"
            f"{r['decode_ms_per_latent_median']:>14.3f} (p90 {r['decode_ms_p90']:.2f})"
            f"{r['encode_ms_per_chunk_median']:>10.3f} (p90 {r['encode_ms_p90']:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
