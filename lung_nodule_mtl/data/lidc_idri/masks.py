"""Readers' LIDC-IDRI outlines on the CT grid: slice matching, polygon filling, clustering and consensus.

Grid: the CT as :func:`lung_nodule_mtl.io.ct.load_ct` reads it, indexed ``(i, j, k)`` = (DICOM column,
row, slice in stored order). A LIDC outline point ``(xCoord, yCoord)`` is voxel ``(i, j) = (x, y)`` of its slice.

* **Slice matching** (:class:`SliceLookup`): an ROI goes to the slice with its ``imageSOP_UID``; when the UID is
  not in the series, to the slice whose z position is nearest ``imageZposition``, if within half a slice gap;
  otherwise it is dropped with a warning naming the XML file.
* **Filling** (:func:`annotation_mask`): LIDC readers drew each outline just outside the nodule, so a voxel is in a
  reader's nodule when its centre lies strictly inside an inclusion outline (even-odd rule) and it is not one of
  the outline's own pixels (``include_contour=False``, the default, as ``pylidc``'s ``boolean_mask``; ``True``
  also adds them). Exclusion outlines (``inclusion`` FALSE) then carve their inside and their own pixels out.
  Outlines are processed in file order, inclusions first.
* **Clustering** (:func:`cluster_annotations`): two readers' annotations are the same physical nodule when their
  outline points come within ``tol_mm`` of each other (default: the slice spacing, as ``pylidc``'s
  ``cluster_annotations`` with its ``min`` metric). Pairs are linked nearest first (single linkage), and a link
  that would put two annotations of one reader in one cluster is not made, so each reader contributes at most one
  annotation to a nodule.
* **Consensus** (:func:`consensus_mask`): a voxel is in the nodule when at least ``level`` of the cluster's
  annotations include it (the denominator is the readers who marked this nodule, as ``pylidc.utils.consensus``,
  not every reader of the scan).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from lung_nodule_mtl.data.lidc_idri.reading import ReaderNodule, Roi
from lung_nodule_mtl.io.geometry import flip_lps_ras

__all__ = [
    "AnnotationMask",
    "SliceLookup",
    "annotation_mask",
    "cluster_annotations",
    "consensus_mask",
    "max_axial_diameter_mm",
    "polygon_interior",
]

_OFF_GRID_SLICES = 0.1
"""A file whose position is more than this many slices from its stored index is reported (missing slice?)."""


@dataclass
class SliceLookup:
    """Where each slice of a CT series lies: SOP instance UID and z position -> slice index ``k`` of the volume.

    Attributes:
        sop_to_k: SOP instance UID -> slice index.
        z_positions: the LPS z (``ImagePositionPatient[2]``) of each slice, mm, in stored order.
        tolerance_mm: a z fallback match must lie within this distance (half the median slice gap).
        files: the DICOM file of each slice, in stored order.
        warnings: problems found while reading the slices' tags (duplicated UIDs, slices off the regular grid).
    """

    sop_to_k: dict[str, int]
    z_positions: NDArray[np.float64]
    tolerance_mm: float
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_dicom(
        cls, folder: str | Path, series_uid: str, affine_ras: NDArray[np.float64], n_slices: int
    ) -> SliceLookup:
        """Read the slice tags of ``series_uid`` in ``folder``, in the order ``load_ct`` stacks them.

        Args:
            folder: the DICOM series folder.
            series_uid: the series read (``CTVolume.meta["series_uid"]``).
            affine_ras: the volume's voxel-to-RAS affine.
            n_slices: the volume's number of slices.

        Raises:
            ValueError: the series has no readable slice tags.
        """
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))
        lps = flip_lps_ras(affine_ras)
        k_axis, origin = lps[:3, 2], lps[:3, 3]
        entries: list[tuple[str, str | None, NDArray[np.float64]]] = []
        warnings: list[str] = []
        for file in files:
            info = sitk.ImageFileReader()
            info.SetFileName(file)
            try:
                info.ReadImageInformation()
                position = np.asarray([float(v) for v in info.GetMetaData("0020|0032").split("\\")], dtype=np.float64)
            except (RuntimeError, ValueError):
                warnings.append(f"{file}: unreadable ImagePositionPatient; slice left out of ROI matching")
                continue
            if position.shape != (3,):
                warnings.append(f"{file}: malformed ImagePositionPatient; slice left out of ROI matching")
                continue
            sop = info.GetMetaData("0008|0018").strip().rstrip("\x00") if info.HasMetaDataKey("0008|0018") else None
            entries.append((file, sop or None, position))
        if not entries:
            raise ValueError(f"{folder}: no readable slice of series {series_uid} (ImagePositionPatient)")
        k_geom = np.asarray([(pos - origin) @ k_axis / (k_axis @ k_axis) for _, _, pos in entries])
        if len(entries) == n_slices:
            ks = np.arange(n_slices)  # the stored order, as load_ct stacked the files
            off = np.abs(k_geom - ks)
            if off.max() > _OFF_GRID_SLICES:
                first = int(np.argmax(off > _OFF_GRID_SLICES))
                warnings.append(
                    f"{entries[first][0]}: slice {first} lies {k_geom[first] - first:+.2f} slices off the regular grid "
                    f"of the volume (missing or unevenly spaced slices?); ROIs follow the stored slice order"
                )
        else:
            warnings.append(
                f"{folder}: {len(entries)} slice files for {n_slices} slices in the volume; ROIs placed by position"
            )
            ks = np.rint(k_geom).astype(int)
        sop_to_k: dict[str, int] = {}
        z = np.full(n_slices, np.nan)
        for (file, sop, pos), k in zip(entries, ks, strict=True):
            if not 0 <= k < n_slices:
                warnings.append(f"{file}: lies outside the volume's slices; left out of ROI matching")
                continue
            z[k] = pos[2]
            if sop is None:
                continue
            if sop in sop_to_k:
                warnings.append(f"{file}: SOP instance UID {sop} also on slice {sop_to_k[sop]} (duplicated slice?)")
                continue
            sop_to_k[sop] = int(k)
        gaps = np.abs(np.diff(z[np.isfinite(z)]))
        tolerance = 0.5 * float(np.median(gaps)) if gaps.size else 0.5 * float(np.linalg.norm(lps[:3, 2]))
        return cls(sop_to_k, z, tolerance, [e[0] for e in entries], warnings)

    def slice_of(self, sop_uid: str | None, z_position: float) -> tuple[int | None, str]:
        """The slice index of a mark, and how it was found (``"sop"``, ``"z"``, or ``"none"``)."""
        if sop_uid is not None and sop_uid in self.sop_to_k:
            return self.sop_to_k[sop_uid], "sop"
        dz = np.abs(self.z_positions - z_position)
        if np.all(np.isnan(dz)):
            return None, "none"
        k = int(np.nanargmin(dz))
        if dz[k] <= self.tolerance_mm + 1e-6:
            return k, "z"
        return None, "none"


def polygon_interior(points: NDArray[np.integer]) -> tuple[int, int, NDArray[np.bool_]]:
    """Pixels whose centres lie strictly inside a closed outline (even-odd rule), in the outline's bounding box.

    Args:
        points: ``(N, 2)`` vertices ``(x, y)`` in pixels; the outline is closed from the last to the first.

    Returns:
        ``(x0, y0, inside)``: ``inside[a, b]`` is pixel ``(x0 + a, y0 + b)``. The outline's own pixels may or may
        not be inside (a point on the boundary is undecided); callers set them explicitly.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x0, y0 = int(pts[:, 0].min()), int(pts[:, 1].min())
    x1, y1 = int(pts[:, 0].max()), int(pts[:, 1].max())
    inside = np.zeros((x1 - x0 + 1, y1 - y0 + 1), dtype=bool)
    if len(pts) < 3:
        return x0, y0, inside
    px, py = pts[:, 0], pts[:, 1]
    qx, qy = np.roll(px, -1), np.roll(py, -1)
    xs = np.arange(x0, x1 + 1, dtype=np.float64)
    for b, y in enumerate(range(y0, y1 + 1)):
        crosses = (py > y) != (qy > y)
        if not crosses.any():
            continue
        cx = px[crosses] + (y - py[crosses]) * (qx[crosses] - px[crosses]) / (qy[crosses] - py[crosses])
        cx.sort()
        right = len(cx) - np.searchsorted(cx, xs, side="right")  # crossings strictly to the right of each centre
        inside[:, b] = (right % 2) == 1
    return x0, y0, inside


