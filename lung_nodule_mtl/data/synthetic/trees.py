"""The airway and vessel trees of the synthetic chest: tube segments grown inside the lungs.

Both trees are sets of :class:`Segments` in world space (RAS, mm), grown from the hila inside the
lung margin of a :class:`~lung_nodule_mtl.data.synthetic.anatomy.Patient`: the bronchial tree by
recursive asymmetric branching (:func:`grow_tree`), the pulmonary arterial and venous trees by space
colonisation towards random points of the lungs (:func:`colonize`, :func:`sample_lung_points`);
:func:`grow_airways_and_vessels` builds both for a patient (trachea, main and lobar bronchi, hilar
roots).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lung_nodule_mtl.data.synthetic import config as C
from lung_nodule_mtl.data.synthetic.geometry import perpendicular_unit, uniform

if TYPE_CHECKING:
    from lung_nodule_mtl.data.synthetic.anatomy import Patient

__all__ = ["Segments", "colonize", "grow_airways_and_vessels", "grow_tree", "sample_lung_points"]


@dataclass
class Segments:
    """A set of tube segments (airways or vessels) in world space.

    Attributes:
        p0: start points ``(N, 3)``, RAS mm.
        p1: end points ``(N, 3)``, RAS mm.
        radius: outer radius of each segment, mm.
        lumen: lumen (air) radius, mm; 0 for vessels.
    """

    p0: np.ndarray
    p1: np.ndarray
    radius: np.ndarray
    lumen: np.ndarray

    def __len__(self) -> int:
        return len(self.radius)

    @classmethod
    def empty(cls) -> Segments:
        """No segments."""
        z3 = np.zeros((0, 3))
        return cls(z3, z3.copy(), np.zeros(0), np.zeros(0))

    @classmethod
    def concat(cls, parts: list[Segments]) -> Segments:
        """Join several segment sets."""
        parts = [p for p in parts if len(p)] or [cls.empty()]
        return cls(
            np.concatenate([p.p0 for p in parts]),
            np.concatenate([p.p1 for p in parts]),
            np.concatenate([p.radius for p in parts]),
            np.concatenate([p.lumen for p in parts]),
        )

    def subset(self, index: np.ndarray) -> Segments:
        """The segments at ``index`` (an index or boolean array)."""
        return Segments(self.p0[index], self.p1[index], self.radius[index], self.lumen[index])

    def in_box(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Boolean ``(N,)``: the segment's bounding box (widened by its radius) meets ``[lo, hi]`` (mm)."""
        r = self.radius[:, None]
        seg_lo = np.minimum(self.p0, self.p1) - r
        seg_hi = np.maximum(self.p0, self.p1) + r
        return np.all((seg_hi >= lo) & (seg_lo <= hi), axis=1)

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Distance ``(P, N)`` (mm) from each point ``(P, 3)`` to each segment's axis."""
        d = self.p1 - self.p0
        length2 = np.maximum(np.sum(d * d, axis=1), 1e-12)
        rel = points[:, None, :] - self.p0[None, :, :]
        t = np.clip(np.sum(rel * d[None], axis=2) / length2, 0.0, 1.0)
        return np.linalg.norm(rel - t[..., None] * d[None], axis=2)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


_LENGTH_FACTORS = (1.0, 0.6, 0.35)
"""Tries of a segment's length (fractions of the drawn one) until its end is well inside the lung."""


def _margin_gradient(margin: Callable[[np.ndarray], np.ndarray], pts: np.ndarray, h: float = 1.0) -> np.ndarray:
    """Unit gradient of the lung margin at ``pts`` (points into the lung, away from its boundary)."""
    g = np.empty_like(pts)
    for a in range(3):
        e = np.zeros(3)
        e[a] = h
        g[:, a] = margin(pts + e) - margin(pts - e)
    return _unit(g)


