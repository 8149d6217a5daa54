"""Per-chunk metric storage of the live engine: preallocated rings, so memory stays flat for hours."""

from __future__ import annotations

import math

import numpy as np


class Series:
    """A bounded float64 ring with running count / max (percentiles over what it holds)."""

    def __init__(self, capacity: int) -> None:
        self.data = np.zeros(capacity, np.float64)
        self.n = 0
        self.max = -math.inf
        self.sum = 0.0

    def add(self, value: float) -> None:
        self.data[self.n % self.data.size] = value
        self.n += 1
        self.sum += value
        if value > self.max:
            self.max = value

    def values(self, last: int | None = None) -> np.ndarray:
        held = min(self.n, self.data.size)
        if last is not None:
            held = min(held, last)
        if held == 0:
            return self.data[:0]
        end = self.n % self.data.size
        idx = (np.arange(end - held, end)) % self.data.size
        return self.data[idx]

    def summary(self) -> dict:
        v = self.values()
        if v.size == 0:
            return {"n": 0, "p50": None, "p95": None, "max": None, "mean": None}
        p50, p95 = np.percentile(v, [50, 95])
        return {"n": self.n, "p50": round(float(p50), 2), "p95": round(float(p95), 2),
                "max": round(float(self.max), 2), "mean": round(self.sum / self.n, 2)}
