"""Synthetic longitudinal pairs: each nodule at a baseline scan and at a follow-up scan (``growth`` mode).

For nodule growth prediction (predict the follow-up image and mask from the baseline): per nodule a
baseline crop and a follow-up crop on **the same voxel grid**, both rendered from the same patient
anatomy (:func:`~lung_nodule_mtl.data.synthetic.render.render_volume`, exactly as in ``crops`` mode)
with the nodule's parameters changed to its follow-up state. Every number below is a named constant
of :mod:`lung_nodule_mtl.data.synthetic.config` or a field of
:class:`~lung_nodule_mtl.data.synthetic.config.SynthConfig`.

Growth model (per nodule, the truth written with each pair)
    Exponential volume growth ``V(t) = V0 * 2 ** (t / VDT)`` over the interval ``t`` (days) between
    the scans; ``V`` is the volume of the nodule body (the mask: spicules excluded), so the
    volume-equivalent diameter grows by the linear factor ``g = 2 ** (t / (3 VDT))``.

    ================== =========================================== ==============================
    ``growth_model``   who                                         VDT (days)
    ================== =========================================== ==============================
    malignant_solid    growing solid nodules                       log-uniform in [100, 400]
    part_solid         growing part-solid nodules                  log-uniform in [400, 800]
    ground_glass       growing pure ground-glass nodules           log-uniform in [600, 1200]
    benign_stable      stable nodules (all calcified ones)         ``null`` (no change at all)
    benign_shrinking   resolving (inflammatory) nodules            ``-H``, halving time ``H``
                                                                   log-uniform in [150, 600]
    ================== =========================================== ==============================

    Which model (default): calcified nodules are stable; a solid, part-solid or ground-glass nodule
    grows (with its type's model) with probability ``max(p, floor)``, ``p`` its malignancy
    probability (the logistic model of the package docstring) and ``floor`` 0 / 0.5 / 0.3 for solid /
    part-solid / ground-glass (persistent subsolid nodules are often slow adenocarcinomas); otherwise
    it shrinks with probability 0.25, else is stable. On the default nodule mixture that gives about
    48% benign_stable, 26% malignant_solid, 10% part_solid, 6% ground_glass and 9% benign_shrinking.
    ``p`` is that of the nodule as drawn, before its placement; in the rare case where placement
    changes its location (fallback to isolated) the ratings are redone but the model kept. The
    option ``growth_model_probabilities`` replaces this by a fixed mixture, drawn first: a growing
    model then forces the type (``malignant_solid`` -> solid), ``benign_shrinking`` draws a
    non-calcified type.

    Interval: one of 90, 180, 365, 730 days with probabilities by what a reader sees at baseline
    (Fleischner-like): solid < 8 mm 0.10/0.30/0.45/0.15, solid >= 8 mm 0.40/0.35/0.20/0.05,
    part-solid 0.25/0.35/0.30/0.10, ground glass 0.05/0.25/0.40/0.30, calcified 0.05/0.15/0.40/0.40
    (option ``followup_intervals_days``: uniform among the given ones), times U(0.9, 1.1), rounded to
    whole days. The follow-up diameter must stay in [2 mm, ``diameter_mm[1]``] (30 mm by default):
    a nodule that would leave that range takes the longest shorter interval of the list at which
    it does not (with the same jitter); if even the shortest one does not fit, its diameter is
    clipped and ``vdt_days`` is the *effective* VDT ``t ln 2 / ln(V1 / V0)`` (``size_capped`` true,
    ``null`` if nothing changed). So ``V1 = V0 * 2 ** (interval_days / vdt_days)`` holds for every
    written pair (``V1 = V0`` where ``vdt_days`` is ``null``).

Shape and density change (growth is not isotropic; ``g`` the linear factor, ``e`` drawn per nodule)
    * Lobulation: the relative lobe amplitudes scale by ``g ** e``, ``e`` U(0.5, 1.5) (capped at
      0.35), so lobes grow faster than the core and flatten when the nodule shrinks.
    * Spicules: lengths (mm) scale by ``g ** e``, ``e`` U(1.2, 2.0) (faster than the core radius,
      which scales by ``g``), capped at 12 mm; their directions and widths are kept.
    * Axes: each principal semi-axis scales by ``g ** (1 + e_a)``, ``e_a`` U(-0.15, 0.15) per axis
      (the body's volume is then set exactly to ``V1``, and the sphericity changes).
    * Part-solid: the solid component's share of the diameter scales by ``g ** e``, ``e`` U(0.5, 1.5)
      (capped at 0.95): the solid part grows faster than the ground glass (and regresses first).
    * Ground glass: a growing pure ground-glass nodule develops a solid component (becomes
      part-solid at follow-up, ``followup_nodule_type``) with probability
      ``1 - exp(-interval / 1500 days)``, of U(0.15, 0.35) of its diameter, off-centre like a drawn
      one. The ground glass of ground-glass and part-solid nodules gets denser by U(20, 60) HU per
      volume doubling (fainter when shrinking), within [-750, -300] HU.
    * Inclusions (air, fat) and calcifications scale with ``g``; the internal density pattern,
      edge width, orientation and position are kept. A stable nodule is exactly the same.

Registration noise (the follow-up crop is as if the follow-up scan had been registered to the
baseline with a small residual error)
    A rigid transform about the nodule centre ``c``: the follow-up crop shows at world point ``x``
    the anatomy at ``c + R (x - c) + t``; ``R`` a rotation by U(0, ``registration_rotation_deg``)
    (default 3 degrees) about a uniformly random axis, ``t`` uniform in the ball of radius
    ``registration_shift_mm`` (default 2 mm). The nodule centre therefore appears at
    ``c - R^T t``, at most ``registration_shift_mm`` from the baseline centre
    (``followup_center_world_mm``). The follow-up CT is rendered on a slightly larger grid of the
    baseline's spacing and resampled onto the baseline crop grid by cubic B-spline (tissue map and
    lung mask by nearest neighbour); the follow-up mask is not resampled but voxelised on the
    baseline grid like the baseline's (a voxel is in it where the anatomy it shows is inside the
    nodule body, and lung). With no registration noise the grids coincide voxel for voxel and nothing
    is interpolated. The follow-up gets independent image noise (and lung texture, which the renderer
    draws from the same stream) from its own random stream; the scanner (noise level, blur, spacing)
    is the patient's.

Placement and crops
    As in ``crops`` mode (1-3 nodules per patient, 30 mm apart), except that a nodule is placed in
    the lungs as the larger of its two states, so that an isolated nodule keeps its lung margin at
    both times, and its crop grid (:func:`~lung_nodule_mtl.data.synthetic.dataset.crop_grid`) is
    chosen for that state too. Each crop shows the patient's other nodules in their own state.

Streams
    Case ``k`` of seed ``s``: the anatomy, nodule, geometry and image streams of
    :func:`~lung_nodule_mtl.data.synthetic.dataset.generate_case` (so the patient's anatomy is the
    one of ``crops`` and ``scans`` mode) plus a fifth, independent stream for the growth draws; the
    image stream gives each pair two children (baseline, follow-up).

Outputs of :func:`synthesize_dataset` with ``mode="growth"``
    ``images/<case>_t0.nii.gz`` and ``images/<case>_t1.nii.gz`` (int16 HU), ``labels/<case>_t0.nii.gz``
    and ``labels/<case>_t1.nii.gz`` (uint8 0/1, the same affine), ``<case>`` = ``SYN-0001_1``; a
    ``datalist.json`` with one item per pair, split by patient like the other modes (``image`` /
    ``label`` are the baseline's, so an item is also a valid ``crops`` item), with the keys of
    :class:`~lung_nodule_mtl.constants.GrowthKeys` (all paths relative to the datalist; ``vdt_days`` negative for
    shrinking, ``null`` for stable nodules; volumes in mm^3: ``*_volume_mm3`` the model's, ``*_mask_volume_mm3``
    the label's voxels around the nodule, which differ from the model by voxelisation and where the
    pleura cuts a juxta-pleural nodule); and ``growth.csv``, one row per pair (:data:`GROWTH_COLUMNS`).
"""