def grow_tree(
    roots: list[tuple[np.ndarray, np.ndarray, float]],
    margin: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
    min_radius: float,
    max_segments: int,
    length_per_radius: tuple[float, float] = C.TREE_LENGTH_PER_RADIUS,
    major_ratio: tuple[float, float] = C.TREE_MAJOR_RATIO,
    minor_ratio: tuple[float, float] = C.TREE_MINOR_RATIO,
    lumen_fraction: float | None = None,
) -> Segments:
    """Grow a branching tree of tubes inside the lungs, one generation at a time (vectorised).

    Each segment of radius ``r`` has length ``r * U(length_per_radius) + TREE_MIN_LENGTH_MM`` and
    splits into a major and a minor child (radii ``r * U(major_ratio)`` and ``r * U(minor_ratio)``,
    angles ``U(TREE_MAJOR_ANGLE_DEG)`` and ``U(TREE_MINOR_ANGLE_DEG)`` on either side of a random
    plane). Children lean away from their root (``TREE_OUTWARD_BIAS``) and away from the lung boundary
    when near it (``TREE_WALL_AVOIDANCE``); a segment whose end would leave the lung (margin below its
    radius + 1 mm) is shortened, then dropped. Growth stops below ``min_radius``, after
    ``TREE_MAX_GENERATIONS`` or at ``max_segments``.

    Args:
        roots: ``(start, direction, radius)`` of each root segment (world mm).
        margin: the lung margin function of world points ``(N, 3)`` (mm).
        rng: random generator.
        min_radius: radius (mm) under which no child is made.
        max_segments: cap on the number of segments.
        length_per_radius: segment length per mm of radius.
        major_ratio: radius ratio of the major child.
        minor_ratio: radius ratio of the minor child.
        lumen_fraction: for airways, the lumen radius as a fraction of the outer radius (``None``:
            wall thickness ``AIRWAY_WALL_FRACTION`` of the radius, at least ``AIRWAY_MIN_WALL_MM``).

    Returns:
        The segments.
    """
    if not roots:
        return Segments.empty()
    pos = np.array([r[0] for r in roots], dtype=np.float64)
    dirs = _unit(np.array([r[1] for r in roots], dtype=np.float64))
    rad = np.array([r[2] for r in roots], dtype=np.float64)
    origin = pos.copy()
    out_p0, out_p1, out_r = [], [], []
    count = 0
    for _ in range(C.TREE_MAX_GENERATIONS):
        if len(rad) == 0 or count >= max_segments:
            break
        length = rad * rng.uniform(*length_per_radius, size=len(rad)) + C.TREE_MIN_LENGTH_MM
        ok = np.zeros(len(rad), dtype=bool)
        end = pos.copy()
        for factor in _LENGTH_FACTORS:
            todo = ~ok
            if not todo.any():
                break
            cand = pos[todo] + dirs[todo] * (factor * length[todo])[:, None]
            good = margin(cand) >= rad[todo] + C.TREE_END_MARGIN_MM
            idx = np.nonzero(todo)[0][good]
            end[idx] = cand[good]
            ok[idx] = True
        pos, end, dirs, rad, origin = pos[ok], end[ok], dirs[ok], rad[ok], origin[ok]
        n = min(len(rad), max_segments - count)
        pos, end, dirs, rad, origin = pos[:n], end[:n], dirs[:n], rad[:n], origin[:n]
        out_p0.append(pos)
        out_p1.append(end)
        out_r.append(rad)
        count += n
        if n == 0:
            break
        r_major = rad * rng.uniform(*major_ratio, size=n)
        r_minor = rad * rng.uniform(*minor_ratio, size=n)
        perp = perpendicular_unit(dirs, rng)
        a_major = np.radians(rng.uniform(*C.TREE_MAJOR_ANGLE_DEG, size=n))[:, None]
        a_minor = np.radians(rng.uniform(*C.TREE_MINOR_ANGLE_DEG, size=n))[:, None]
        d_major = np.cos(a_major) * dirs + np.sin(a_major) * perp
        d_minor = np.cos(a_minor) * dirs - np.sin(a_minor) * perp
        outward = _unit(end - origin)
        m_end = margin(end)
        grad = _margin_gradient(margin, end)
        near = (m_end < 2.0 * rad * length_per_radius[1])[:, None]
        steer = C.TREE_OUTWARD_BIAS * outward + np.where(near, C.TREE_WALL_AVOIDANCE * grad, 0.0)
        d_major = _unit(d_major + steer)
        d_minor = _unit(d_minor + steer)
        keep_major = r_major >= min_radius
        keep_minor = r_minor >= min_radius
        budget = max_segments - count
        if keep_major.sum() + keep_minor.sum() > budget:
            keep_minor[:] = False
        pos = np.concatenate([end[keep_major], end[keep_minor]])
        dirs = np.concatenate([d_major[keep_major], d_minor[keep_minor]])
        rad = np.concatenate([r_major[keep_major], r_minor[keep_minor]])
        origin = np.concatenate([origin[keep_major], origin[keep_minor]])
    p0, p1, r = np.concatenate(out_p0), np.concatenate(out_p1), np.concatenate(out_r)
    if lumen_fraction is None:
        lumen = np.zeros_like(r)
    else:
        lumen = np.maximum(r - np.maximum(C.AIRWAY_MIN_WALL_MM, (1.0 - lumen_fraction) * r), 0.0)
    return Segments(p0, p1, r, lumen)


