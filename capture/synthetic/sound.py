"""Sound of the synthetic arcade world: 48 kHz stereo, one 1600-sample chunk per video frame.

Three layers are summed per frame and soft-limited so that every peak stays below 1:

* **event sounds** — one synthesised mono sound per logged event (laser, gun, explosion, pickup,
  impact), panned by the event's on-screen x with constant power (``L = cos θ``, ``R = sin θ``,
  ``θ = x·π/2``) and written into an :class:`OverlapBuffer` starting at offset 0 of the chunk of the
  frame on which the event becomes visible — i.e. at global sample ``frame · 1600``.  Sounds longer
  than a frame continue into later chunks through the buffer.
* **engine** — a continuous harmonic hum whose pitch and level follow the player's speed, panned by
  the player's x (both interpolated across the chunk, phase-continuous).
* **ambience** — a low-level bed that depends on the scene type (space hum, cave rumble and drips,
  wind, mains hum of a neon grid).

All randomness comes from the ``np.random.Generator`` handed in, so a world's sound is
deterministic per seed.  Shapes: mono sounds are ``(n,)`` float32, chunks ``(2, hop)`` float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, lfilter, lfilter_zi

from audio.contract import CONTRACT

EVENT_TYPES = ("laser", "gun", "explosion", "pickup", "impact")
"""The kinds of discrete event the world logs and sounds."""

SCENES = ("space", "cave", "sky", "grid")
"""Scene types; each has its own background look and ambience."""

_ATTACK = 4
"""Onset ramp of every event sound, in samples (0.08 ms): sharp, but not a bare step.  Tonal
parts start at cosine phase (at their peak), so every sound reaches its level within the ramp."""


def pan_gains(x: float) -> tuple[float, float]:
    """Constant-power gains ``(left, right)`` for a normalised on-screen ``x`` in [0, 1]."""
    theta = float(np.clip(x, 0.0, 1.0)) * np.pi / 2
    return float(np.cos(theta)), float(np.sin(theta))


def soft_limit(x: np.ndarray, knee: float = 0.8, ceiling: float = 0.99) -> np.ndarray:
    """Identity below ``knee``; above it a tanh curve (slope 1 at the knee) that approaches
    ``ceiling`` without reaching it, so no sample ever hits full scale."""
    mag = np.abs(x)
    over = mag > knee
    if not over.any():
        return x
    out = x.copy()
    head = ceiling - knee
    out[over] = np.sign(x[over]) * (knee + head * np.tanh((mag[over] - knee) / head))
    return out


class OverlapBuffer:
    """A stereo ring buffer that event sounds are added into and chunks are popped from.

    ``add(sound)`` mixes a ``(2, n)`` sound in starting at the current read position (the first
    sample of the next :meth:`pop`); ``pop(n)`` returns the next ``(2, n)`` samples and clears them.
    Sounds longer than the capacity minus one chunk are truncated (never happens with this bank).
    """

    def __init__(self, *, capacity: int, channels: int = 2) -> None:
        self._buf = np.zeros((channels, capacity), np.float32)
        self._pos = 0

    @property
    def capacity(self) -> int:
        return self._buf.shape[1]

    def add(self, sound: np.ndarray) -> None:
        n = min(sound.shape[1], self.capacity)
        first = min(n, self.capacity - self._pos)
        self._buf[:, self._pos : self._pos + first] += sound[:, :first]
        if n > first:
            self._buf[:, : n - first] += sound[:, first:n]

    def pop(self, n: int) -> np.ndarray:
        idx = (self._pos + np.arange(n)) % self.capacity
        out = self._buf[:, idx]
        self._buf[:, idx] = 0.0
        self._pos = (self._pos + n) % self.capacity
        return out


@dataclass(frozen=True)
class Timbre:
    """Per-seed sound character, so that worlds differ in how they sound as well as look."""

    laser_f0: float  # start pitch of the laser chirp (Hz)
    laser_drop: float  # end pitch / start pitch
    gun_tone: float  # body pitch of the gun click (Hz)
    explosion_cutoff: float  # low-pass cutoff of the explosion noise for a mid-size object (Hz)
    pickup_f0: float  # first note of the pickup arpeggio (Hz)
    pickup_steps: tuple[int, ...]  # semitone steps of the arpeggio
    impact_f0: float  # thump pitch for a mid-size object (Hz)
    engine_f0: float  # engine fundamental at rest (Hz)
    engine_span: float  # added to the fundamental at full speed (Hz)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Timbre:
        arps = ((0, 4, 7, 12), (0, 3, 7, 12), (0, 5, 9, 12), (0, 7, 12, 16), (0, 2, 4, 7, 12))
        return cls(
            laser_f0=float(rng.uniform(1800, 3400)),
            laser_drop=float(rng.uniform(0.12, 0.3)),
            gun_tone=float(rng.uniform(110, 220)),
            explosion_cutoff=float(rng.uniform(350, 900)),
            pickup_f0=float(rng.uniform(620, 1100)),
            pickup_steps=arps[int(rng.integers(len(arps)))],
            impact_f0=float(rng.uniform(70, 150)),
            engine_f0=float(rng.uniform(45, 80)),
            engine_span=float(rng.uniform(60, 140)),
        )


def _decay(n: int, tau: float, sr: int) -> np.ndarray:
    """Exponential decay envelope of ``n`` samples with a sharp :data:`_ATTACK` ramp at the start
    (first sample already non-zero) and a short fade at the end so nothing clicks."""
    env = np.exp(-np.arange(n, dtype=np.float32) / np.float32(tau * sr))
    a = min(_ATTACK, n)
    env[:a] *= (np.arange(1, a + 1, dtype=np.float32)) / a
    fade = min(n // 4, int(0.01 * sr))
    if fade:
        env[n - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return env


def _norm(x: np.ndarray) -> np.ndarray:
    peak = float(np.abs(x).max())
    return x / peak if peak > 0 else x


class EventSynth:
    """Synthesises the mono sound of one event: ``sound(event) -> (n,)`` float32, peak = level."""

    def __init__(self, timbre: Timbre, *, rng: np.random.Generator, sample_rate: int,
                 noise: np.random.Generator | None = None) -> None:
        self.timbre = timbre
        self.sr = sample_rate
        self._rng = rng
        self._noise = rng if noise is None else noise  # Gaussian noise samples only
        self._lp_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _lowpass(self, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
        key = int(round(cutoff / 25.0)) * 25  # quantised so the design is cached
        if key not in self._lp_cache:
            self._lp_cache[key] = butter(2, key / (self.sr / 2))
        return self._lp_cache[key]

    def sound(self, kind: str, *, size: float, strength: float) -> np.ndarray:
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event type {kind!r}; valid: {', '.join(EVENT_TYPES)}")
        return getattr(self, f"_{kind}")(size, float(np.clip(strength, 0.0, 1.0))).astype(np.float32)

    def _t(self, seconds: float) -> np.ndarray:
        return np.arange(int(seconds * self.sr), dtype=np.float32) / np.float32(self.sr)

    def _laser(self, size: float, strength: float) -> np.ndarray:
        """Fast downward chirp with a buzzy (odd-harmonic) tone."""
        rng, tb = self._rng, self.timbre
        dur = rng.uniform(0.12, 0.22)
        t = self._t(dur)
        f0 = tb.laser_f0 * rng.uniform(0.92, 1.08)
        f = f0 * tb.laser_drop ** (t / dur)  # exponential sweep down
        phase = 2 * np.pi * np.cumsum(f) / self.sr
        tone = np.cos(phase) + 0.33 * np.cos(3 * phase) + 0.2 * np.cos(5 * phase)
        env = _decay(len(t), dur / 2.5, self.sr)
        return (0.22 + 0.12 * strength) * _norm(tone * env)

    def _gun(self, size: float, strength: float) -> np.ndarray:
        """Short broadband noise burst over a low click."""
        rng, tb = self._rng, self.timbre
        dur = rng.uniform(0.07, 0.12)
        t = self._t(dur)
        noise = self._noise.standard_normal(len(t)).astype(np.float32)
        noise = np.diff(noise, prepend=0.0)  # tilt towards the highs: crack, not rumble
        body = np.cos(2 * np.pi * tb.gun_tone * rng.uniform(0.9, 1.1) * t)
        x = noise * _decay(len(t), 0.016, self.sr) + 1.5 * body * _decay(len(t), 0.012, self.sr)
        return (0.32 + 0.14 * strength) * _norm(x)

    def _explosion(self, size: float, strength: float) -> np.ndarray:
        """Low-passed noise burst with a long decay, a sub-bass drop and an initial crack."""
        rng, tb = self._rng, self.timbre
        dur = float(np.clip(0.55 + 6.0 * size, 0.6, 1.3))
        t = self._t(dur)
        n = len(t)
        cutoff = tb.explosion_cutoff * float(np.clip(0.06 / max(size, 1e-3), 0.5, 1.8))
        b, a = self._lowpass(cutoff)
        rumble = lfilter(b, a, self._noise.standard_normal(n)).astype(np.float32)
        rumble = _norm(rumble) * _decay(n, dur / 4.5, self.sr)
        sub_f = rng.uniform(42, 70) * (1 + 1.5 * np.exp(-t / 0.05))
        sub = np.cos(2 * np.pi * np.cumsum(sub_f) / self.sr) * _decay(n, dur / 5, self.sr)
        crack = self._noise.standard_normal(n).astype(np.float32) * _decay(n, 0.008, self.sr)
        x = rumble + 0.7 * sub + 0.35 * crack
        return (0.38 + 0.32 * strength) * _norm(x)

    def _pickup(self, size: float, strength: float) -> np.ndarray:
        """Bright rising arpeggio (short, barely overlapping notes) with a shimmer of high partials
        that joins from the second note; the first note starts at full level."""
        rng, tb = self._rng, self.timbre
        steps = tb.pickup_steps
        n_note = int(0.055 * self.sr)
        tail = int(0.12 * self.sr)
        total = n_note * len(steps) + tail
        x = np.zeros(total, np.float32)
        tn = np.arange(n_note + tail, dtype=np.float32) / self.sr
        for i, st in enumerate(steps):
            f = tb.pickup_f0 * 2 ** (st / 12)
            tone = np.cos(2 * np.pi * f * tn) + 0.3 * np.cos(2 * np.pi * 3 * f * tn)
            seg = tone * _decay(len(tn), 0.025 if i < len(steps) - 1 else 0.06, self.sr)
            x[i * n_note : i * n_note + len(seg)] += seg[: total - i * n_note]
        t = np.arange(total - n_note, dtype=np.float32) / self.sr
        shimmer = np.zeros(len(t), np.float32)
        for _ in range(4):
            f = rng.uniform(3500, 7000)
            shimmer += np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        x[n_note:] += 0.12 * shimmer * _decay(len(t), 0.12, self.sr)
        return (0.2 + 0.1 * strength) * _norm(x)

    def _impact(self, size: float, strength: float) -> np.ndarray:
        """Short thump: a falling low sine plus a click; level and length scale with strength."""
        rng, tb = self._rng, self.timbre
        dur = 0.1 + 0.15 * strength
        t = self._t(dur)
        f = tb.impact_f0 * float(np.clip(0.05 / max(size, 1e-3), 0.5, 2.0)) * rng.uniform(0.93, 1.07)
        fi = f * (1 + 1.2 * np.exp(-t / 0.012))
        thump = np.cos(2 * np.pi * np.cumsum(fi) / self.sr) * _decay(len(t), 0.03 + 0.05 * strength, self.sr)
        click = self._noise.standard_normal(len(t)).astype(np.float32) * _decay(len(t), 0.003, self.sr)
        return (0.12 + 0.5 * strength) * _norm(thump + 0.4 * click)


class Engine:
    """Continuous engine hum: harmonics of ``f0 + span·speed`` plus a speed-dependent whoosh.

    ``chunk(speed01, x)`` takes the player's speed normalised to [0, 1] and its on-screen x; pitch,
    level and pan are interpolated linearly from the previous chunk's values (no zipper noise)."""

    def __init__(self, timbre: Timbre, *, rng: np.random.Generator, sample_rate: int, hop: int,
                 noise: np.random.Generator | None = None) -> None:
        self.timbre, self.sr, self.hop = timbre, sample_rate, hop
        self._noise = rng if noise is None else noise  # the whoosh's Gaussian noise
        self._phase = 0.0
        self._speed = 0.0
        self._x = 0.5
        self._ramp = np.arange(1, hop + 1, dtype=np.float32) / hop
        self._b, self._a = butter(2, [300 / (sample_rate / 2), 2500 / (sample_rate / 2)], btype="band")
        self._zi = lfilter_zi(self._b, self._a) * 0.0

    def chunk(self, speed01: float, x: float) -> np.ndarray:
        r = self._ramp
        speed = self._speed + (speed01 - self._speed) * r
        xs = self._x + (x - self._x) * r
        self._speed, self._x = speed01, x
        f = self.timbre.engine_f0 + self.timbre.engine_span * speed
        phase = self._phase + 2 * np.pi * np.cumsum(f) / self.sr
        self._phase = float(phase[-1] % (2 * np.pi))
        hum = np.zeros(self.hop, np.float32)
        for k, amp in ((1, 1.0), (2, 0.55), (3, 0.35), (4, 0.2), (5, 0.12)):
            hum += amp * np.sin(k * phase)
        whoosh, self._zi = lfilter(self._b, self._a, self._noise.standard_normal(self.hop), zi=self._zi)
        mono = (0.012 + 0.035 * speed) * hum / 2.2 + 0.03 * speed * whoosh.astype(np.float32)
        theta = np.clip(xs, 0.0, 1.0) * (np.pi / 2)
        return np.stack([mono * np.cos(theta), mono * np.sin(theta)]).astype(np.float32)


