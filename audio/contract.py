"""The timing contract, declared once.

Every other module derives frame rate, sample rate, hop and latent width from :data:`CONTRACT`
(or from a config validated against it) instead of repeating the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TimingContract:
    fps: int = 30
    sample_rate: int = 48_000
    channels: int = 2
    latent_dim: int = 64

    def __post_init__(self) -> None:
        if self.sample_rate % self.fps:
            raise ValueError(f"sample_rate {self.sample_rate} is not a multiple of fps {self.fps}")

    @property
    def hop(self) -> int:
        """Audio samples per video frame (= per latent): 1600 at 48 kHz / 30 fps."""
        return self.sample_rate // self.fps

    @property
    def frame_s(self) -> float:
        """Duration of one frame in seconds (the live engine's slot)."""
        return 1.0 / self.fps

    @property
    def frame_ms(self) -> float:
        """Duration of one frame in milliseconds; also the real-time budget per frame."""
        return 1000.0 / self.fps


CONTRACT = TimingContract()
