"""Measuring a run: latency summaries and the process's memory, one definition each for every
command that reports them (bench, demo, generate, live)."""

from __future__ import annotations

import os
import resource
import sys

import numpy as np

__all__ = ["peak_rss_mib", "percentiles", "rss_mib"]


def percentiles(values) -> dict:
    """mean / std / p50 / p95 / p99 / max of a list of milliseconds (the summary every command
    prints); ``{}`` for no values."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"mean": float(a.mean()), "std": float(a.std()), "p50": float(p50), "p95": float(p95),
            "p99": float(p99), "max": float(a.max())}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def rss_mib() -> float:
    """Resident set size of this process now, MiB (Linux /proc; elsewhere the peak)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mib()
