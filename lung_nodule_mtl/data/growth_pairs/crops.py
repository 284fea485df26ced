"""One growth pair: the baseline crop, the follow-up registered and resampled onto it, the item and the arrays.

Steps 1 to 4 of the package docstring (:mod:`lung_nodule_mtl.data.growth_pairs`) for one :class:`PairSpec`:
:func:`process_pair` returns what :mod:`~lung_nodule_mtl.data.growth_pairs.convert` writes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from lung_nodule_mtl.constants import AIR_HU, Keys
from lung_nodule_mtl.data.growth_pairs.grid import Grid, from_sitk, resample, to_sitk
from lung_nodule_mtl.data.growth_pairs.loader import Loader, Scan, check_inside, select_nodule
from lung_nodule_mtl.data.growth_pairs.registration import RegistrationSettings, register_followup, rigid_parts
from lung_nodule_mtl.data.growth_pairs.table import PairRowError, PairSpec
from lung_nodule_mtl.data.synthetic.growth import BASELINE_SUFFIX, FOLLOWUP_SUFFIX, GrowthKeys
from lung_nodule_mtl.io import equivalent_diameter_mm

__all__ = ["IMAGES_DIR", "LABELS_DIR", "SOURCE", "PairResult", "process_pair"]

SOURCE = "user pairs"
"""``source`` of every item and of the datalist's metadata."""

IMAGES_DIR, LABELS_DIR = "images", "labels"