@dataclass
class AnnotationMask:
    """One reader's nodule as voxels of the CT grid, stored in its bounding box.

    Attributes:
        nodule: the reader's nodule.
        offset: ``(i0, j0, k0)`` of the box in the volume.
        mask: boolean ``(ni, nj, nk)`` box (empty when no ROI could be placed).
        points_ijk: ``(N, 3)`` every placed outline point (inclusion and exclusion), voxel indices.
        n_rois_placed: ROIs put on a slice; ``n_rois_by_z``: of those, placed by z position (UID not found).
        warnings: ROIs that matched no slice or fell outside the image.
    """

    nodule: ReaderNodule
    offset: tuple[int, int, int]
    mask: NDArray[np.bool_]
    points_ijk: NDArray[np.int64]
    n_rois_placed: int = 0
    n_rois_by_z: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def n_voxels(self) -> int:
        """Voxels in the reader's nodule."""
        return int(self.mask.sum())

    def voxel_indices(self) -> NDArray[np.int64]:
        """``(M, 3)`` indices ``(i, j, k)`` of the nodule's voxels in the volume."""
        return np.argwhere(self.mask) + np.asarray(self.offset)


def annotation_mask(
    nodule: ReaderNodule,
    lookup: SliceLookup,
    shape: Sequence[int],
    include_contour: bool = False,
    where: str = "",
) -> AnnotationMask:
    """Rasterise one reader's nodule outlines on the CT grid (see the module docstring for the rules).

    Args:
        nodule: the reader's nodule (>= 3 mm, outlined).
        lookup: the series' slices.
        shape: the volume's ``(ni, nj, nk)``.
        include_contour: also count the outline pixels of inclusion outlines as nodule.
        where: how to name the source in warnings (the XML file).

    Returns:
        The mask in its bounding box; ROIs that matched no slice are left out with a warning.
    """
    ni, nj = int(shape[0]), int(shape[1])
    placed: list[tuple[Roi, int]] = []
    warnings: list[str] = []
    n_by_z = 0
    name = f"{where}: reader {nodule.reader} nodule {nodule.nodule_id!r}"
    for roi in nodule.rois:
        k, how = lookup.slice_of(roi.sop_uid, roi.z_position)
        if k is None:
            warnings.append(f"{name}: ROI at z={roi.z_position:g} (SOP {roi.sop_uid}) matches no slice; ignored")
            continue
        if how == "z":
            n_by_z += 1
        elif np.isfinite(lookup.z_positions[k]) and abs(lookup.z_positions[k] - roi.z_position) > lookup.tolerance_mm:
            warnings.append(
                f"{name}: ROI SOP {roi.sop_uid} is slice {k} at z={lookup.z_positions[k]:g} mm, but the XML says "
                f"z={roi.z_position:g} mm; placed by SOP UID"
            )
        pts = roi.points
        if pts[:, 0].max() >= ni or pts[:, 1].max() >= nj:
            warnings.append(f"{name}: ROI at z={roi.z_position:g} has points outside the {ni}x{nj} image; ignored")
            continue
        placed.append((roi, k))
    if not placed:
        empty = np.zeros((0, 0, 0), dtype=bool)
        return AnnotationMask(nodule, (0, 0, 0), empty, np.zeros((0, 3), np.int64), 0, 0, warnings)
    all_pts = np.concatenate([np.c_[roi.points, np.full(len(roi.points), k)] for roi, k in placed])
    lo = all_pts.min(axis=0)
    hi = all_pts.max(axis=0)
    mask = np.zeros(tuple(int(v) for v in hi - lo + 1), dtype=bool)
    for inclusion in (True, False):
        for roi, k in placed:
            if roi.inclusion != inclusion:
                continue
            x0, y0, inside = polygon_interior(roi.points)
            a, b = x0 - lo[0], y0 - lo[1]
            region = mask[a : a + inside.shape[0], b : b + inside.shape[1], k - lo[2]]
            if inclusion:
                region |= inside
            else:
                region &= ~inside
            px, py = roi.points[:, 0] - lo[0], roi.points[:, 1] - lo[1]
            mask[px, py, k - lo[2]] = inclusion and include_contour
    return AnnotationMask(
        nodule, (int(lo[0]), int(lo[1]), int(lo[2])), mask, all_pts.astype(np.int64), len(placed), n_by_z, warnings
    )


