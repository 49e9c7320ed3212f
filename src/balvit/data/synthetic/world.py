"""Procedural street world of one synthetic sequence: street layout, objects, traffic and the ego trajectory.

The ego vehicle drives along straight streets joined by turns at crossings (fillet arcs), slowing down
for the turns. Each street gets its own profile (lanes, median island, parking strips, curb height,
sidewalk and terrain strip widths) and is lined with parked vehicles, street lights, signs, trees,
bins, benches, shelters, bicycles, fences, hedges and buildings; more buildings and trees stand behind
the frontage. Traffic (cars, trucks, buses, trailers, motorcyclists, bicyclists) drives in the lanes,
pedestrians walk on the sidewalks, and a road-works site adds barriers, cones, a construction vehicle
and workers. Rare kinds are placed near the driven path so that every class appears in every sequence.

Everything is drawn from one `numpy.random.Generator`, so a sequence is a pure function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from . import objects as ob
from .classes import cid
from .geometry import PrimBuffer, Prims
from .ground import OTHER, PARK, SIDEWALK, TERRAIN, Ground, Region, Street

Rng = np.random.Generator
EGO_HALF_LENGTH, EGO_HALF_WIDTH = 2.5, 1.0


@dataclass(frozen=True)
class Profile:
    """Per-dataset world settings."""

    name: str
    speed: tuple[float, float]  # cruise speed range (m/s)
    content_radius: float  # objects are placed within this distance of the driven path


PROFILES = {
    "semantickitti": Profile("semantickitti", (7.5, 11.0), 95.0),
    "nuscenes": Profile("nuscenes", (4.5, 8.5), 80.0),
}


# ================================================================================================ trajectory
class Trajectory:
    """Ego path (dense samples every 0.1 m) and its speed profile s(t)."""

    def __init__(self, xy: np.ndarray, yaw: np.ndarray, arcs: list[tuple[float, float, float]], v0: float,
                 rng: Rng) -> None:
        self.xy = xy  # (K, 2)
        self.yaw = yaw  # (K,) unwrapped heading
        self.s = np.arange(len(xy)) * 0.1
        # speed: cruise v0 with a slow wobble, limited before/after each turn (v^2 = v_turn^2 + 2 a d)
        wob = 1.0 + 0.07 * np.sin(2 * np.pi * self.s / rng.uniform(120, 260) + rng.uniform(0, 2 * np.pi))
        v = v0 * wob
        for s_mid, half, radius in arcs:
            v_turn = np.sqrt(2.2 * radius)
            d = np.maximum(np.abs(self.s - s_mid) - half, 0.0)
            v = np.minimum(v, np.sqrt(v_turn**2 + 2 * 1.6 * d))
        self.v = v
        dt = 0.1 / np.maximum(v, 0.5)
        self.t_of_s = np.concatenate([[0.0], np.cumsum(dt[:-1])])
        self.pitch_par = rng.uniform(0, 2 * np.pi, 4)

    @property
    def duration(self) -> float:
        return float(self.t_of_s[-1])

    def s_at(self, t):
        return np.interp(t, self.t_of_s, self.s)

    def pose2d(self, t):
        """(x, y, yaw) at time(s) t."""
        s = self.s_at(t)
        return np.interp(s, self.s, self.xy[:, 0]), np.interp(s, self.s, self.xy[:, 1]), np.interp(s, self.s, self.yaw)

    def pitch_roll(self, t: float) -> tuple[float, float]:
        """Small body motion (rad): suspension pitch and roll, a few tenths of a degree."""
        p = self.pitch_par
        pitch = 0.005 * np.sin(2 * np.pi * t / 3.1 + p[0]) + 0.003 * np.sin(2 * np.pi * t / 1.3 + p[1])
        roll = 0.004 * np.sin(2 * np.pi * t / 2.3 + p[2]) + 0.002 * np.sin(2 * np.pi * t / 0.9 + p[3])
        return float(pitch), float(roll)


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def pose_matrix(x: float, y: float, z: float, yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """4x4 world <- body, R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cp, sp, cr, sr = np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    T = np.eye(4)
    T[:3, :3] = rot_z(yaw) @ ry @ rx
    T[:3, 3] = (x, y, z)
    return T


# ================================================================================================ world
@dataclass
class World:
    ground: Ground
    prims: Prims  # static and moving primitives (moving ones at t = 0, with velocities)
    traj: Trajectory
    profile: Profile
    sun: np.ndarray  # (3,) unit direction towards the sun (camera shading)
    sky: np.ndarray  # (2, 3) horizon and zenith colours

    def prims_at(self, t: float) -> Prims:
        return self.prims.at(t)

    def ego_matrix(self, t: float, tilt: bool) -> np.ndarray:
        """4x4 world <- ego frame (on the ground below the rear axle: x forward, y left, z up)."""
        x, y, yaw = self.traj.pose2d(t)
        pitch, roll = self.traj.pitch_roll(t) if tilt else (0.0, 0.0)
        return pose_matrix(float(x), float(y), 0.0, float(yaw), pitch, roll)


def build_world(rng: Rng, profile_name: str, duration: float) -> World:
    """Generate the world of one sequence that lasts `duration` seconds."""
    profile = PROFILES[profile_name]
    builder = _Builder(rng, profile, duration)
    return builder.build()


