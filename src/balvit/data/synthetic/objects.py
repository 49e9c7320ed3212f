"""Object models of the synthetic world, each a handful of primitives in a local frame.

Local frame: x forward, y left, z up, origin on the ground at the footprint centre. `Part`s are placed
into the world by `place` (rotation about z by the object's yaw, translation, a constant velocity for
moving objects). Dimensions follow typical real objects (cars 3.8-4.8 m, trucks 7-10 m, buses 11-12.5 m,
persons 1.55-1.95 m, poles 3-9 m, ...), drawn from the given random generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .classes import CLASSES, cid
from .geometry import (BOX, CYL, ELL, MAT_FACADE, MAT_FOLIAGE, MAT_GLASS, MAT_PLAIN, MAT_RETRO, MAT_RUBBER, MAT_SKIN,
                       PrimBuffer)

Rng = np.random.Generator


@dataclass
class Part:
    kind: int
    c: tuple[float, float, float]  # local centre
    s: tuple[float, float, float]  # half extents / (r, r, half height) / radii
    cls: str
    yaw: float = 0.0
    mat: int = MAT_PLAIN
    color: tuple[float, float, float] | None = None  # None: the object's colour
    albedo: float | None = None  # None: the object's albedo


def box(x0, x1, y0, y1, z0, z1, cls, **kw) -> Part:
    """Axis-aligned (in the local frame) box from its extents."""
    return Part(BOX, ((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2), ((x1 - x0) / 2, (y1 - y0) / 2, (z1 - z0) / 2), cls, **kw)


def cyl(x, y, z0, z1, r, cls, **kw) -> Part:
    return Part(CYL, (x, y, (z0 + z1) / 2), (r, r, (z1 - z0) / 2), cls, **kw)


def ell(x, y, z, rx, ry, rz, cls, **kw) -> Part:
    return Part(ELL, (x, y, z), (rx, ry, rz), cls, **kw)


def class_albedo(rng: Rng, cls: str) -> float:
    lo, hi = CLASSES[cid(cls)].albedo
    return float(rng.uniform(lo, hi))


def jitter_color(rng: Rng, cls: str, amount: float = 0.04) -> tuple[float, float, float]:
    """The class colour with random brightness and a small hue change."""
    base = np.array(CLASSES[cid(cls)].color, np.float64) / 255.0
    return tuple(np.clip(base * rng.uniform(0.75, 1.2) + rng.normal(0, amount, 3), 0, 1).tolist())


def place(buf: PrimBuffer, parts: list[Part], x: float, y: float, z: float, yaw: float, inst: int, color, albedo: float,
          vel=(0.0, 0.0, 0.0), obj_cls: str | None = None) -> None:
    """Append an object's parts to the buffer in world coordinates. Parts of the object's own class take the
    object's colour and albedo; parts of other classes (a tree's trunk, a sign's post) their class defaults."""
    c, s = np.cos(yaw), np.sin(yaw)
    for p in parts:
        wx = x + c * p.c[0] - s * p.c[1]
        wy = y + s * p.c[0] + c * p.c[1]
        own = obj_cls is None or p.cls == obj_cls
        col = p.color if p.color is not None else color if own else tuple(np.array(CLASSES[cid(p.cls)].color) / 255.0)
        alb = p.albedo if p.albedo is not None else albedo if own else float(np.mean(CLASSES[cid(p.cls)].albedo))
        buf.add(p.kind, (wx, wy, z + p.c[2]), p.s, yaw + p.yaw, cid(p.cls), inst, alb, col, p.mat, vel)


GLASS = (0.12, 0.15, 0.2)
BLACK = (0.06, 0.06, 0.07)
CAR_COLORS = np.array([[0.85, 0.85, 0.87], [0.1, 0.1, 0.12], [0.45, 0.47, 0.5], [0.65, 0.1, 0.1], [0.1, 0.2, 0.5],
                       [0.7, 0.7, 0.72], [0.2, 0.35, 0.2], [0.9, 0.9, 0.88], [0.55, 0.45, 0.3], [0.3, 0.3, 0.33]])


def car_color(rng: Rng) -> tuple[float, float, float]:
    c = CAR_COLORS[rng.integers(len(CAR_COLORS))] + rng.normal(0, 0.03, 3)
    return tuple(np.clip(c, 0, 1).tolist())