from __future__ import annotations

import copy
import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lung_nodule_mtl.constants import DatalistSplit, GrowthKeys, Keys
from lung_nodule_mtl.data.synthetic import config as C
from lung_nodule_mtl.data.synthetic.anatomy import Patient, draw_patient
from lung_nodule_mtl.data.synthetic.config import GROWTH_MODELS, SynthConfig, make_config
from lung_nodule_mtl.data.synthetic.dataset import (
    GROWTH_TABLE,
    IMAGES_DIR,
    LABELS_DIR,
    MAX_PLACEMENT_TRIES,
    _check_int,
    _slice_spacing,
    case_id,
    crop_grid,
    volume_items,
)
from lung_nodule_mtl.data.synthetic.geometry import Grid, random_unit_vectors
from lung_nodule_mtl.data.synthetic.nodules import _SPHERE, Nodule, _choice, draw_nodule, label_nodule, place_nodules
from lung_nodule_mtl.data.synthetic.render import SyntheticVolume, render_volume
from lung_nodule_mtl.utils.deprecation import RenamedAttribute, renamed_keyword
from lung_nodule_mtl.utils.io import atomic_write, atomic_write_nifti

__all__ = [
    "GROWTH_COLUMNS",
    "GROWTH_TABLE",
    "Growth",
    "GrowthCase",
    "GrowthKeys",
    "GrowthPair",
    "Registration",
    "draw_growth",
    "draw_growth_model",
    "draw_registration",
    "generate_growth_case",
    "grow_nodule",
    "pair_item",
    "render_followup",
    "write_growth_table",
    "write_pair",
]

BASELINE_SUFFIX, FOLLOWUP_SUFFIX = "_t0", "_t1"
"""File stems of a pair: ``<case>_t0`` (baseline) and ``<case>_t1`` (follow-up)."""
RESAMPLE_PAD_VOXELS = 3
"""The follow-up is rendered on the crop grid padded by the registration's reach plus this many voxels."""