def _points_mm(points_ijk: NDArray[np.integer], affine: NDArray[np.float64]) -> NDArray[np.float64]:
    return (np.c_[points_ijk.astype(np.float64), np.ones(len(points_ijk))] @ np.asarray(affine).T)[:, :3]


def cluster_annotations(
    annotations: Sequence[AnnotationMask], affine: NDArray[np.float64], tol_mm: float
) -> list[list[int]]:
    """Group readers' annotations into physical nodules (see the module docstring).

    Args:
        annotations: the annotations of one scan (any readers).
        affine: the volume's voxel-to-world affine (distances in mm).
        tol_mm: annotations whose outline points come within this distance are linked.

    Returns:
        Clusters as lists of indices into ``annotations``, each sorted; at most one annotation per reader in each.
    """
    n = len(annotations)
    points = [_points_mm(a.points_ijk, affine) for a in annotations]
    trees = [cKDTree(p) if len(p) else None for p in points]
    pairs: list[tuple[float, int, int]] = []
    for i in range(n):
        for j in range(i + 1, n):
            ti, pj = trees[i], points[j]
            if ti is None or not len(pj):
                continue
            lo_i, hi_i = points[i].min(axis=0), points[i].max(axis=0)
            lo_j, hi_j = pj.min(axis=0), pj.max(axis=0)
            gap = np.maximum(0.0, np.maximum(lo_i - hi_j, lo_j - hi_i))
            if float(np.linalg.norm(gap)) > tol_mm:
                continue
            d = float(ti.query(pj, k=1)[0].min())
            if d <= tol_mm:
                pairs.append((d, i, j))
    parent = list(range(n))
    readers = [{a.nodule.reader} for a in annotations]

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _, i, j in sorted(pairs):
        ri, rj = find(i), find(j)
        if ri == rj or readers[ri] & readers[rj]:
            continue
        parent[rj] = ri
        readers[ri] |= readers[rj]
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [sorted(g) for g in groups.values()]


