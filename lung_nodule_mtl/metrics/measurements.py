"""What the mask measures: size, density and shape of a nodule from its mask and the CT around it.

The readers' LIDC-IDRI ratings follow what can be measured on the nodule: malignancy follows size, but also
calcification (benign) and ground glass; calcification and texture are densities; sphericity, margin and
lobulation are shapes. :func:`nodule_measurements` measures these on the **predicted** mask, so a late
fusion (:mod:`lung_nodule_mtl.inference.fusion`) can be told them and judged on what the network adds.

Every measurement is taken the same way in ``evaluating`` (on the network's input crop) and in ``predict`` /
``scan_inferring`` (on the isotropic scan): on the 1 mm grid the network sees, with Hounsfield units clipped
to the lung window ``[-1000, 400]`` (channel 0 of the network's input, so the crop's windowed image gives the
same values as the scan's HU). Torch-free.

Measurements (names are the columns of ``per_nodule.csv``, prefixed ``m_``, and the fusion's feature names):

* ``log_diameter_mm``: log of the equivalent diameter (sphere of the mask's volume), at least log 1 mm;
* ``hu_mean``, ``hu_std``, ``hu_p10``, ``hu_p90``: Hounsfield units inside the mask, in hundreds of HU;
* ``calcified_fraction``: share of the mask at ≥ 200 HU; ``ground_glass_fraction``: share below −300 HU;
* ``rim_contrast``: mean HU inside minus the mean of a 2-voxel shell around the mask (hundreds of HU);
* ``sphericity``: π^(1/3) (6V)^(2/3) / A with A the area of the voxel faces between mask and outside
  (lower than 1 for a sphere: the faces are a staircase; the same grid always gives the same value);
* ``elongation``, ``flatness``: square roots of the second / first and third / first eigenvalues of the
  mask's coordinate covariance (1 for a sphere).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = [
    "MEASUREMENTS",
    "MEASURE_WINDOW_HU",
    "hu_from_lung_window",
    "nodule_measurements",
]

MEASURE_WINDOW_HU: tuple[float, float] = (-1000.0, 400.0)
"""HU range the measurements see: the lung window (channel 0 of the network's input)."""

MEASUREMENTS: tuple[str, ...] = (
    "log_diameter_mm",
    "hu_mean",
    "hu_std",
    "hu_p10",
    "hu_p90",
    "calcified_fraction",
    "ground_glass_fraction",
    "rim_contrast",
    "sphericity",
    "elongation",
    "flatness",
)
_CALCIFIED_HU = 200.0
_GROUND_GLASS_HU = -300.0
_RIM_VOXELS = 2


def hu_from_lung_window(channel: Any, window: Sequence[float] = MEASURE_WINDOW_HU) -> NDArray[np.float32]:
    """Hounsfield units (clipped to ``window``) from a channel scaled linearly to ``[0, 1]`` over ``window``."""
    low, high = float(window[0]), float(window[1])
    x = np.asarray(channel, dtype=np.float32)
    return np.asarray(low + np.clip(x, 0.0, 1.0) * (high - low), dtype=np.float32)


def nodule_measurements(
    hu: NDArray[Any], mask: NDArray[Any], spacing_mm: Sequence[float] | float = 1.0
) -> dict[str, float] | None:
    """The :data:`MEASUREMENTS` of one nodule.

    Args:
        hu: CT in Hounsfield units around the nodule (clipped here to :data:`MEASURE_WINDOW_HU`), the shape of
            ``mask``; it should reach at least 2 voxels beyond the mask (the rim).
        mask: the nodule's voxels (boolean or 0/1).
        spacing_mm: voxel size in mm, one value or three.

    Returns:
        ``{name: value}`` (finite floats), or ``None`` for an empty mask.

    Raises:
        ValueError: ``hu`` and ``mask`` differ in shape, or the spacing is not positive.
    """
    m = np.asarray(mask).astype(bool)
    a = np.asarray(hu, dtype=np.float32)
    if a.shape != m.shape or m.ndim != 3:
        raise ValueError(f"hu {list(a.shape)} and mask {list(m.shape)} must be the same 3D shape.")
    sp = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,))
    if not (sp > 0).all():
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm!r}.")
    n = int(m.sum())
    if n == 0:
        return None
    box = tuple(
        slice(max(s.start - _RIM_VOXELS - 1, 0), min(s.stop + _RIM_VOXELS + 1, size))
        for s, size in zip(ndimage.find_objects(m.astype(np.uint8))[0], m.shape, strict=True)
    )
    m, a = m[box], np.clip(a[box], *MEASURE_WINDOW_HU)
    inside = a[m]
    volume = n * float(np.prod(sp))
    diameter = (6.0 * volume / math.pi) ** (1.0 / 3.0)
    padded = np.pad(m, 1)
    area = 0.0
    for axis in range(3):
        faces = int(np.count_nonzero(np.diff(padded, axis=axis)))
        area += faces * float(np.prod(np.delete(sp, axis)))
    rim = ndimage.binary_dilation(m, iterations=_RIM_VOXELS) & ~m
    rim_mean = float(a[rim].mean()) if rim.any() else float(inside.mean())
    coords = np.argwhere(m) * sp
    if n > 3:
        eig = np.sort(np.clip(np.linalg.eigvalsh(np.cov(coords.T)), 0.0, None))[::-1]
        elongation = math.sqrt(eig[1] / eig[0]) if eig[0] > 0 else 1.0
        flatness = math.sqrt(eig[2] / eig[0]) if eig[0] > 0 else 1.0
    else:
        elongation = flatness = 1.0
    out = {
        "log_diameter_mm": math.log(max(diameter, 1.0)),
        "hu_mean": float(inside.mean()) / 100.0,
        "hu_std": float(inside.std()) / 100.0,
        "hu_p10": float(np.percentile(inside, 10)) / 100.0,
        "hu_p90": float(np.percentile(inside, 90)) / 100.0,
        "calcified_fraction": float((inside >= _CALCIFIED_HU).mean()),
        "ground_glass_fraction": float((inside < _GROUND_GLASS_HU).mean()),
        "rim_contrast": (float(inside.mean()) - rim_mean) / 100.0,
        "sphericity": math.pi ** (1.0 / 3.0) * (6.0 * volume) ** (2.0 / 3.0) / area,
        "elongation": float(elongation),
        "flatness": float(flatness),
    }
    return out