GROWTH_COLUMNS = (
    "case_id",
    "patient_id",
    "nodule_id",
    "split",
    "fold",
    "growth_model",
    "nodule_type",
    "followup_nodule_type",
    "location",
    "interval_days",
    "vdt_days",
    "diameter_mm",
    "followup_diameter_mm",
    "baseline_volume_mm3",
    "followup_volume_mm3",
    "baseline_mask_volume_mm3",
    "followup_mask_volume_mm3",
    "malignancy",
    "malignancy_score",
    "registration_shift_mm",
    "registration_rotation_deg",
    "size_capped",
)
"""Columns of ``growth.csv`` (``vdt_days`` empty for stable nodules, ``fold`` empty for test patients)."""


# --------------------------------------------------------------------------------------------- growth
@dataclass(frozen=True)
class Growth:
    """How one nodule changes between the scans (all drawn by :func:`draw_growth`).

    Attributes:
        growth_model: one of ``GROWTH_MODELS``.
        interval_days: days between baseline and follow-up.
        vdt_days: volume-doubling time (days), negative for shrinking, ``None`` for stable nodules.
        baseline_diameter_mm: volume-equivalent diameter at baseline (mm).
        followup_diameter_mm: volume-equivalent diameter at follow-up (mm).
        lobe_exponent: relative lobe amplitudes scale by ``g ** lobe_exponent``.
        spicule_exponent: spicule lengths scale by ``g ** spicule_exponent``.
        solid_exponent: a part-solid nodule's solid ratio scales by ``g ** solid_exponent``.
        axis_exponents: semi-axis ``a`` scales by ``g ** (1 + axis_exponents[a])``.
        density_hu_per_doubling: ground glass gets denser by this much (HU) per volume doubling.
        emerging_solid_ratio: diameter ratio of a solid component that appears (0: none).
        emerging_solid_direction: unit vector of that component's offset from the centre.
        emerging_solid_position: its offset as a fraction (0-1) of the free room.
        size_capped: the follow-up diameter was clipped (``vdt_days`` is then the effective VDT).
    """

    growth_model: str
    interval_days: int
    vdt_days: float | None
    baseline_diameter_mm: float
    followup_diameter_mm: float
    lobe_exponent: float = 1.0
    spicule_exponent: float = 1.0
    solid_exponent: float = 1.0
    axis_exponents: tuple[float, float, float] = (0.0, 0.0, 0.0)
    density_hu_per_doubling: float = 0.0
    emerging_solid_ratio: float = 0.0
    emerging_solid_direction: tuple[float, float, float] = (1.0, 0.0, 0.0)
    emerging_solid_position: float = 0.0
    size_capped: bool = False

    @property
    def linear_factor(self) -> float:
        """``g``: follow-up over baseline volume-equivalent diameter."""
        return self.followup_diameter_mm / self.baseline_diameter_mm

    @property
    def volume_ratio(self) -> float:
        """``V1 / V0``, which equals ``2 ** (interval_days / vdt_days)`` (1 for stable nodules)."""
        return self.linear_factor**3

    @property
    def baseline_volume_mm3(self) -> float:
        """Model volume of the nodule body at baseline (mm^3)."""
        return math.pi / 6.0 * self.baseline_diameter_mm**3

    @property
    def followup_volume_mm3(self) -> float:
        """Model volume of the nodule body at follow-up (mm^3)."""
        return math.pi / 6.0 * self.followup_diameter_mm**3


def _log_uniform(u: float, lo: float, hi: float) -> float:
    return float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))


def draw_growth_model(nod: Nodule, rng: np.random.Generator) -> str:
    """The default growth model of a drawn and labelled nodule (see the module docstring).

    Args:
        nod: the baseline nodule, with its ``malignancy_probability``.
        rng: random generator (two uniforms are drawn whatever the nodule).
    """
    u_grow, u_shrink = rng.random(2)
    if nod.nodule_type == "calcified":
        return "benign_stable"
    p_grow = max(nod.malignancy_probability, C.GROWTH_PROBABILITY_FLOOR[nod.nodule_type])
    if u_grow < p_grow:
        return C.GROWING_MODEL_OF_TYPE[nod.nodule_type]
    return "benign_shrinking" if u_shrink < C.SHRINKING_PROBABILITY else "benign_stable"


def _interval_choices(nod: Nodule, config: SynthConfig) -> tuple[tuple[float, ...], np.ndarray]:
    if config.followup_intervals_days is not None:
        days = tuple(config.followup_intervals_days)
        return days, np.full(len(days), 1.0 / len(days))
    key = nod.nodule_type
    if key == "solid":
        key = "solid_small" if nod.diameter_mm < C.SOLID_SIZE_CLASSES_MM[0] else "solid_large"
    return C.FOLLOWUP_INTERVALS_DAYS, np.asarray(C.FOLLOWUP_INTERVAL_PROBABILITIES[key], dtype=np.float64)


