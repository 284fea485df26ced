"""A lung mask from HU thresholds and morphology, to restrict whole-scan inference to the lungs.

No learned model and nothing downloaded: the classical pipeline (as in LUNA16 preprocessing and
Hofmanninger et al.'s baselines) on a coarse copy of the scan:

1. voxels below ``threshold_hu`` (-320 HU: air and lung parenchyma, not soft tissue);
2. 3D connected components, dropping those touching the in-plane (x, y) faces of the volume: the
   air around the patient (components touching the cranial or caudal faces are kept, since a scan
   often cuts through the lungs there);
3. the components of at least ``min_component_ml`` and at least 10% of the largest one (the lungs,
   left and right, or both joined through the airways; bowel gas may survive, harmlessly);
4. holes filled slice by slice (vessels, airway walls and nodules inside the lung become lung);
5. a closing with a ball of ``closing_mm`` (nodules against the pleura, which the threshold cuts
   out of the lung, come back in) and a dilation by ``margin_mm``.

The mask is a *region of interest*: it only says where the network needs to look, so it errs on
the side of including too much. Morphology runs on a grid ``downsample`` times coarser than the
input (2 mm for 1 mm input) and is upsampled by nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = ["DEFAULT_LUNG_THRESHOLD_HU", "bounding_box", "lung_mask"]

DEFAULT_LUNG_THRESHOLD_HU = -320.0
"""Lung parenchyma is about -900 to -500 HU; soft tissue and blood are above -100 HU."""


def _ball(radius_vox: Sequence[float]) -> NDArray[np.bool_]:
    r = [max(int(np.ceil(v)), 0) for v in radius_vox]
    grids = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    dist = sum((g / max(v, 1e-6)) ** 2 for g, v in zip(grids, radius_vox, strict=True))
    return np.asarray(dist <= 1.0)


def _dilate(mask: NDArray[np.bool_], radius_mm: float, spacing: Sequence[float]) -> NDArray[np.bool_]:
    if radius_mm <= 0 or not mask.any():
        return mask
    # distance to the mask, in mm: exact Euclidean dilation for any radius at a fixed cost. Computed only in the
    # mask's box grown by the radius: the nearest mask voxel always lies in the box, voxels beyond are farther.
    box = bounding_box(mask, [int(np.ceil(radius_mm / s)) + 1 for s in spacing])
    assert box is not None  # mask.any()
    out = np.zeros_like(mask)
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing) <= radius_mm
    return out


def _erode(mask: NDArray[np.bool_], radius_mm: float, spacing: Sequence[float]) -> NDArray[np.bool_]:
    if radius_mm <= 0 or not mask.any():
        return mask
    # distance to the background, only in the mask's box grown by one (background) voxel: a background voxel
    # beyond the box is no nearer than its projection onto the box's border, which is background too
    box = bounding_box(mask, 1)
    assert box is not None  # mask.any()
    out = np.zeros_like(mask)
    out[box] = ndimage.distance_transform_edt(mask[box], sampling=spacing) > radius_mm
    return out


def lung_mask(
    image_hu: NDArray[np.floating] | NDArray[np.integer],
    spacing_mm: Sequence[float],
    threshold_hu: float = DEFAULT_LUNG_THRESHOLD_HU,
    min_component_ml: float = 50.0,
    closing_mm: float = 8.0,
    margin_mm: float = 5.0,
    downsample: int = 2,
) -> NDArray[np.bool_] | None:
    """Binary mask of the lungs (with a margin) of a CT volume in HU.

    Args:
        image_hu: ``(H, W, D)`` CT in HU, axes 0 and 1 in-plane, axis 2 cranio-caudal (e.g. RAS).
        spacing_mm: voxel size per axis, mm.
        threshold_hu: voxels below are air or lung.
        min_component_ml: smallest component kept, millilitres (each adult lung is 1-3 L; the
            trachea is about 30 ml).
        closing_mm: radius of the closing that brings juxta-pleural nodules into the mask, mm.
        margin_mm: final dilation, mm.
        downsample: integer subsampling of every axis for the morphology (1 = none).

    Returns:
        A boolean array of ``image_hu``'s shape, or ``None`` when no lung-like component is found
        (e.g. a phantom or a crop without lung): the caller then analyses the whole image.

    Raises:
        ValueError: for a non-3D image, a bad spacing or ``downsample < 1``.
    """
    if image_hu.ndim != 3:
        raise ValueError(f"lung_mask: expected a 3D (H, W, D) image, got shape {list(image_hu.shape)}.")
    spacing = [float(s) for s in spacing_mm]
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"lung_mask: spacing_mm must be 3 positive numbers, got {list(spacing_mm)!r}.")
    if int(downsample) < 1:
        raise ValueError(f"lung_mask: downsample must be >= 1, got {downsample!r}.")
    step = int(downsample)
    coarse = np.asarray(image_hu[::step, ::step, ::step]) < threshold_hu
    coarse_spacing = [s * step for s in spacing]
    voxel_ml = float(np.prod(coarse_spacing)) / 1000.0

    labels, n = ndimage.label(coarse)
    if n == 0:
        return None
    outside = np.unique(
        np.concatenate([labels[0].ravel(), labels[-1].ravel(), labels[:, 0].ravel(), labels[:, -1].ravel()])
    )
    sizes = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64) * voxel_ml
    sizes[0] = 0.0
    sizes[outside] = 0.0
    largest = float(sizes.max())
    if largest <= 0.0 or largest < min_component_ml:  # no air inside the body (whatever the minimum size)
        return None
    keep = np.flatnonzero((sizes > 0.0) & (sizes >= max(min_component_ml, 0.1 * largest)))
    mask = np.isin(labels, keep)
    del labels

    for k in range(mask.shape[2]):  # fill holes slice by slice: vessels and nodules inside the lung
        if mask[:, :, k].any():
            mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    mask = _erode(_dilate(mask, closing_mm, coarse_spacing), closing_mm, coarse_spacing)
    mask = _dilate(mask, margin_mm, coarse_spacing)

    if step > 1:
        mask = np.repeat(np.repeat(np.repeat(mask, step, axis=0), step, axis=1), step, axis=2)
        mask = mask[: image_hu.shape[0], : image_hu.shape[1], : image_hu.shape[2]]
    return np.ascontiguousarray(mask)


def bounding_box(mask: NDArray[np.bool_], margin: int | Sequence[int] = 0) -> tuple[slice, slice, slice] | None:
    """The smallest box holding every ``True`` voxel, grown by ``margin`` voxels (one for all axes or one per
    axis; clipped); ``None`` if empty."""
    if not mask.any():
        return None
    margins = [int(margin)] * 3 if isinstance(margin, int | np.integer) else [int(m) for m in margin]
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        m = margins[axis]
        box.append(slice(max(int(hits[0]) - m, 0), min(int(hits[-1]) + 1 + m, mask.shape[axis])))
    return (box[0], box[1], box[2])
