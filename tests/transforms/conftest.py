"""Synthetic CT cases for the transform tests: a bright sphere in lung, written to NIfTI on an L,P,S grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from lung_nodule_mtl.constants import Keys

LUNG_HU = -850.0
NODULE_HU = 40.0
SPACING_LPS = (0.8, 0.8, 2.5)
"""Voxel size of the synthetic scan, mm (anisotropic like LIDC)."""
AFFINE_LPS = np.array(
    [[-SPACING_LPS[0], 0, 0, 50.0], [0, -SPACING_LPS[1], 0, 60.0], [0, 0, SPACING_LPS[2], -100.0], [0, 0, 0, 1.0]]
)
"""Voxel -> RAS mm affine whose axes point L, P, S (as the LIDC VOIs)."""
SHAPE = (40, 40, 12)
NODULE_VOXEL = (24, 15, 7)
NODULE_RADIUS_MM = 5.0


def sphere_volumes(
    affine: np.ndarray = AFFINE_LPS,
    shape: tuple[int, int, int] = SHAPE,
    centre_vox: tuple[float, float, float] = NODULE_VOXEL,
    radius_mm: float = NODULE_RADIUS_MM,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Return ``(image HU int16, mask uint8, centre RAS mm)`` of a sphere of ``radius_mm`` in lung."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    world = grid @ affine[:3, :3].T + affine[:3, 3]
    centre = affine[:3, :3] @ np.asarray(centre_vox, dtype=np.float64) + affine[:3, 3]
    mask = (np.linalg.norm(world - centre, axis=-1) <= radius_mm).astype(np.uint8)
    image = np.where(mask > 0, NODULE_HU, LUNG_HU).astype(np.int16)
    return image, mask, centre.tolist()


@pytest.fixture
def sphere_item(tmp_path: Path) -> dict[str, Any]:
    """A datalist item (paths to NIfTI image and mask, RAS centre, labels) of a synthetic nodule."""
    image, mask, centre = sphere_volumes()
    paths = {}
    for key, array in ((Keys.IMAGE, image), (Keys.LABEL, mask)):
        paths[str(key)] = str(tmp_path / f"{key}.nii.gz")
        nib.save(nib.Nifti1Image(array, AFFINE_LPS), paths[str(key)])
    return {
        **paths,
        Keys.CASE_ID.value: "SYN-0001_1",
        Keys.PATIENT_ID.value: "SYN-0001",
        Keys.CENTER_WORLD.value: centre,
        Keys.MALIGNANCY.value: 1,
        Keys.MALIGNANCY_SCORE.value: 4,
        "texture": 5,
    }