def draw_growth(nod: Nodule, growth_model: str, rng: np.random.Generator, config: SynthConfig) -> Growth:
    """Draw the interval, VDT and shape-change parameters of a nodule (the random half of the model).

    The same number of values is drawn whatever the model, so one nodule's draw does not shift the
    next one's. :func:`grow_nodule` applies the result.

    Args:
        nod: the baseline nodule (its type and diameter are used).
        growth_model: one of ``GROWTH_MODELS``.
        rng: random generator.
        config: generator options (intervals, diameter bounds).

    Returns:
        The :class:`Growth`, with ``V1 = V0 * 2 ** (interval_days / vdt_days)`` (see the module docstring).
    """
    if growth_model not in GROWTH_MODELS:
        raise ValueError(f"growth_model must be one of {list(GROWTH_MODELS)}, got {growth_model!r}.")
    days, probs = _interval_choices(nod, config)
    k = int(rng.choice(len(days), p=probs / probs.sum()))
    jitter = float(rng.uniform(1.0 - C.INTERVAL_JITTER, 1.0 + C.INTERVAL_JITTER))
    u_vdt = float(rng.random())
    lobe_e, spic_e, solid_e, dens = (
        float(rng.uniform(*r))
        for r in (
            C.LOBE_GROWTH_EXPONENT,
            C.SPICULE_GROWTH_EXPONENT,
            C.SOLID_CORE_GROWTH_EXPONENT,
            C.GGO_DENSITY_HU_PER_DOUBLING,
        )
    )
    axis_e = tuple(float(v) for v in rng.uniform(*C.AXIS_GROWTH_EXPONENT, 3))
    u_emerge = float(rng.random())
    emerge_ratio = float(rng.uniform(*C.EMERGING_SOLID_RATIO))
    emerge_dir = tuple(float(v) for v in random_unit_vectors(rng, 1)[0])
    emerge_pos = float(rng.random())

    if growth_model in C.VDT_DAYS:
        vdt: float | None = _log_uniform(u_vdt, *C.VDT_DAYS[growth_model])
    elif growth_model == "benign_shrinking":
        vdt = -_log_uniform(u_vdt, *C.HALVING_DAYS)
    else:
        vdt = None
    d0 = float(nod.diameter_mm)
    d_lo, d_hi = C.FOLLOWUP_MIN_DIAMETER_MM, float(config.diameter_mm[1])

    def interval_of(i: int) -> int:
        return max(1, round(days[i] * jitter))

    def diameter_at(t: int) -> float:
        return d0 if vdt is None else d0 * 2.0 ** (t / (3.0 * vdt))

    capped = False
    interval = interval_of(k)
    if vdt is not None:
        shorter = sorted((i for i in range(len(days)) if days[i] <= days[k]), key=lambda i: -days[i])
        fitting = [i for i in shorter if d_lo <= diameter_at(interval_of(i)) <= d_hi]
        interval = interval_of(fitting[0] if fitting else shorter[-1])
    d1 = diameter_at(interval)
    if not d_lo <= d1 <= d_hi:
        capped = True
        d1 = min(max(d1, min(d_lo, d0)), max(d_hi, d0))
        vdt = interval * math.log(2.0) / (3.0 * math.log(d1 / d0)) if d1 != d0 else None
    emerging = 0.0
    if growth_model == "ground_glass" and u_emerge < 1.0 - math.exp(-interval / C.SOLID_EMERGENCE_DAYS):
        emerging = emerge_ratio
    return Growth(
        growth_model=growth_model,
        interval_days=int(interval),
        vdt_days=vdt,
        baseline_diameter_mm=d0,
        followup_diameter_mm=float(d1),
        lobe_exponent=lobe_e,
        spicule_exponent=spic_e,
        solid_exponent=solid_e,
        axis_exponents=axis_e,  # type: ignore[arg-type]
        density_hu_per_doubling=dens,
        emerging_solid_ratio=emerging,
        emerging_solid_direction=emerge_dir,  # type: ignore[arg-type]
        emerging_solid_position=emerge_pos,
        size_capped=capped,
    )


def grow_nodule(nod: Nodule, growth: Growth) -> Nodule:
    """The nodule at follow-up: a copy of ``nod`` changed as ``growth`` says (deterministic).

    The body's volume becomes exactly ``growth.followup_volume_mm3`` (the scale is solved for the
    changed lobes and axes); see the module docstring for the shape and density changes. A stable
    nodule is returned unchanged (a copy).
    """
    out = copy.deepcopy(nod)
    g = growth.linear_factor
    emerging = growth.emerging_solid_ratio > 0.0 and nod.nodule_type == "ground_glass"
    if g == 1.0 and not emerging:
        return out
    out.diameter_mm = float(growth.followup_diameter_mm)
    if g != 1.0:
        out.lobe_amps = np.minimum(nod.lobe_amps * g**growth.lobe_exponent, C.MAX_LOBE_AMPLITUDE)
        out.lobulation_amplitude = float(out.lobe_amps.max()) if len(out.lobe_amps) else 0.0
        axes = nod.axes * g ** np.asarray(growth.axis_exponents)
        out.axes = axes / axes.max()
        mean_r3 = float(np.mean(out.radial(_SPHERE) ** 3))
        out.scale = 0.5 * out.diameter_mm / (mean_r3 * float(np.prod(out.axes))) ** (1.0 / 3.0)
        out.spicule_lengths = np.minimum(nod.spicule_lengths * g**growth.spicule_exponent, C.SPICULE_MAX_MM)
        out.inclusion_centers = nod.inclusion_centers * g
        out.inclusion_radii = nod.inclusion_radii * g
        out.calc_centers = nod.calc_centers * g
        out.calc_radii = nod.calc_radii * g
        out.calc_rings = nod.calc_rings * g
        if nod.nodule_type in ("ground_glass", "part_solid"):
            lo, hi = C.GGO_DENSITY_LIMITS_HU
            shift = growth.density_hu_per_doubling * 3.0 * math.log2(g)
            out.base_hu = float(min(max(nod.base_hu + shift, lo), hi))
        if nod.nodule_type == "part_solid":
            out.solid_ratio = float(min(nod.solid_ratio * g**growth.solid_exponent, C.MAX_SOLID_RATIO))
            offset = nod.solid_offset * g
            room = (1.0 - out.solid_ratio) * out.radius_min * C.SOLID_CORE_MAX_OFFSET
            norm = float(np.linalg.norm(offset))
            out.solid_offset = offset * (room / norm) if norm > room > 0.0 else offset
    if emerging:
        out.nodule_type = "part_solid"
        out.solid_ratio = float(growth.emerging_solid_ratio)
        room = (1.0 - out.solid_ratio) * out.radius_min * C.SOLID_CORE_MAX_OFFSET
        out.solid_offset = np.asarray(growth.emerging_solid_direction) * growth.emerging_solid_position * max(room, 0.0)
    return out


