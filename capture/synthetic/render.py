"""Frames of the synthetic arcade world, drawn with numpy only.

Every shape is a boolean mask computed on the small bounding box it covers (never a per-pixel
Python loop), so a 640×360 frame with a few dozen shapes takes a few milliseconds.  Positions
handed to the primitives are in **pixels** (x right, y down, pixel ``(i, j)`` covers
``[j, j+1) × [i, i+1)``); the :class:`Renderer` converts from world units (frame height = 1).

The background is drawn once per world (gradient plus scene detail: stars, rock, clouds or a neon
grid, and a wall border) and copied into each frame.  Effects that mark events — muzzle flashes,
explosion flashes, sparkles, impact flashes — are drawn at full strength on the frame where the
event happens (age 0) and fade over the next few frames.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from capture.synthetic.style import Style

if TYPE_CHECKING:  # pragma: no cover
    from capture.synthetic.world import World

Color = tuple[int, int, int]
_WHITE = np.array([255, 255, 255], np.float32)


def _window(img: np.ndarray, x0: float, y0: float, x1: float, y1: float):
    """Clip a pixel box to the image; returns ``(slices, xs, ys)`` with pixel-centre coordinates
    (``xs`` (1, w), ``ys`` (h, 1)) or ``None`` if the box is off-screen."""
    h, w = img.shape[:2]
    ix0, ix1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)) + 1, w)
    iy0, iy1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)) + 1, h)
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    xs = np.arange(ix0, ix1, dtype=np.float32)[None, :] + 0.5
    ys = np.arange(iy0, iy1, dtype=np.float32)[:, None] + 0.5
    return (slice(iy0, iy1), slice(ix0, ix1)), xs, ys


def _paint(img: np.ndarray, sl, mask: np.ndarray, color, alpha: float = 1.0) -> None:
    patch = img[sl]
    if alpha >= 1.0:
        patch[mask] = color
    else:
        sel = patch[mask].astype(np.float32)
        patch[mask] = (sel + (np.asarray(color, np.float32) - sel) * alpha).astype(np.uint8)


def fill_circle(img: np.ndarray, cx: float, cy: float, r: float, color, alpha: float = 1.0) -> None:
    """Filled disc of radius ``r`` pixels."""
    win = _window(img, cx - r, cy - r, cx + r, cy + r)
    if win is None or r <= 0:
        return
    sl, xs, ys = win
    mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    _paint(img, sl, mask, color, alpha)


def fill_ring(img: np.ndarray, cx: float, cy: float, r_in: float, r_out: float, color, alpha: float = 1.0):
    """Annulus between ``r_in`` and ``r_out`` pixels."""
    win = _window(img, cx - r_out, cy - r_out, cx + r_out, cy + r_out)
    if win is None or r_out <= 0:
        return
    sl, xs, ys = win
    d2 = (xs - cx) ** 2 + (ys - cy) ** 2
    _paint(img, sl, (d2 <= r_out * r_out) & (d2 >= r_in * r_in), color, alpha)


def fill_polygon(img: np.ndarray, verts: np.ndarray, color, alpha: float = 1.0) -> None:
    """Filled convex polygon; ``verts`` is (n, 2) pixel (x, y) in either winding order."""
    x0, y0 = verts.min(axis=0)
    x1, y1 = verts.max(axis=0)
    win = _window(img, x0, y0, x1, y1)
    if win is None:
        return
    sl, xs, ys = win
    nxt = np.roll(verts, -1, axis=0)
    area2 = float(np.sum(verts[:, 0] * nxt[:, 1] - nxt[:, 0] * verts[:, 1]))
    sign = 1.0 if area2 >= 0 else -1.0
    mask = np.ones((ys.shape[0], xs.shape[1]), bool)
    for (ax, ay), (bx, by) in zip(verts, nxt, strict=True):
        mask &= sign * ((bx - ax) * (ys - ay) - (by - ay) * (xs - ax)) >= 0
    _paint(img, sl, mask, color, alpha)


def fill_capsule(img: np.ndarray, p0, p1, r: float, color, alpha: float = 1.0) -> None:
    """Thick line segment from ``p0`` to ``p1`` (pixels) with round caps of radius ``r``."""
    (ax, ay), (bx, by) = p0, p1
    win = _window(img, min(ax, bx) - r, min(ay, by) - r, max(ax, bx) + r, max(ay, by) + r)
    if win is None:
        return
    sl, xs, ys = win
    dx, dy = bx - ax, by - ay
    ll = dx * dx + dy * dy
    t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / ll, 0.0, 1.0) if ll > 0 else np.zeros_like(xs * ys)
    mask = (xs - ax - t * dx) ** 2 + (ys - ay - t * dy) ** 2 <= r * r
    _paint(img, sl, mask, color, alpha)


def add_glow(img: np.ndarray, cx: float, cy: float, r: float, color, intensity: float = 1.0) -> None:
    """Additive radial glow, ``intensity · (1 − d/r)²`` times ``color``, saturating at 255."""
    win = _window(img, cx - r, cy - r, cx + r, cy + r)
    if win is None or r <= 0 or intensity <= 0:
        return
    sl, xs, ys = win
    d = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) / r
    f = np.clip(1.0 - d, 0.0, 1.0) ** 2 * intensity
    patch = img[sl]
    out = patch.astype(np.float32) + f[..., None] * np.asarray(color, np.float32)
    np.minimum(out, 255.0, out=out)
    patch[...] = out.astype(np.uint8)


def regular_polygon(cx: float, cy: float, r: float, n: int, angle: float) -> np.ndarray:
    """(n, 2) vertices of a regular n-gon with circumradius ``r`` rotated by ``angle``."""
    a = angle + np.arange(n) * (2 * np.pi / n)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)


def _lerp(c0: Color, c1: Color, t: np.ndarray) -> np.ndarray:
    c0a, c1a = np.asarray(c0, np.float32), np.asarray(c1, np.float32)
    return c0a + (c1a - c0a) * t[..., None]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid bilinearly upsampled to (h, w)."""
    gh, gw = h // cell + 2, w // cell + 2
    grid = rng.random((gh, gw)).astype(np.float32)
    y = np.arange(h, dtype=np.float32) / cell
    x = np.arange(w, dtype=np.float32) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
    g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy


def draw_background(style: Style, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """The static (H, W, 3) uint8 backdrop of a world: gradient, scene detail, wall border."""
    pal = style.palette
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)
    bg = np.broadcast_to(_lerp(pal.bg_top, pal.bg_bottom, t)[:, None, :], (height, width, 3)).copy()
    scale = height / 360.0
    if style.scene == "space":
        for _ in range(int(rng.integers(1, 4))):  # faint nebulae
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            sig = rng.uniform(0.15, 0.35) * height
            xs = np.arange(width, dtype=np.float32)[None, :] - cx
            ys = np.arange(height, dtype=np.float32)[:, None] - cy
            blob = np.exp(-(xs * xs + ys * ys) / (2 * sig * sig))
            hue = np.asarray(pal.objects[int(rng.integers(len(pal.objects)))], np.float32)
            bg += blob[..., None] * hue * rng.uniform(0.08, 0.18)
        n = int(width * height / rng.uniform(250, 600))
        sx, sy = rng.integers(0, width, n), rng.integers(0, height, n)
        lum = rng.uniform(0.25, 1.0, n)[:, None] * np.asarray(pal.detail, np.float32)
        bg[sy, sx] = np.maximum(bg[sy, sx], lum)
        big = rng.random(n) < 0.08
        bx, by = np.minimum(sx[big] + 1, width - 1), np.minimum(sy[big] + 1, height - 1)
        bg[by, bx] = np.maximum(bg[by, bx], lum[big] * 0.7)
    elif style.scene == "cave":
        tex = _smooth_noise(rng, height, width, max(4, int(24 * scale)))
        fine = _smooth_noise(rng, height, width, max(2, int(6 * scale)))
        bg *= (0.75 + 0.35 * tex + 0.15 * fine)[..., None]
        for top in (True, False):  # jagged rock ceiling and floor
            walk = np.cumsum(rng.normal(0, 1.2 * scale, width))
            walk -= walk.min()
            depth = (0.04 + 0.08 * walk / max(walk.max(), 1e-6)) * height
            rows = np.arange(height)[:, None]
            mask = rows < depth[None, :] if top else rows > height - depth[None, :]
            rock = np.asarray(pal.detail, np.float32) * (0.55 + 0.3 * fine)[..., None]
            bg[mask] = rock[mask]
    elif style.scene == "sky":
        cloud = np.asarray(pal.detail, np.float32)
        for _ in range(int(rng.integers(3, 8))):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height * 0.8)
            rx, ry = rng.uniform(0.08, 0.22) * width, rng.uniform(0.03, 0.08) * height
            xs = (np.arange(width, dtype=np.float32)[None, :] - cx) / rx
            ys = (np.arange(height, dtype=np.float32)[:, None] - cy) / ry
            a = np.clip(1.0 - (xs * xs + ys * ys), 0.0, 1.0) ** 0.7 * rng.uniform(0.35, 0.6)
            bg += (cloud - bg) * a[..., None]
    else:  # grid
        step = max(8, int(rng.uniform(30, 60) * scale))
        line = np.asarray(pal.detail, np.float32)
        bg[::step, :] = bg[::step, :] * 0.6 + line * 0.4
        bg[:, ::step] = bg[:, ::step] * 0.6 + line * 0.4
    b = max(1, int(round(2 * scale)))  # the walls the bodies bounce off
    wall = np.asarray(pal.wall, np.float32)
    bg[:b], bg[-b:], bg[:, :b], bg[:, -b:] = wall, wall, wall, wall
    return np.clip(bg, 0, 255).astype(np.uint8)


