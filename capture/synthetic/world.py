"""The synthetic arcade world: simulation, event log, and the per-frame (picture, sound) pair.

A seeded 2D game: a player craft flies about (engine sound following its speed), shoots lasers
and guns at objects that drift in from the edges and bounce off the walls, objects hit by a shot
explode into debris, pickups sparkle when the craft collects them.  Active phases alternate with
calm ones in which nothing is spawned or fired, objects drift off-screen without bouncing and the
craft cruises slowly through the middle — the quiet stretches.

Every discrete event is logged as a dict (see :class:`SyntheticEvent`) on the frame where it
becomes visible, and its sound starts exactly at sample ``frame · 1600`` of the world's audio.

Coordinates.  The simulation runs in *world units* where the frame height is 1 and the width is
``width / height`` (so the same seed plays the same game at any resolution with the same aspect
ratio).  Logged events use **normalised** coordinates: ``x`` = horizontal position / frame width
and ``y`` = vertical position / frame height, both in [0, 1] from the top-left corner; ``size`` is
the radius of the thing involved in frame heights (e.g. 0.05 = 18 px at 360 px high); ``strength``
is in [0, 1] (impacts: normal speed × size, normalised; explosions: object size; shots and
pickups: their power).

Determinism: one ``np.random.SeedSequence(seed)`` is split into independent streams for the style,
the background, the simulation and the sound, so rendering or not rendering a frame
(``step(render=False)``) never changes the game or its audio.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np

from audio.contract import CONTRACT
from capture.synthetic.render import Renderer
from capture.synthetic.sound import SoundScape
from capture.synthetic.style import Style

log = logging.getLogger(__name__)

MIN_SIZE = 32
"""Smallest frame width or height the renderer accepts."""

_PLAYER_VMAX = 0.85  # world units per second in an active phase
_CALM_VMAX = 0.22
_MIN_IMPACT_SPEED = 0.08  # normal speed below which a wall contact is a silent stop
_IMPACT_REF = 0.05  # normal speed × radius that gives strength 1
_SETTLE_FRAMES = 24  # frames into a calm phase before it counts as quiet (tails decay)
_LASER_SPEED, _BULLET_SPEED = 1.8, 1.3
_SHOT_RADIUS = 0.008


class SyntheticEvent(TypedDict):
    """One logged event.  ``x``, ``y`` normalised to [0, 1] (top-left origin); ``size`` in frame
    heights; ``strength`` in [0, 1]; ``time_s`` = ``frame / fps``."""

    frame: int
    time_s: float
    type: str
    x: float
    y: float
    size: float
    strength: float


@dataclass
class Player:
    x: float
    y: float
    r: float
    vx: float = 0.0
    vy: float = 0.0
    heading: float = 0.0
    tx: float = 0.0
    ty: float = 0.0
    retarget: int = 0  # frames until a new waypoint is chosen
    cooldown: int = 15  # frames until the next shot may be fired


@dataclass
class Body:
    """An object that drifts in, bounces off the walls, and explodes when shot."""

    x: float
    y: float
    vx: float
    vy: float
    r: float
    shape: str
    color: tuple[int, int, int]
    angle: float
    spin: float
    life: int  # frames of bouncing left before it leaves through a wall
    inside_x: bool = False  # walls act on an axis once the body is fully inside along it
    inside_y: bool = False
    leaving: bool = False


@dataclass
class Shot:
    kind: str  # "laser" | "gun"
    x: float
    y: float
    dx: float
    dy: float
    speed: float
    born: int  # frame it was fired on (it sits at the muzzle on that frame)
    travelled: float = 0.0


@dataclass
class Pickup:
    x: float
    y: float
    r: float
    life: int
    phase: float
    age: int = 0
    fade: int | None = None  # frames left of fading out (uncollected)


@dataclass
class Effect:
    kind: str  # "muzzle" | "explosion" | "sparkle" | "impact"
    x: float
    y: float
    size: float
    strength: float
    start: int
    duration: int
    color: tuple[int, int, int]


@dataclass
class Particles:
    """Debris, as arrays of length n: positions/velocities in world units, age/life in frames."""

    x: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    vx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    vy: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    age: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    life: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    color: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))


def _seg_point_dist(ax, ay, bx, by, px, py) -> float:
    dx, dy = bx - ax, by - ay
    ll = dx * dx + dy * dy
    t = 0.0 if ll == 0 else min(1.0, max(0.0, ((px - ax) * dx + (py - ay) * dy) / ll))
    return math.hypot(ax + t * dx - px, ay + t * dy - py)


class World:
    """A seeded arcade game.  ``step()`` advances one frame (1/30 s) and returns
    ``(frame (H, W, 3) uint8 RGB or None, audio chunk (2, 1600) float32, events of this frame)``.

    Attributes worth reading: :attr:`style` (scene, palette, …), :attr:`frame_index`,
    :attr:`events` (every event so far, when ``keep_log``), :attr:`quiet` (this frame is part of a
    quiet stretch), :attr:`quiet_spans` (``[start, end)`` frame ranges of the quiet stretches so
    far), :attr:`last_events_audio` (this frame's event layer alone, before engine and ambience).
    ``noise_seed``: see :func:`world_audio`.
    """

    def __init__(self, seed: int, *, width: int = 640, height: int = 360, keep_log: bool = True,
                 noise_seed: int | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if width < MIN_SIZE or height < MIN_SIZE:
            raise ValueError(f"frame size {width}x{height} is too small; use at least {MIN_SIZE}x{MIN_SIZE}")
        self.seed, self.width, self.height = int(seed), int(width), int(height)
        self.fps, self.hop = CONTRACT.fps, CONTRACT.hop
        self.aspect = self.width / self.height  # world width in units (height = 1)
        ss_style, ss_bg, ss_sim, ss_sound = np.random.SeedSequence(self.seed).spawn(4)
        self.style = Style.sample(np.random.default_rng(ss_style))
        self._rng = np.random.default_rng(ss_sim)
        bg_rng = np.random.default_rng(ss_bg)
        self.renderer = Renderer(self.style, width=self.width, height=self.height, rng=bg_rng)
        self.sound = SoundScape(scene=self.style.scene, timbre=self.style.timbre, seed=ss_sound,
                                noise_seed=noise_seed)
        self.keep_log = keep_log

        self.frame_index = -1
        self.player = Player(
            x=0.3 * self.aspect, y=0.5, r=self.style.player_radius, tx=0.5 * self.aspect, ty=0.5
        )
        self.objects: list[Body] = []
        self.shots: list[Shot] = []
        self.pickups: list[Pickup] = []
        self.effects: list[Effect] = []
        self.particles = Particles()
        self.active = True
        self._phase_left = self._phase_frames(active=True)
        self._calm_age = 0
        self.quiet = False
        self.quiet_spans: list[list[int]] = []
        self.events: list[SyntheticEvent] = []
        self.last_events: list[SyntheticEvent] = []
        self.last_audio = np.zeros((2, self.hop), np.float32)

    # ------------------------------------------------------------------ public
    @property
    def player_speed01(self) -> float:
        """Player speed normalised to [0, 1] (1 = full active cruising speed)."""
        return min(1.0, math.hypot(self.player.vx, self.player.vy) / _PLAYER_VMAX)

    @property
    def last_events_audio(self) -> np.ndarray:
        return self.sound.last_events_stem

    def step(self, *, render: bool = True) -> tuple[np.ndarray | None, np.ndarray, list[SyntheticEvent]]:
        """Advance one frame; see the class docstring.  ``render=False`` skips drawing (the game,
        events and audio are identical) and returns ``None`` for the frame."""
        self.frame_index += 1
        events: list[SyntheticEvent] = []
        if self.frame_index > 0:
            self._simulate(events)
        audio = self.sound.step(events, self.player_speed01, self.player.x / self.aspect)
        self.last_events, self.last_audio = events, audio
        if self.keep_log:
            self.events.extend(events)
        self._track_quiet(events)
        frame = self.renderer.draw(self) if render else None
        return frame, audio, events

    # -------------------------------------------------------------- simulation
    def _phase_frames(self, *, active: bool) -> int:
        lo, hi = self.style.active_s if active else self.style.calm_s
        return int(self._rng.uniform(lo, hi) * self.fps)

    def _event(self, events: list, kind: str, x: float, y: float, size: float, strength: float) -> None:
        events.append(
            SyntheticEvent(
                frame=self.frame_index,
                time_s=self.frame_index / self.fps,
                type=kind,
                x=float(min(1.0, max(0.0, x / self.aspect))),
                y=float(min(1.0, max(0.0, y))),
                size=float(size),
                strength=float(min(1.0, max(0.0, strength))),
            )
        )

    def _effect(self, kind: str, x: float, y: float, size: float, strength: float, duration: int, color):
        self.effects.append(Effect(kind, x, y, size, strength, self.frame_index, duration, tuple(color)))

    def _simulate(self, events: list) -> None:
        self._phase_left -= 1
        if self._phase_left <= 0:
            self.active = not self.active
            self._phase_left = self._phase_frames(active=self.active)
            self._calm_age = 0
            if not self.active:  # calm: everything on screen winds down silently
                for ob in self.objects:
                    ob.leaving = True
                for pk in self.pickups:
                    if pk.fade is None:
                        pk.fade = 10
        if not self.active:
            self._calm_age += 1
        self._move_player(events)
        self._spawn_and_move_objects(events)
        self._fire(events)
        self._move_shots(events)
        self._update_pickups(events)
        self._update_particles()
        k = self.frame_index
        self.effects = [fx for fx in self.effects if k - fx.start < fx.duration]

    def _move_player(self, events: list) -> None:
        p, rng, dt, A = self.player, self._rng, 1.0 / self.fps, self.aspect
        vmax = _PLAYER_VMAX if self.active else _CALM_VMAX
        p.retarget -= 1
        if p.retarget <= 0 or math.hypot(p.tx - p.x, p.ty - p.y) < 0.05:
            live = [pk for pk in self.pickups if pk.fade is None]
            if self.active and live and rng.random() < 0.6:
                near = min(live, key=lambda pk: (pk.x - p.x) ** 2 + (pk.y - p.y) ** 2)
                p.tx, p.ty = near.x, near.y
            elif self.active:
                p.tx, p.ty = rng.uniform(p.r, A - p.r), rng.uniform(p.r, 1 - p.r)
            else:
                p.tx, p.ty = rng.uniform(0.35 * A, 0.65 * A), rng.uniform(0.35, 0.65)
            p.retarget = int(rng.integers(20, 75))
        # steer towards the waypoint: desired velocity proportional to distance, capped
        dx, dy = (p.tx - p.x) * 2.5, (p.ty - p.y) * 2.5
        mag = math.hypot(dx, dy)
        if mag > vmax:
            dx, dy = dx * vmax / mag, dy * vmax / mag
        gain = min(1.0, 3.0 * dt)
        p.vx += (dx - p.vx) * gain
        p.vy += (dy - p.vy) * gain
        if self.active and rng.random() < self.style.dash_rate * dt:  # a hard dash → a wall bounce
            a = rng.uniform(0, 2 * np.pi)
            sp = rng.uniform(1.3, 2.0)
            p.vx, p.vy = sp * math.cos(a), sp * math.sin(a)
            p.retarget = 45
        p.x += p.vx * dt
        p.y += p.vy * dt
        for axis, hi in (("x", A), ("y", 1.0)):
            pos, vel = getattr(p, axis), getattr(p, "v" + axis)
            for wall, side in ((p.r, -1), (hi - p.r, 1)):
                if (pos - wall) * side > 0:
                    contact = 0.0 if side < 0 else hi
                    vn = abs(vel)
                    if vn >= _MIN_IMPACT_SPEED and vel * side > 0 and not self.quiet:
                        pos = 2 * wall - pos
                        vel = -0.75 * vel
                        cx, cy = (contact, p.y) if axis == "x" else (p.x, contact)
                        strength = vn * p.r / _IMPACT_REF
                        self._event(events, "impact", cx, cy, p.r, strength)
                        self._effect("impact", cx, cy, p.r, min(1.0, strength), 6, self.style.palette.wall)
                    else:  # a gentle touch: stop at the wall, no sound, nothing to see
                        pos, vel = wall, 0.0
            setattr(p, axis, pos)
            setattr(p, "v" + axis, vel)

    def _spawn_and_move_objects(self, events: list) -> None:
        rng, st, dt, A = self._rng, self.style, 1.0 / self.fps, self.aspect
        n_live = sum(not ob.leaving for ob in self.objects)
        if self.active and n_live < st.max_objects and rng.random() < st.spawn_rate * dt:
            r = float(rng.uniform(*st.object_radius))
            side = int(rng.integers(4))
            inward = (0.0, np.pi, np.pi / 2, -np.pi / 2)[side]  # left, right, top, bottom edge
            a = inward + rng.uniform(-0.7, 0.7)
            sp = rng.uniform(0.18, 0.5)
            if side < 2:
                x, y = (-r if side == 0 else A + r), rng.uniform(0.2, 0.8)
            else:
                x, y = rng.uniform(0.2 * A, 0.8 * A), (-r if side == 2 else 1 + r)
            self.objects.append(
                Body(
                    x=x,
                    y=y,
                    vx=sp * math.cos(a),
                    vy=sp * math.sin(a),
                    r=r,
                    shape=st.shapes[int(rng.integers(len(st.shapes)))],
                    color=st.palette.objects[int(rng.integers(len(st.palette.objects)))],
                    angle=float(rng.uniform(0, 2 * np.pi)),
                    spin=float(rng.uniform(-2.5, 2.5)),
                    life=int(rng.uniform(5, 12) * self.fps),
                    inside_x=side >= 2,
                    inside_y=side < 2,
                )
            )
        keep = []
        for ob in self.objects:
            ob.x += ob.vx * dt
            ob.y += ob.vy * dt
            ob.angle += ob.spin * dt
            ob.life -= 1
            if ob.life <= 0:
                ob.leaving = True
            if ob.leaving:
                if ob.x + ob.r < 0 or ob.x - ob.r > A or ob.y + ob.r < 0 or ob.y - ob.r > 1:
                    continue  # gone off-screen
                keep.append(ob)
                continue
            ob.inside_x = ob.inside_x or (ob.r <= ob.x <= A - ob.r)
            ob.inside_y = ob.inside_y or (ob.r <= ob.y <= 1 - ob.r)
            for axis, hi, inside in (("x", A, ob.inside_x), ("y", 1.0, ob.inside_y)):
                if not inside:
                    continue
                pos, vel = getattr(ob, axis), getattr(ob, "v" + axis)
                for wall, side in ((ob.r, -1), (hi - ob.r, 1)):
                    if (pos - wall) * side > 0 and vel * side > 0:
                        pos, vel = 2 * wall - pos, -vel
                        contact = 0.0 if side < 0 else hi
                        cx, cy = (contact, ob.y) if axis == "x" else (ob.x, contact)
                        strength = abs(vel) * ob.r / _IMPACT_REF
                        self._event(events, "impact", cx, cy, ob.r, strength)
                        self._effect("impact", cx, cy, ob.r, min(1.0, strength), 6, ob.color)
                setattr(ob, axis, pos)
                setattr(ob, "v" + axis, vel)
            keep.append(ob)
        self.objects = keep

    def _fire(self, events: list) -> None:
        p, rng, st, dt = self.player, self._rng, self.style, 1.0 / self.fps
        targets = [ob for ob in self.objects if not ob.leaving and ob.inside_x and ob.inside_y]
        if targets:
            tgt = min(targets, key=lambda ob: (ob.x - p.x) ** 2 + (ob.y - p.y) ** 2)
            want = math.atan2(tgt.y - p.y, tgt.x - p.x)
        elif math.hypot(p.vx, p.vy) > 0.05:
            want = math.atan2(p.vy, p.vx)
        else:
            want = p.heading
        diff = (want - p.heading + np.pi) % (2 * np.pi) - np.pi
        p.heading += max(-6.0 * dt, min(6.0 * dt, diff))
        p.cooldown -= 1
        if not self.active or p.cooldown > 0:
            return
        aligned = bool(targets) and abs(diff) < 0.25
        if not (aligned or rng.random() < 0.01):
            return
        p.cooldown = max(8, int(rng.exponential(1.0 / st.fire_rate) * self.fps))
        kind = "laser" if rng.random() < st.laser_share else "gun"
        dx, dy = math.cos(p.heading), math.sin(p.heading)
        nx, ny = p.x + 1.3 * p.r * dx, p.y + 1.3 * p.r * dy  # the craft's nose
        nx, ny = min(max(nx, 0.0), self.aspect), min(max(ny, 0.0), 1.0)
        speed = _LASER_SPEED if kind == "laser" else _BULLET_SPEED
        self.shots.append(Shot(kind, nx, ny, dx, dy, speed, born=self.frame_index))
        strength = 1.0 if kind == "laser" else float(rng.uniform(0.7, 1.0))
        self._event(events, kind, nx, ny, _SHOT_RADIUS, strength)
        color = st.palette.laser if kind == "laser" else st.palette.bullet
        self._effect("muzzle", nx, ny, _SHOT_RADIUS, strength, 2, color)

    def _move_shots(self, events: list) -> None:
        dt, A = 1.0 / self.fps, self.aspect
        k = self.frame_index
        keep = []
        for sh in self.shots:
            if sh.born == k:  # fired this frame: shown at the muzzle
                keep.append(sh)
                continue
            ax, ay = sh.x, sh.y
            step = sh.speed * dt
            sh.x += sh.dx * step
            sh.y += sh.dy * step
            sh.travelled += step
            hit = None
            for ob in self.objects:
                if _seg_point_dist(ax, ay, sh.x, sh.y, ob.x, ob.y) <= ob.r + _SHOT_RADIUS:
                    hit = ob
                    break
            if hit is not None:
                self.objects.remove(hit)
                self._explode(events, hit)
                continue
            if -0.1 <= sh.x <= A + 0.1 and -0.1 <= sh.y <= 1.1:
                keep.append(sh)
        self.shots = keep

    def _explode(self, events: list, ob: Body) -> None:
        rng = self._rng
        ex, ey = min(max(ob.x, 0.0), self.aspect), min(max(ob.y, 0.0), 1.0)
        strength = (ob.r - 0.02) / 0.08
        self._event(events, "explosion", ex, ey, ob.r, strength)
        self._effect("explosion", ex, ey, ob.r, min(1.0, strength), 8, ob.color)
        n = int(8 + 220 * ob.r)
        ang = rng.uniform(0, 2 * np.pi, n)
        sp = rng.uniform(0.12, 0.75, n)
        pr = self.particles
        pr.x = np.concatenate([pr.x, ex + rng.uniform(-0.5, 0.5, n) * ob.r]).astype(np.float32)
        pr.y = np.concatenate([pr.y, ey + rng.uniform(-0.5, 0.5, n) * ob.r]).astype(np.float32)
        pr.vx = np.concatenate([pr.vx, sp * np.cos(ang) + 0.3 * ob.vx]).astype(np.float32)
        pr.vy = np.concatenate([pr.vy, sp * np.sin(ang) + 0.3 * ob.vy]).astype(np.float32)
        pr.age = np.concatenate([pr.age, np.zeros(n)]).astype(np.float32)
        pr.life = np.concatenate([pr.life, rng.uniform(12, 28, n)]).astype(np.float32)
        col = np.asarray(ob.color, np.float32)[None, :] * rng.uniform(0.7, 1.2, (n, 1))
        pr.color = np.concatenate([pr.color, np.clip(col, 0, 255)]).astype(np.float32)

    def _update_pickups(self, events: list) -> None:
        rng, st, p, A = self._rng, self.style, self.player, self.aspect
        if self.active and rng.random() < st.pickup_rate / self.fps and len(self.pickups) < 4:
            for _ in range(4):  # a spot away from the walls and the craft
                x, y = rng.uniform(0.12, A - 0.12), rng.uniform(0.12, 0.88)
                if math.hypot(x - p.x, y - p.y) > 0.25:
                    self.pickups.append(
                        Pickup(
                            x,
                            y,
                            float(rng.uniform(0.018, 0.026)),
                            int(rng.uniform(4, 8) * self.fps),
                            float(rng.uniform(0, 2 * np.pi)),
                        )
                    )
                    break
        keep = []
        for pk in self.pickups:
            pk.age += 1
            if pk.fade is not None:
                pk.fade -= 1
                if pk.fade > 0:
                    keep.append(pk)
                continue
            if pk.age > 1 and math.hypot(pk.x - p.x, pk.y - p.y) < p.r + pk.r:
                strength = float(rng.uniform(0.7, 1.0))
                self._event(events, "pickup", pk.x, pk.y, pk.r, strength)
                self._effect("sparkle", pk.x, pk.y, pk.r, strength, 10, st.palette.pickup)
                continue
            if pk.age >= pk.life:
                pk.fade = 10
            keep.append(pk)
        self.pickups = keep

    def _update_particles(self) -> None:
        pr, dt = self.particles, 1.0 / self.fps
        if not len(pr.x):
            return
        pr.x += pr.vx * dt
        pr.y += pr.vy * dt
        pr.vx *= 0.96
        pr.vy *= 0.96
        pr.age += 1
        alive = pr.age < pr.life
        if not alive.all():
            for name in ("x", "y", "vx", "vy", "age", "life", "color"):
                setattr(pr, name, getattr(pr, name)[alive])

    def _track_quiet(self, events: list) -> None:
        """Quiet = calm phase, settled (no shots in flight) and no event on this frame."""
        self.quiet = not self.active and self._calm_age >= _SETTLE_FRAMES and not self.shots and not events
        k = self.frame_index
        if self.quiet:
            if self.quiet_spans and self.quiet_spans[-1][1] == k:
                self.quiet_spans[-1][1] = k + 1
            else:
                self.quiet_spans.append([k, k + 1])
                if not self.keep_log and len(self.quiet_spans) > 64:
                    del self.quiet_spans[0]


def world_audio(seed: int, n_frames: int, size: tuple[int, int] = (640, 360), *,
                noise_seed: int | None = None):
    """Sound, events and quiet spans of the first ``n_frames`` of world ``seed``, without drawing a
    frame: ``(audio (2, n_frames·1600) float32, events, quiet spans as [start, end) lists)``.
    ``noise_seed``: the same world (events, pitches, timings, tones' phases) with every Gaussian
    noise sample drawn afresh — what a perfect codec that does not carry the noise would give."""
    world = World(seed, width=size[0], height=size[1], noise_seed=noise_seed)
    audio = np.empty((CONTRACT.channels, n_frames * CONTRACT.hop), np.float32)
    for i in range(n_frames):
        _, chunk, _ = world.step(render=False)
        audio[:, i * CONTRACT.hop : (i + 1) * CONTRACT.hop] = chunk
    return audio, list(world.events), [list(s) for s in world.quiet_spans]


def render_clip(
    seed: int, seconds: float, *, width: int = 640, height: int = 360
) -> tuple[np.ndarray, np.ndarray, list[SyntheticEvent]]:
    """Play a world for ``seconds``: ``(frames (T, H, W, 3) uint8, audio (2, T·1600) float32,
    events)`` with ``T = round(seconds · 30)``.  Holds every frame in memory; for long clips step a
    :class:`World` yourself."""
    n = int(round(seconds * CONTRACT.fps))
    if n <= 0:
        raise ValueError(f"seconds must give at least one frame, got {seconds!r}")
    world = World(seed, width=width, height=height)
    frames = np.empty((n, height, width, 3), np.uint8)
    audio = np.empty((2, n * CONTRACT.hop), np.float32)
    for i in range(n):
        frame, chunk, _ = world.step()
        frames[i] = frame
        audio[:, i * CONTRACT.hop : (i + 1) * CONTRACT.hop] = chunk
    return frames, audio, list(world.events)