# --------------------------------------------------------------------------------------------- registration
@dataclass(frozen=True)
class Registration:
    """Residual rigid misalignment of the follow-up crop, about the nodule centre ``c``.

    The follow-up crop shows at world point ``x`` (RAS mm) the anatomy at ``c + R (x - c) + t``.

    Attributes:
        translation_mm: ``t`` (RAS mm).
        axis: unit rotation axis of ``R``.
        angle_deg: rotation angle of ``R`` (degrees).
    """

    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    angle_deg: float = 0.0

    @property
    def rotation(self) -> np.ndarray:
        """``R`` (3 x 3), by Rodrigues' formula."""
        k = np.asarray(self.axis, dtype=np.float64)
        k = k / np.linalg.norm(k)
        skew = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
        a = math.radians(self.angle_deg)
        return np.eye(3) + math.sin(a) * skew + (1.0 - math.cos(a)) * (skew @ skew)

    @property
    def is_identity(self) -> bool:
        """No translation and no rotation."""
        return self.angle_deg == 0.0 and not any(self.translation_mm)

    @renamed_keyword("centre", "center")
    def world_matrix(self, center: np.ndarray) -> np.ndarray:
        """4x4 map (RAS mm) from a point of the follow-up crop to the anatomy it shows: ``c + R (x - c) + t``.

        ``c`` is ``center`` (``centre``: deprecated spelling).
        """
        rot = self.rotation
        c = np.asarray(center, dtype=np.float64)
        out = np.eye(4)
        out[:3, :3] = rot
        out[:3, 3] = c + np.asarray(self.translation_mm) - rot @ c
        return out

    def apparent_center(self, center: np.ndarray) -> np.ndarray:
        """Where the point ``center`` (the nodule centre) appears in the follow-up crop: ``c - R^T t`` (RAS mm)."""
        return np.asarray(center, dtype=np.float64) - self.rotation.T @ np.asarray(self.translation_mm)

    apparent_centre = RenamedAttribute("apparent_center")  # deprecated alias


def draw_registration(rng: np.random.Generator, config: SynthConfig) -> Registration:
    """Draw a registration error: axis uniform, angle U(0, max), translation uniform in the ball of ``max`` mm."""
    axis = random_unit_vectors(rng, 1)[0]
    angle = float(rng.uniform(0.0, 1.0)) * config.registration_rotation_deg
    direction = random_unit_vectors(rng, 1)[0]
    radius = config.registration_shift_mm * float(rng.uniform(0.0, 1.0)) ** (1.0 / 3.0)
    return Registration(
        translation_mm=tuple(float(v) for v in direction * radius),  # type: ignore[arg-type]
        axis=tuple(float(v) for v in axis),  # type: ignore[arg-type]
        angle_deg=angle,
    )


def _padded_grid(grid: Grid, world: np.ndarray) -> Grid:
    """``grid`` grown on each side by the reach of the map ``world`` (4x4) over it, plus a margin."""
    n = np.asarray(grid.shape)
    corners = np.array([[i, j, k] for i in (0, n[0] - 1) for j in (0, n[1] - 1) for k in (0, n[2] - 1)], float)
    pts = grid.voxel_to_world(corners)
    moved = pts @ world[:3, :3].T + world[:3, 3]
    reach = np.abs(moved - pts).max(axis=0)
    pad = np.ceil(reach / np.asarray(grid.spacing) - 1e-9).astype(int) + RESAMPLE_PAD_VOXELS
    origin = grid.voxel_to_world(-pad[None].astype(float))[0]
    shape = tuple(int(v) for v in n + 2 * pad)
    return Grid(shape, grid.spacing, tuple(float(o) for o in origin))  # type: ignore[arg-type]


