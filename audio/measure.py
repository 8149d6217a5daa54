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


def usable_cores() -> list[int]:
    """The CPUs this process may run on (its affinity mask; without one, all of them)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def idle_cores(sample_s: float = 0.2) -> int:
    """How many of the CPUs this process may use are mostly idle (≥ 60 % over ``sample_s``), from
    two readings of /proc/stat; without /proc, all of them."""
    import time

    allowed = usable_cores()

    def read() -> dict[int, tuple[int, int]]:
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *values = line.split()
                    ticks = [int(v) for v in values]
                    out[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))  # idle + iowait, total
        return out

    try:
        before = read()
        time.sleep(sample_s)
        after = read()
    except (OSError, ValueError, IndexError):
        return len(allowed)
    idle = 0
    for cpu in allowed:
        if cpu in before and cpu in after:
            total = after[cpu][1] - before[cpu][1]
            idle += total > 0 and (after[cpu][0] - before[cpu][0]) / total >= 0.6
    return idle


def choose_threads(requested: int | None = None, *, most: int = 2) -> int:
    """The torch CPU thread count for the per-frame step: ``requested`` when given; else one per idle
    core, at most ``most``, at least 1.  A streaming PC is never idle: with a thread on a core that
    another process keeps busy, every parallel region waits for it and the step collapses (measured
    ~10× slower), so a busy core gets no thread."""
    if requested is not None:
        return requested
    return max(1, min(most, idle_cores()))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (infinite where /proc cannot tell, so
    a caller waiting for it to start does not wait)."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("inf")  # no /proc: nothing to wait for


class competing_load:  # noqa: N801 - used as a context manager, like a function
    """``with competing_load(cores=1):`` — other processes keep ``cores`` CPUs busy meanwhile (a
    streamer's game or encoder, for benchmarks: ``livefoley bench`` measures its loaded rows inside)."""

    def __init__(self, cores: int = 1) -> None:
        self.cores = cores
        self._procs: list = []

    def __enter__(self) -> competing_load:
        import subprocess
        import time

        self._procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.cores)]
        # measure nothing before every one of them is spinning (an interpreter can take a while to
        # start on a busy machine), then let the scheduler see them
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not all(_cpu_seconds(p.pid) >= 0.05 for p in self._procs):
            time.sleep(0.02)
        time.sleep(0.3)
        return self

    def __exit__(self, *exc) -> None:
        for p in self._procs:
            p.kill()
        for p in self._procs:
            p.wait()
        self._procs = []