class _Builder:
    def __init__(self, rng: Rng, profile: Profile, duration: float) -> None:
        self.rng = rng
        self.profile = profile
        self.duration = duration
        self.buf = PrimBuffer()
        self.next_inst = 1
        self.styles: dict[int, dict] = {}
        self.fp = np.zeros((0, 6))  # footprints of placed solids: centre (2), unit axis (2), half extents (2)
        self.n_fp = 0

    # -------------------------------------------------------------------------------------------- helpers
    def inst(self) -> int:
        self.next_inst += 1
        return self.next_inst - 1

    def street_params(self, main: bool) -> dict:
        """Cross-section of a new street, drawn for one of three street styles (kept in self.styles)."""
        rng = self.rng
        kind = str(rng.choice(["urban", "residential", "rural"], p=[0.4, 0.45, 0.15]))
        lanes = 2 if (main and kind != "rural" and rng.random() < 0.3) else 1
        med = rng.uniform(0.8, 1.5) if lanes == 2 and rng.random() < 0.5 else 0.0
        p_park = {"urban": 0.6, "residential": 0.5, "rural": 0.05}[kind] * (1.0 if main else 0.7)
        park = [float(rng.uniform(2.0, 2.5)) if rng.random() < p_park else 0.0 for _ in range(2)]
        if main and kind != "rural" and not any(park):
            park[1] = float(rng.uniform(2.0, 2.5))
        if kind == "urban":
            sw = [float(rng.uniform(2.5, 4.5)) for _ in range(2)]
            terr = [float(rng.uniform(1.0, 3.0)) if rng.random() < 0.3 else 0.0 for _ in range(2)]
        elif kind == "residential":
            sw = [float(rng.uniform(1.5, 2.8)) for _ in range(2)]
            terr = [float(rng.uniform(1.0, 4.0)) if rng.random() < 0.75 else 0.0 for _ in range(2)]
        else:
            sw = [float(rng.uniform(1.5, 2.2)) if rng.random() < 0.3 else 0.0 for _ in range(2)]
            terr = [float(rng.uniform(3.0, 9.0)) for _ in range(2)]
        params = dict(med=med, lanes=(lanes, lanes), lane_w=float(rng.uniform(3.1, 3.6)), park=tuple(park),
                      park_period=float(rng.uniform(35, 90)), park_fill=float(rng.uniform(0.5, 1.0)),
                      park_phase=float(rng.uniform(0, 1)), sw=tuple(sw), terr=tuple(terr),
                      curb=float(rng.uniform(0.1, 0.18)), center_solid=bool(rng.random() < 0.3))
        style = {
            "kind": kind,
            "tree_line": rng.random() < {"urban": 0.6, "residential": 0.8, "rural": 0.5}[kind],
            "tree_gap": rng.uniform(6, 11),
            "light_gap": rng.uniform(22, 38) if kind != "rural" else rng.uniform(40, 80),
            "fence_p": rng.uniform(0.2, 0.6),
            "hedge_p": {"urban": 0.15, "residential": 0.7, "rural": 0.4}[kind],
            "building_p": {"urban": 0.92, "residential": 0.85, "rural": 0.3}[kind],
            "setback": {"urban": (0.2, 1.0), "residential": (1.0, 4.5), "rural": (4.0, 15.0)}[kind],
            "height": {"urban": (10.0, 26.0), "residential": (5.0, 11.0), "rural": (4.0, 8.0)}[kind],
            "gap": {"urban": (0.0, 2.0), "residential": (2.0, 10.0), "rural": (10.0, 40.0)}[kind],
        }
        self._pending_style = style
        return params

    def new_street(self, **kw) -> Street:
        st = Street(**kw)
        self.styles[id(st)] = self._pending_style
        return st

    # -------------------------------------------------------------------------------------------- layout
    def make_path(self) -> None:
        rng = self.rng
        v0 = rng.uniform(*self.profile.speed)
        self.v0 = v0
        need = v0 * 1.1 * self.duration + 60.0
        streets: list[Street] = []
        heading = 0.0
        corner = np.zeros(2)  # where the ego enters the current street (start: the ego itself)
        params = self.street_params(True)
        style = self._pending_style
        lane_k = params["lanes"][0] - 1
        legs = []
        total = 0.0
        prev_tau = 0.0
        i = 0
        last_turn = 0
        while True:
            T = np.array([np.cos(heading), np.sin(heading)])
            N = np.array([-T[1], T[0]])
            v_e = params["med"] + (lane_k + 0.5) * params["lane_w"]  # ego lane offset to the right of the centre
            length = rng.uniform(120, 260) if i else rng.uniform(90, 220)
            s_lo = -150.0 if i == 0 else -120.0
            a = corner + v_e * N  # centre line point beside the entry corner
            self._pending_style = style
            st = self.new_street(a=a, t=T, s_lo=s_lo, s_hi=length + 120.0, **params)
            streets.append(st)
            if total + length - prev_tau >= need:
                legs.append((corner, T, length, 0.0, 0.0, 0.0))
                break
            # turn at the end of this leg
            sign = rng.choice([-1.0, 1.0]) if last_turn == 0 else -last_turn if rng.random() < 0.7 else last_turn
            angle = np.deg2rad(rng.uniform(70, 110)) * sign
            nxt = self.street_params(True)
            radius = rng.uniform(5.5, 6.5) if sign < 0 else rng.uniform(10.0, 13.0)
            tau = radius * np.tan(abs(angle) / 2)
            legs.append((corner, T, length, angle, radius, tau))
            total += length - prev_tau - tau + radius * abs(angle)
            corner = corner + length * T
            heading += angle
            params = nxt
            style = self._pending_style
            lane_k = params["lanes"][0] - 1
            prev_tau = tau
            last_turn = sign
            i += 1
        # crossings between consecutive leg streets
        for k in range(len(streets) - 1):
            self.add_crossing(streets[k], streets[k + 1], zebra=bool(rng.random() < 0.6))
        # dense ego path: straight, arc, straight, ...
        pts, yaws, arcs = [], [], []
        s_acc = 0.0
        heading = 0.0
        start = np.zeros(2)
        for k, (c, T, length, angle, radius, tau) in enumerate(legs):
            tau_in = legs[k - 1][5] if k else 0.0
            straight = length - tau_in - tau
            n = max(int(straight / 0.1), 1)
            s = np.arange(n) * 0.1
            pts.append(start + s[:, None] * T)
            yaws.append(np.full(n, heading))
            s_acc += n * 0.1
            start = start + n * 0.1 * T
            if angle == 0.0:
                break
            arc_len = radius * abs(angle)
            m = max(int(arc_len / 0.1), 1)
            phi = np.arange(m) * 0.1 / radius * np.sign(angle)
            N = np.array([-T[1], T[0]])
            centre = start + np.sign(angle) * radius * N
            rel = start - centre
            rot = np.stack([np.cos(phi), -np.sin(phi), np.sin(phi), np.cos(phi)], 1).reshape(-1, 2, 2)
            pts.append(centre + rot @ rel)
            yaws.append(heading + phi)
            arcs.append((s_acc + arc_len / 2, arc_len / 2, radius))
            s_acc += m * 0.1
            heading += angle
            T2 = np.array([np.cos(heading), np.sin(heading)])
            start = (centre + np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ rel)
            # snap onto the next ego line (removes the arc discretisation error)
            next_corner = legs[k + 1][0]
            start = next_corner + np.dot(start - next_corner, T2) * T2
        self.traj = Trajectory(np.concatenate(pts), np.concatenate(yaws), arcs, v0, rng)
        self.streets = streets
        self.leg_streets = list(streets)

    def add_crossing(self, s1: Street, s2: Street, zebra: bool) -> None:
        """Record the crossing of two streets on both (centre-line intersection)."""
        A = np.stack([s1.t, -s2.t], 1)
        if abs(np.linalg.det(A)) < 1e-6:
            return
        u1, u2 = np.linalg.solve(A, s2.a - s1.a)
        h1 = max(s1.edge(0, "road"), s1.edge(1, "road"))
        h2 = max(s2.edge(0, "road"), s2.edge(1, "road"))
        s1.xings.append((float(u1), float(h2), zebra))
        s2.xings.append((float(u2), float(h1), zebra))

    def add_cross_streets(self) -> None:
        rng = self.rng
        for st in list(self.leg_streets):
            lo, hi = self.traveled(st)
            u = max(st.s_lo + 60, lo - 80) + rng.uniform(20, 60)
            while u < min(st.s_hi - 60, hi + 80):
                if all(abs(u - x[0]) > 45 for x in st.xings):
                    ang = np.arctan2(st.t[1], st.t[0]) + np.pi / 2 + np.deg2rad(rng.uniform(-15, 15))
                    T = np.array([np.cos(ang), np.sin(ang)])
                    p = self.street_params(False)
                    tee = rng.random() < 0.4
                    side = rng.choice([-1.0, 1.0])
                    if side < 0:
                        T = -T
                    cross = self.new_street(a=st.a + u * st.t, t=T, s_lo=0.0 if tee else -rng.uniform(90, 140),
                                   s_hi=rng.uniform(90, 140), **p)
                    self.streets.append(cross)
                    self.add_crossing(st, cross, zebra=bool(rng.random() < 0.5))
                u += rng.uniform(70, 180)

    def driven_xy(self) -> np.ndarray:
        """Path samples (every 2 m) actually driven during the sequence."""
        if not hasattr(self, "_driven"):
            n = int(np.searchsorted(self.traj.s, self.traj.s_at(self.duration))) + 1
            self._driven = self.traj.xy[:n:20]
        return self._driven

    def traveled(self, st: Street) -> tuple[float, float]:
        """u-range of a street along which the ego passes within 15 m during the sequence."""
        xy = self.driven_xy()
        d = xy - st.a
        u = d @ st.t
        v = d @ st.n
        m = np.abs(v) < 15
        if not m.any():
            return 0.0, 0.0
        return float(u[m].min()), float(u[m].max())

    def make_regions(self) -> None:
        rng = self.rng
        self.regions: list[Region] = []
        self.ground = Ground(self.streets, self.regions, np.zeros((0, 4)))
        bump = []
        for _ in range(3):
            k = 2 * np.pi / rng.uniform(2.5, 9.0)
            a = rng.uniform(0, 2 * np.pi)
            bump.append((rng.uniform(0.01, 0.02), k * np.cos(a), k * np.sin(a), rng.uniform(0, 2 * np.pi)))
        self.ground.bump = np.array(bump)
        counts = {"lot": int(rng.integers(0, 2)), "plaza": int(rng.random() < 0.3), "patch": int(rng.integers(2, 5))}
        for kind in ("lot", "plaza", "patch"):
            placed = 0
            for _ in range(8 * counts[kind]):
                if placed >= counts[kind]:
                    break
                st = self.leg_streets[rng.integers(len(self.leg_streets))]
                lo, hi = self.traveled(st)
                side = int(rng.integers(2))
                if kind == "patch":  # gravel / paved patch in the terrain strip or just behind it
                    half = np.array([rng.uniform(2, 7), rng.uniform(1.0, 3.0)])
                    v0 = st.edge(side, "sidewalk") + rng.uniform(0.0, 4.0)
                elif kind == "plaza":
                    half = np.array([rng.uniform(6, 15), rng.uniform(4, 9)])
                    v0 = st.edge(side, "terrain") + 0.5
                else:
                    half = np.array([rng.uniform(12, 25), rng.uniform(9, 14)])
                    v0 = st.edge(side, "terrain") + 0.5
                u = rng.uniform(lo - 20, hi + 40)
                v = (v0 + half[1]) * (1 if side else -1)
                c = st.point(u, v)
                corners = [c + sx * half[0] * st.t + sy * half[1] * st.n for sx in (-1, 0, 1) for sy in (-1, 0, 1)]
                cx, cy = np.array(corners).T
                if np.all(self.ground.query(cx, cy)[0] == TERRAIN):
                    placed += 1
                    cls, h, rank = (PARK, 0.12, 2.5) if kind == "lot" else (OTHER, 0.14 if kind == "plaza" else 0.17,
                                                                              2.4)
                    reg = Region(c=c, axis=st.t.copy(), half=half, cls=cls, height=h, rank=rank)
                    self.regions.append(reg)
                    self.ground = Ground(self.streets, self.regions, self.ground.bump)
                    if kind == "lot":
                        self.fill_lot(reg)

    # -------------------------------------------------------------------------------------------- checks
    def near_path(self, x: np.ndarray, y: np.ndarray, radius: float | None = None) -> np.ndarray:
        if not hasattr(self, "_tree"):
            self._tree = cKDTree(self.driven_xy())
        r = self.profile.content_radius if radius is None else radius
        d, _ = self._tree.query(np.stack([np.atleast_1d(x), np.atleast_1d(y)], 1))
        return d < r

    def free(self, c: np.ndarray, axis: np.ndarray, half: np.ndarray, allowed: tuple[int, ...], margin: float = 0.3,
             solid: bool = True) -> bool:
        """Footprint check: ground classes under the footprint all allowed and no overlap with earlier solids."""
        t, n = axis, np.array([-axis[1], axis[0]])
        pts = np.array([c + sx * half[0] * t + sy * half[1] * n for sx in (-1, 0, 1) for sy in (-1, 0, 1)])
        cls = self.ground.query(pts[:, 0], pts[:, 1])[0]
        if not np.all(np.isin(cls, allowed)):
            return False
        if not solid or not self.n_fp:
            return True
        return not _rects_overlap(c, axis, half + margin, self.fp[: self.n_fp]).any()

    def occupy(self, c, axis, half) -> None:
        if self.n_fp == len(self.fp):
            self.fp = np.concatenate([self.fp, np.zeros((max(64, len(self.fp)), 6))])
        self.fp[self.n_fp] = (*np.asarray(c, float), *np.asarray(axis, float), *np.asarray(half, float))
        self.n_fp += 1

    # -------------------------------------------------------------------------------------------- placement
    def put(self, parts, x, y, yaw, cls_for_color: str, vel=(0.0, 0.0, 0.0), color=None, albedo=None, z=None,
            inst: int | None = None) -> int:
        rng = self.rng
        if z is None:
            z = self.ground.height(x, y)
        i = self.inst() if inst is None else inst
        col = color if color is not None else ob.jitter_color(rng, cls_for_color)
        alb = albedo if albedo is not None else ob.class_albedo(rng, cls_for_color)
        ob.place(self.buf, parts, float(x), float(y), float(z), float(yaw), i, col, alb, vel, obj_cls=cls_for_color)
        return i

    def put_vehicle(self, kind: str, x, y, yaw, vel=(0.0, 0.0, 0.0), z=None) -> tuple[float, float]:
        rng = self.rng
        if kind == "car":
            parts, L, W = ob.car(rng)
            self.put(parts, x, y, yaw, "car", vel, color=ob.car_color(rng), albedo=float(rng.uniform(0.05, 0.6)), z=z)
        else:
            parts, L, W = VEHICLES[kind](rng)
            self.put(parts, x, y, yaw, kind, vel, z=z)
        return L, W

    def fill_lot(self, reg: Region) -> None:
        rng = self.rng
        t = reg.axis
        n = np.array([-t[1], t[0]])
        for row in np.arange(-reg.half[1] + 3, reg.half[1] - 2.5, 6.0):
            for u in np.arange(-reg.half[0] + 1.5, reg.half[0] - 1.2, 2.6):
                if rng.random() < 0.5:
                    continue
                c = reg.c + u * t + row * n
                if not self.near_path(c[0], c[1])[0]:
                    continue
                yaw = np.arctan2(n[1], n[0]) + (np.pi if rng.random() < 0.5 else 0.0)
                self.put_vehicle("car", c[0], c[1], yaw + rng.normal(0, 0.04))
                self.occupy(c, n, np.array([2.4, 1.0]))

    def line_street(self, st: Street) -> None:
        """Parked vehicles, furniture, trees, fences and buildings along both sides of a street."""
        rng = self.rng
        lo, hi = st.s_lo + 2, st.s_hi - 2
        heading = float(np.arctan2(st.t[1], st.t[0]))
        style = self.styles[id(st)]
        for side in (0, 1):
            sgn = 1.0 if side else -1.0
            out = np.arctan2(sgn * st.n[1], sgn * st.n[0])  # direction away from the road
            e_road, e_park = st.edge(side, "road"), st.edge(side, "park")
            e_sw, e_ter = st.edge(side, "sidewalk"), st.edge(side, "terrain")
            park_yaw = heading if side == 0 else heading + np.pi
            # parked vehicles
            if st.park[side] > 0:
                u = lo + rng.uniform(0, 5)
                while u < hi:
                    kind = rng.choice(["car", "truck", "trailer", "motorcycle", "empty"], p=[0.47, 0.02, 0.02, 0.04, 0.45])
                    L = {"car": 4.6, "truck": 9.0, "trailer": 7.0, "motorcycle": 2.2, "empty": 5.0}[kind]
                    uc = u + L / 2
                    c = st.point(uc, sgn * (e_road + st.park[side] / 2))
                    if kind != "empty" and self.near_path(c[0], c[1])[0] and np.all(
                            st.parking_at(np.array([uc - L / 2, uc, uc + L / 2]))) and self.free(
                            c, st.t, np.array([L / 2, 0.9]), (PARK,), margin=0.2):
                        if kind == "motorcycle":
                            for j in range(rng.integers(1, 4)):
                                cj = st.point(u + 0.5 + 0.9 * j, sgn * (e_road + st.park[side] / 2))
                                parts, _, _ = ob.motorcycle(rng)
                                self.put(parts, cj[0], cj[1], heading + sgn * np.pi / 2 + rng.normal(0, 0.1),
                                         "motorcycle", z=0.0)
                        else:
                            L, _ = self.put_vehicle(kind, c[0], c[1], park_yaw + rng.normal(0, 0.02), z=0.0)
                        self.occupy(c, st.t, np.array([L / 2, 0.9]))
                    u += L + rng.uniform(0.6, 2.5)
            # street lights along the curb, signs, trees in pits or in the terrain strip
            curb_v = sgn * (e_park + 0.45)
            walk = (SIDEWALK,) if st.sw[side] > 0.5 else (TERRAIN,)
            u = lo + rng.uniform(0, style["light_gap"])
            while u < hi:
                c = st.point(u, curb_v)
                if self.near_path(c[0], c[1])[0] and self.free(c, st.t, np.array([0.3, 0.3]), walk):
                    self.put(ob.pole(rng, arm_dir=1.0), c[0], c[1], out + np.pi / 2, "pole")
                    self.occupy(c, st.t, np.array([0.2, 0.2]))
                u += style["light_gap"] * rng.uniform(0.85, 1.15)
            u = lo + rng.uniform(0, 30)
            while u < hi:
                c = st.point(u, curb_v)
                if self.near_path(c[0], c[1])[0] and self.free(c, st.t, np.array([0.3, 0.3]), walk):
                    face = park_yaw + np.pi  # plates face oncoming traffic of this side
                    self.put(ob.sign(rng), c[0], c[1], face + rng.normal(0, 0.05), "pole")
                    self.occupy(c, st.t, np.array([0.2, 0.2]))
                u += rng.uniform(20, 60)
            if style["tree_line"]:
                pit = st.sw[side] > 2.6 and (st.terr[side] < 1.5 or rng.random() < 0.5)
                tv = sgn * (e_park + 1.1) if pit else sgn * (e_sw + max(st.terr[side], 2.0) / 2)
                allowed = (SIDEWALK,) if pit else (TERRAIN,)
                u = lo + rng.uniform(0, style["tree_gap"])
                while u < hi:
                    c = st.point(u, tv)
                    if self.near_path(c[0], c[1])[0] and self.free(c, st.t, np.array([0.4, 0.4]), allowed):
                        self.put(ob.tree(rng, clearance=3.0), c[0], c[1], rng.uniform(0, 2 * np.pi), "vegetation")
                        self.occupy(c, st.t, np.array([0.4, 0.4]))
                    u += style["tree_gap"] * rng.uniform(0.9, 1.1)
            # sidewalk furniture near the building side
            fv = sgn * (e_sw - 0.6)
            u = lo + rng.uniform(0, 20) if st.sw[side] > 1.2 else hi
            while u < hi:
                c = st.point(u, fv)
                kind = rng.choice(["bin", "bench", "bicycles", "shelter", "kiosk", "person"],
                                  p=[0.3, 0.2, 0.2, 0.08, 0.04, 0.18])
                if self.near_path(c[0], c[1])[0] and self.free(c, st.t, np.array([1.2, 0.5]), (SIDEWALK,)):
                    self.street_item(kind, st, u, side, fv)
                u += rng.uniform(12, 35)
            # terrain strip vegetation: bushes and hedge pieces
            if st.terr[side] > 1.2:
                u = lo + rng.uniform(0, 10)
                while u < hi:
                    c = st.point(u, sgn * (e_sw + st.terr[side] / 2 + rng.uniform(-0.3, 0.3)))
                    if self.near_path(c[0], c[1])[0] and self.free(c, st.t, np.array([0.8, 0.8]), (TERRAIN,)):
                        if rng.random() < 0.5 and st.terr[side] > 1.8:
                            L = rng.uniform(3, 10)
                            cc = st.point(u + L / 2, sgn * (e_sw + st.terr[side] / 2))
                            if self.free(cc, st.t, np.array([L / 2, 0.6]), (TERRAIN,)):
                                self.put(ob.hedge(rng, L), cc[0], cc[1], float(np.arctan2(st.t[1], st.t[0])),
                                         "vegetation")
                                self.occupy(cc, st.t, np.array([L / 2, 0.6]))
                                u += L
                        else:
                            self.put(ob.bush(rng), c[0], c[1], rng.uniform(0, 6.3), "vegetation")
                            self.occupy(c, st.t, np.array([0.8, 0.8]))
                    u += rng.uniform(2, 9)
            self.frontage(st, side, lo, hi, style)

    def street_item(self, kind: str, st: Street, u: float, side: int, fv: float) -> None:
        rng = self.rng
        sgn = 1.0 if side else -1.0
        c = st.point(u, fv)
        heading = float(np.arctan2(st.t[1], st.t[0]))
        if kind == "bin":
            self.put(ob.trash_bin(rng), c[0], c[1], heading, "trash-bin")
        elif kind == "bench":
            self.put(ob.bench(rng), c[0], c[1], heading + (np.pi if side else 0.0), "bench")
        elif kind == "bicycles":
            for j in range(rng.integers(1, 4)):
                cj = st.point(u + 0.7 * j, fv)
                parts, _, _ = ob.bicycle(rng)
                self.put(parts, cj[0], cj[1], heading + sgn * np.pi / 2 + rng.normal(0, 0.1), "bicycle")
        elif kind == "shelter":
            self.put(ob.bus_shelter(rng), c[0], c[1], heading + (np.pi if side else 0.0), "other-structure")
        elif kind == "kiosk":
            self.put(ob.kiosk(rng), c[0], c[1], heading, "other-structure")
        else:
            for j in range(rng.integers(1, 4)):
                cj = c + rng.normal(0, 0.6, 2)
                parts, _, _ = ob.person(rng)
                self.put(parts, cj[0], cj[1], rng.uniform(0, 2 * np.pi), "person", color=tuple(rng.uniform(0.05, 0.8, 3)))
        self.occupy(c, st.t, np.array([1.2, 0.6]))

    def frontage(self, st: Street, side: int, lo: float, hi: float, style: dict) -> None:
        """Buildings with gaps (fences, hedges, trees) behind the sidewalk / terrain strip."""
        rng = self.rng
        sgn = 1.0 if side else -1.0
        e_ter = st.edge(side, "terrain")
        setback = rng.uniform(*style["setback"])
        yaw = float(np.arctan2(st.t[1], st.t[0])) + (0.0 if side else np.pi)  # local y points away from the road
        u = lo + rng.uniform(0, 10)
        allowed = (TERRAIN, OTHER)
        hedge_line = rng.random() < style["hedge_p"] and setback > 1.5
        while u < hi:
            width = rng.uniform(8, 30)
            depth = rng.uniform(9, 20)
            height = rng.uniform(*style["height"])
            v_front = e_ter + setback + (1.3 if rng.random() < 0.3 else 0.0)
            c = st.point(u + width / 2, sgn * (v_front + depth / 2))
            if hedge_line:  # hedge / garden fence along the property line, in front of buildings and gaps alike
                hc = st.point(u + width / 2, sgn * (e_ter + 0.6))
                if self.near_path(hc[0], hc[1])[0] and self.free(hc, st.t, np.array([width / 2, 0.45]), allowed):
                    hedge = rng.random() < 0.7
                    parts = ob.hedge(rng, width - 0.6) if hedge else ob.fence(rng, width - 0.6)
                    self.put(parts, hc[0], hc[1], float(np.arctan2(st.t[1], st.t[0])), "vegetation" if hedge else "fence")
                    self.occupy(hc, st.t, np.array([width / 2, 0.45]))
            for _ in range(rng.integers(1, 4) if setback > 2.5 else 0):  # front yard bushes / small trees
                yc = st.point(u + rng.uniform(0, width), sgn * (e_ter + rng.uniform(1.2, setback - 0.8)))
                if self.near_path(yc[0], yc[1])[0] and self.free(yc, st.t, np.array([0.7, 0.7]), allowed):
                    self.put(ob.bush(rng) if rng.random() < 0.6 else ob.tree(rng), yc[0], yc[1], rng.uniform(0, 6.3),
                             "vegetation")
                    self.occupy(yc, st.t, np.array([0.7, 0.7]))
            if rng.random() < style["building_p"] and self.near_path(c[0], c[1], self.profile.content_radius + 15)[0] and self.free(
                    c, st.t, np.array([width / 2, depth / 2]), allowed, margin=0.5):
                front = st.point(u + width / 2, sgn * v_front)
                color = tuple(np.clip(np.array(ob.CLASSES[cid("building")].color) / 255 * rng.uniform(0.55, 1.2)
                                      + rng.normal(0, 0.07, 3), 0, 1).tolist())
                parts = ob.building(rng, width, depth, height, front_room=setback)
                self.put(parts, front[0], front[1], yaw, "building", color=color, z=0.0)
                self.occupy(c, st.t, np.array([width / 2, depth / 2]))
                self.background(st, side, u + width / 2, v_front + depth + rng.uniform(3, 10), style)
                u += width + rng.uniform(*style["gap"])
            else:
                # gap: fence or hedge at the front line, vegetation behind
                gap = rng.uniform(5, 16) if style["kind"] != "rural" else rng.uniform(10, 40)
                fc = st.point(u + gap / 2, sgn * (e_ter + max(setback, 0.5) * 0.5 + 0.3))
                if self.near_path(fc[0], fc[1])[0] and self.free(fc, st.t, np.array([gap / 2, 0.3]), allowed):
                    r = rng.random()
                    if r < style["fence_p"]:
                        self.put(ob.fence(rng, gap), fc[0], fc[1], float(np.arctan2(st.t[1], st.t[0])), "fence")
                    elif r < style["fence_p"] + 0.25:
                        self.put(ob.hedge(rng, gap), fc[0], fc[1], float(np.arctan2(st.t[1], st.t[0])), "vegetation")
                    self.occupy(fc, st.t, np.array([gap / 2, 0.3]))
                for _ in range(rng.integers(2, 7) if style["kind"] != "rural" else rng.integers(4, 14)):
                    tc = st.point(u + rng.uniform(0, gap), sgn * (e_ter + setback * rng.uniform(0.3, 1.0)
                                                                  + rng.uniform(1.0, 14)))
                    if self.near_path(tc[0], tc[1])[0] and self.free(tc, st.t, np.array([0.6, 0.6]), allowed):
                        self.put(ob.tree(rng) if rng.random() < 0.6 else ob.bush(rng), tc[0], tc[1],
                                 rng.uniform(0, 6.3), "vegetation")
                        self.occupy(tc, st.t, np.array([0.6, 0.6]))
                u += gap

    def background(self, st: Street, side: int, u: float, v: float, style: dict) -> None:
        rng = self.rng
        sgn = 1.0 if side else -1.0
        c = st.point(u, sgn * v)
        if not self.near_path(c[0], c[1], self.profile.content_radius + 20)[0]:
            return
        yaw = float(np.arctan2(st.t[1], st.t[0])) + (0.0 if side else np.pi)
        if rng.random() < 0.4:
            w, d, h = rng.uniform(10, 30), rng.uniform(10, 20), rng.uniform(8, 35)
            cc = st.point(u, sgn * (v + d / 2))
            if self.free(cc, st.t, np.array([w / 2, d / 2]), (TERRAIN, OTHER), margin=1.0):
                color = tuple(rng.uniform(0.35, 0.85, 3).tolist())
                self.put(ob.building(rng, w, d, h, front_room=3.0), c[0], c[1], yaw, "building", color=color, z=0.0)
                self.occupy(cc, st.t, np.array([w / 2, d / 2]))
        else:
            for _ in range(rng.integers(4, 11)):
                tc = c + rng.normal(0, 7, 2)
                if self.free(tc, st.t, np.array([0.6, 0.6]), (TERRAIN, OTHER)):
                    self.put(ob.tree(rng), tc[0], tc[1], rng.uniform(0, 6.3), "vegetation")
                    self.occupy(tc, st.t, np.array([0.6, 0.6]))

    # -------------------------------------------------------------------------------------------- rare kinds
    def near_spot(self, allowed: tuple[int, ...], band: str, half=(1.0, 0.6), tries: int = 60, offset=0.0,
                  side: int | None = None, ahead: tuple[float, float] = (-15.0, 35.0)):
        """A free spot near the driven path in a band ("park", "sidewalk", "terrain") of a leg street."""
        rng = self.rng
        for _ in range(tries):
            st = self.leg_streets[rng.integers(len(self.leg_streets))]
            lo, hi = self.traveled(st)
            if hi <= lo:
                continue
            side = int(rng.integers(2)) if side is None else side
            sgn = 1.0 if side else -1.0
            u = rng.uniform(lo + ahead[0], hi + ahead[1])
            inner = {"park": st.edge(side, "road"), "sidewalk": st.edge(side, "park"),
                     "terrain": st.edge(side, "sidewalk")}[band]
            outer = {"park": st.edge(side, "park"), "sidewalk": st.edge(side, "sidewalk"),
                     "terrain": st.edge(side, "terrain") + 6.0}[band]
            if outer - inner < 2 * half[1] + 0.1:
                continue
            v = sgn * (rng.uniform(inner + half[1] + 0.05, outer - half[1] - 0.05) + offset)
            c = st.point(u, v)
            if self.free(c, st.t, np.array(half), allowed):
                return st, side, u, v, c
        return None

    def ensure_rare(self) -> None:
        rng = self.rng
        H = lambda st: float(np.arctan2(st.t[1], st.t[0]))  # noqa: E731
        for kind, band, half in (("truck", "park", (4.5, 1.2)), ("trailer", "park", (3.5, 1.2)),
                                 ("bus", "park", (6.2, 1.3))):
            # big vehicles stand on the far side of the street or further ahead, not beside the whole drive
            spot = self.near_spot((PARK,), band, half, side=1, ahead=(-20.0, 50.0))
            if spot is None:
                spot = self.near_spot((TERRAIN, OTHER), "terrain", half, ahead=(-20.0, 50.0))
            if spot:
                st, side, u, v, c = spot
                self.put_vehicle(kind, c[0], c[1], H(st) + (np.pi if side else 0.0))
                self.occupy(c, st.t, np.array(half))
        for kind, n in (("motorcycle", 2), ("bicycle", 2)):
            for _ in range(n):
                spot = self.near_spot((SIDEWALK,), "sidewalk", (0.5, 1.0)) or self.near_spot(
                    (PARK, TERRAIN), "terrain", (0.5, 1.0))
                if spot:
                    st, side, u, v, c = spot
                    parts, _, _ = VEHICLES[kind](rng)
                    self.put(parts, c[0], c[1], H(st) + np.pi / 2 + rng.normal(0, 0.1), kind)
                    self.occupy(c, st.t, np.array([0.5, 1.0]))
        for kind, n in (("shelter", 1), ("bin", 2), ("bench", 1), ("person", 2)):
            for _ in range(n):
                spot = self.near_spot((SIDEWALK,), "sidewalk", (1.2, 0.5))
                if spot:
                    st, side, u, v, c = spot
                    self.street_item(kind, st, u, side, v)
        for _ in range(2):
            spot = self.near_spot((SIDEWALK,), "sidewalk", (0.3, 0.3))
            if spot:
                st, side, u, v, c = spot
                self.put(ob.sign(rng), c[0], c[1], H(st) + (0.0 if side else np.pi), "pole")
                self.occupy(c, st.t, np.array([0.3, 0.3]))
        spot = self.near_spot((TERRAIN, OTHER), "terrain", (5.0, 0.3))
        if spot:
            st, side, u, v, c = spot
            self.put(ob.fence(rng, 10.0), c[0], c[1], H(st), "fence")
            self.occupy(c, st.t, np.array([5.0, 0.3]))
        self.road_works()

    def road_works(self) -> None:
        """Cones and barriers closing a parking strip / sidewalk section, an excavator and workers nearby."""
        rng = self.rng
        spot = self.near_spot((PARK, SIDEWALK), "park", (8.0, 0.9), tries=40) or self.near_spot(
            (SIDEWALK,), "sidewalk", (8.0, 0.5), tries=40) or self.near_spot((TERRAIN,), "terrain", (8.0, 0.8), tries=40)
        if spot is None:
            return
        st, side, u, v, c = spot
        heading = float(np.arctan2(st.t[1], st.t[0]))
        sgn = 1.0 if side else -1.0
        inner = st.edge(side, "road") if abs(abs(v) - st.edge(side, "road")) < 3 else abs(v) - 0.8
        for du in np.arange(-8.0, 8.01, rng.uniform(2.5, 4.0)):
            p = st.point(u + du, sgn * (inner + 0.3))
            self.put(ob.cone(rng), p[0], p[1], 0.0, "traffic-cone")
        for du in (-8.6, 8.6):
            parts, L = ob.barrier(rng)
            for j in range(2):
                p = st.point(u + du, sgn * (inner + 0.6 + j * L))
                self.put(parts, p[0], p[1], heading + np.pi / 2, "barrier")
        self.occupy(c, st.t, np.array([8.8, 1.5]))
        spot2 = self.near_spot((TERRAIN, OTHER, PARK), "terrain", (3.4, 1.6))
        if spot2:
            st2, side2, u2, v2, c2 = spot2
            parts, _, _ = ob.construction_vehicle(rng)
            self.put(parts, c2[0], c2[1], float(np.arctan2(st2.t[1], st2.t[0])) + rng.uniform(-0.5, 0.5),
                     "construction-vehicle")
            self.occupy(c2, st2.t, np.array([3.4, 1.6]))
        for _ in range(rng.integers(1, 4)):
            p = c + rng.normal(0, 1.5, 2)
            parts, _, _ = ob.person(rng, "construction-worker")
            self.put(parts, p[0], p[1], rng.uniform(0, 6.3), "construction-worker")

    # -------------------------------------------------------------------------------------------- traffic
    def ego_track(self):
        if not hasattr(self, "_ego"):
            ts = np.arange(0.0, self.duration + 0.2, 0.05)
            x, y, yaw = self.traj.pose2d(ts)
            self._ego = (ts, x, y, yaw)
        return self._ego

    def clear_of_ego(self, p0: np.ndarray, vel: np.ndarray, yaw: float, L: float, W: float) -> bool:
        ts, x, y, eyaw = self.ego_track()
        px = p0[0] + vel[0] * ts - x
        py = p0[1] + vel[1] * ts - y
        c, s = np.cos(eyaw), np.sin(eyaw)
        dx, dy = c * px + s * py, -s * px + c * py
        rel = yaw - eyaw
        ex = np.abs(np.cos(rel)) * L / 2 + np.abs(np.sin(rel)) * W / 2
        ey = np.abs(np.sin(rel)) * L / 2 + np.abs(np.cos(rel)) * W / 2
        hit = (np.abs(dx) < ex + EGO_HALF_LENGTH + 1.0) & (np.abs(dy) < ey + EGO_HALF_WIDTH + 0.4)
        return not hit.any()

    def ego_u(self, st: Street, t: float) -> float:
        x, y, _ = self.traj.pose2d(t)
        return float(np.dot(np.array([x, y]) - st.a, st.t))

    def traffic(self) -> None:
        rng = self.rng
        T = self.duration
        streets = [s for s in self.streets if self.street_near(s)]
        for st in streets:
            is_leg = any(st is s for s in self.leg_streets)
            heading = float(np.arctan2(st.t[1], st.t[0]))
            for side in (0, 1):
                sgn = 1.0 if side else -1.0
                direction = -sgn  # right side (v < 0) drives along +t
                for lane in range(st.lanes[side]):
                    v_lane = sgn * (st.med + (lane + 0.5) * st.lane_w)
                    speed = self.lane_speed(is_leg and side == 0)
                    n = rng.integers(1, 5) if is_leg else rng.integers(0, 3)
                    u_t = rng.uniform(-60, 60)
                    for _ in range(n):
                        kind = rng.choice(["car", "truck", "bus", "motorcyclist", "truck+trailer"],
                                          p=[0.8, 0.05, 0.04, 0.07, 0.04])
                        self.moving_vehicle(st, kind, v_lane, direction, speed, u_t, heading)
                        u_t += rng.uniform(12, 45)
            # pedestrians and bicyclists
            n_ped = rng.integers(3, 9) if is_leg else rng.integers(0, 4)
            for _ in range(n_ped):
                side = int(rng.integers(2))
                sgn = 1.0 if side else -1.0
                v = sgn * rng.uniform(st.edge(side, "park") + 0.6, max(st.edge(side, "sidewalk") - 0.5,
                                                                       st.edge(side, "park") + 0.7))
                direction = rng.choice([-1.0, 1.0])
                speed = rng.uniform(0.9, 1.6)
                t_m = rng.uniform(0, T)
                u_m = self.ego_u(st, t_m) + rng.uniform(-40, 40)
                self.mover(st, "person", v, direction, speed, t_m, u_m, heading)
            n_bic = rng.integers(1, 3) if is_leg else rng.integers(0, 2)
            for _ in range(n_bic):
                side = int(rng.integers(2))
                sgn = 1.0 if side else -1.0
                on_road = rng.random() < 0.5
                v = sgn * (st.edge(side, "road") - 0.8) if on_road else sgn * (st.edge(side, "sidewalk") - 0.7)
                direction = -sgn if on_road else rng.choice([-1.0, 1.0])
                t_m = rng.uniform(0, T)
                u_m = self.ego_u(st, t_m) + rng.uniform(-40, 40)
                self.mover(st, "bicyclist", v, direction, rng.uniform(3.0, 7.0), t_m, u_m, heading)

    def lane_speed(self, with_ego: bool) -> float:
        """Traffic speed; traffic going the ego's way differs by 3-5 m/s so that it passes instead of riding
        alongside for the whole sequence."""
        if with_ego:
            return float(max(self.v0 + self.rng.choice([-1.0, 1.0]) * self.rng.uniform(4.0, 7.0), 2.5))
        return float(self.rng.uniform(6.0, 13.0))

    def street_near(self, st: Street) -> bool:
        lo, hi = self.traveled(st)
        if hi > lo:
            return True
        x, y, _ = self.traj.pose2d(np.linspace(0, self.duration, 20))
        d = np.abs((np.stack([x, y], 1) - st.a) @ st.n)
        return bool(d.min() < 60)

    def moving_vehicle(self, st: Street, kind: str, v_lane: float, direction: float, speed: float, u_t: float,
                       heading: float) -> bool:
        """A vehicle driving along a lane; placed so that it passes near the ego at some time."""
        rng = self.rng
        t_m = rng.uniform(0, self.duration)
        u_m = self.ego_u(st, t_m) + u_t * rng.choice([-1.0, 1.0])
        return self.mover(st, kind, v_lane, direction, speed, t_m, u_m, heading)

    def mover(self, st: Street, kind: str, v: float, direction: float, speed: float, t_m: float, u_m: float,
              heading: float) -> bool:
        rng = self.rng
        u0 = u_m - direction * speed * t_m
        yaw = heading + (0.0 if direction > 0 else np.pi)
        vel2 = direction * speed * st.t
        vel = (float(vel2[0]), float(vel2[1]), 0.0)
        p0 = st.point(u0, v)
        if kind in ("person", "bicyclist", "motorcyclist"):
            parts, L, W = {"person": ob.person, "bicyclist": ob.bicyclist, "motorcyclist": ob.motorcyclist}[kind](rng)
        elif kind == "car":
            parts, L, W = ob.car(rng)
        elif kind == "truck+trailer":
            parts, L, W = ob.truck(rng)
            tparts, tl, _ = ob.trailer(rng)
            if not self.clear_of_ego(p0 - direction * st.t * (L / 2 + tl / 2 + 0.3), np.array(vel), yaw, tl, W):
                return False
        else:
            parts, L, W = VEHICLES[kind](rng)
        if not self.clear_of_ego(p0, np.array(vel), yaw, L, W):
            return False
        # z from the ground under the position at the time it passes the ego
        pm = st.point(u_m, v)
        z = self.ground.height(pm[0], pm[1])
        if kind == "car":
            self.put(parts, p0[0], p0[1], yaw, "car", vel, color=ob.car_color(rng), albedo=float(rng.uniform(0.05, 0.6)), z=z)
        elif kind == "person":
            self.put(parts, p0[0], p0[1], yaw, "person", vel, color=tuple(rng.uniform(0.05, 0.8, 3)), z=z)
        else:
            self.put(parts, p0[0], p0[1], yaw, kind.split("+")[0], vel, z=z)
        if kind == "truck+trailer":
            tp = p0 - direction * st.t * (L / 2 + tl / 2 + 0.3)
            self.put(tparts, tp[0], tp[1], yaw, "trailer", vel, z=z)
        return True

    def ensure_movers(self) -> None:
        """At least one moving motorcyclist, bicyclist, bus and a few pedestrians near the ego."""
        rng = self.rng
        for kind, n in (("motorcyclist", 1), ("bicyclist", 1), ("person", 3), ("car", 2)):
            placed, tries = 0, 0
            while placed < n and tries < 40:
                tries += 1
                st = self.leg_streets[rng.integers(len(self.leg_streets))]
                lo, hi = self.traveled(st)
                if hi <= lo:
                    continue
                heading = float(np.arctan2(st.t[1], st.t[0]))
                side = int(rng.integers(2))
                sgn = 1.0 if side else -1.0
                t_m = rng.uniform(0, self.duration)
                u_m = self.ego_u(st, t_m) + rng.uniform(-35, 35)
                if kind == "person":
                    v = sgn * (st.edge(side, "park") + 0.8)
                    ok = self.mover(st, kind, v, rng.choice([-1.0, 1.0]), rng.uniform(0.9, 1.6), t_m, u_m, heading)
                elif kind == "bicyclist":
                    v = sgn * (st.edge(side, "road") - 0.8)
                    ok = self.mover(st, kind, v, -sgn, rng.uniform(3, 7), t_m, u_m, heading)
                else:  # oncoming lane: passes the ego instead of riding along
                    v = st.med + 0.5 * st.lane_w
                    ok = self.mover(st, kind, v, -1.0, self.lane_speed(False), t_m, u_m, heading)
                placed += int(ok)

    # -------------------------------------------------------------------------------------------- build
    def build(self) -> World:
        rng = self.rng
        self.make_path()
        self.add_cross_streets()
        self.make_regions()
        self.ensure_rare()
        for st in self.streets:
            self.line_street(st)
        self.traffic()
        self.ensure_movers()
        az = rng.uniform(0, 2 * np.pi)
        el = rng.uniform(0.35, 1.0)
        sun = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        sky = np.array([[0.78, 0.85, 0.92], [0.35, 0.55, 0.85]]) * rng.uniform(0.85, 1.05)
        return World(self.ground, self.buf.freeze(), self.traj, self.profile, sun, sky.clip(0, 1))