def _warped_mask(grid: Grid, nodules: list[Nodule], world: np.ndarray, lung: np.ndarray) -> np.ndarray:
    """The nodule mask on ``grid`` of nodules seen through ``world``, voxelised as the renderer does it.

    A voxel is in the mask where the anatomy it shows (``world`` applied to its centre) is inside a
    nodule body and it is lung, as in :func:`~lung_nodule_mtl.data.synthetic.nodules.render_nodule`;
    evaluating the bodies directly keeps the follow-up mask as exact as the baseline's (resampling a
    binary mask would shrink convex bodies).
    """
    mask = np.zeros(grid.shape, dtype=np.uint8)
    inverse = np.linalg.inv(world)
    pad = max(grid.spacing)
    for nod in nodules:
        seen_at = inverse[:3, :3] @ nod.center + inverse[:3, 3]
        box = grid.box(seen_at - nod.radius_max - pad, seen_at + nod.radius_max + pad)
        if box is None:
            continue
        bx, by, bz = np.broadcast_arrays(*grid.box_axes(box))
        pts = np.stack([bx.ravel(), by.ravel(), bz.ravel()], axis=1) @ world[:3, :3].T + world[:3, 3]
        rel = pts - nod.center
        inside = (nod.signed_distance(rel[:, 0], rel[:, 1], rel[:, 2]) <= 0).reshape(bx.shape)
        mask[box][inside & lung[box]] = 1
    return mask


@renamed_keyword("centre", "center")
def render_followup(
    patient: Patient,
    grid: Grid,
    nodules: list[Nodule],
    registration: Registration,
    center: np.ndarray,
    rng: np.random.Generator,
    name: str = "followup",
    described: list[Nodule] | None = None,
) -> SyntheticVolume:
    """Render the follow-up on the baseline crop ``grid``, misaligned by ``registration`` about ``center``.

    The chest and ``nodules`` (their follow-up states) are rendered by
    :func:`~lung_nodule_mtl.data.synthetic.render.render_volume` on ``grid`` padded by the
    registration's reach, then resampled onto ``grid`` (CT: cubic B-spline, tissue and lung:
    nearest); the mask is the nodule bodies evaluated at the registered voxel centres
    (not resampled), so it is voxelised like the baseline's. With an identity registration the padded
    grid holds ``grid`` voxel for voxel and nothing is interpolated.

    ``centre``: deprecated spelling of ``center``.

    Returns:
        The follow-up :class:`SyntheticVolume` on ``grid`` (image int16 HU, mask uint8).
    """
    world = registration.world_matrix(center)
    big = _padded_grid(grid, world)
    raw = render_volume(patient, big, nodules, rng, name=name, described=described)
    m = np.linalg.inv(big.affine) @ world @ grid.affine
    matrix, offset = m[:3, :3], m[:3, 3]
    if registration.is_identity:
        lo = np.rint(offset).astype(int)
        box = tuple(slice(int(a), int(a) + n) for a, n in zip(lo, grid.shape, strict=True))
        image, mask = raw.image[box].copy(), raw.mask[box].copy()
        tissue, lung = raw.tissue[box].copy(), raw.lung[box].copy()
    else:

        def warp(arr: np.ndarray, order: int) -> np.ndarray:
            return ndimage.affine_transform(
                arr, matrix, offset=offset, output_shape=grid.shape, order=order, mode="nearest"
            )

        image_f = warp(raw.image.astype(np.float32), 3)
        np.rint(image_f, out=image_f)
        image = np.clip(image_f, C.HU_MIN, C.HU_MAX).astype(np.int16)
        tissue = warp(raw.tissue, 0)
        lung = warp(raw.lung.astype(np.uint8), 0).astype(bool)
        mask = _warped_mask(grid, raw.visible, world, lung)
    return SyntheticVolume(
        name=name,
        image=image,
        mask=mask,
        tissue=tissue,
        lung=lung,
        grid=grid,
        nodules=list(raw.nodules),
        visible=list(raw.visible),
    )


# --------------------------------------------------------------------------------------------- cases
@dataclass
class GrowthPair:
    """One nodule at baseline and follow-up, on one crop grid.

    Attributes:
        patient_id: e.g. ``"SYN-0001"``.
        baseline: the baseline crop (``<case>_t0``).
        followup: the follow-up crop (``<case>_t1``) on the baseline's grid.
        baseline_nodule: the nodule at baseline (placed and labelled).
        followup_nodule: the nodule at follow-up (same centre, id and labels).
        growth: the drawn growth.
        registration: the follow-up's registration error.
    """

    patient_id: str
    baseline: SyntheticVolume
    followup: SyntheticVolume
    baseline_nodule: Nodule
    followup_nodule: Nodule
    growth: Growth
    registration: Registration

    @property
    def case_id(self) -> str:
        """``<patient>_<nodule>``, e.g. ``"SYN-0001_1"``."""
        return f"{self.patient_id}_{self.baseline_nodule.nodule_id}"

    @property
    def followup_center(self) -> np.ndarray:
        """Where the nodule centre appears in the follow-up crop (RAS mm)."""
        return self.registration.apparent_center(self.baseline_nodule.center)

    followup_centre = RenamedAttribute("followup_center")  # deprecated alias


@dataclass
class GrowthCase:
    """One synthetic patient with a baseline/follow-up pair per nodule."""

    patient_id: str
    patient: Patient
    pairs: list[GrowthPair]