# ------------------------------------------------------------------------------------------------ vehicles
def car(rng: Rng, cls: str = "car") -> tuple[list[Part], float, float]:
    """Sedan / hatchback / SUV / van. Returns parts, length, width."""
    variant = rng.choice(4, p=[0.45, 0.2, 0.2, 0.15])
    if variant == 3:  # van
        L, W, H = rng.uniform(4.7, 5.3), rng.uniform(1.9, 2.05), rng.uniform(1.9, 2.25)
        body_top, cab0, cab1 = 1.05, -L / 2 + 0.1, L / 2 - 0.9
    else:
        L = rng.uniform(3.8, 4.8) if variant != 2 else rng.uniform(4.4, 4.9)
        W = rng.uniform(1.68, 1.88)
        H = rng.uniform(1.4, 1.55) if variant != 2 else rng.uniform(1.6, 1.8)
        body_top = rng.uniform(0.85, 1.0)
        cab0 = -L / 2 + (0.25 if variant == 1 else rng.uniform(0.6, 0.9))
        cab1 = L / 2 - rng.uniform(1.2, 1.6)
    clr = 0.22
    parts = [
        box(-L / 2, L / 2, -W / 2, W / 2, clr, body_top, cls),
        box(cab0, cab1, -W / 2 + 0.1, W / 2 - 0.1, body_top, H, cls, mat=MAT_GLASS),
    ]
    wr = 0.32
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(box(sx * (L / 2 - 0.8) - wr, sx * (L / 2 - 0.8) + wr, sy * (W / 2 - 0.02) - 0.11,
                             sy * (W / 2 - 0.02) + 0.11, 0.0, 2 * wr, cls, mat=MAT_RUBBER, color=BLACK, albedo=0.05))
    return parts, L, W


def truck(rng: Rng) -> tuple[list[Part], float, float]:
    cab_l, W = rng.uniform(1.9, 2.4), rng.uniform(2.35, 2.55)
    cargo_l = rng.uniform(4.5, 7.5)
    H = rng.uniform(3.2, 3.9)
    L = cab_l + cargo_l + 0.3
    x0 = -L / 2
    cab_color = tuple(rng.uniform(0.1, 0.9, 3).tolist())
    parts = [
        box(L / 2 - cab_l, L / 2, -W / 2, W / 2, 0.55, 1.6, "truck", color=cab_color),
        box(L / 2 - cab_l, L / 2 - 0.3, -W / 2 + 0.05, W / 2 - 0.05, 1.6, rng.uniform(2.6, 3.0), "truck", mat=MAT_GLASS),
        box(x0, x0 + cargo_l, -W / 2, W / 2, 1.05, H, "truck"),
        box(x0 + 0.3, L / 2 - cab_l, -0.5, 0.5, 0.5, 1.05, "truck", color=BLACK),
    ]
    wr = 0.5
    for wx in (L / 2 - cab_l / 2, x0 + 1.2, x0 + 2.4):
        for sy in (-1, 1):
            parts.append(box(wx - wr, wx + wr, sy * W / 2 - 0.15, sy * W / 2 + 0.15, 0.0, 2 * wr, "truck",
                             mat=MAT_RUBBER, color=BLACK, albedo=0.05))
    return parts, L, W


def bus(rng: Rng) -> tuple[list[Part], float, float]:
    L, W, H = rng.uniform(11.0, 12.5), 2.55, rng.uniform(3.0, 3.3)
    parts = [
        box(-L / 2, L / 2, -W / 2, W / 2, 0.35, 1.25, "bus"),
        box(-L / 2 + 0.05, L / 2 - 0.05, -W / 2 + 0.03, W / 2 - 0.03, 1.25, H - 0.45, "bus", mat=MAT_GLASS),
        box(-L / 2, L / 2, -W / 2, W / 2, H - 0.45, H, "bus"),
    ]
    for wx in (L / 2 - 2.6, -L / 2 + 3.0):
        for sy in (-1, 1):
            parts.append(box(wx - 0.5, wx + 0.5, sy * W / 2 - 0.15, sy * W / 2 + 0.15, 0.0, 1.0, "bus",
                             mat=MAT_RUBBER, color=BLACK, albedo=0.05))
    return parts, L, W