def sample_lung_points(
    patient: Patient, rng: np.random.Generator, side: int, spacing_mm: float, min_margin: float = 2.0
) -> np.ndarray:
    """Uniform random points ``(N, 3)`` (world mm) in one lung (``side`` +1 right, -1 left).

    One point per ``spacing_mm^3`` of the lung's bounding box, kept where the lung margin is at least
    ``min_margin`` mm.
    """
    lo, hi = patient.lung_box()
    if side > 0:
        lo = np.array([patient.x0, lo[1], lo[2]])
    else:
        hi = np.array([patient.x0, hi[1], hi[2]])
    volume = float(np.prod(hi - lo))
    pts = lo + rng.random((int(volume / spacing_mm**3), 3)) * (hi - lo)
    return pts[patient.lung_margin(pts) >= min_margin]


def colonize(
    roots: list[tuple[np.ndarray, np.ndarray, float]],
    attractors: np.ndarray,
    margin: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
    step: float = C.VESSEL_STEP_MM,
    kill: float = C.VESSEL_KILL_MM,
    influence: float = C.VESSEL_INFLUENCE_MM,
    leaf_radius: float = C.VESSEL_MIN_RADIUS_MM,
    murray: float = C.MURRAY_EXPONENT,
    max_radius: float = C.VESSEL_ROOT_RADIUS_MM[1],
) -> Segments:
    """Grow a space-filling vessel tree towards attractor points (space colonisation, Runions et al. 2007).

    Each attractor pulls the tree node nearest to it (within ``influence`` mm); every pulled node
    grows a new node ``step`` mm towards the mean direction of its attractors (plus a little jitter);
    an attractor is removed once a node comes within ``kill`` mm. New nodes must lie inside the lung.
    Radii follow a pipe model: leaves have ``leaf_radius`` and a parent's radius is
    ``(sum of children's radius^murray)^(1 / murray)``, at most ``max_radius``.

    Args:
        roots: ``(start, direction, radius)`` of each root (world mm); the direction is unused.
        attractors: points ``(N, 3)`` (world mm) the tree grows towards.
        margin: lung margin of world points (mm).
        rng: random generator (jitter).
        step: node spacing (mm).
        kill: attractor removal distance (mm).
        influence: attraction radius (mm).
        leaf_radius: radius (mm) of terminal branches.
        murray: exponent of the pipe model (3 is Murray's law).
        max_radius: radius cap (mm).

    Returns:
        One segment per non-root node, from its parent.
    """
    from scipy.spatial import cKDTree

    if not roots or len(attractors) == 0:
        return Segments.empty()
    cap = C.VESSEL_MAX_NODES
    pos = np.empty((cap, 3))
    parent = np.full(cap, -1, dtype=np.int64)
    n = len(roots)
    pos[:n] = [r[0] for r in roots]
    alive = np.ones(len(attractors), dtype=bool)
    best = np.full(len(attractors), np.inf)
    owner = np.full(len(attractors), -1, dtype=np.int64)
    blocked = np.zeros(cap, dtype=bool)
    new = np.arange(n)
    batches: list[tuple[int, int]] = []  # index range of the nodes made by each iteration
    for _ in range(C.VESSEL_MAX_ITERATIONS):
        idx = np.nonzero(alive)[0]
        if idx.size == 0 or new.size == 0:
            break
        d, j = cKDTree(pos[new]).query(attractors[idx], distance_upper_bound=influence)
        closer = d < best[idx]
        best[idx[closer]] = d[closer]
        owner[idx[closer]] = new[j[closer]]
        alive &= best >= kill
        act = np.nonzero(alive & (owner >= 0))[0]
        act = act[~blocked[owner[act]]]
        if act.size == 0:
            break
        vec = attractors[act] - pos[owner[act]]
        vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-9)
        acc = np.zeros((n, 3))
        np.add.at(acc, owner[act], vec)
        grow = np.unique(owner[act])
        dirs = acc[grow]
        strong = np.linalg.norm(dirs, axis=1) > 1e-3
        grow, dirs = grow[strong], _unit(dirs[strong])
        dirs = _unit(dirs + rng.normal(0.0, C.VESSEL_JITTER, dirs.shape))
        cand = pos[grow] + step * dirs
        ok = margin(cand) >= C.VESSEL_NODE_MIN_MARGIN_MM
        blocked[grow[~ok]] = True
        grow, cand = grow[ok], cand[ok]
        m = min(len(grow), cap - n)
        if m <= 0:
            break
        pos[n : n + m] = cand[:m]
        parent[n : n + m] = grow[:m]
        new = np.arange(n, n + m)
        batches.append((n, n + m))
        n += m
    pos, parent = pos[:n], parent[:n]
    weight = np.zeros(n)
    has_child = np.zeros(n, dtype=bool)
    has_child[parent[parent >= 0]] = True
    weight[~has_child] = leaf_radius**murray
    for lo, hi in reversed(batches):  # children are always made after their parents
        np.add.at(weight, parent[lo:hi], weight[lo:hi])
    radius = np.minimum(weight ** (1.0 / murray), max_radius)
    child = np.arange(len(roots), n)
    return Segments(pos[parent[child]], pos[child], radius[child], np.zeros(child.size))


