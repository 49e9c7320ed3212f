"""The ground of the synthetic world: streets, curbs, parking, sidewalks, terrain; and its ray intersection.

Streets are straight strips (a centre line with a lateral profile): median island, lanes, optional
parking strips, a curb, the sidewalk and a terrain strip on each side. Where streets overlap the
higher-ranked surface wins (road over median over parking over sidewalk over lots/plazas over terrain),
which makes crossings. Everything else is terrain with a gentle bumpy height. Heights: road and
parking 0 m, sidewalks at the curb height (0.10-0.18 m), islands/lots/plazas 0.12-0.16 m, terrain
0.2 m +- 0.05 m. Lane markings and zebra crossings are painted on the road (class lane-marking).

Ray / ground intersection samples each ray where it crosses a few horizontal levels between the highest
ground (0.27 m) and 0 m and stops at the first sample below the surface, interpolating linearly between
the last sample above and the first below (exact on flat surfaces, a slanted face on curbs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .classes import cid

ROAD, MARK, PARK, SIDEWALK, OTHER, TERRAIN = (cid(n) for n in
                                              ("road", "lane-marking", "parking", "sidewalk", "other-ground", "terrain"))
TERRAIN_BASE = 0.20
LEVELS = np.array([0.27, 0.2, 0.14, 0.09, 0.045, 0.0])  # sampling heights, descending
MARK_HALF = 0.07  # half width of painted lines (m)


@dataclass
class Street:
    """A straight street: points a + u t + v n (n = t rotated +90 deg, i.e. v > 0 is the left side)."""

    a: np.ndarray  # (2,) point at u = 0
    t: np.ndarray  # (2,) unit direction
    s_lo: float
    s_hi: float
    med: float  # half width of the median island (0 = none)
    lanes: tuple[int, int]  # lanes on the (right, left) side
    lane_w: float
    park: tuple[float, float]  # parking strip width per side (0 = none)
    park_period: float
    park_fill: float  # fraction of each period with parking
    park_phase: float
    sw: tuple[float, float]  # sidewalk width per side
    terr: tuple[float, float]  # terrain strip width per side
    curb: float  # sidewalk height
    center_solid: bool
    xings: list = field(default_factory=list)  # (u, half width of the crossing road, zebra?)

    @property
    def n(self) -> np.ndarray:
        return np.array([-self.t[1], self.t[0]])

    def edge(self, side: int, what: str) -> float:
        """Lateral distance of the outer edge of a band on side 0 (right) / 1 (left)."""
        road = self.med + self.lanes[side] * self.lane_w
        if what == "road":
            return road
        park = road + self.park[side]
        if what == "park":
            return park
        sw = park + self.sw[side]
        if what == "sidewalk":
            return sw
        return sw + self.terr[side]

    def point(self, u: float, v: float) -> np.ndarray:
        return self.a + u * self.t + v * self.n

    def parking_at(self, u: np.ndarray) -> np.ndarray:
        ph = np.mod(u / self.park_period + self.park_phase, 1.0)
        ok = ph < self.park_fill
        for xu, xh, _ in self.xings:
            ok &= np.abs(u - xu) > xh + 8.0
        return ok


@dataclass
class Region:
    """An oriented rectangle of one ground class (parking lot, paved plaza)."""

    c: np.ndarray  # (2,) centre
    axis: np.ndarray  # (2,) unit direction of the first half extent
    half: np.ndarray  # (2,) half extents
    cls: int
    height: float
    rank: float


class Ground:
    """Class and height of the ground at any (x, y), and ray intersection."""

    def __init__(self, streets: list[Street], regions: list[Region], bump: np.ndarray) -> None:
        self.streets = streets
        self.regions = regions
        self.bump = bump  # (J, 4): amplitude, kx, ky, phase
        self._pack(list(range(len(streets))))

    def _pack(self, idx: list[int]) -> None:
        S = [self.streets[i] for i in idx]
        self.active = idx
        self.sa = np.array([s.a for s in S]).reshape(-1, 2)
        self.st = np.array([s.t for s in S]).reshape(-1, 2)
        self.s_lo = np.array([s.s_lo for s in S])
        self.s_hi = np.array([s.s_hi for s in S])
        self.med = np.array([s.med for s in S])
        self.curb = np.array([s.curb for s in S])
        self.e_road = np.array([[s.edge(k, "road") for k in (0, 1)] for s in S]).reshape(-1, 2)
        self.e_park = np.array([[s.edge(k, "park") for k in (0, 1)] for s in S]).reshape(-1, 2)
        self.e_sw = np.array([[s.edge(k, "sidewalk") for k in (0, 1)] for s in S]).reshape(-1, 2)
        self.e_ter = np.array([[s.edge(k, "terrain") for k in (0, 1)] for s in S]).reshape(-1, 2)
        X = max([len(s.xings) for s in S] + [1])
        self.xu = np.full((len(S), X), np.nan)
        self.xh = np.zeros((len(S), X))
        self.xz = np.zeros((len(S), X), bool)
        for i, s in enumerate(S):
            for j, (u, h, z) in enumerate(s.xings):
                self.xu[i, j], self.xh[i, j], self.xz[i, j] = u, h, z
        self.pk = np.array([[s.park_period, s.park_fill, s.park_phase] for s in S]).reshape(-1, 3)
        self.lane_w = np.array([s.lane_w for s in S])
        self.lanes = np.array([s.lanes for s in S]).reshape(-1, 2)
        self.solid = np.array([s.center_solid for s in S], bool)

    def restrict(self, center: np.ndarray, radius: float) -> "Ground":
        """A view limited to the streets that reach within `radius` of `center` (xy), for speed."""
        keep = []
        for i, s in enumerate(self.streets):
            u = float(np.dot(center - s.a, s.t))
            u = min(max(u, s.s_lo), s.s_hi)
            d = np.linalg.norm(center - (s.a + u * s.t))
            if d < radius + max(s.edge(0, "terrain"), s.edge(1, "terrain")) + 1.0:
                keep.append(i)
        view = Ground.__new__(Ground)
        view.streets, view.regions, view.bump = self.streets, self.regions, self.bump
        view._pack(keep)
        return view

    # ----------------------------------------------------------------------------------------------
    def terrain_height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        h = np.full(x.shape, TERRAIN_BASE)
        for amp, kx, ky, ph in self.bump:
            h += amp * np.sin(kx * x + ky * y + ph)
        return h

    def _street_uv(self, x, y):
        dx = x[None, :] - self.sa[:, 0:1]
        dy = y[None, :] - self.sa[:, 1:2]
        tx, ty = self.st[:, 0:1], self.st[:, 1:2]
        return dx * tx + dy * ty, -dx * ty + dy * tx  # (S, n) each

    def _xing_gap(self, u):
        """(S, n) distance along each street beyond the nearest crossing road (negative inside a crossing)."""
        gap = np.full(u.shape, np.inf)
        for j in range(self.xu.shape[1]):
            xu = self.xu[:, j : j + 1]
            ok = np.isfinite(xu)
            g = np.abs(u - np.where(ok, xu, 0.0)) - self.xh[:, j : j + 1]
            np.minimum(gap, np.where(ok, g, np.inf), out=gap)
        return gap

    # per-street surface codes: 0 road, 1 parking, 2 sidewalk, 3 terrain strip, 4 not this street, 5 median
    _RANK = np.array([6.0, 4.0, 3.0, 2.0, 0.0, 5.0])
    _CLS = np.array([ROAD, PARK, SIDEWALK, TERRAIN, TERRAIN, OTHER], np.int16)

    def query(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground class (n,) int16 (road / parking / sidewalk / other-ground / terrain) and height (n,)."""
        n = len(x)
        cls = np.full(n, TERRAIN, np.int16)
        h = np.full(n, np.nan)
        rank = np.ones(n)
        for reg in self.regions:
            px, py = x - reg.c[0], y - reg.c[1]
            a = px * reg.axis[0] + py * reg.axis[1]
            b = -px * reg.axis[1] + py * reg.axis[0]
            m = (np.abs(a) <= reg.half[0]) & (np.abs(b) <= reg.half[1]) & (reg.rank > rank)
            cls[m], h[m], rank[m] = reg.cls, reg.height, reg.rank
        if len(self.active) and n:
            u, v = self._street_uv(x, y)
            left = v > 0
            a = np.abs(v)
            code = np.zeros(u.shape, np.int8)
            for E in (self.e_road, self.e_park, self.e_sw, self.e_ter):
                code += a >= np.where(left, E[:, 1:2], E[:, 0:1])
            code[~((u >= self.s_lo[:, None]) & (u <= self.s_hi[:, None]))] = 4
            gap = self._xing_gap(u)
            pz = code == 1
            if pz.any():
                ph = np.mod(u / self.pk[:, 0:1] + self.pk[:, 2:3], 1.0)
                park_on = (ph < self.pk[:, 1:2]) & (gap >= 8.0)
                code[pz & (gap < 3.0)] = 0
                code[pz & (gap >= 3.0) & ~park_on] = 2
            code[(code == 0) & (a < self.med[:, None]) & (gap >= 2.0)] = 5
            s_rank = self._RANK[code]
            best = np.argmax(s_rank, axis=0)
            cols = np.arange(n)
            bc = code[best, cols]
            m = self._RANK[bc] > rank
            cls[m] = self._CLS[bc[m]]
            curb = self.curb[best[m]]
            h[m] = np.where((bc[m] == 2) | (bc[m] == 5), curb, np.where(bc[m] == 3, np.nan, 0.0))
        t = np.isnan(h)
        if t.any():
            h[t] = self.terrain_height(x[t], y[t])
        return cls, h

    def paint(self, x: np.ndarray, y: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """Turn road points that lie on painted lines or zebra crossings into lane-marking."""
        out = cls.copy()
        road = np.nonzero(cls == ROAD)[0]
        if not len(road) or not len(self.active):
            return out
        u, v = self._street_uv(x[road], y[road])
        a = np.abs(v)
        left = v > 0
        e_road = np.where(left, self.e_road[:, 1:2], self.e_road[:, 0:1])
        lanes = np.where(left, self.lanes[:, 1:2], self.lanes[:, 0:1])
        in_s = (u >= self.s_lo[:, None]) & (u <= self.s_hi[:, None])
        on_road = in_s & (a < e_road)
        single = on_road.sum(0) == 1  # not inside a crossing
        med = self.med[:, None]
        lw = self.lane_w[:, None]
        dash = np.mod(u, 12.0) < 4.0
        line = np.where(med > 0, np.abs(a - med - 0.25) < MARK_HALF, (a < MARK_HALF) & (dash | self.solid[:, None]))
        line |= (lanes >= 2) & (np.abs(a - med - lw) < MARK_HALF) & dash
        line |= np.abs(a - (e_road - 0.3)) < MARK_HALF
        line &= on_road & single[None, :]
        zebra = np.zeros(u.shape, bool)
        for j in range(self.xu.shape[1]):
            xu = self.xu[:, j : j + 1]
            ok = np.isfinite(xu) & self.xz[:, j : j + 1]
            du = np.abs(u - np.where(ok, xu, 0.0)) - self.xh[:, j : j + 1]
            zebra |= ok & (du > 1.0) & (du < 4.0) & (np.mod(a, 1.0) < 0.5)
        zebra &= on_road & single[None, :]
        painted = (line | zebra).any(0)
        out[road[painted]] = MARK
        return out

    # ----------------------------------------------------------------------------------------------
    def intersect(self, origin: np.ndarray, dirs: np.ndarray, t_limit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground hit of rays (origin (3,), dirs (N, 3)) nearer than t_limit (N,): t (N,) (inf = none), class (N,)."""
        N = len(dirs)
        t_out = np.full(N, np.inf)
        c_out = np.full(N, -1, np.int16)
        dz = dirs[:, 2]
        down = dz < -1e-9
        with np.errstate(divide="ignore"):
            t_top = (origin[2] - LEVELS[0]) / np.where(down, -dz, 1.0)
        alive = np.nonzero(down & (t_top < t_limit) & (origin[2] > LEVELS[0]))[0]
        prev_t = np.zeros(0)
        prev_f = np.zeros(0)
        for k, z in enumerate(LEVELS):
            if not len(alive):
                break
            d = dirs[alive]
            t = (origin[2] - z) / -d[:, 2]
            x = origin[0] + t * d[:, 0]
            y = origin[1] + t * d[:, 1]
            cls, h = self.query(x, y)
            f = z - h  # > 0: the ray is still above the ground here
            below = f <= 0
            if k == LEVELS.size - 1:
                below[:] = True
            if below.any():
                i = alive[below]
                if k == 0:
                    th = t[below]
                else:
                    fp, tp = prev_f[below], prev_t[below]
                    th = tp + fp / np.maximum(fp - f[below], 1e-9) * (t[below] - tp)
                ok = th < t_limit[i]
                t_out[i[ok]] = th[ok]
                c_out[i[ok]] = cls[below][ok]
            keep = ~below
            alive, prev_t, prev_f = alive[keep], t[keep], f[keep]
            if k + 1 < LEVELS.size and len(alive):
                # rays whose next sample is already beyond the limit cannot hit the ground first
                d = dirs[alive]
                t_next = (origin[2] - LEVELS[k + 1]) / -d[:, 2]
                far = t_next >= t_limit[alive]
                # the surface may still be crossed before t_limit: keep those whose last sample was above
                # ground and whose limit lies before the next level (occluded anyway) out
                alive, prev_t, prev_f = alive[~far], prev_t[~far], prev_f[~far]
        return t_out, c_out

    def height(self, x: float, y: float) -> float:
        return float(self.query(np.array([x]), np.array([y]))[1][0])

    def cls_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.paint(x, y, self.query(x, y)[0])