def _forced_type(model: str, rng: np.random.Generator, config: SynthConfig) -> str | None:
    """The nodule type a growth model chosen first implies (``None``: draw it as usual)."""
    u = float(rng.random())
    if model in C.GROWING_MODEL_OF_TYPE.values():
        return next(t for t, m in C.GROWING_MODEL_OF_TYPE.items() if m == model)
    if model == "benign_shrinking":
        probs = {t: p for t, p in config.nodule_type_probabilities.items() if t != "calcified" and p > 0}
        if not probs:
            return "solid"
        keys = list(probs)
        cdf = np.cumsum([probs[k] for k in keys]) / sum(probs.values())
        return keys[min(int(np.searchsorted(cdf, u, side="right")), len(keys) - 1)]
    return None


def _draw_states(
    patient: Patient, nod_rng: np.random.Generator, growth_rng: np.random.Generator, config: SynthConfig
) -> list[tuple[Nodule, Nodule, Growth]]:
    """Draw the patient's nodules, their growth and follow-up states, and place them (the larger state)."""
    lo, hi = config.nodules_per_crop_patient
    n = int(nod_rng.integers(lo, hi + 1))
    separation = C.NODULE_SEPARATION_MM + C.CROP_SEPARATION_MM
    for _ in range(MAX_PLACEMENT_TRIES):
        states = []
        for _ in range(n):
            model = None
            if config.growth_model_probabilities is not None:
                model = str(_choice(growth_rng, dict(config.growth_model_probabilities)))
                nod = draw_nodule(nod_rng, config, _forced_type(model, growth_rng, config))
            else:
                nod = draw_nodule(nod_rng, config)
            label_nodule(nod, nod_rng)
            if model is None:
                model = draw_growth_model(nod, growth_rng)
            growth = draw_growth(nod, model, growth_rng, config)
            states.append((nod, grow_nodule(nod, growth), growth))
        larger = [max(s[:2], key=lambda v: v.radius_max) for s in states]
        drawn_locations = [s[0].location for s in states]
        placed = place_nodules(patient, larger, nod_rng, separation=separation)
        if placed:
            break
    else:
        raise ValueError(
            f"could not place any nodule inside the lungs after {MAX_PLACEMENT_TRIES} draws; "
            f"use smaller diameter_mm (got {config.diameter_mm})."
        )
    out = []
    for (n0, n1, growth), big, location in zip(states, larger, drawn_locations, strict=True):
        if not any(big is p for p in placed):
            continue
        for state in (n0, n1):
            state.center, state.nodule_id, state.location = big.center.copy(), big.nodule_id, big.location
        if n0.location != location:  # placement fell back to "isolated": rate the nodule where it is
            label_nodule(n0, nod_rng)
        n1.attributes = dict(n0.attributes)
        n1.malignancy_probability, n1.malignancy_score, n1.malignancy = (
            n0.malignancy_probability,
            n0.malignancy_score,
            n0.malignancy,
        )
        out.append((n0, n1, growth))
    return out


def generate_growth_case(
    index: int,
    seed: int = 0,
    config: SynthConfig | None = None,
    **options: Any,
) -> GrowthCase:
    """Generate the baseline/follow-up pairs of case ``index`` in memory (deterministic for its arguments).

    Args:
        index: 0-based case index (the patient ``SYN-<index + 1>``, with the anatomy of ``crops`` mode).
        seed: data-set seed.
        config: generator options; keyword ``options`` override its fields (see
            :class:`~lung_nodule_mtl.data.synthetic.config.SynthConfig`; ``nodules_per_crop_patient``,
            the crop options and the ``growth`` ones apply).

    Returns:
        The patient and one :class:`GrowthPair` per nodule.

    Raises:
        ValueError: an argument or option is invalid.
    """
    _check_int("index", index, 0)
    _check_int("seed", seed, 0)
    cfg = make_config(config, **options)
    anat_ss, nod_ss, geo_ss, img_ss, growth_ss = np.random.SeedSequence(seed, spawn_key=(index,)).spawn(5)
    patient = draw_patient(np.random.default_rng(anat_ss), cfg.noise_hu)
    if not cfg.table:
        patient.table_gap = -1.0
    nod_rng, geo_rng, growth_rng = (np.random.default_rng(s) for s in (nod_ss, geo_ss, growth_ss))
    pid = case_id(index)
    sxy = float(geo_rng.uniform(*cfg.spacing_xy_mm))
    spacing = (sxy, sxy, _slice_spacing(geo_rng, cfg.slice_mm))
    states = _draw_states(patient, nod_rng, growth_rng, cfg)
    baseline_all = [s[0] for s in states]
    followup_all = [s[1] for s in states]
    pairs = []
    for (n0, n1, growth), img_seq in zip(states, img_ss.spawn(len(states)), strict=True):
        grid = crop_grid(max((n0, n1), key=lambda v: v.radius_max), spacing, cfg, geo_rng)
        registration = draw_registration(geo_rng, cfg)
        ss0, ss1 = img_seq.spawn(2)
        stem = f"{pid}_{n0.nodule_id}"
        v0 = render_volume(
            patient, grid, baseline_all, np.random.default_rng(ss0), name=stem + BASELINE_SUFFIX, described=[n0]
        )
        v1 = render_followup(
            patient,
            grid,
            followup_all,
            registration,
            n0.center,
            np.random.default_rng(ss1),
            name=stem + FOLLOWUP_SUFFIX,
            described=[n1],
        )
        pairs.append(GrowthPair(pid, v0, v1, n0, n1, growth, registration))
    return GrowthCase(pid, patient, pairs)