def trailer(rng: Rng) -> tuple[list[Part], float, float]:
    L, W, H = rng.uniform(4.0, 8.0), rng.uniform(2.2, 2.5), rng.uniform(2.5, 3.5)
    clr = rng.uniform(0.8, 1.1)
    parts = [
        box(-L / 2, L / 2, -W / 2, W / 2, clr, H, "trailer"),
        box(L / 2, L / 2 + 1.3, -0.08, 0.08, 0.45, 0.6, "trailer", color=BLACK),
    ]
    for wx in (-0.6, 0.6) if L > 5 else (0.0,):
        for sy in (-1, 1):
            parts.append(box(wx - 0.45, wx + 0.45, sy * W / 2 - 0.14, sy * W / 2 + 0.14, 0.0, 0.9, "trailer",
                             mat=MAT_RUBBER, color=BLACK, albedo=0.05))
    return parts, L + 1.3, W


def construction_vehicle(rng: Rng) -> tuple[list[Part], float, float]:
    """Excavator: tracks, turret, cab and a boom with bucket."""
    c = "construction-vehicle"
    tl, W = rng.uniform(3.2, 4.2), rng.uniform(2.4, 2.9)
    parts = [
        box(-tl / 2, tl / 2, W / 2 - 0.6, W / 2, 0.0, 0.85, c, color=BLACK, albedo=0.08),
        box(-tl / 2, tl / 2, -W / 2, -W / 2 + 0.6, 0.0, 0.85, c, color=BLACK, albedo=0.08),
        box(-1.6, 1.4, -W / 2 + 0.1, W / 2 - 0.1, 0.85, 2.0, c),
        box(0.2, 1.4, 0.1, W / 2 - 0.1, 2.0, 3.0, c, mat=MAT_GLASS),
        box(1.4, 4.2, -0.3, 0.2, 1.8, 2.5, c),
        box(4.2, 4.7, -0.25, 0.15, 0.6, 2.5, c),
        box(4.0, 4.9, -0.55, 0.45, 0.0, 0.7, c, color=BLACK, albedo=0.1),
    ]
    return parts, 6.5, W


def bicycle_parts(cls: str, x0: float = 0.0) -> list[Part]:
    frame = (0.15, 0.2, 0.45) if cls == "bicycle" else None
    return [
        box(x0 - 0.86, x0 - 0.18, -0.02, 0.02, 0.0, 0.68, cls, mat=MAT_RUBBER, color=BLACK, albedo=0.06),
        box(x0 + 0.18, x0 + 0.86, -0.02, 0.02, 0.0, 0.68, cls, mat=MAT_RUBBER, color=BLACK, albedo=0.06),
        box(x0 - 0.5, x0 + 0.5, -0.025, 0.025, 0.5, 0.62, cls, color=frame),
        box(x0 - 0.3, x0 - 0.2, -0.025, 0.025, 0.62, 0.92, cls, color=frame),
        box(x0 + 0.42, x0 + 0.5, -0.3, 0.3, 0.95, 1.0, cls, color=frame),
    ]


def bicycle(rng: Rng) -> tuple[list[Part], float, float]:
    return bicycle_parts("bicycle"), 1.75, 0.6


def motorcycle_parts(cls: str) -> list[Part]:
    return [
        box(-1.05, -0.45, -0.07, 0.07, 0.0, 0.62, cls, mat=MAT_RUBBER, color=BLACK, albedo=0.06),
        box(0.45, 1.05, -0.06, 0.06, 0.0, 0.62, cls, mat=MAT_RUBBER, color=BLACK, albedo=0.06),
        box(-0.7, 0.6, -0.2, 0.2, 0.4, 0.85, cls),
        box(-0.6, 0.1, -0.16, 0.16, 0.85, 0.95, cls, color=BLACK),
        box(0.55, 0.65, -0.38, 0.38, 1.0, 1.06, cls),
    ]


def motorcycle(rng: Rng) -> tuple[list[Part], float, float]:
    return motorcycle_parts("motorcycle"), 2.1, 0.8