_HILUM_STEP_MM = 2.0
_HILUM_MAX_STEPS = 60


def _enter_lung(
    margin: Callable[[np.ndarray], np.ndarray], start: np.ndarray, direction: np.ndarray, side: int, radius: float
) -> np.ndarray | None:
    """First point (world mm) on a lateral-leaning line from a hilar ``start`` that is well inside the lung.

    Trees start where their root reaches the lung (margin at least its radius + 1.5 mm); ``None``
    if it does not within ``_HILUM_STEP_MM * _HILUM_MAX_STEPS``.
    """
    step = _unit(direction + np.array([float(side), 0.0, 0.0])) * _HILUM_STEP_MM
    pts = start + step * np.arange(1, _HILUM_MAX_STEPS + 1)[:, None]
    ok = np.nonzero(margin(pts) >= radius + C.HILUM_ENTRY_MARGIN_MM)[0]
    return pts[ok[0]] if ok.size else None


def _airway_lumen(r: float) -> float:
    return max(r - max(C.AIRWAY_MIN_WALL_MM, C.AIRWAY_WALL_FRACTION * r), 0.0)


def grow_airways_and_vessels(patient: Patient, rng: np.random.Generator) -> None:
    """Trachea, main bronchi, the bronchial trees and the pulmonary arterial and venous trees."""
    u = lambda r: uniform(rng, r)  # noqa: E731
    tx, ty = patient.trachea_xy
    top = np.array([tx, ty, patient.z_apex + C.TRACHEA_ABOVE_APEX_MM])
    carina = np.array([tx, ty, patient.carina_z])
    rt = patient.trachea_r
    trachea = Segments(top[None], carina[None], np.array([rt]), np.array([_airway_lumen(rt)]))
    segs = [trachea]
    margin = patient.lung_margin
    airway_roots: list[tuple[np.ndarray, np.ndarray, float]] = []
    vessel_roots: dict[int, list[tuple[np.ndarray, np.ndarray, float]]] = {1: [], -1: []}
    hilar: list[Segments] = []
    for side, (angle, length_range, ratio) in C.MAIN_BRONCHI.items():
        jitter = C.BRONCHUS_ANGLE_JITTER_DEG
        ang = math.radians(angle + u((-jitter, jitter)))
        d = _unit(np.array([side * math.sin(ang), -C.BRONCHUS_POSTERIOR_TILT, -math.cos(ang)]))
        r_main = rt * ratio
        end = carina + d * u(length_range)
        segs.append(Segments(carina[None], end[None], np.array([r_main]), np.array([_airway_lumen(r_main)])))
        patient.hila["right" if side > 0 else "left"] = end
        lateral = np.array([side, 1.0, 1.0])
        for dv in C.LOBAR_DIRECTIONS[side]:
            dj = _unit(np.array(dv) + rng.normal(0.0, C.LOBAR_DIRECTION_JITTER, 3))
            r_lobar = r_main * u(C.LOBAR_RADIUS_RATIO)
            entry = _enter_lung(margin, end, dj, side, r_lobar)
            if entry is not None:
                hilar.append(Segments(end[None], entry[None], np.array([r_lobar]), np.array([_airway_lumen(r_lobar)])))
                airway_roots.append((entry, dj, r_lobar))
            start = end + lateral * np.array(C.ARTERY_OFFSET_MM)
            dv_art = _unit(dj + rng.normal(0.0, C.VESSEL_DIRECTION_JITTER, 3))
            r_art = u(C.VESSEL_ROOT_RADIUS_MM)
            entry = _enter_lung(margin, start, dv_art, side, r_art)
            if entry is not None:
                vessel_roots[side].append((entry, dv_art, r_art))
        venous = end + lateral * np.array(C.VEIN_OFFSET_MM)
        for dv in C.VEIN_DIRECTIONS:
            dv_vein = _unit(lateral * np.array(dv) + rng.normal(0.0, C.VESSEL_DIRECTION_JITTER, 3))
            r_vein = u(C.VESSEL_ROOT_RADIUS_MM)
            entry = _enter_lung(margin, venous, dv_vein, side, r_vein)
            if entry is not None:
                vessel_roots[side].append((entry, dv_vein, r_vein))
    airways = grow_tree(
        airway_roots,
        margin,
        rng,
        min_radius=C.AIRWAY_MIN_RADIUS_MM,
        max_segments=C.AIRWAY_MAX_SEGMENTS,
        length_per_radius=C.AIRWAY_LENGTH_PER_RADIUS,
        major_ratio=C.AIRWAY_MAJOR_RATIO,
        minor_ratio=C.AIRWAY_MINOR_RATIO,
        lumen_fraction=1.0 - C.AIRWAY_WALL_FRACTION,
    )
    patient.airways = Segments.concat([*segs, *hilar, airways])
    patient.vessels = Segments.concat(
        [
            colonize(roots, sample_lung_points(patient, rng, side, C.VESSEL_ATTRACTOR_SPACING_MM), margin, rng)
            for side, roots in vessel_roots.items()
        ]
    )
