"""World (RAS mm) ↔ voxel conversions through a 4x4 affine, the RAS ↔ LPS (ITK, DICOM) bridge for affines, and the
size of a mask as one number.

The affine is the one of a NIfTI file as nibabel reads it, or ``MetaTensor.affine`` after MONAI's
``LoadImage``: it maps a voxel index ``(i, j, k)`` (0-based, voxel centres at integers) to a point
``(x, y, z)`` in millimetres in RAS world space. Rotated (oblique) and anisotropic affines are
supported; the conversion is done in float64.

ITK and DICOM give geometry in LPS (spacing, origin, direction cosines); NIfTI and MONAI in RAS. The flip is
:data:`LPS_TO_RAS` (its own inverse), what MONAI's ``monai.data.utils.orientation_ras_lps`` applies to an affine;
it is written out here because this module stays torch-free. :func:`affine_from_itk` and :func:`itk_geometry` are
the one bridge between an ITK image's geometry and a voxel-to-RAS affine; single points flip with
:func:`lung_nodule_mtl.constants.lps_to_ras` / ``ras_to_lps``.

Torch-free (the CT readers and the converters under :mod:`lung_nodule_mtl.data` use it without importing torch);
a torch tensor in still gives a torch tensor out.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import torch

__all__ = [
    "LPS_TO_RAS",
    "affine_from_itk",
    "equivalent_diameter_mm",
    "flip_lps_ras",
    "itk_geometry",
    "outside_image",
    "voxel_to_world",
    "world_to_voxel",
]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""World LPS ↔ RAS as a 4x4 homogeneous matrix (x and y negated); its own inverse."""

PointsT = TypeVar("PointsT", np.ndarray, "torch.Tensor")