# ------------------------------------------------------------------------------------------------ people
def person_parts(rng: Rng, cls: str, h: float, phase: float) -> list[Part]:
    """Legs (in stride `phase`), torso ellipsoid, arms and head."""
    skin = tuple((np.array([0.85, 0.65, 0.5]) * rng.uniform(0.45, 1.05)).clip(0, 1).tolist())
    pants = tuple(rng.uniform(0.05, 0.45, 3).tolist())
    leg = 0.47 * h
    stride = 0.12 * np.sin(phase)
    parts = [
        box(stride - 0.08, stride + 0.08, 0.02, 0.18, 0.0, leg, cls, color=pants),
        box(-stride - 0.08, -stride + 0.08, -0.18, -0.02, 0.0, leg, cls, color=pants),
        ell(0.0, 0.0, leg + 0.15 * h, 0.13, 0.2, 0.18 * h, cls),
        box(-stride - 0.05, -stride + 0.05, 0.2, 0.29, 0.5 * h, 0.8 * h, cls),
        box(stride - 0.05, stride + 0.05, -0.29, -0.2, 0.5 * h, 0.8 * h, cls),
        ell(0.0, 0.0, h - 0.12, 0.1, 0.09, 0.12, cls, mat=MAT_SKIN, color=skin),
    ]
    return parts


def person(rng: Rng, cls: str = "person") -> tuple[list[Part], float, float]:
    h = rng.uniform(1.55, 1.95)
    return person_parts(rng, cls, h, rng.uniform(0, 2 * np.pi)), 0.6, 0.6


def rider_parts(rng: Rng, cls: str, seat: float) -> list[Part]:
    skin = tuple((np.array([0.85, 0.65, 0.5]) * rng.uniform(0.45, 1.05)).clip(0, 1).tolist())
    return [
        box(-0.25, 0.15, 0.12, 0.22, seat - 0.55, seat + 0.05, cls),
        box(-0.25, 0.15, -0.22, -0.12, seat - 0.55, seat + 0.05, cls),
        ell(-0.05, 0.0, seat + 0.33, 0.16, 0.2, 0.3, cls, yaw=0.0),
        box(0.05, 0.45, 0.18, 0.26, seat + 0.25, seat + 0.35, cls),
        box(0.05, 0.45, -0.26, -0.18, seat + 0.25, seat + 0.35, cls),
        ell(0.1, 0.0, seat + 0.75, 0.12, 0.11, 0.13, cls, mat=MAT_SKIN, color=skin),
    ]


def bicyclist(rng: Rng) -> tuple[list[Part], float, float]:
    return bicycle_parts("bicyclist") + rider_parts(rng, "bicyclist", 0.95), 1.75, 0.7


def motorcyclist(rng: Rng) -> tuple[list[Part], float, float]:
    parts = motorcycle_parts("motorcyclist") + rider_parts(rng, "motorcyclist", 0.95)
    parts[-1] = ell(0.1, 0.0, 1.72, 0.16, 0.15, 0.16, "motorcyclist", color=car_color(rng))  # helmet
    return parts, 2.1, 0.8


# ------------------------------------------------------------------------------------------------ street furniture
def pole(rng: Rng, arm_dir: float = 1.0) -> list[Part]:
    """Street light (tall, with an arm over the road) or a plain post."""
    if rng.random() < 0.7:
        h, r = rng.uniform(6.0, 9.0), rng.uniform(0.08, 0.14)
        arm = rng.uniform(1.2, 2.5)
        return [
            cyl(0, 0, 0, h, r, "pole"),
            box(-0.05, 0.05, 0, arm_dir * arm, h - 0.15, h, "pole") if arm_dir > 0 else
            box(-0.05, 0.05, arm_dir * arm, 0, h - 0.15, h, "pole"),
            box(-0.2, 0.2, arm_dir * arm - 0.3, arm_dir * arm + 0.3, h - 0.3, h - 0.1, "pole"),
        ]
    h, r = rng.uniform(2.5, 4.5), rng.uniform(0.05, 0.1)
    return [cyl(0, 0, 0, h, r, "pole")]


SIGN_COLORS = [(0.8, 0.1, 0.1), (0.1, 0.25, 0.7), (0.95, 0.95, 0.95), (0.95, 0.8, 0.1)]


