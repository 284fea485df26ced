"""Quality-control figures: one PNG per nodule with axial, coronal and sagittal slices and the mask outline.

Drawn on the isotropic grid (square voxels, so no aspect correction), lung window (-1000..400 HU),
the nodule's outline in red and other nodules' in yellow, a ``2 * half_size_mm`` field of view
centred on the nodule. Pillow only (no plotting library); written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.utils import deprecated_arg
from numpy.typing import NDArray
from scipy import ndimage

from lung_nodule_mtl import __version__
from lung_nodule_mtl.constants import DEFAULT_WINDOWS
from lung_nodule_mtl.utils.io import atomic_path

__all__ = ["nodule_qc_image", "write_nodule_qc"]

_RED = np.array([255, 40, 40], dtype=np.uint8)
_YELLOW = np.array([255, 220, 0], dtype=np.uint8)


def _window(hu: NDArray[np.floating]) -> NDArray[np.uint8]:
    low, high = DEFAULT_WINDOWS["lung"]
    return (np.clip((hu - low) / (high - low), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _outline(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _panel(hu: NDArray, labels: NDArray, label: int) -> NDArray[np.uint8]:
    """RGB slice (rows = second axis reversed so anterior/superior is up)."""
    rgb = np.repeat(_window(hu)[..., None], 3, axis=-1)
    rgb[_outline((labels != 0) & (labels != label))] = _YELLOW
    rgb[_outline(labels == label)] = _RED
    return np.ascontiguousarray(np.transpose(rgb, (1, 0, 2))[::-1])


@deprecated_arg(
    name="centre_voxel",
    new_name="center_voxel",
    since="0.1.0",
    version_val=__version__,
    msg_suffix="spelled center_voxel now.",
)
def nodule_qc_image(
    hu: NDArray[np.floating],
    labels: NDArray[np.integer],
    center_voxel: Sequence[float] | NDArray[np.floating],
    label: int,
    half_size_vox: int = 32,
    scale: int = 4,
    *,
    centre_voxel: Sequence[float] | NDArray[np.floating] | None = None,
) -> NDArray[np.uint8]:
    """Axial | coronal | sagittal RGB panels ``(rows, 3 * cols, 3)`` around ``center_voxel`` of an RAS volume.

    Args:
        hu: ``(H, W, D)`` CT in HU on an isotropic RAS grid.
        labels: ``(H, W, D)`` nodule label map on the same grid.
        center_voxel: the nodule's centre (voxels of ``hu``; ``centre_voxel``: deprecated spelling).
        label: the nodule's label (outlined in red; other labels in yellow).
        half_size_vox: half the field of view, voxels.
        scale: nearest-neighbour magnification of each panel.
    """
    c = [int(np.clip(np.floor(v + 0.5), 0, n - 1)) for v, n in zip(center_voxel, hu.shape, strict=True)]
    pad = half_size_vox
    hu_p = np.pad(hu, pad, mode="constant", constant_values=-1000.0)
    lab_p = np.pad(labels, pad, mode="constant", constant_values=0)
    sl = [slice(v, v + 2 * pad) for v in c]  # in the padded volume: centred on c + pad
    cp = [v + pad for v in c]
    axial = _panel(hu_p[sl[0], sl[1], cp[2]], lab_p[sl[0], sl[1], cp[2]], label)  # x right, y anterior up
    coronal = _panel(hu_p[sl[0], cp[1], sl[2]], lab_p[sl[0], cp[1], sl[2]], label)  # x right, z superior up
    sagittal = _panel(hu_p[cp[0], sl[1], sl[2]], lab_p[cp[0], sl[1], sl[2]], label)  # y anterior right, z up
    gap = np.zeros((axial.shape[0], 2, 3), dtype=np.uint8)
    image = np.concatenate([axial, gap, coronal, gap, sagittal], axis=1)
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def write_nodule_qc(path: str | Path, image: NDArray[np.uint8], title: str = "") -> Path:
    """Write ``image`` (from :func:`nodule_qc_image`) as PNG atomically, with an optional title line above it."""
    from PIL import Image, ImageDraw

    out = Path(path)
    canvas = Image.new("RGB", (image.shape[1], image.shape[0] + (16 if title else 0)), (0, 0, 0))
    canvas.paste(Image.fromarray(image, mode="RGB"), (0, 16 if title else 0))
    if title:
        ImageDraw.Draw(canvas).text((4, 2), title, fill=(255, 255, 255))
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG")
    return out