class Ambience:
    """Low-level scene bed (RMS roughly 0.005–0.02): ``chunk() -> (2, hop)``.

    * space — low hum (two detuned sines, slow beating) over faint dark noise;
    * cave  — dark rumble with soft, rare water drips (never louder than ~0.01: a bed, not events);
    * sky   — wind: band-passed noise, independent per channel, with a slow gust envelope;
    * grid  — mains hum (fundamental + odd harmonics) and a faint hiss.
    """

    def __init__(self, scene: str, *, rng: np.random.Generator, sample_rate: int, hop: int,
                 noise: np.random.Generator | None = None) -> None:
        if scene not in SCENES:
            raise ValueError(f"unknown scene {scene!r}; valid: {', '.join(SCENES)}")
        self.scene, self.sr, self.hop = scene, sample_rate, hop
        self._rng = rng
        self._noise = rng if noise is None else noise  # Gaussian noise samples only
        self._n = 0  # samples emitted so far
        self._t = np.arange(hop, dtype=np.float64) / sample_rate
        nyq = sample_rate / 2
        if scene == "sky":
            self._b, self._a = butter(2, [200 / nyq, 1200 / nyq], btype="band")
        elif scene == "grid":
            self._b, self._a = butter(1, 3000 / nyq, btype="high")
        else:
            self._b, self._a = butter(2, 220 / nyq)
        self._zi = np.zeros((2, max(len(self._a), len(self._b)) - 1))
        self.level = float(rng.uniform(0.6, 1.0))
        self._hum_f = float(rng.uniform(38, 62)) if scene == "space" else float(rng.choice([50.0, 60.0]))
        self._gust_f = float(rng.uniform(0.07, 0.2))
        self._drip = np.zeros((2, 0), np.float32)  # pending tail of a drip

    def chunk(self) -> np.ndarray:
        hop = self.hop
        t = self._t + self._n / self.sr
        self._n += hop
        noise, self._zi = lfilter(self._b, self._a, self._noise.standard_normal((2, hop)), zi=self._zi, axis=1)
        if self.scene == "space":
            f = self._hum_f
            hum = np.sin(2 * np.pi * f * t) + 0.8 * np.sin(2 * np.pi * (f * 1.005) * t + 1.0)
            out = 0.006 * hum[None] + 0.05 * noise
        elif self.scene == "cave":
            out = 0.08 * noise
            out = out + self._drips()
        elif self.scene == "sky":
            gust = 0.6 + 0.4 * np.sin(2 * np.pi * self._gust_f * t)
            out = 0.06 * noise * gust[None]
        else:  # grid
            f = self._hum_f
            hum = sum(a * np.sin(2 * np.pi * k * f * t) for k, a in ((1, 1.0), (3, 0.4), (5, 0.2)))
            out = 0.005 * hum[None] + 0.006 * noise
        return (self.level * out).astype(np.float32)

    def _drips(self) -> np.ndarray:
        hop = self.hop
        out = np.zeros((2, hop), np.float32)
        if self._drip.shape[1]:
            take = self._drip[:, :hop]
            out[:, : take.shape[1]] += take
            self._drip = self._drip[:, hop:]
        elif self._rng.random() < 0.4 / 30:  # ~0.4 drips per second, one at a time
            n = int(0.08 * self.sr)
            tt = np.arange(n) / self.sr
            f = self._rng.uniform(900, 1800) * (1 + 0.6 * np.exp(-tt / 0.01))
            # slow (5 ms) attack: a soft plink, not an onset that competes with real events
            env = np.minimum(tt / 0.005, 1.0) * np.exp(-tt / 0.02)
            drip = (0.008 * np.sin(2 * np.pi * np.cumsum(f) / self.sr) * env).astype(np.float32)
            gl, gr = pan_gains(self._rng.random())
            self._drip = np.stack([gl * drip, gr * drip])
            return self._drips()
        return out