def sign(rng: Rng) -> list[Part]:
    """A post (pole) with one or two plates (traffic-sign) facing local +x (oncoming traffic)."""
    h = rng.uniform(2.2, 2.9)
    parts = [cyl(0, 0, 0, h + 0.1, 0.035, "pole")]
    n = 1 if rng.random() < 0.7 else 2
    z = h
    for _ in range(n):
        s = rng.uniform(0.3, 0.42)
        col = SIGN_COLORS[rng.integers(len(SIGN_COLORS))]
        parts.append(box(0.04, 0.08, -s, s, z - 2 * s, z, "traffic-sign", mat=MAT_RETRO, color=col))
        z -= 2 * s + 0.05
    return parts


def tree(rng: Rng, clearance: float = 0.0) -> list[Part]:
    """Trunk (cylinder) and a crown of 2-4 ellipsoids, or a conifer of stacked ellipsoids. Street trees get a
    `clearance` (m) under the crown so that traffic passes below."""
    trunk_h = rng.uniform(1.4, 3.0)
    r = rng.uniform(0.12, 0.35)
    conifer = rng.random() < 0.2
    R = rng.uniform(1.5, 2.5) if conifer else rng.uniform(1.8, 4.0)
    trunk_h = max(trunk_h, clearance + 0.35 * R)
    parts = [cyl(0, 0, 0, trunk_h + 0.8, r, "trunk")]
    if conifer:  # stacked crowns
        z = trunk_h
        for k in range(3):
            rr = R * (1 - 0.28 * k)
            parts.append(ell(0, 0, z + rr * 0.9, rr, rr, rr * 1.1, "vegetation", mat=MAT_FOLIAGE))
            z += rr * 1.1
        return parts
    Rz = R * rng.uniform(0.8, 1.3)
    parts.append(ell(0, 0, trunk_h + Rz * 0.85, R, R, Rz, "vegetation", mat=MAT_FOLIAGE))
    for _ in range(rng.integers(1, 4)):
        a = rng.uniform(0, 2 * np.pi)
        d = R * rng.uniform(0.3, 0.6)
        rr = R * rng.uniform(0.45, 0.7)
        parts.append(ell(d * np.cos(a), d * np.sin(a), trunk_h + Rz * rng.uniform(0.6, 1.3), rr, rr, rr * 0.9,
                         "vegetation", mat=MAT_FOLIAGE))
    return parts


def bush(rng: Rng) -> list[Part]:
    parts = []
    for _ in range(rng.integers(1, 4)):
        r = rng.uniform(0.5, 1.4)
        parts.append(ell(rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), r * 0.6, r, r * rng.uniform(0.7, 1.1),
                         r * rng.uniform(0.7, 1.0), "vegetation", mat=MAT_FOLIAGE))
    return parts


def hedge(rng: Rng, length: float) -> list[Part]:
    w, h = rng.uniform(0.6, 1.2), rng.uniform(0.8, 1.8)
    return [box(-length / 2, length / 2, -w / 2, w / 2, 0.0, h, "vegetation", mat=MAT_FOLIAGE)]


def fence(rng: Rng, length: float) -> list[Part]:
    """Solid panel fence, lattice (bars) fence or guard rail; along local x."""
    kind = rng.choice(3, p=[0.45, 0.35, 0.2])
    if kind == 0:
        h = rng.uniform(0.9, 2.2)
        th = rng.uniform(0.03, 0.08)
        return [box(-length / 2, length / 2, -th, th, 0.0, h, "fence")]
    if kind == 1:
        h = rng.uniform(1.0, 2.0)
        gap = rng.uniform(0.15, 0.25)
        parts = [box(-length / 2, length / 2, -0.03, 0.03, h - 0.08, h, "fence"),
                 box(-length / 2, length / 2, -0.03, 0.03, 0.08, 0.16, "fence")]
        for x in np.arange(-length / 2, length / 2 + 1e-6, gap):
            parts.append(box(x - 0.02, x + 0.02, -0.02, 0.02, 0.0, h, "fence"))
        return parts
    parts = [box(-length / 2, length / 2, -0.05, 0.05, 0.45, 0.75, "fence")]
    for x in np.arange(-length / 2, length / 2 + 1e-6, 2.0):
        parts.append(box(x - 0.05, x + 0.05, -0.12, -0.05, 0.0, 0.75, "fence"))
    return parts


