"""Synthetic lung nodules: their draw, their LIDC labels, their placement in the lungs and rendering.

A :class:`Nodule` is drawn in three steps: :func:`draw_nodule` (type, size, shape, density and
geometry), :func:`place_nodules` (a centre inside the lungs that realises its location: isolated,
touching a vessel, or touching the chest wall) and :func:`label_nodule` (the eight LIDC attributes and
the malignancy rating, from the drawn parameters; see the package docstring for the model).
:func:`render_nodule` paints it into a volume being rendered.

The nodule *body* is a star-shaped solid: in a frame rotated by ``rotation`` and scaled by ``axes``
its surface is at radius ``scale * R(u)`` in direction ``u``, with ``R(u) = 1 + sum_j A_j (exp((u.v_j
- 1) / w) - mean)`` (lobes of amplitude ``A_j`` around directions ``v_j``). ``scale`` makes the body's
volume that of a sphere of ``diameter_mm``. Spicules are thin tapering cones that start on the surface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from lung_nodule_mtl.constants import Attribute, malignancy_label_from_score
from lung_nodule_mtl.data.synthetic import config as C
from lung_nodule_mtl.data.synthetic.anatomy import Patient
from lung_nodule_mtl.data.synthetic.config import SynthConfig, Tissue
from lung_nodule_mtl.data.synthetic.geometry import (
    Grid,
    fibonacci_sphere,
    perpendicular_unit,
    random_rotation,
    random_unit_vectors,
    segment_distance,
    slab_occupancy,
    surface_occupancy,
)
from lung_nodule_mtl.utils.deprecation import RenamedAttribute

__all__ = [
    "Nodule",
    "draw_nodule",
    "label_nodule",
    "lidc_attributes",
    "malignancy_model",
    "place_nodules",
    "render_nodule",
]

_SPHERE = fibonacci_sphere(1024)
_GGO_CLASS_BELOW_HU = -300.0
"""Nodule voxels fainter than this are ground glass in the tissue map."""


def _lobe_mean(width: float) -> float:
    """Mean over the sphere of ``exp((cos(angle) - 1) / width)``."""
    return 0.5 * width * (1.0 - math.exp(-2.0 / width))


@dataclass
class Nodule:
    """One synthetic nodule: drawn parameters, position, and labels.

    Lengths are mm and positions RAS world mm; densities HU. ``attributes`` holds the eight LIDC
    ratings (LIDC's 1-based scales), ``malignancy_score`` the 1-5 rating and ``malignancy`` the
    binary label (1 malignant, 0 benign, -1 indeterminate). The former attribute names ``centre``,
    ``calc_centres`` and ``inclusion_centres`` still read and set ``center``, ``calc_centers`` and
    ``inclusion_centers``, with a ``FutureWarning``.
    """

    nodule_type: str
    shape: str
    location: str
    diameter_mm: float
    rotation: np.ndarray
    axes: np.ndarray
    lobe_dirs: np.ndarray
    lobe_amps: np.ndarray
    lobulation_amplitude: float
    scale: float
    edge_mm: float
    base_hu: float
    solid_hu: float
    heterogeneity_hu: float
    waves: np.ndarray
    wave_phases: np.ndarray
    spicule_dirs: np.ndarray
    spicule_lengths: np.ndarray
    spicule_radii: np.ndarray
    spicule_length_ratio: float
    solid_ratio: float = 1.0
    solid_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))
    calcification: int = 6
    calcium_hu: float = 0.0
    calc_centers: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    calc_radii: np.ndarray = field(default_factory=lambda: np.zeros(0))
    calc_rings: np.ndarray = field(default_factory=lambda: np.zeros(0))
    internal_structure: int = 1
    inclusion_hu: float = 0.0
    inclusion_centers: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    inclusion_radii: np.ndarray = field(default_factory=lambda: np.zeros(0))
    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    nodule_id: str = "1"
    attributes: dict[str, int] = field(default_factory=dict)
    malignancy_probability: float = 0.0
    malignancy_score: int = 0
    malignancy: int = 0

    centre = RenamedAttribute("center")  # deprecated alias
    calc_centres = RenamedAttribute("calc_centers")  # deprecated alias
    inclusion_centres = RenamedAttribute("inclusion_centers")  # deprecated alias

    # ----------------------------------------------------------------------------------- geometry
    def radial(self, u: np.ndarray) -> np.ndarray:
        """``R(u)`` of unit directions ``u`` (``(..., 3)``), in units of ``scale``."""
        r = np.ones(u.shape[:-1])
        mean = _lobe_mean(C.LOBE_WIDTH)
        for v, amp in zip(self.lobe_dirs, self.lobe_amps, strict=True):
            dot = u[..., 0] * v[0] + u[..., 1] * v[1] + u[..., 2] * v[2]
            r += amp * (np.exp((dot - 1.0) / C.LOBE_WIDTH) - mean)
        return r

    @property
    def radius_max(self) -> float:
        """Largest distance (mm) from the centre to the body surface."""
        return float(self.scale * self.radial(_SPHERE).max() * self.axes.max())

    @property
    def radius_min(self) -> float:
        """Smallest distance (mm) from the centre to the body surface (a lower bound)."""
        return float(self.scale * self.radial(_SPHERE).min() * self.axes.min())

    @property
    def extent_mm(self) -> float:
        """Radius (mm) of a sphere around the centre that holds the body, its spicules and its soft edge."""
        spic = float(self.spicule_lengths.max()) if len(self.spicule_lengths) else 0.0
        return self.radius_max + spic + self.edge_mm + 1.0

    def spicule_segments(self) -> tuple[np.ndarray, np.ndarray]:
        """Start (on the body surface) and tip of each spicule, world mm ``(S, 3)``."""
        if not len(self.spicule_dirs):
            return np.zeros((0, 3)), np.zeros((0, 3))
        m = self.rotation * self.axes
        surface = (self.scale * C.SPICULE_ROOT * self.radial(self.spicule_dirs))[:, None] * self.spicule_dirs
        start = self.center + surface @ m.T
        out = surface @ m.T
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return start, start + out * self.spicule_lengths[:, None]

    def signed_distance(self, vx: np.ndarray, vy: np.ndarray, vz: np.ndarray) -> np.ndarray:
        """Approximate signed distance (mm, negative inside) to the body surface, radially.

        ``vx, vy, vz`` are broadcastable world offsets (mm) from the centre.
        """
        q = self.rotation
        comps = [(q[0, a] * vx + q[1, a] * vy + q[2, a] * vz) / self.axes[a] for a in range(3)]
        rho = np.sqrt(comps[0] ** 2 + comps[1] ** 2 + comps[2] ** 2)
        safe = np.maximum(rho, 1e-6)
        u = np.stack([c / safe for c in comps], axis=-1)
        u[rho < 1e-6] = (1.0, 0.0, 0.0)  # the centre itself: any direction
        mm_per_unit = np.sqrt(((u * self.axes) ** 2).sum(axis=-1))
        return (rho - self.scale * self.radial(u)) * mm_per_unit

    # ----------------------------------------------------------------------------------- output
    def record(self) -> dict[str, Any]:
        """JSON-friendly description: centre, size, type, shape, location, ratings and labels."""
        return {
            "nodule_id": self.nodule_id,
            "center_world_mm": [round(float(c), 4) for c in self.center],
            "diameter_mm": round(self.diameter_mm, 3),
            "nodule_type": self.nodule_type,
            "shape": self.shape,
            "location": self.location,
            "malignancy": self.malignancy,
            "malignancy_score": self.malignancy_score,
            "malignancy_probability": round(self.malignancy_probability, 4),
            **{str(k): int(v) for k, v in self.attributes.items()},
        }


# --------------------------------------------------------------------------------------------- draw
def _choice(rng: np.random.Generator, probs: dict[Any, float]) -> Any:
    keys = list(probs)
    p = np.array([probs[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _truncated_lognormal(rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float) -> float:
    a, b = ndtr(math.log(lo / median) / sigma), ndtr(math.log(hi / median) / sigma)
    return float(np.clip(median * math.exp(sigma * float(ndtri(rng.uniform(a, b)))), lo, hi))


def _shape_probabilities(nodule_type: str, diameter: float) -> tuple[float, float, float]:
    if nodule_type == "solid":
        small, large = C.SOLID_SIZE_CLASSES_MM
        size = "small" if diameter < small else "large" if diameter >= large else "medium"
        return C.SHAPE_PROBABILITIES[("solid", size)]
    return C.SHAPE_PROBABILITIES[(nodule_type, None)]


def draw_nodule(rng: np.random.Generator, config: SynthConfig, nodule_type: str | None = None) -> Nodule:
    """Draw a nodule's type, diameter, shape, geometry and densities (not yet placed nor labelled).

    Args:
        rng: random generator of the nodule.
        config: generator options (type and location probabilities, diameter range).
        nodule_type: force a type (one of ``NODULE_TYPES``) instead of drawing it.
    """
    ntype = nodule_type or _choice(rng, dict(config.nodule_type_probabilities))
    median, sigma = C.DIAMETER_LOGNORMAL[ntype]
    diameter = _truncated_lognormal(rng, median, sigma, *config.diameter_mm)
    shape = C.SHAPES[int(rng.choice(3, p=np.array(_shape_probabilities(ntype, diameter))))]
    location = _choice(rng, dict(config.location_probabilities))

    q_lo, q_hi = C.CALCIFIED_AXIS_RATIO if ntype == "calcified" else C.AXIS_RATIO[shape]
    ratio = rng.uniform(q_lo, q_hi)
    axes = np.array([1.0, rng.uniform(ratio, 1.0), ratio])
    n_lobes = int(rng.integers(C.LOBE_COUNT[0], C.LOBE_COUNT[1] + 1))
    amp = float(rng.uniform(*C.LOBULATION_AMPLITUDE[shape]))
    lobe_dirs = random_unit_vectors(rng, n_lobes)
    lobe_amps = amp * rng.uniform(*C.LOBE_AMPLITUDE_SPREAD, n_lobes)
    lobe_amps *= amp / max(float(lobe_amps.max()), 1e-9) if amp > 0 else 1.0

    nod = Nodule(
        nodule_type=ntype,
        shape=shape,
        location=location,
        diameter_mm=diameter,
        rotation=random_rotation(rng),
        axes=axes,
        lobe_dirs=lobe_dirs,
        lobe_amps=lobe_amps,
        lobulation_amplitude=amp,
        scale=1.0,
        edge_mm=float(rng.uniform(*C.EDGE_WIDTH_MM[ntype if ntype in C.EDGE_WIDTH_MM else shape])),
        base_hu=float(rng.uniform(*(C.GGO_HU if ntype in ("ground_glass", "part_solid") else C.SOLID_HU))),
        solid_hu=float(rng.uniform(*C.SOLID_HU)),
        heterogeneity_hu=float(rng.uniform(*C.NODULE_HETEROGENEITY_HU)),
        waves=random_unit_vectors(rng, 3) * (2 * np.pi / rng.uniform(*C.WAVELENGTH_MM, (3, 1))),
        wave_phases=rng.uniform(0, 2 * np.pi, 3),
        spicule_dirs=np.zeros((0, 3)),
        spicule_lengths=np.zeros(0),
        spicule_radii=np.zeros(0),
        spicule_length_ratio=0.0,
    )
    mean_r3 = float(np.mean(nod.radial(_SPHERE) ** 3))
    nod.scale = 0.5 * diameter / (mean_r3 * float(np.prod(axes))) ** (1.0 / 3.0)
    r_eq = 0.5 * diameter

    n_spic, ratio_range = 0, (0.0, 0.0)
    if shape == "spiculated":
        n_spic, ratio_range = int(rng.integers(C.SPICULE_COUNT[0], C.SPICULE_COUNT[1] + 1)), C.SPICULE_LENGTH_RATIO
    elif ntype != "calcified" and rng.random() < C.MINOR_STRAND_PROBABILITY:
        lo, hi = C.MINOR_STRAND_COUNT
        n_spic, ratio_range = int(rng.integers(lo, hi + 1)), C.MINOR_STRAND_LENGTH_RATIO
    if n_spic:
        lam = float(rng.uniform(*ratio_range))
        nod.spicule_length_ratio = lam
        nod.spicule_dirs = random_unit_vectors(rng, n_spic)
        spread = rng.uniform(*C.SPICULE_LENGTH_SPREAD, n_spic)
        nod.spicule_lengths = np.minimum(lam * r_eq * spread, C.SPICULE_MAX_MM)
        nod.spicule_radii = rng.uniform(*C.SPICULE_BASE_RADIUS_MM, n_spic)

    if ntype == "part_solid":
        nod.solid_ratio = float(rng.uniform(*C.PART_SOLID_RATIO))
        free = (1.0 - nod.solid_ratio) * nod.radius_min * C.SOLID_CORE_MAX_OFFSET
        nod.solid_offset = random_unit_vectors(rng, 1)[0] * rng.uniform(0.0, max(free, 0.0))
    elif ntype == "ground_glass":
        nod.solid_ratio = 0.0

    big = diameter >= C.INCLUSION_MIN_DIAMETER_MM
    if ntype == "calcified":
        nod.calcification = int(_choice(rng, C.CALCIFICATION_PATTERN_PROBABILITIES))
        nod.calcium_hu = float(rng.uniform(*C.CALCIUM_HU))
        _draw_calcification(nod, rng)
        if nod.calcification == 1 and big and rng.random() < C.HAMARTOMA_FAT_PROBABILITY:
            nod.internal_structure = 3
            nod.inclusion_hu = float(rng.uniform(*C.NODULE_FAT_HU))
            nod.inclusion_centers = random_unit_vectors(rng, 1) * C.HAMARTOMA_FAT_OFFSET * nod.radius_min
            nod.inclusion_radii = np.array([rng.uniform(*C.HAMARTOMA_FAT_RADIUS) * nod.radius_min])
    elif ntype in ("solid", "part_solid") and big and rng.random() < C.AIR_BUBBLE_PROBABILITY:
        nod.internal_structure = 4
        nod.inclusion_hu = C.AIR_HU
        n = int(rng.integers(C.AIR_BUBBLE_COUNT[0], C.AIR_BUBBLE_COUNT[1] + 1))
        offset = rng.uniform(0.0, C.AIR_BUBBLE_MAX_OFFSET, (n, 1)) * nod.radius_min
        nod.inclusion_centers = random_unit_vectors(rng, n) * offset
        nod.inclusion_radii = np.maximum(rng.uniform(*C.AIR_BUBBLE_RADIUS, n) * diameter, C.AIR_BUBBLE_MIN_RADIUS_MM)
    return nod


def _draw_calcification(nod: Nodule, rng: np.random.Generator) -> None:
    """Blobs (and rings) of calcium for the nodule's LIDC calcification pattern."""
    rmin = nod.radius_min
    floor = C.MIN_CALCIFICATION_RADIUS_MM
    pattern = C.CALCIFICATION_PATTERNS[nod.calcification]
    if pattern == "central":
        nod.calc_centers = np.zeros((1, 3))
        nod.calc_radii = np.array([max(rng.uniform(*C.CENTRAL_CALCIUM_RADIUS) * rmin, floor)])
    elif pattern == "non_central":
        r = max(rng.uniform(*C.NON_CENTRAL_CALCIUM_RADIUS) * rmin, floor)
        nod.calc_centers = random_unit_vectors(rng, 1) * max(rmin - r, 0.0) * C.CALCIUM_MAX_OFFSET
        nod.calc_radii = np.array([r])
    elif pattern == "laminated":
        nod.calc_centers = np.zeros((1, 3))
        nod.calc_radii = np.array([max(C.LAMINATED_CORE * rmin, floor)])
        nod.calc_rings = np.array(C.LAMINATED_RINGS) * rmin
    elif pattern == "popcorn":
        n = int(rng.integers(C.POPCORN_COUNT[0], C.POPCORN_COUNT[1] + 1))
        radii = np.maximum(rng.uniform(*C.POPCORN_RADIUS, n) * rmin, floor)
        dist = rng.uniform(0.0, C.CALCIUM_MAX_OFFSET, n) * np.maximum(rmin - radii, 0.0)
        nod.calc_centers = random_unit_vectors(rng, n) * dist[:, None]
        nod.calc_radii = radii
    # "solid": the whole body is calcified (no blobs needed)


# --------------------------------------------------------------------------------------------- labels
def lidc_attributes(nod: Nodule, rng: np.random.Generator) -> dict[str, int]:
    """The eight LIDC ratings of a drawn nodule (LIDC's 1-based scales), as the package docstring states."""
    ntype, shape = nod.nodule_type, nod.shape
    ratio = float(nod.axes.min() / nod.axes.max())
    sphericity = 1 + int(np.searchsorted(C.SPHERICITY_CUTS, ratio, side="right"))
    if nod.lobulation_amplitude >= C.LOBULATION_SPHERICITY_PENALTY:
        sphericity -= 1
    lobulation = 1 + int(nod.lobulation_amplitude // C.LOBULATION_STEP)
    if shape == "spiculated":
        n = len(nod.spicule_lengths)
        spiculation = 3 + int(nod.spicule_length_ratio >= C.SPICULATION_LONG_RATIO) + int(n >= C.SPICULATION_MANY)
    else:
        spiculation = 2 if len(nod.spicule_lengths) else 1
    margin = 5 - int(nod.edge_mm // C.MARGIN_STEP_MM)
    if shape == "spiculated" or ntype == "ground_glass":
        margin = min(margin, 3)
    if ntype == "ground_glass":
        texture = 1 if nod.base_hu < C.GGO_TEXTURE_1_BELOW_HU else 2
    elif ntype == "part_solid":
        texture = 2 + int(np.searchsorted(C.PART_SOLID_TEXTURE_CUTS, nod.solid_ratio, side="right"))
    else:
        texture = 5
    offsets = C.SUBTLETY_OFFSETS
    s = 1.0 + C.SUBTLETY_PER_DOUBLING * math.log2(nod.diameter_mm / 3.0)
    s += offsets.get(ntype, 0.0) + offsets.get(nod.location, 0.0)
    s += offsets["texture_2"] if (ntype == "ground_glass" and texture == 2) else 0.0
    s += float(rng.normal(0.0, C.SUBTLETY_NOISE))
    clip = lambda v, n: int(min(max(v, 1), n))  # noqa: E731
    return {
        Attribute.SUBTLETY.value: clip(round(s), 5),
        Attribute.INTERNAL_STRUCTURE.value: clip(nod.internal_structure, 4),
        Attribute.CALCIFICATION.value: clip(nod.calcification, 6),
        Attribute.SPHERICITY.value: clip(sphericity, 5),
        Attribute.MARGIN.value: clip(margin, 5),
        Attribute.LOBULATION.value: clip(lobulation, 5),
        Attribute.SPICULATION.value: clip(spiculation, 5),
        Attribute.TEXTURE.value: clip(texture, 5),
    }


def malignancy_model(
    attributes: dict[str, int], nodule_type: str, location: str, diameter_mm: float, noise: float = 0.0
) -> tuple[float, int]:
    """Malignancy probability and 1-5 rating of a nodule (the documented logistic model).

    Args:
        attributes: the LIDC ratings (:func:`lidc_attributes`).
        nodule_type: one of ``NODULE_TYPES``.
        location: one of ``LOCATIONS``.
        diameter_mm: volume-equivalent diameter (mm).
        noise: the logit noise term (drawn ``N(0, MALIGNANCY_NOISE)`` by :func:`label_nodule`).

    Returns:
        ``(probability, score)``; calcified nodules get ``CALCIFIED_LOGIT`` added, and their score is
        set to 1 or 2 by :func:`label_nodule`.
    """
    logit = (
        C.MALIGNANCY_INTERCEPT
        + C.MALIGNANCY_LOG_DIAMETER * math.log(diameter_mm / 10.0)
        + C.MALIGNANCY_SPICULATION * (attributes[Attribute.SPICULATION] - 1)
        + C.MALIGNANCY_LOBULATION * (attributes[Attribute.LOBULATION] - 1)
        + C.MALIGNANCY_POOR_MARGIN * (5 - attributes[Attribute.MARGIN])
        + C.MALIGNANCY_PART_SOLID * (nodule_type == "part_solid")
        + C.MALIGNANCY_GROUND_GLASS * (nodule_type == "ground_glass")
        + C.MALIGNANCY_AIR * (attributes[Attribute.INTERNAL_STRUCTURE] == 4)
        + C.MALIGNANCY_JUXTA_PLEURAL * (location == "juxta_pleural")
        + C.CALCIFIED_LOGIT * (nodule_type == "calcified")
        + noise
    )
    p = 1.0 / (1.0 + math.exp(-logit))
    return p, 1 + int(np.searchsorted(C.MALIGNANCY_SCORE_CUTS, p, side="right"))


def label_nodule(nod: Nodule, rng: np.random.Generator) -> None:
    """Set the nodule's LIDC attributes, malignancy probability, rating and binary label (in place)."""
    nod.attributes = lidc_attributes(nod, rng)
    p, score = malignancy_model(
        nod.attributes, nod.nodule_type, nod.location, nod.diameter_mm, float(rng.normal(0.0, C.MALIGNANCY_NOISE))
    )
    if nod.nodule_type == "calcified":
        score = 1 if rng.random() < C.CALCIFIED_SCORE_1_PROBABILITY else 2
    nod.malignancy_probability = p
    nod.malignancy_score = score
    label = malignancy_label_from_score(score)
    nod.malignancy = int(label) if label is not None else -1


# --------------------------------------------------------------------------------------------- placement
def _snap(points: np.ndarray, grid: Grid | None) -> np.ndarray:
    if grid is None:
        return points
    return grid.voxel_to_world(np.rint(grid.world_to_voxel(points)))


def _candidates(
    patient: Patient, nod: Nodule, rng: np.random.Generator, n: int, z_range: tuple[float, float]
) -> np.ndarray:
    """Candidate centres ``(n, 3)`` (world mm) for the nodule's location type."""
    lo, hi = patient.lung_box()
    if nod.location == "juxta_pleural":
        phi = rng.uniform(-np.pi, np.pi, n)
        z = rng.uniform(z_range[0], z_range[1], n)
        target = rng.uniform(*C.PLEURAL_CONTACT, n) * nod.radius_min
        r = patient._inv_k(phi) * patient.scale(z) - patient.wall(phi)[2] - target
        return np.stack([patient.x0 + r * np.sin(phi), patient.y0 + r * np.cos(phi), z], axis=1)
    if nod.location == "juxta_vascular":
        segs = patient.vessels
        ok = (segs.radius >= C.JUXTA_VESSEL_RADIUS_MM[0]) & (segs.radius <= C.JUXTA_VESSEL_RADIUS_MM[1])
        idx = np.nonzero(ok)[0]
        if idx.size == 0:
            return np.zeros((0, 3))
        pick = idx[rng.integers(0, idx.size, n)]
        a, b, rv = segs.p0[pick], segs.p1[pick], segs.radius[pick]
        t = rng.uniform(*C.JUXTA_VESSEL_POSITION, (n, 1))
        axis = b - a
        axis /= np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-9)
        perp = perpendicular_unit(axis, rng)
        dist = rv + rng.uniform(*C.VASCULAR_CONTACT, n) * nod.radius_min
        return a + t * (b - a) + perp * dist[:, None]
    u = rng.uniform(0.0, 1.0, (n, 3))
    lo = np.array([lo[0], lo[1], z_range[0]])
    hi = np.array([hi[0], hi[1], z_range[1]])
    return lo + u * (hi - lo)


def _valid(
    patient: Patient,
    nod: Nodule,
    pts: np.ndarray,
    placed: list[Nodule],
    separation: float,
    grid: Grid | None,
    z_range: tuple[float, float],
) -> np.ndarray:
    """Which candidate centres satisfy the nodule's location and the clearances (see the constants)."""
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    rmax = nod.radius_max
    ok = (z >= z_range[0]) & (z <= z_range[1])
    central = patient._central_margin(x, y, z)
    wall = patient._wall_margin(x, y, z)
    if nod.location == "juxta_pleural":
        lo, hi = C.PLEURAL_CONTACT_LIMITS
        ok &= (central >= rmax + C.NODULE_LUNG_CLEARANCE_MM) & (wall > lo * nod.radius_min)
        ok &= wall < hi * nod.radius_min
    else:
        ok &= np.minimum(central, wall) >= rmax + C.NODULE_LUNG_CLEARANCE_MM
    if nod.location == "isolated" and ok.any():
        thick = patient.vessels.subset(patient.vessels.radius >= C.ISOLATED_VESSEL_RADIUS_MM)
        if len(thick):
            clear = (thick.distance(pts[ok]) - thick.radius[None, :]).min(axis=1) >= rmax + 1.0
            ok[np.nonzero(ok)[0][~clear]] = False
    if ok.any() and len(patient.airways):
        air = patient.airways
        clear = (air.distance(pts[ok]) - air.radius[None, :]).min(axis=1) >= rmax + C.AIRWAY_CLEARANCE_MM
        ok[np.nonzero(ok)[0][~clear]] = False
    for other in placed:
        need = nod.extent_mm + other.extent_mm + separation
        ok &= np.linalg.norm(pts - other.center, axis=1) >= need
    if grid is not None:
        margin_vox = nod.extent_mm / min(grid.spacing) + C.GRID_MARGIN_VOXELS
        ok &= grid.contains(pts, margin_voxels=margin_vox)
    return ok


def place_nodules(
    patient: Patient,
    nodules: list[Nodule],
    rng: np.random.Generator,
    z_range: tuple[float, float] | None = None,
    grid: Grid | None = None,
    separation: float = C.NODULE_SEPARATION_MM,
) -> list[Nodule]:
    """Give each nodule a centre in the lungs that realises its location; drop those that find none.

    Candidates are drawn in batches of ``PLACEMENT_CANDIDATES`` for at most ``PLACEMENT_ROUNDS``
    rounds; a nodule that cannot be placed as drawn falls back to ``isolated``, and is dropped if
    that fails too. With a ``grid`` (scans), centres are snapped to voxel centres and must leave the
    whole nodule inside the grid.

    Args:
        patient: the anatomy.
        nodules: drawn nodules; their ``center`` (and possibly ``location``) are set.
        rng: random generator.
        z_range: world z range (mm) allowed for centres; default the lungs' height.
        grid: the scan grid, if any.
        separation: free space (mm) between the extents of two nodules.

    Returns:
        The placed nodules, in order, numbered ``"1"``, ``"2"``, ...
    """
    zr = z_range if z_range is not None else (patient.z_base, patient.z_apex)
    placed: list[Nodule] = []
    for nod in nodules:
        for location in dict.fromkeys([nod.location, "isolated"]):
            nod.location = location
            centre = None
            for _ in range(C.PLACEMENT_ROUNDS):
                pts = _snap(_candidates(patient, nod, rng, C.PLACEMENT_CANDIDATES, zr), grid)
                if len(pts) == 0:
                    break
                ok = _valid(patient, nod, pts, placed, separation, grid, zr)
                if ok.any():
                    centre = pts[int(np.argmax(ok))]
                    break
            if centre is not None:
                nod.center = centre
                nod.nodule_id = str(len(placed) + 1)
                placed.append(nod)
                break
    return placed


# --------------------------------------------------------------------------------------------- render
def render_nodule(
    nod: Nodule,
    grid: Grid,
    hu: np.ndarray,
    tissue: np.ndarray,
    lung: np.ndarray,
    mask: np.ndarray,
) -> bool:
    """Paint a nodule into a volume being rendered (before noise and blur), in place.

    The nodule replaces lung parenchyma only (it is cut by the pleura, so a juxta-pleural nodule
    does not enter the chest wall); vessels that cross a ground-glass nodule stay visible (the
    denser of nodule and background is kept), air and fat inclusions replace it. ``mask`` gets the
    body of the nodule (surface at half occupancy); spicules are drawn in the image but are **not**
    part of the mask, so that the mask's volume matches ``diameter_mm``.

    Args:
        nod: the placed nodule.
        grid: the volume's grid.
        hu: float32 HU volume ``(nx, ny, nz)``.
        tissue: uint8 :class:`Tissue` map.
        lung: lung mask.
        mask: uint8 nodule mask (0/1) being built.

    Returns:
        Whether any of the nodule lies in the grid.
    """
    ext = nod.extent_mm + 2.0 * max(grid.spacing)
    box = grid.box(nod.center - ext, nod.center + ext)
    if box is None:
        return False
    bx, by, bz = grid.box_axes(box)
    vx, vy, vz = bx - nod.center[0], by - nod.center[1], bz - nod.center[2]
    h = float(np.prod(grid.spacing)) ** (1.0 / 3.0)
    sd = nod.signed_distance(vx, vy, vz)
    body = surface_occupancy(sd, max(h, nod.edge_mm))
    lung_b = lung[box]
    sub = hu[box]

    dens = nod.base_hu + nod.heterogeneity_hu / math.sqrt(3.0) * sum(
        np.cos(k[0] * vx + k[1] * vy + k[2] * vz + ph) for k, ph in zip(nod.waves, nod.wave_phases, strict=True)
    )
    dens = np.broadcast_to(dens, sd.shape).astype(np.float32)
    calc = np.zeros(sd.shape, np.float32)
    if nod.nodule_type == "part_solid":
        o = nod.solid_offset
        core_r = 0.5 * nod.solid_ratio * nod.diameter_mm
        core = surface_occupancy(np.sqrt((vx - o[0]) ** 2 + (vy - o[1]) ** 2 + (vz - o[2]) ** 2) - core_r, h)
        dens += core * (nod.solid_hu - dens)
    if nod.nodule_type == "calcified":
        calc = _calcium(nod, vx, vy, vz, sd, h)
        dens += calc * (nod.calcium_hu - dens)

    if len(nod.spicule_lengths):
        spic = np.zeros(sd.shape, np.float32)
        starts, tips = nod.spicule_segments()
        for a, b, r0 in zip(starts, tips, nod.spicule_radii, strict=True):
            dist, t = segment_distance(bx, by, bz, a, b)
            radius = r0 + t * (C.SPICULE_TIP_RADIUS_MM - r0)
            np.maximum(spic, slab_occupancy(dist, radius, h), out=spic)
        spic_hu = max(nod.base_hu, nod.solid_hu) if nod.nodule_type != "ground_glass" else nod.base_hu
        spic *= lung_b
        sub += spic * np.maximum(spic_hu - sub, 0.0)

    body *= lung_b
    sub += body * (np.maximum(dens, sub) - sub)
    if len(nod.inclusion_radii):
        inc = np.zeros(sd.shape, np.float32)
        for c, r in zip(nod.inclusion_centers, nod.inclusion_radii, strict=True):
            d = np.sqrt((vx - c[0]) ** 2 + (vy - c[1]) ** 2 + (vz - c[2]) ** 2) - r
            np.maximum(inc, surface_occupancy(d, h), out=inc)
        inc *= body
        sub += inc * (nod.inclusion_hu - sub)

    inside = (sd <= 0) & lung_b
    cls = np.where(dens < _GGO_CLASS_BELOW_HU, Tissue.NODULE_GGO, Tissue.NODULE_SOLID).astype(np.uint8)
    cls[calc >= 0.5] = Tissue.NODULE_CALCIFIED
    tissue[box][inside] = cls[inside]
    mask[box][inside] = 1
    return bool(inside.any())


def _calcium(nod: Nodule, vx: np.ndarray, vy: np.ndarray, vz: np.ndarray, sd: np.ndarray, h: float) -> np.ndarray:
    """Occupancy (0-1) of calcium inside a calcified nodule, for its pattern."""
    if C.CALCIFICATION_PATTERNS[nod.calcification] == "solid":
        return surface_occupancy(sd, h)
    out = np.zeros(sd.shape, np.float32)
    r = np.sqrt(vx * vx + vy * vy + vz * vz)
    for c, rad in zip(nod.calc_centers, nod.calc_radii, strict=True):
        d = np.sqrt((vx - c[0]) ** 2 + (vy - c[1]) ** 2 + (vz - c[2]) ** 2) - rad
        np.maximum(out, surface_occupancy(d, h), out=out)
    for ring in nod.calc_rings:
        np.maximum(out, surface_occupancy(np.abs(r - ring) - C.LAMINATED_RING_HALF_MM, h), out=out)
    inside = surface_occupancy(sd, h)
    return np.minimum(out, inside, out=out)