class SoundScape:
    """Per-frame mixer: ``step(events, speed01, player_x) -> (2, hop)`` float32, peaks < 1.

    ``events`` are the world's event dicts of this frame (``type``, ``x``, ``size``, ``strength``);
    each one's sound starts at sample 0 of this chunk.  :attr:`last_events_stem` holds the event
    layer alone (before limiting) for tests and evaluation.  ``noise_seed`` draws the Gaussian noise
    (gun, explosion, clicks, whoosh, ambience) from its own generators and leaves everything else as
    ``seed`` makes it; ``None`` (default) draws it from the same generators as the rest.
    """

    def __init__(self, *, scene: str, timbre: Timbre, seed: np.random.SeedSequence,
                 noise_seed: int | None = None) -> None:
        sr, hop = CONTRACT.sample_rate, CONTRACT.hop
        self.sample_rate, self.hop = sr, hop
        e_rng, g_rng, a_rng = (np.random.default_rng(s) for s in seed.spawn(3))
        e_noise = g_noise = a_noise = None
        if noise_seed is not None:
            e_noise, g_noise, a_noise = (np.random.default_rng(s)
                                         for s in np.random.SeedSequence(noise_seed).spawn(3))
        self.synth = EventSynth(timbre, rng=e_rng, sample_rate=sr, noise=e_noise)
        self.engine = Engine(timbre, rng=g_rng, sample_rate=sr, hop=hop, noise=g_noise)
        self.ambience = Ambience(scene, rng=a_rng, sample_rate=sr, hop=hop, noise=a_noise)
        self._events = OverlapBuffer(capacity=2 * sr)  # longest sound is 1.3 s
        self.last_events_stem = np.zeros((2, hop), np.float32)

    def step(self, events: list[dict], speed01: float, player_x: float) -> np.ndarray:
        for ev in events:
            mono = self.synth.sound(ev["type"], size=ev["size"], strength=ev["strength"])
            gl, gr = pan_gains(ev["x"])
            self._events.add(np.stack([gl * mono, gr * mono]))
        stem = self._events.pop(self.hop)
        self.last_events_stem = stem
        mix = stem + self.engine.chunk(speed01, player_x) + self.ambience.chunk()
        return soft_limit(mix).astype(np.float32, copy=False)