def bus_shelter(rng: Rng) -> list[Part]:
    c = "other-structure"
    L = rng.uniform(3.0, 5.0)
    return [
        box(-L / 2, L / 2, -0.9, 0.9, 2.3, 2.45, c),
        box(-L / 2, L / 2, -0.92, -0.86, 0.1, 2.3, c, mat=MAT_GLASS),
        cyl(-L / 2 + 0.05, 0.8, 0.0, 2.3, 0.05, c),
        cyl(L / 2 - 0.05, 0.8, 0.0, 2.3, 0.05, c),
    ]


def kiosk(rng: Rng) -> list[Part]:
    return [box(-1.3, 1.3, -1.0, 1.0, 0.0, rng.uniform(2.4, 3.0), "other-structure")]


def barrier(rng: Rng) -> tuple[list[Part], float]:
    if rng.random() < 0.5:  # concrete jersey barrier
        return [box(-1.0, 1.0, -0.3, 0.3, 0.0, 0.3, "barrier"), box(-1.0, 1.0, -0.12, 0.12, 0.3, 0.8, "barrier")], 2.0
    return [box(-0.6, 0.6, -0.04, 0.04, 0.3, 1.0, "barrier", color=(0.9, 0.15, 0.1)),
            box(-0.6, -0.5, -0.25, 0.25, 0.0, 0.3, "barrier"), box(0.5, 0.6, -0.25, 0.25, 0.0, 0.3, "barrier")], 1.2


def cone(rng: Rng) -> list[Part]:
    return [box(-0.2, 0.2, -0.2, 0.2, 0.0, 0.04, "traffic-cone", color=BLACK, albedo=0.08),
            ell(0.0, 0.0, 0.0, 0.15, 0.15, rng.uniform(0.6, 0.8), "traffic-cone", mat=MAT_RETRO)]


def trash_bin(rng: Rng) -> list[Part]:
    if rng.random() < 0.5:
        return [cyl(0, 0, 0, rng.uniform(0.8, 1.0), 0.3, "trash-bin")]
    return [box(-0.35, 0.35, -0.3, 0.3, 0.0, 1.05, "trash-bin")]


def bench(rng: Rng) -> list[Part]:
    L = rng.uniform(1.5, 2.2)
    return [box(-L / 2, L / 2, -0.22, 0.22, 0.42, 0.47, "bench"), box(-L / 2, L / 2, -0.24, -0.19, 0.47, 0.85, "bench"),
            box(-L / 2, -L / 2 + 0.06, -0.22, 0.22, 0.0, 0.42, "bench", color=BLACK),
            box(L / 2 - 0.06, L / 2, -0.22, 0.22, 0.0, 0.42, "bench", color=BLACK)]


def building(rng: Rng, width: float, depth: float, height: float, front_room: float) -> list[Part]:
    """Main block with optional set-back upper storey, a ground-floor extension, balconies and a roof box.
    Local frame: x along the street, y away from the street, the facade at y = 0; nothing reaches further
    than `front_room` metres in front of the facade at ground level."""
    parts = [box(-width / 2, width / 2, 0.0, depth, -0.3, height, "building", mat=MAT_FACADE)]
    if height > 8 and rng.random() < 0.35:
        inset = rng.uniform(1.0, 3.0)
        parts.append(box(-width / 2 + inset, width / 2 - inset, inset, depth - inset, height,
                         height + rng.uniform(2.5, 6.0), "building", mat=MAT_FACADE))
    if front_room > 1.4 and rng.random() < 0.3:
        parts.append(box(-width / 2 + 0.5, width / 2 - 0.5, -rng.uniform(0.4, 1.2), 0.0, -0.3,
                         rng.uniform(2.8, 3.6), "building", mat=MAT_FACADE))
    if height > 6 and rng.random() < 0.35:
        bw = rng.uniform(1.5, 3.0)
        floors = int((height - 3) // 3)
        for k in range(1, floors + 1):
            for x in np.arange(-width / 2 + 2, width / 2 - 2, rng.uniform(4.0, 7.0)):
                parts.append(box(x, x + bw, -1.0, 0.0, 3.0 * k, 3.0 * k + 0.15, "building"))
                parts.append(box(x, x + bw, -1.0, -0.95, 3.0 * k + 0.15, 3.0 * k + 1.05, "building"))
    if rng.random() < 0.4:
        rw = min(width, depth) * rng.uniform(0.2, 0.4)
        parts.append(box(-rw, rw, depth / 2 - rw, depth / 2 + rw, height, height + rng.uniform(1.0, 3.0), "building"))
    return parts
