"""Voxel grids of the pairs' scans and crops, and the bridge to SimpleITK images (RAS here, LPS in ITK)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from lung_nodule_mtl.io.geometry import LPS_TO_RAS, itk_geometry

__all__ = ["RAS_LPS", "Grid", "from_sitk", "resample", "to_lps", "to_sitk"]

RAS_LPS = LPS_TO_RAS[:3, :3]  # RAS <-> LPS for points and rotations (its own inverse)


@dataclass
class Grid:
    """A voxel grid: ``(H, W, D)`` and its voxel-to-RAS-mm affine."""

    shape: tuple[int, int, int]
    affine: NDArray[np.float64]

    @property
    def spacing(self) -> NDArray[np.float64]:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def voxel_volume(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def to_voxel(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        inv = np.linalg.inv(self.affine)
        return np.asarray(points, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]

    def contains(self, point: Sequence[float]) -> bool:
        v = self.to_voxel(np.asarray(point, dtype=np.float64))
        return bool(np.all(v >= -0.5) and np.all(v <= np.asarray(self.shape) - 0.5))

    def box(self, center: Sequence[float], half_mm: float) -> tuple[slice, slice, slice]:
        """The voxel box (clipped to the grid) holding the cube of half-edge ``half_mm`` around ``center``."""
        signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=np.float64)
        corners = self.to_voxel(np.asarray(center, dtype=np.float64) + half_mm * signs)
        lo = np.clip(np.floor(corners.min(axis=0)).astype(int) - 1, 0, np.asarray(self.shape))
        hi = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 2, 0, np.asarray(self.shape))
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))  # type: ignore[return-value]

    def sub(self, box: tuple[slice, slice, slice]) -> Grid:
        shift = np.eye(4)
        shift[:3, 3] = [s.start for s in box]
        return Grid(tuple(s.stop - s.start for s in box), self.affine @ shift)  # type: ignore[arg-type]

    def sitk_reference(self) -> sitk.Image:
        ref = sitk.Image([int(n) for n in self.shape], sitk.sitkUInt8)
        _set_geometry(ref, self.affine)
        return ref


def _set_geometry(image: sitk.Image, affine: NDArray[np.float64]) -> None:
    """Give an ITK image the geometry of a voxel-to-RAS affine (ITK is LPS)."""
    spacing, origin, direction = itk_geometry(affine)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)


def to_sitk(array: NDArray[Any], grid: Grid) -> sitk.Image:
    """An ``(i, j, k)`` array on ``grid`` as an ITK image (ITK index ``(i, j, k)``)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    _set_geometry(image, grid.affine)
    return image


def from_sitk(image: sitk.Image) -> NDArray[Any]:
    """An ITK image as an ``(i, j, k)`` array (the inverse of :func:`to_sitk`)."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def to_lps(point: Sequence[float]) -> list[float]:
    """A RAS point (or vector) in LPS, ITK's world space."""
    return [float(v) for v in RAS_LPS @ np.asarray(point, dtype=np.float64)]


def resample(
    image: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform,
    interpolator: int,
    default: float,
    pixel: int,
    threads: int | None,
) -> sitk.Image:
    """``image`` resampled onto ``reference``'s grid through ``transform`` (output point → input point)."""
    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(reference)
    f.SetTransform(transform)
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(float(default))
    f.SetOutputPixelType(pixel)
    if threads is not None:
        f.SetNumberOfThreads(int(threads))
    return f.Execute(image)