def _is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor, without importing torch (a tensor exists only once torch is imported)."""
    torch_module = sys.modules.get("torch")
    return torch_module is not None and isinstance(x, torch_module.Tensor)


def _as_affine(affine: ArrayLike | torch.Tensor) -> np.ndarray:
    """Return ``affine`` as a float64 ``(4, 4)`` numpy array, checking its shape and values."""
    if _is_tensor(affine):
        affine = affine.detach().cpu().numpy()  # type: ignore[union-attr]
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"affine must be a 4x4 matrix (voxel -> RAS mm), got shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"affine must be finite, got {a.tolist()!r}.")
    return a


def _apply(matrix: np.ndarray, points: ArrayLike | torch.Tensor, name: str) -> np.ndarray | torch.Tensor:
    """Apply the 4x4 ``matrix`` to ``points`` ``(..., 3)``; numpy in → numpy out, torch in → torch out."""
    if _is_tensor(points):
        import torch

        assert isinstance(points, torch.Tensor)
        out = _apply(matrix, points.detach().cpu().double().numpy(), name)
        dtype = points.dtype if points.is_floating_point() else torch.float64
        return torch.as_tensor(out, dtype=dtype, device=points.device)
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 0 or p.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (3,) or (N, 3) (x, y, z / i, j, k), got shape {p.shape}.")
    return p @ matrix[:3, :3].T + matrix[:3, 3]


def world_to_voxel(affine: ArrayLike | torch.Tensor, points_mm: PointsT | ArrayLike) -> PointsT:
    """Convert RAS world points (mm) to continuous voxel indices of the image with ``affine``.

    Args:
        affine: ``(4, 4)`` voxel → RAS-mm affine (numpy, torch or nested lists).
        points_mm: ``(3,)`` or ``(..., 3)`` world points ``(x, y, z)`` in RAS mm.

    Returns:
        ``(3,)`` or ``(..., 3)`` continuous voxel coordinates ``(i, j, k)`` (not rounded: voxel
        centres are at integers). A torch tensor in gives a torch tensor out (same device, float
        dtype kept, integers → float64); anything else gives a float64 numpy array.

    Raises:
        ValueError: ``affine`` is not a finite, invertible 4x4 matrix, or the points are not 3D.
    """
    a = _as_affine(affine)
    try:
        inverse = np.linalg.inv(a)
    except np.linalg.LinAlgError as e:
        raise ValueError(f"affine must be invertible, got {a.tolist()!r}.") from e
    return _apply(inverse, points_mm, "points_mm")  # type: ignore[return-value]


def voxel_to_world(affine: ArrayLike | torch.Tensor, points_vox: PointsT | ArrayLike) -> PointsT:
    """Convert voxel indices (continuous or integer) to RAS world points in mm.

    Args:
        affine: ``(4, 4)`` voxel → RAS-mm affine (numpy, torch or nested lists).
        points_vox: ``(3,)`` or ``(..., 3)`` voxel coordinates ``(i, j, k)``.

    Returns:
        ``(3,)`` or ``(..., 3)`` world points ``(x, y, z)`` in RAS mm, torch in → torch out as in
        :func:`world_to_voxel`.

    Raises:
        ValueError: ``affine`` is not a finite 4x4 matrix, or the points are not 3D.
    """
    return _apply(_as_affine(affine), points_vox, "points_vox")  # type: ignore[return-value]


def outside_image(affine: ArrayLike, shape: Sequence[int], point_mm: ArrayLike) -> np.ndarray | None:
    """The continuous voxel of the RAS point ``point_mm`` when it lies outside the image of ``shape`` (more than half
    a voxel beyond the edge voxels), else ``None``: the one rule for "a given nodule centre outside the image"."""
    vox = np.asarray(world_to_voxel(affine, np.asarray(point_mm, dtype=np.float64)), dtype=np.float64)
    if np.any(vox < -0.5) or np.any(vox > np.asarray(shape, dtype=np.float64) - 0.5):
        return vox
    return None


def equivalent_diameter_mm(volume_mm3: float) -> float:
    """Diameter of the sphere of volume ``volume_mm3`` (mm): ``(6 V / π)^(1/3)``, the size every report, table and
    size baseline of the project gives for a mask (a mask's volume is its voxel count times the voxel volume).

    Raises:
        ValueError: a negative or non-finite volume.
    """
    v = float(volume_mm3)
    if not (math.isfinite(v) and v >= 0.0):
        raise ValueError(f"volume_mm3 must be finite and >= 0, got {volume_mm3!r}.")
    return (6.0 * v / math.pi) ** (1.0 / 3.0)


def flip_lps_ras(affine: ArrayLike) -> np.ndarray:
    """A voxel-to-LPS affine as voxel-to-RAS, or the other way (the same flip): ``LPS_TO_RAS @ affine``, float64."""
    return LPS_TO_RAS @ _as_affine(affine)


def affine_from_itk(spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """The voxel-to-RAS affine of an ITK image's first three dimensions: ``LPS_TO_RAS @ [D · diag(spacing) | o]``.

    Args:
        spacing: voxel size along ITK's index axes (``GetSpacing()``), mm; only the first three are used.
        origin: LPS position of voxel ``(0, 0, 0)`` (``GetOrigin()``), mm.
        direction: the row-major ``n x n`` direction cosines (``GetDirection()``), ``n >= 3``.

    Returns:
        ``(4, 4)`` float64 affine mapping ITK index ``(i, j, k)`` to RAS mm.
    """
    n = math.isqrt(len(direction))
    if n * n != len(direction) or n < 3 or len(spacing) < 3 or len(origin) < 3:
        raise ValueError(
            f"expected an ITK geometry of at least 3 dimensions, got spacing {tuple(spacing)}, origin "
            f"{tuple(origin)}, direction of {len(direction)} values"
        )
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, dtype=np.float64).reshape(n, n)[:3, :3] * np.asarray(spacing[:3], float)
    lps[:3, 3] = np.asarray(origin[:3], dtype=np.float64)
    return LPS_TO_RAS @ lps


def itk_geometry(affine: ArrayLike) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """``(spacing, origin, direction)`` to give an ITK image (``SetSpacing``, ``SetOrigin``, ``SetDirection``) so
    that its index ``(i, j, k)`` lies where the voxel-to-RAS ``affine`` puts voxel ``(i, j, k)``; the inverse of
    :func:`affine_from_itk`. ``direction`` is row-major 3x3.

    Raises:
        ValueError: an affine that is not a finite 4x4 matrix or has a zero-length axis.
    """
    lps = flip_lps_ras(affine)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    if not np.all(spacing > 0):
        raise ValueError(f"affine has a zero-length axis (spacing {spacing.tolist()}): {lps.tolist()!r}")
    direction = lps[:3, :3] / spacing
    return (
        tuple(float(v) for v in spacing),
        tuple(float(v) for v in lps[:3, 3]),
        tuple(float(v) for v in direction.ravel()),
    )