VEHICLES = {
    "truck": ob.truck,
    "bus": ob.bus,
    "trailer": ob.trailer,
    "construction-vehicle": ob.construction_vehicle,
    "motorcycle": ob.motorcycle,
    "bicycle": ob.bicycle,
    "motorcyclist": ob.motorcyclist,
    "bicyclist": ob.bicyclist,
}


def _rects_overlap(c1: np.ndarray, a1: np.ndarray, h1: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Separating-axis test of one oriented rectangle (centre, unit axis, half extents) against K others
    given as rows of fp (K, 6) = centre, axis, half. Returns (K,) bool overlap."""
    n1 = np.array([-a1[1], a1[0]])
    c2, a2, h2 = fp[:, 0:2], fp[:, 2:4], fp[:, 4:6]
    n2 = np.stack([-a2[:, 1], a2[:, 0]], 1)
    d = c2 - c1
    sep = np.zeros(len(fp), bool)
    for ax in (a1, n1):
        r2 = h2[:, 0] * np.abs(a2 @ ax) + h2[:, 1] * np.abs(n2 @ ax)
        sep |= np.abs(d @ ax) > h1[0] * abs(a1 @ ax) + h1[1] * abs(n1 @ ax) + r2
    for ax, e in ((a2, h2[:, 0]), (n2, h2[:, 1])):
        r1 = h1[0] * np.abs(ax @ a1) + h1[1] * np.abs(ax @ n1)
        sep |= np.abs(np.sum(d * ax, 1)) > r1 + e
    return ~sep