# --------------------------------------------------------------------------------------------- files
def _mask_volume(volume: SyntheticVolume, centre: np.ndarray, radius_mm: float) -> float:
    """Volume (mm^3) of the mask voxels within ``radius_mm`` of ``centre`` (the nodule, not its neighbours)."""
    box = volume.grid.box(centre - radius_mm, centre + radius_mm)
    if box is None:
        return 0.0
    bx, by, bz = volume.grid.box_axes(box)
    near = (bx - centre[0]) ** 2 + (by - centre[1]) ** 2 + (bz - centre[2]) ** 2 <= radius_mm**2
    return float(np.count_nonzero(volume.mask[box].astype(bool) & near)) * volume.grid.voxel_volume


def _paths(pair: GrowthPair) -> dict[str, str]:
    return {
        GrowthKeys.BASELINE.value: f"{IMAGES_DIR}/{pair.baseline.name}.nii.gz",
        GrowthKeys.BASELINE_MASK.value: f"{LABELS_DIR}/{pair.baseline.name}.nii.gz",
        GrowthKeys.FOLLOWUP.value: f"{IMAGES_DIR}/{pair.followup.name}.nii.gz",
        GrowthKeys.FOLLOWUP_MASK.value: f"{LABELS_DIR}/{pair.followup.name}.nii.gz",
    }


def pair_item(pair: GrowthPair) -> dict[str, Any]:
    """The datalist item of a pair: the baseline's ``crops`` item plus the
    :class:`~lung_nodule_mtl.constants.GrowthKeys` (paths relative)."""
    base = volume_items(pair.baseline, pair.patient_id, "crops")[0]
    n0, n1, growth, reg = pair.baseline_nodule, pair.followup_nodule, pair.growth, pair.registration
    reach = float(np.linalg.norm(reg.translation_mm)) + 2.0 * max(pair.baseline.spacing)
    item: dict[str, Any] = {Keys.IMAGE.value: base.pop(Keys.IMAGE.value), Keys.LABEL.value: base.pop(Keys.LABEL.value)}
    item.update(_paths(pair))
    item.update(base)
    item.update(
        {
            GrowthKeys.FOLLOWUP_CENTER_WORLD.value: [round(float(c), 4) for c in pair.followup_center],
            GrowthKeys.INTERVAL_DAYS.value: growth.interval_days,
            GrowthKeys.GROWTH_MODEL.value: growth.growth_model,
            GrowthKeys.VDT_DAYS.value: None if growth.vdt_days is None else round(float(growth.vdt_days), 3),
            GrowthKeys.BASELINE_VOLUME.value: round(growth.baseline_volume_mm3, 3),
            GrowthKeys.FOLLOWUP_VOLUME.value: round(growth.followup_volume_mm3, 3),
            GrowthKeys.BASELINE_MASK_VOLUME.value: round(
                _mask_volume(pair.baseline, n0.center, n0.extent_mm + max(pair.baseline.spacing)), 3
            ),
            GrowthKeys.FOLLOWUP_MASK_VOLUME.value: round(
                _mask_volume(pair.followup, pair.followup_center, n1.extent_mm + reach), 3
            ),
            GrowthKeys.FOLLOWUP_DIAMETER.value: round(growth.followup_diameter_mm, 3),
            GrowthKeys.FOLLOWUP_NODULE_TYPE.value: n1.nodule_type,
            GrowthKeys.REGISTRATION_TRANSLATION.value: [round(float(t), 4) for t in reg.translation_mm],
            GrowthKeys.REGISTRATION_ROTATION.value: round(float(reg.angle_deg), 4),
            GrowthKeys.SIZE_CAPPED.value: bool(growth.size_capped),
        }
    )
    return item


def write_pair(pair: GrowthPair, out: Path) -> set[str]:
    """Write a pair's four NIfTI files (CT int16 HU, masks uint8) atomically; return their relative paths."""
    paths = _paths(pair)
    for vol, image_key, mask_key in (
        (pair.baseline, GrowthKeys.BASELINE, GrowthKeys.BASELINE_MASK),
        (pair.followup, GrowthKeys.FOLLOWUP, GrowthKeys.FOLLOWUP_MASK),
    ):
        atomic_write_nifti(vol.image, vol.affine, out / paths[image_key], dtype=np.int16)
        atomic_write_nifti(vol.mask, vol.affine, out / paths[mask_key], dtype=np.uint8)
    return set(paths.values())


def write_growth_table(path: Path, datalist: dict[str, Any]) -> Path:
    """Write ``growth.csv`` (:data:`GROWTH_COLUMNS`, one row per pair, sorted by case) from a growth datalist."""
    rows = []
    for split in DatalistSplit:
        for item in datalist.get(split.value, []):
            row = {k: item.get(k) for k in GROWTH_COLUMNS}
            row["split"] = split.value
            row["registration_shift_mm"] = round(float(np.linalg.norm(item[GrowthKeys.REGISTRATION_TRANSLATION])), 4)
            rows.append(row)
    rows.sort(key=lambda r: str(r["case_id"]))
    with atomic_write(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=GROWTH_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path