def _flicker(frame: int, salt: int) -> float:
    """Deterministic pseudo-random number in [0, 1) from a frame index (no RNG state consumed)."""
    return ((frame * 2654435761 + salt * 40503) % 2**32) / 2**32


class Renderer:
    """Draws a :class:`~capture.synthetic.world.World`'s current state: ``draw(world) -> (H, W, 3)``."""

    def __init__(self, style: Style, *, width: int, height: int, rng: np.random.Generator) -> None:
        self.style, self.width, self.height = style, width, height
        self.scale = float(height)  # pixels per world unit
        self.background = draw_background(style, width, height, rng)
        self.dot = max(1, int(round(2 * height / 360)))  # debris particle size in pixels

    def px(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale, y * self.scale

    def draw(self, world: World) -> np.ndarray:
        img = self.background.copy()
        s, pal, k = self.scale, self.style.palette, world.frame_index
        for pk in world.pickups:
            grow = min(1.0, (pk.age + 1) / 6)
            fade = 1.0 if pk.fade is None else pk.fade / 10
            r = pk.r * s * (1 + 0.15 * np.sin(0.25 * pk.age + pk.phase)) * grow * fade
            cx, cy = self.px(pk.x, pk.y)
            add_glow(img, cx, cy, 2.2 * r, pal.pickup, 0.5 * fade)
            fill_polygon(img, regular_polygon(cx, cy, r, 4, 0.05 * pk.age), pal.pickup)
            fill_polygon(img, regular_polygon(cx, cy, 0.45 * r, 4, np.pi / 4), (255, 255, 255))
        for ob in world.objects:
            self._body(img, ob.shape, *self.px(ob.x, ob.y), ob.r * s, ob.angle, ob.color)
        for sh in world.shots:
            hx, hy = self.px(sh.x, sh.y)
            if sh.kind == "laser":
                tail = min(0.09, sh.travelled)
                tx, ty = self.px(sh.x - sh.dx * tail, sh.y - sh.dy * tail)
                fill_capsule(img, (tx, ty), (hx, hy), max(1.5, 0.006 * s), pal.laser)
                fill_capsule(img, (tx, ty), (hx, hy), max(0.7, 0.0025 * s), (255, 255, 255))
            else:
                fill_circle(img, hx, hy, max(1.5, 0.008 * s), pal.bullet)
        self._player(img, world)
        self._particles(img, world)
        for fx in world.effects:
            self._effect(img, fx, k - fx.start)
        return img

    def _body(self, img, shape: str, cx: float, cy: float, r: float, angle: float, color) -> None:
        light = tuple(min(255, int(c * 0.5 + 127)) for c in color)
        if shape == "circle":
            fill_circle(img, cx, cy, r, color)
            fill_circle(img, cx - 0.3 * r, cy - 0.3 * r, 0.35 * r, light)
            return
        n, rr = {"square": (4, 1.25), "diamond": (4, 1.2), "triangle": (3, 1.35), "hexagon": (6, 1.08)}[shape]
        a0 = angle + (np.pi / 4 if shape == "square" else 0.0)
        fill_polygon(img, regular_polygon(cx, cy, r * rr, n, a0), color)
        fill_polygon(img, regular_polygon(cx, cy, r * rr * 0.45, n, a0), light)

    def _player(self, img, world: World) -> None:
        p, s, pal = world.player, self.scale, self.style.palette
        cx, cy = self.px(p.x, p.y)
        r = p.r * s
        dx, dy = np.cos(p.heading), np.sin(p.heading)
        nx, ny = -dy, dx
        speed = world.player_speed01
        if speed > 0.02:  # thrust flame, longer with speed, flickering
            ln = r * (0.4 + 1.4 * speed) * (0.8 + 0.4 * _flicker(world.frame_index, 1))
            base_x, base_y = cx - 0.7 * r * dx, cy - 0.7 * r * dy
            flame = np.array(
                [
                    [base_x + 0.35 * r * nx, base_y + 0.35 * r * ny],
                    [base_x - 0.35 * r * nx, base_y - 0.35 * r * ny],
                    [base_x - ln * dx, base_y - ln * dy],
                ]
            )
            fill_polygon(img, flame, pal.flame)
        hull = np.array(
            [
                [cx + 1.3 * r * dx, cy + 1.3 * r * dy],
                [cx - 0.8 * r * dx + 0.8 * r * nx, cy - 0.8 * r * dy + 0.8 * r * ny],
                [cx - 0.8 * r * dx - 0.8 * r * nx, cy - 0.8 * r * dy - 0.8 * r * ny],
            ]
        )
        fill_polygon(img, hull, pal.player)
        fill_circle(img, cx + 0.2 * r * dx, cy + 0.2 * r * dy, 0.3 * r, (255, 255, 255))

    def _particles(self, img, world: World) -> None:
        parts = world.particles
        if not len(parts.x):
            return
        h, w = img.shape[:2]
        life = 1.0 - parts.age / parts.life
        col = parts.color * (0.35 + 0.65 * life[:, None])
        xs = (parts.x * self.scale).astype(np.int64)
        ys = (parts.y * self.scale).astype(np.int64)
        for oy in range(self.dot):
            for ox in range(self.dot):
                xx, yy = xs + ox, ys + oy
                ok = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
                img[yy[ok], xx[ok]] = col[ok].astype(np.uint8)

    def _effect(self, img, fx, age: int) -> None:
        s = self.scale
        cx, cy = self.px(fx.x, fx.y)
        if fx.kind == "muzzle":
            r = (0.035 + 0.02 * fx.strength) * s * (1.0 if age == 0 else 0.6)
            add_glow(img, cx, cy, r, fx.color, 1.0 if age == 0 else 0.5)
            if age == 0:
                fill_circle(img, cx, cy, 0.35 * r, (255, 255, 255))
        elif fx.kind == "explosion":
            r = fx.size * s
            if age == 0:
                add_glow(img, cx, cy, 3.2 * r, fx.color, 1.0)
                fill_circle(img, cx, cy, 1.3 * r, (255, 255, 255))
            else:
                fade = 1.0 - age / fx.duration
                add_glow(img, cx, cy, (2.2 + 0.2 * age) * r, fx.color, 0.8 * fade)
                ro = r * (1.3 + 0.45 * age)
                fill_ring(img, cx, cy, ro - max(1.0, 0.3 * r * fade), ro, fx.color, 0.8 * fade)
        elif fx.kind == "sparkle":
            fade = 1.0 - age / fx.duration
            ln = fx.size * s * (3.0 - 0.12 * age)
            add_glow(img, cx, cy, 2.0 * fx.size * s, fx.color, fade)
            n_rays = 8 if age % 2 == 0 else 4
            for i in range(n_rays):
                a = 0.15 * age + i * 2 * np.pi / n_rays
                end = (cx + ln * np.cos(a), cy + ln * np.sin(a))
                fill_capsule(img, (cx, cy), end, max(0.8, 0.004 * s), (255, 255, 255), 0.9 * fade)
            if age == 0:
                fill_circle(img, cx, cy, 0.9 * fx.size * s, (255, 255, 255))
        elif fx.kind == "impact":
            r = (0.03 + 0.06 * fx.strength) * s
            fade = 1.0 - age / fx.duration
            add_glow(img, cx, cy, r * (1 + 0.3 * age), fx.color, fade)
            if age == 0:
                fill_circle(img, cx, cy, max(2.0, 0.4 * r), (255, 255, 255))
            else:
                ro = r * (0.6 + 0.4 * age)
                fill_ring(img, cx, cy, ro - max(1.0, 0.1 * r), ro, fx.color, 0.7 * fade)
        else:  # pragma: no cover - the world only creates the kinds above
            raise ValueError(f"unknown effect kind {fx.kind!r}")