def _crop_grid(scan: Scan, centre: Sequence[float], crop_mm: float, spacing_mm: float | None) -> Grid:
    """The baseline crop's grid: the centre at voxel ``n // 2`` (see step 2 of the package docstring)."""
    c = np.asarray(centre, dtype=np.float64)
    if spacing_mm is None:
        spacing = scan.grid.spacing
        size = np.maximum(1, np.round(crop_mm / spacing)).astype(int)
        start = np.floor(scan.grid.to_voxel(c) + 0.5).astype(int) - size // 2
        shift = np.eye(4)
        shift[:3, 3] = start
        return Grid(tuple(int(n) for n in size), scan.grid.affine @ shift)  # type: ignore[arg-type]
    n = max(1, round(crop_mm / spacing_mm))
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = c - spacing_mm * (n // 2)
    return Grid((n, n, n), affine)


@dataclass
class PairResult:
    """One pair made: the crop grid, the four arrays by output path, the datalist item, the summary row's values."""

    grid: Grid
    arrays: dict[str, NDArray[Any]]
    item: dict[str, Any]
    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _volume_mm3(mask: NDArray[Any], grid: Grid) -> float:
    return float(np.count_nonzero(mask)) * grid.voxel_volume


def _diameter(volume_mm3: float) -> float | None:
    return round(equivalent_diameter_mm(volume_mm3), 3) if volume_mm3 > 0 else None


def _touches_edge(mask: NDArray[Any]) -> bool:
    return bool(
        mask[0].any()
        or mask[-1].any()
        or mask[:, 0].any()
        or mask[:, -1].any()
        or mask[..., 0].any()
        or mask[..., -1].any()
    )


def process_pair(
    spec: PairSpec,
    loader: Loader,
    crop_mm: float,
    spacing_mm: float | None,
    register: bool,
    settings: RegistrationSettings,
) -> PairResult:
    """Load, crop, register and resample one pair (steps 1 to 4); raises :class:`PairRowError` for a bad row."""
    b_scan = loader.scan(spec.baseline_image, "baseline_image")
    check_inside(b_scan, spec.baseline_center, "baseline_image", spec.baseline_image)
    b_mask_full = loader.mask(spec.baseline_mask, "baseline_mask", b_scan)
    f_scan = loader.scan(spec.followup_image, "followup_image")
    check_inside(f_scan, spec.followup_center, "followup_image", spec.followup_image)
    f_mask_full = loader.mask(spec.followup_mask, "followup_mask", f_scan)
    threads = settings.threads

    # baseline: its neighbourhood on its own grid, then the crop grid
    grid = _crop_grid(b_scan, spec.baseline_center, crop_mm, spacing_mm)
    reach = 0.5 * crop_mm * math.sqrt(3.0) + max(float(grid.spacing.max()), float(b_scan.grid.spacing.max()))
    b_box = b_scan.grid.box(spec.baseline_center, reach)
    b_sub = b_scan.grid.sub(b_box)
    b_nodule = select_nodule(
        b_mask_full[b_box], b_sub, spec.baseline_center, spec.baseline_label, "baseline_mask", spec.baseline_mask
    )
    reference = grid.sitk_reference()
    identity = sitk.Transform(3, sitk.sitkIdentity)
    b_image = np.asarray(b_scan.ct.array[b_box], dtype=np.float32)
    fixed = resample(to_sitk(b_image, b_sub), reference, identity, sitk.sitkLinear, AIR_HU, sitk.sitkFloat32, threads)
    b_crop_mask = from_sitk(
        resample(to_sitk(b_nodule.astype(np.uint8), b_sub), reference, identity, sitk.sitkNearestNeighbor, 0,
                  sitk.sitkUInt8, threads)
    )  # fmt: skip
    if not b_crop_mask.any():
        raise PairRowError(f"baseline_mask: {spec.baseline_mask}: the nodule has no voxel on the crop grid")

    # the metric's region: a sphere around the nodule, inside the baseline scan
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in grid.shape], indexing="ij"), axis=-1)
    world = idx @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    inside = b_scan.grid.to_voxel(world)
    in_scan = np.all((inside >= -0.5) & (inside <= np.asarray(b_scan.grid.shape) - 0.5), axis=-1)
    radius = settings.metric_radius_fraction * 0.5 * crop_mm
    region = in_scan & (np.linalg.norm(world - np.asarray(spec.baseline_center), axis=-1) <= radius)
    fixed_mask = to_sitk(region.astype(np.uint8), grid)

    # follow-up: its neighbourhood on its own grid (wide enough for the rotated crop), registered to the crop
    f_reach = 0.5 * crop_mm * math.sqrt(3.0) + settings.margin_mm + float(f_scan.grid.spacing.max())
    f_box = f_scan.grid.box(spec.followup_center, f_reach)
    f_sub = f_scan.grid.sub(f_box)
    f_nodule = select_nodule(
        f_mask_full[f_box], f_sub, spec.followup_center, spec.followup_label, "followup_mask", spec.followup_mask
    )
    moving = to_sitk(np.asarray(f_scan.ct.array[f_box], dtype=np.float32), f_sub)
    transform, registration, warnings = register_followup(
        fixed, fixed_mask, moving, spec.baseline_center, spec.followup_center, settings, register
    )
    f_crop = from_sitk(resample(moving, reference, transform, sitk.sitkLinear, AIR_HU, sitk.sitkFloat32, threads))
    f_crop_mask = from_sitk(
        resample(to_sitk(f_nodule.astype(np.uint8), f_sub), reference, transform, sitk.sitkNearestNeighbor, 0,
                  sitk.sitkUInt8, threads)
    )  # fmt: skip
    if not f_crop_mask.any():
        raise PairRowError(
            f"followup_mask: {spec.followup_mask}: the nodule has no voxel on the baseline crop after alignment"
        )
    for name, m in (("baseline", b_crop_mask), ("follow-up", f_crop_mask)):
        if _touches_edge(m):
            warnings.append(f"the {name} nodule mask reaches the crop's edge: a larger crop_mm would hold all of it")

    rotation, translation = rigid_parts(transform)
    c = np.asarray(spec.baseline_center)
    followup_on_crop = rotation.T @ (np.asarray(spec.followup_center) - c - translation) + c
    v0, v1 = _volume_mm3(b_crop_mask, grid), _volume_mm3(f_crop_mask, grid)
    native0 = _volume_mm3(b_nodule, b_sub)  # the nodule's voxels near the crop on the scan's own grid
    native1 = _volume_mm3(f_nodule, f_sub)
    base = spec.case_id
    paths = {
        GrowthKeys.BASELINE.value: f"{IMAGES_DIR}/{base}{BASELINE_SUFFIX}.nii.gz",
        GrowthKeys.BASELINE_MASK.value: f"{LABELS_DIR}/{base}{BASELINE_SUFFIX}.nii.gz",
        GrowthKeys.FOLLOWUP.value: f"{IMAGES_DIR}/{base}{FOLLOWUP_SUFFIX}.nii.gz",
        GrowthKeys.FOLLOWUP_MASK.value: f"{LABELS_DIR}/{base}{FOLLOWUP_SUFFIX}.nii.gz",
    }
    item: dict[str, Any] = {
        Keys.IMAGE.value: paths[GrowthKeys.BASELINE.value],
        Keys.LABEL.value: paths[GrowthKeys.BASELINE_MASK.value],
        **paths,
        Keys.CASE_ID.value: spec.case_id,
        Keys.PATIENT_ID.value: spec.patient_id,
        Keys.NODULE_ID.value: spec.nodule_id,
        Keys.CENTER_WORLD.value: [round(float(v), 4) for v in spec.baseline_center],
        GrowthKeys.FOLLOWUP_CENTER_WORLD.value: [round(float(v), 4) for v in followup_on_crop],
        "followup_scan_center_world_mm": [round(float(v), 4) for v in spec.followup_center],
        Keys.DIAMETER.value: _diameter(v0),
        GrowthKeys.FOLLOWUP_DIAMETER.value: _diameter(v1),
        GrowthKeys.INTERVAL_DAYS.value: spec.interval_days,
        GrowthKeys.BASELINE_MASK_VOLUME.value: round(v0, 3),
        GrowthKeys.FOLLOWUP_MASK_VOLUME.value: round(v1, 3),
        "registration": registration,
        "source": SOURCE,
    }
    for key in ("baseline_date", "followup_date"):
        if getattr(spec, key) is not None:
            item[key] = getattr(spec, key)
    ratio = v1 / v0 if v0 > 0 else None
    vdt = None
    if ratio is not None and ratio > 0 and ratio != 1.0:
        vdt = round(float(spec.interval_days) * math.log(2.0) / math.log(ratio), 2)
    summary = {
        "baseline_mask_volume_mm3": round(v0, 3),
        "followup_mask_volume_mm3": round(v1, 3),
        "baseline_native_volume_mm3": round(native0, 3),
        "followup_native_volume_mm3": round(native1, 3),
        "volume_ratio": None if ratio is None else round(ratio, 4),
        "vdt_days": vdt,
        "registration_status": registration["status"],
        "rotation_deg": registration["rotation_deg"],
        "translation_mm": round(float(np.linalg.norm(translation)), 4),
        "centre_correction_mm": round(float(np.linalg.norm(registration["centre_correction_mm"])), 4),
        "initial_metric": registration["initial_metric"],
        "final_metric": registration["final_metric"],
    }
    fixed_hu = from_sitk(fixed)
    arrays = {
        paths[GrowthKeys.BASELINE.value]: np.clip(np.rint(fixed_hu), -32768, 32767).astype(np.int16),
        paths[GrowthKeys.FOLLOWUP.value]: np.clip(np.rint(f_crop), -32768, 32767).astype(np.int16),
        paths[GrowthKeys.BASELINE_MASK.value]: b_crop_mask.astype(np.uint8),
        paths[GrowthKeys.FOLLOWUP_MASK.value]: f_crop_mask.astype(np.uint8),
    }
    return PairResult(grid, arrays, item, summary, warnings)
