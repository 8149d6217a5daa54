"""Evaluation pictures: frames, spectrograms and event marks of one clip on one time axis.

:func:`plot_clip` draws, top to bottom and sharing the time axis: a strip of frame thumbnails
(each one starts where its frame is shown), the log-mel spectrogram of the reference audio, one
log-mel spectrogram per generated track, and a vertical line at every event onset on every row,
coloured by event type.  It uses matplotlib's object API on the Agg canvas (no pyplot, no display)
and writes the PNG under a temporary name that is renamed when complete.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from audio.contract import CONTRACT
from audio.files import atomic_path
from audio.metrics import DEFAULT_CONFIG, MetricsConfig, log_mel

EVENT_COLORS = {
    "laser": "#00d5ff",
    "gun": "#ffd000",
    "explosion": "#ff3b30",
    "pickup": "#4cd964",
    "impact": "#ff9cf0",
}
"""Line colour per event type of the synthetic world; other types are drawn grey."""

_OTHER_COLOR = "#bbbbbb"


_STRIP_ASPECT = 10.0  # width / height of the thumbnail strip as drawn (13-inch figure)


def thumbnail_count(width: int, height: int) -> int:
    """How many ``width``×``height`` thumbnails fit the strip without distorting them much."""
    return max(2, round(_STRIP_ASPECT / (width / height)))


def pick_thumbnails(n_frames: int, count: int) -> list[int]:
    """Indices of ``count`` frames spread evenly over ``n_frames`` (frame ``k · n / count``)."""
    count = max(1, min(count, n_frames))
    return [int(k * n_frames / count) for k in range(count)]


def _shrink(image: np.ndarray, height: int) -> np.ndarray:
    """Cheap integer-step downscale to about ``height`` rows: (H, W, 3) → (≈height, ≈W·height/H, 3)."""
    step = max(1, image.shape[0] // height)
    return np.ascontiguousarray(image[::step, ::step])


def plot_clip(
    path: str | os.PathLike,
    *,
    generated: Mapping[str, np.ndarray],
    reference: np.ndarray | None = None,
    events: Sequence[Mapping] = (),
    thumbnails: Sequence[tuple[float, np.ndarray]] = (),
    title: str | None = None,
    config: MetricsConfig = DEFAULT_CONFIG,
    dpi: int = 100,
) -> Path:
    """Write the evaluation picture of one clip to ``path`` (PNG) and return it.

    ``generated``: label → ``(2, N)`` audio (one spectrogram row each, in order); ``reference``:
    the ground-truth ``(2, N)`` audio or ``None``; ``events``: dicts with ``frame`` (or ``time_s``)
    and ``type``; ``thumbnails``: ``(start time in s, (H, W, 3) uint8 RGB)`` pairs, in time order.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    path = Path(path)
    tracks: list[tuple[str, np.ndarray]] = []
    if reference is not None:
        tracks.append(("ground truth", reference))
    tracks.extend(generated.items())
    if not tracks:
        raise ValueError("nothing to plot: give a reference or at least one generated track")
    duration = max(a.shape[1] for _, a in tracks) / config.sample_rate
    n_rows = len(tracks) + (1 if thumbnails else 0)
    heights = ([1.1] if thumbnails else []) + [1.7] * len(tracks)
    fig = Figure(figsize=(13, 0.6 + sum(heights)), dpi=dpi, layout="constrained")
    axes = fig.subplots(n_rows, 1, sharex=True, gridspec_kw={"height_ratios": heights}, squeeze=False)[:, 0]
    row = 0
    if thumbnails:
        ax = axes[0]
        starts = [t for t, _ in thumbnails] + [duration]
        for (t, img), t_next in zip(thumbnails, starts[1:], strict=True):
            ax.imshow(_shrink(np.asarray(img), 90), extent=(t, t_next, 0, 1), aspect="auto",
                      interpolation="bilinear")
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.set_ylabel("frames", rotation=0, ha="right", va="center")
        row = 1
    mel_top = config.sample_rate / 2
    hz_ticks = [t for t in (100, 500, 1000, 2000, 5000, 10000, 20000) if t < mel_top]
    mel = 2595.0 * np.log10(1.0 + np.asarray(hz_ticks, float) / 700.0)
    mel_max = 2595.0 * np.log10(1.0 + mel_top / 700.0)
    for label, audio in tracks:
        ax = axes[row]
        spec = log_mel(audio, config).mean(axis=0).T  # (n_mels, frames), channels averaged in dB
        top = float(spec.max())
        ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=top - 80.0, vmax=top,
                  extent=(0, audio.shape[1] / config.sample_rate, 0, config.n_mels), interpolation="nearest")
        ax.set_yticks(mel / mel_max * config.n_mels)
        ax.set_yticklabels([f"{t // 1000}k" if t >= 1000 else str(t) for t in hz_ticks], fontsize=7)
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        row += 1
    seen: dict[str, str] = {}
    for ev in events:
        t = int(ev["frame"]) / CONTRACT.fps if "frame" in ev else float(ev["time_s"])
        kind = str(ev.get("type", "event"))
        color = EVENT_COLORS.get(kind, _OTHER_COLOR)
        seen.setdefault(kind, color)
        for ax in axes:  # dashed, so the onset underneath stays visible
            ax.axvline(t, color=color, lw=0.9, alpha=0.8, linestyle=(0, (4, 3)))
    axes[-1].set_xlim(0, duration)
    axes[-1].set_xlabel("time (s)")
    if seen:
        handles = [Line2D([], [], color=c, lw=2, label=k) for k, c in sorted(seen.items())]
        axes[0].legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.02), ncol=len(handles),
                       fontsize=8, frameon=False, borderaxespad=0)
    if title:
        fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