def consensus_mask(
    annotations: Sequence[AnnotationMask], level: float
) -> tuple[tuple[int, int, int], NDArray[np.bool_], NDArray[np.int64]]:
    """Voxels included by at least ``level`` of the given annotations (one physical nodule).

    Args:
        annotations: the cluster's annotations (one per reader).
        level: fraction in ``(0, 1]``; a voxel is in when ``count >= level * len(annotations)``.

    Returns:
        ``(offset, mask, counts)`` in the union bounding box: the box's ``(i0, j0, k0)``, the consensus mask and
        the number of annotations that include each voxel.
    """
    if not 0.0 < level <= 1.0:
        raise ValueError(f"consensus level must be in (0, 1], got {level}.")
    boxes = [a for a in annotations if a.mask.size]
    if not boxes:
        return (0, 0, 0), np.zeros((0, 0, 0), dtype=bool), np.zeros((0, 0, 0), dtype=np.int64)
    lo = np.min([a.offset for a in boxes], axis=0)
    hi = np.max([np.asarray(a.offset) + a.mask.shape for a in boxes], axis=0)
    counts = np.zeros(tuple(int(v) for v in hi - lo), dtype=np.int64)
    for a in boxes:
        s = np.asarray(a.offset) - lo
        counts[s[0] : s[0] + a.mask.shape[0], s[1] : s[1] + a.mask.shape[1], s[2] : s[2] + a.mask.shape[2]] += a.mask
    needed = level * len(annotations) - 1e-9
    return (int(lo[0]), int(lo[1]), int(lo[2])), counts >= needed, counts


def max_axial_diameter_mm(mask: NDArray[np.bool_], spacing_ij: tuple[float, float]) -> float:
    """Largest distance between two voxel centres of one slice of ``mask`` (mm), over all slices; 0 if empty.

    Args:
        mask: ``(ni, nj, nk)`` boolean mask.
        spacing_ij: in-plane voxel size (mm) along ``i`` and ``j``.
    """
    best = 0.0
    scale = np.asarray(spacing_ij, dtype=np.float64)
    for k in range(mask.shape[2]):
        pts = np.argwhere(mask[:, :, k])
        if len(pts) < 2:
            continue
        # the farthest pair lies on the convex hull, so the first and last voxel of each row are enough
        pts = pts[np.lexsort((pts[:, 0], pts[:, 1]))]
        new_row = pts[1:, 1] != pts[:-1, 1]
        xy = pts[np.r_[True, new_row] | np.r_[new_row, True]] * scale
        d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)).max()
        best = max(best, float(d))
    return best
