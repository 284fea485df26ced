"""Loading a pair's scans and masks (a small cache: rows of one patient often share scans), and the nodule in a mask.

Both scans and masks are loaded; a centre must lie inside its scan (voxel coordinates within the image).

**Masks.** With ``*_label`` given, the nodule is every voxel of that value. Otherwise it is the connected
component (26-connectivity) of the mask value found at the centre: the value of the voxel nearest to the centre,
or, where that is 0, of the nearest non-zero voxel within :data:`CENTER_SEARCH_MM`; so a 0/1 mask of several
nodules, or a label map, gives the nodule at the centre. Masks must hold integers (a probability map is refused).
No masks? ``lung-nodule-mtl predict -i SCAN -o OUT --nodules centres.csv`` segments the nodules at given centres
(``case_id,center_x_mm,center_y_mm,center_z_mm`` in RAS mm, or LUNA16's ``seriesuid,coordX,coordY,coordZ`` in
LPS mm) and writes ``OUT/<case>_nodules.nii.gz`` on the scan's grid: give that file as the mask (the component at
the centre is taken, or name its ``label``, the nodule's row order in the case + 1); check the masks before
training on them.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lung_nodule_mtl.data.growth_pairs.grid import Grid
from lung_nodule_mtl.data.growth_pairs.table import PairRowError
from lung_nodule_mtl.io import CTVolume, InputError, find_cases, load_ct, read_volume

__all__ = [
    "CENTER_SEARCH_MM",
    "CENTRE_SEARCH_MM",
    "GRID_TOLERANCE_MM",
    "Loader",
    "Scan",
    "check_inside",
    "select_nodule",
]

logger = logging.getLogger(__name__)

CENTER_SEARCH_MM = 3.0
"""Where the mask is 0 at the centre voxel, its nearest non-zero voxel within this distance (mm) gives the value."""

CENTRE_SEARCH_MM = CENTER_SEARCH_MM  # deprecated alias (former spelling)

GRID_TOLERANCE_MM = 0.01
"""A mask's affine may differ from its scan's by this much (mm) in each entry."""


@dataclass
class Scan:
    """A loaded CT scan and its grid."""

    ct: CTVolume
    grid: Grid


class Loader:
    """Loads scans and masks, keeping the last few (rows of one patient often share scans)."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self.scans: OrderedDict[Path, Scan] = OrderedDict()
        self.masks: OrderedDict[Path, tuple[NDArray[np.float32], Grid]] = OrderedDict()

    def _remember(self, cache: OrderedDict[Path, Any], key: Path, value: Any) -> Any:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.keep:
            cache.popitem(last=False)
        return value

    def scan(self, path: Path, column: str) -> Scan:
        if path in self.scans:
            self.scans.move_to_end(path)
            return self.scans[path]
        if not path.exists():
            raise PairRowError(f"{column}: {path}: file not found")
        try:
            cases = find_cases(path)
            if len(cases) != 1:
                raise PairRowError(
                    f"{column}: {path}: {len(cases)} scans found ({', '.join(c.case_id for c in cases[:4])}"
                    f"{', ...' if len(cases) > 4 else ''}): expected one NIfTI/MetaImage file or DICOM series folder"
                )
            ct = load_ct(cases[0])
        except InputError as exc:
            raise PairRowError(f"{column}: {exc}") from exc
        for warning in ct.warnings:
            logger.warning("%s: %s", path, warning)
        scan = Scan(ct, Grid(tuple(ct.shape), np.asarray(ct.affine, dtype=np.float64)))  # type: ignore[arg-type]
        return self._remember(self.scans, path, scan)

    def mask(self, path: Path, column: str, scan: Scan) -> NDArray[np.float32]:
        # the readers of load_ct without its HU check (a mask is no CT): the same file kinds and errors
        if path not in self.masks:
            if not path.exists():
                raise PairRowError(f"{column}: {path}: file not found")
            try:
                cases = find_cases(path)
                if len(cases) != 1 or cases[0].kind == "dicom":
                    raise PairRowError(f"{column}: {path}: expected one NIfTI or MetaImage mask file")
                array, affine = read_volume(cases[0])
            except InputError as exc:
                raise PairRowError(f"{column}: {exc}") from exc
            grid = Grid(tuple(int(n) for n in array.shape), affine)  # type: ignore[arg-type]
            self._remember(self.masks, path, (array, grid))
        else:
            self.masks.move_to_end(path)
        array, grid = self.masks[path]
        if grid.shape != scan.grid.shape or np.abs(grid.affine - scan.grid.affine).max() > GRID_TOLERANCE_MM:
            raise PairRowError(
                f"{column}: {path}: the mask's grid (shape {grid.shape}, spacing "
                f"{np.round(grid.spacing, 4).tolist()} mm, origin {np.round(grid.affine[:3, 3], 3).tolist()}) differs "
                f"from its scan's (shape {scan.grid.shape}, spacing {np.round(scan.grid.spacing, 4).tolist()} mm, "
                f"origin {np.round(scan.grid.affine[:3, 3], 3).tolist()}): expected a mask on the scan's grid"
            )
        return array


def check_inside(scan: Scan, center: Sequence[float], column: str, path: Path) -> None:
    """Raise :class:`PairRowError` when ``center`` (RAS mm) lies outside ``scan``."""
    if not scan.grid.contains(center):
        v = scan.grid.to_voxel(np.asarray(center, dtype=np.float64))
        raise PairRowError(
            f"{column.split('_')[0]} centre {np.round(center, 2).tolist()} (RAS mm) is outside {column} {path} "
            f"(voxel {np.round(v, 1).tolist()}, shape {scan.grid.shape}): wrong coordinate system (--lps for LPS "
            "centres) or scan?"
        )


def select_nodule(
    mask: NDArray[np.float32], grid: Grid, center: Sequence[float], label: int | None, column: str, path: Path
) -> NDArray[np.bool_]:
    """The nodule's voxels in a mask sub-volume (see the module docstring)."""
    if not np.array_equal(mask, np.round(mask)) or (mask.size and float(mask.min()) < 0):
        raise PairRowError(
            f"{column}: {path}: non-integer or negative mask values (a probability map?): expected 0/1 or a label map"
        )
    if label is not None:
        selected = mask == label
        if not selected.any():
            raise PairRowError(f"{column}: {path}: no voxel of label {label} near the centre")
        return selected
    v = grid.to_voxel(np.asarray(center, dtype=np.float64))
    seed = tuple(int(c) for c in np.clip(np.floor(v + 0.5), 0, np.asarray(grid.shape) - 1).astype(int))
    value = float(mask[seed])
    if value == 0:
        reach = np.ceil(CENTER_SEARCH_MM / grid.spacing).astype(int) + 1
        lo = np.maximum(np.asarray(seed) - reach, 0)
        hi = np.minimum(np.asarray(seed) + reach + 1, np.asarray(grid.shape))
        near = np.argwhere(mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] != 0) + lo
        if near.size:
            points = near @ grid.affine[:3, :3].T + grid.affine[:3, 3]
            dist = np.linalg.norm(points - np.asarray(center), axis=1)
            best = int(np.argmin(dist))
            if dist[best] <= CENTER_SEARCH_MM:
                seed = tuple(int(c) for c in near[best])
                value = float(mask[seed])
        if value == 0:
            raise PairRowError(
                f"{column}: {path}: empty mask at the centre (no non-zero voxel within {CENTER_SEARCH_MM:g} mm of "
                f"{np.round(center, 2).tolist()} RAS mm)"
            )
    components, _ = ndimage.label(mask == value, structure=np.ones((3, 3, 3), dtype=bool))
    return components == components[seed]
