"""A minimal analytic chest phantom with known nodules, for tests of whole-scan geometry and inference.

Unlike :func:`~lung_nodule_mtl.data.synthetic.synthesize_dataset` (realistic anatomy, seconds per scan),
this is a handful of ellipsoids on any grid in milliseconds: air around an elliptic body of soft tissue,
two lungs of parenchyma, and spherical solid nodules at exact world positions, so a test can check
where a pipeline puts things to a fraction of a voxel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["PhantomNodule", "chest_phantom"]


@dataclass(frozen=True)
class PhantomNodule:
    """A spherical nodule: centre in RAS world mm and diameter in mm."""

    center_ras_mm: tuple[float, float, float]
    diameter_mm: float


DEFAULT_NODULES = (PhantomNodule((-40.0, 10.0, 5.0), 10.0),)
"""One 10 mm nodule in the right lung (RAS: negative x is the patient's right)."""


def chest_phantom(
    shape: Sequence[int] = (128, 128, 48),
    spacing_mm: Sequence[float] = (1.0, 1.0, 2.5),
    nodules: Sequence[PhantomNodule] = DEFAULT_NODULES,
    lps: bool = True,
    body_hu: float = 40.0,
    lung_hu: float = -850.0,
    nodule_hu: float = 30.0,
) -> tuple[NDArray[np.int16], NDArray[np.float64], NDArray[np.uint8]]:
    """A chest phantom in HU, its voxel → RAS-mm affine and the nodule label map (1, 2, ... in ``nodules`` order).

    The volume is centred on world (0, 0, 0). Body: an ellipse of semi-axes 60 x 45 mm in-plane (all slices);
    lungs: ellipsoids of semi-axes 20 x 33 x 55 mm centred at x = ±33 mm (inside the body). ``lps=True`` stores
    the array as DICOM-derived NIfTI usually are (axes L, P, S: the affine has negative x and y steps); else RAS.

    Returns:
        ``(image (H, W, D) int16 HU, affine (4, 4), labels (H, W, D) uint8)``.

    Raises:
        ValueError: a field of view that does not hold the body in-plane (at least 125 x 95 mm).
    """
    shape_t = tuple(int(s) for s in shape)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    field = np.asarray(shape_t, dtype=np.float64) * spacing
    if len(shape_t) != 3 or field[0] < 125.0 or field[1] < 95.0:
        raise ValueError(
            f"chest_phantom: the field of view {field.round(1).tolist()} mm must hold the body in-plane "
            "(at least 125 x 95 mm; the lungs must not touch the edges)."
        )
    signs = np.array([-1.0, -1.0, 1.0]) if lps else np.ones(3)
    steps = signs * spacing
    origin = -steps * (np.asarray(shape_t) - 1) / 2.0  # voxel centre of the volume at world 0
    affine = np.eye(4)
    affine[:3, :3] = np.diag(steps)
    affine[:3, 3] = origin
    axes = [origin[a] + steps[a] * np.arange(shape_t[a]) for a in range(3)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)

    image = np.full(shape_t, -1000.0, dtype=np.float32)
    image[np.broadcast_to((x / 60.0) ** 2 + (y / 45.0) ** 2 <= 1.0, shape_t)] = body_hu
    for side in (-1.0, 1.0):
        lung = ((x - side * 33.0) / 20.0) ** 2 + (y / 33.0) ** 2 + (z / 55.0) ** 2 <= 1.0
        image[lung] = lung_hu
    labels = np.zeros(shape_t, dtype=np.uint8)
    for k, nodule in enumerate(nodules):
        cx, cy, cz = nodule.center_ras_mm
        inside = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= (nodule.diameter_mm / 2.0) ** 2
        image[inside] = nodule_hu
        labels[inside] = k + 1
    return image.astype(np.int16), affine, labels
