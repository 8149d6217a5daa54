"""Per-seed look, feel and pace of a synthetic world.

A :class:`Style` is drawn once from a seed: the scene type (which picks the background and the
ambience), a palette, the shape of the objects, how busy the world is, the weapon mix and the
timbre of its sounds.  Everything random about a world that is *not* its moment-to-moment
simulation lives here, so two seeds differ visibly and audibly from the first frame.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from capture.synthetic.sound import SCENES, Timbre

SHAPES = ("circle", "square", "diamond", "triangle", "hexagon")
"""Object outlines a world can use (each world uses one or two of them)."""


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return int(r * 255), int(g * 255), int(b * 255)


@dataclass(frozen=True)
class Palette:
    """RGB colours (0–255).  ``bg_top``/``bg_bottom`` span the background gradient."""

    bg_top: tuple[int, int, int]
    bg_bottom: tuple[int, int, int]
    detail: tuple[int, int, int]  # stars, rock texture, clouds, grid lines
    wall: tuple[int, int, int]
    player: tuple[int, int, int]
    flame: tuple[int, int, int]
    objects: tuple[tuple[int, int, int], ...]
    laser: tuple[int, int, int]
    bullet: tuple[int, int, int]
    pickup: tuple[int, int, int]


@dataclass(frozen=True)
class Style:
    """Everything a seed decides once.  Rates are per second of the active phase."""

    scene: str
    palette: Palette
    shapes: tuple[str, ...]
    spawn_rate: float  # new objects per second
    max_objects: int
    fire_rate: float  # shots per second when a target is in sight
    laser_share: float  # fraction of shots that are lasers (the rest are gun shots)
    pickup_rate: float  # new pickups per second
    dash_rate: float  # player dashes (hard wall bounces) per second
    active_s: tuple[float, float]  # range of an active phase's length
    calm_s: tuple[float, float]  # range of a calm (quiet) phase's length
    player_radius: float  # in world units (frame height = 1)
    object_radius: tuple[float, float]
    timbre: Timbre

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Style:
        scene = SCENES[int(rng.integers(len(SCENES)))]
        hue = float(rng.random())
        if scene == "space":
            top = _hsv(hue, 0.6, rng.uniform(0.04, 0.1))
            bottom = _hsv(hue + 0.08, 0.7, rng.uniform(0.12, 0.22))
            detail = _hsv(hue + 0.5, 0.15, 0.95)
        elif scene == "cave":
            hue = float(rng.uniform(0.02, 0.14)) if rng.random() < 0.7 else hue
            top, bottom = _hsv(hue, 0.5, rng.uniform(0.12, 0.2)), _hsv(hue, 0.55, rng.uniform(0.22, 0.32))
            detail = _hsv(hue, 0.45, 0.42)
        elif scene == "sky":
            top, bottom = _hsv(hue, rng.uniform(0.35, 0.6), 0.45), _hsv(hue + 0.1, 0.3, rng.uniform(0.6, 0.7))
            detail = _hsv(hue, 0.08, 0.78)
        else:  # grid
            top, bottom = _hsv(hue, 0.8, 0.05), _hsv(hue + 0.05, 0.8, 0.1)
            detail = _hsv(hue + 0.15, 0.9, 0.6)
        obj_hue = hue + 0.5 + rng.uniform(-0.15, 0.15)
        n_obj_colors = int(rng.integers(2, 5))
        objects = tuple(
            _hsv(obj_hue + rng.uniform(-0.12, 0.12), rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0))
            for _ in range(n_obj_colors)
        )
        palette = Palette(
            bg_top=top,
            bg_bottom=bottom,
            detail=detail,
            wall=_hsv(hue + 0.5, 0.4, 0.85),
            player=_hsv(hue + rng.uniform(0.25, 0.4), 0.5, 1.0),
            flame=_hsv(rng.uniform(0.02, 0.15), 0.9, 1.0),
            objects=objects,
            laser=_hsv(rng.random(), 0.75, 1.0),
            bullet=_hsv(rng.uniform(0.1, 0.18), 0.5, 1.0),
            pickup=_hsv(rng.uniform(0.1, 0.55), 0.7, 1.0),
        )
        n_shapes = 1 if rng.random() < 0.6 else 2
        shapes = tuple(str(s) for s in rng.choice(SHAPES, size=n_shapes, replace=False))
        r_min = float(rng.uniform(0.025, 0.04))
        return cls(
            scene=scene,
            palette=palette,
            shapes=shapes,
            spawn_rate=float(rng.uniform(0.5, 1.6)),
            max_objects=int(rng.integers(3, 9)),
            fire_rate=float(rng.uniform(0.8, 2.5)),
            laser_share=float(rng.choice([0.0, 0.3, 0.5, 0.7, 1.0])),
            pickup_rate=float(rng.uniform(0.3, 0.9)),
            dash_rate=float(rng.uniform(0.08, 0.3)),
            active_s=(float(rng.uniform(3.0, 5.0)), float(rng.uniform(6.0, 10.0))),
            calm_s=(1.8, float(rng.uniform(2.5, 4.0))),
            player_radius=float(rng.uniform(0.035, 0.05)),
            object_radius=(r_min, r_min + float(rng.uniform(0.03, 0.06))),
            timbre=Timbre.sample(rng),
        )
