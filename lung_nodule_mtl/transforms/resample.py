"""Resampling a whole scan to the network's isotropic grid and a label map back, in little memory and time.

MONAI's ``Orientation`` + ``Spacing`` (what the training chains use) defines the isotropic grid: here it runs
*lazily* (MONAI's lazy resampling), which gives the target shape and affine without computing anything. The
target's axes are the input's (``Orientation`` permutes and flips them, ``Spacing`` keeps their directions, even
for an oblique scan), so the map from one grid to the other is a scaling and shift per axis, and the resampling is
a separable interpolation along each axis in turn: trilinear (with border padding, as ``Spacing(mode="bilinear",
padding_mode="border")``) or nearest neighbour (with zero padding, as ``ResampleToMatch(mode="nearest")``). That is
the arithmetic of MONAI's ``grid_sample`` on a full coordinate grid (tested against it) without the grid, which
for a 512 x 512 x 300 scan is most of the peak memory. Grids whose axes are not parallel fall back to MONAI.
Nearest neighbour at an exact half-voxel tie (2.5 mm slices from a 1 mm grid) rounds half to even, where
``grid_sample``'s choice follows float32 rounding: either voxel is a nearest one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation, ResampleToMatch, Spacing
from numpy.typing import NDArray

__all__ = ["AxisMap", "IsotropicResampler", "axis_map"]

_TOL = 1e-6


class AxisMap:
    """``dst`` voxel ``i`` along axis ``c`` sits at ``src`` voxel ``scale[c] * i + offset[c]`` along axis
    ``perm[c]`` (an axis-aligned voxel-to-voxel map: a permutation, flips and per-axis scaling)."""

    def __init__(self, perm: Sequence[int], scale: Sequence[float], offset: Sequence[float]) -> None:
        self.perm = tuple(int(p) for p in perm)
        self.scale = tuple(float(s) for s in scale)
        self.offset = tuple(float(o) for o in offset)

    def coords(self, axis: int, n: int) -> NDArray[np.float64]:
        return self.scale[axis] * np.arange(n, dtype=np.float64) + self.offset[axis]


def axis_map(src_affine: NDArray[np.floating], dst_affine: NDArray[np.floating]) -> AxisMap | None:
    """The voxel map from a ``dst`` grid to a ``src`` grid when their axes are parallel, else ``None``."""
    m = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(dst_affine, dtype=np.float64)
    a = m[:3, :3]
    nonzero = np.abs(a) > _TOL * np.abs(a).max()
    if not (np.all(nonzero.sum(axis=0) == 1) and np.all(nonzero.sum(axis=1) == 1)):
        return None
    perm = [int(np.flatnonzero(nonzero[:, c])[0]) for c in range(3)]
    return AxisMap(perm, [a[perm[c], c] for c in range(3)], [m[perm[c], 3] for c in range(3)])


def _linear_along(x: torch.Tensor, axis: int, coords: NDArray[np.float64]) -> torch.Tensor:
    """Linear interpolation of ``x`` at fractional ``coords`` along ``axis``, clamped to the edges (border)."""
    n = x.shape[axis]
    c = torch.from_numpy(np.clip(coords, 0.0, n - 1.0))
    i0 = torch.clamp(c.floor().long(), max=max(n - 2, 0))
    w_shape = [1] * x.ndim
    w_shape[axis] = -1
    w = (c - i0).to(x.dtype).reshape(w_shape)
    a = x.index_select(axis, i0)
    if n == 1:
        return a
    b = x.index_select(axis, i0 + 1)
    return b.sub_(a).mul_(w).add_(a)  # a + w (b - a), in b's memory


def _nearest_along(x: NDArray, axis: int, coords: NDArray[np.float64]) -> NDArray:
    """Nearest-neighbour samples of ``x`` at ``coords`` along ``axis``, 0 outside (zero padding)."""
    n = x.shape[axis]
    idx = np.rint(coords).astype(np.int64)  # half to even, as grid_sample's nearest
    inside = (idx >= 0) & (idx < n)
    out = np.take(x, np.clip(idx, 0, n - 1), axis=axis)
    if not inside.all():
        sel: list[slice | NDArray] = [slice(None)] * x.ndim
        sel[axis] = ~inside
        out[tuple(sel)] = 0
    return out


class IsotropicResampler:
    """Resample a ``(1, H, W, D)`` CT to the RAS grid of MONAI ``Orientation`` + ``Spacing`` and label maps back.

    Args:
        spacing_mm: the isotropic voxel, mm.
        axcodes, labels: MONAI ``Orientation`` arguments (the training chains').
    """

    def __init__(self, spacing_mm: Sequence[float], axcodes: str = "RAS", labels: Sequence[tuple] | None = None):
        self._orient = Orientation(axcodes=axcodes, labels=labels, lazy=True)
        self._spacing = Spacing(pixdim=tuple(spacing_mm), mode="bilinear", padding_mode="border", lazy=True)
        self.last_path = ""
        """``"separable"`` or ``"monai"``: how the last :meth:`to_isotropic` resampled."""

    def target(self, image: MetaTensor) -> tuple[tuple[int, int, int], NDArray[np.float64]]:
        """Shape and affine of the isotropic grid (MONAI's lazy ``Orientation`` + ``Spacing``; nothing computed)."""
        pending = self._spacing(self._orient(image))
        if not isinstance(pending, MetaTensor):  # lazy transforms of a MetaTensor give a MetaTensor
            raise TypeError(f"expected a MetaTensor from lazy Spacing, got {type(pending).__name__}.")
        shape = tuple(int(s) for s in pending.peek_pending_shape())
        affine = np.asarray(pending.peek_pending_affine(), dtype=np.float64)
        return (shape[0], shape[1], shape[2]), affine

    def to_isotropic(self, image: MetaTensor) -> MetaTensor:
        """The image on the isotropic grid (trilinear, border padding), as a float32 ``MetaTensor``."""
        shape, affine = self.target(image)
        amap = axis_map(np.asarray(image.affine), affine)
        if amap is None:  # oblique: MONAI's resampling on a full grid
            self.last_path = "monai"
            eager_o = Orientation(axcodes=self._orient.axcodes, labels=self._orient.labels)
            eager_s = Spacing(pixdim=self._spacing.pixdim, mode="bilinear", padding_mode="border")
            out = eager_s(eager_o(image))
            return out if isinstance(out, MetaTensor) else MetaTensor(out, affine=torch.as_tensor(affine))
        self.last_path = "separable"
        x = image.as_tensor()[0].float().permute(amap.perm)
        # the most shrinking axes first: every later pass works on less
        ratios = [shape[c] / max(x.shape[c], 1) for c in range(3)]
        for c in sorted(range(3), key=lambda c: ratios[c]):
            x = _linear_along(x, c, amap.coords(c, shape[c]))
        out = MetaTensor(x.contiguous().unsqueeze(0), affine=torch.as_tensor(affine, dtype=torch.float64))
        return out

    @staticmethod
    def labels_to(labels: NDArray[np.integer], src_affine: NDArray[np.floating], image: MetaTensor) -> NDArray:
        """A label map on grid ``src_affine`` resampled (nearest neighbour, 0 outside) onto ``image``'s grid."""
        dst_affine = np.asarray(image.affine, dtype=np.float64)
        dst_shape = tuple(int(s) for s in image.shape[1:])
        amap = axis_map(np.asarray(src_affine, dtype=np.float64), dst_affine)
        if amap is None:
            src = MetaTensor(torch.from_numpy(labels[None].astype(np.float32)), affine=torch.as_tensor(src_affine))
            back = ResampleToMatch(mode="nearest", padding_mode="zeros", dtype=np.float32)(src, img_dst=image)
            return np.rint(np.asarray(back[0])).astype(labels.dtype)
        x = np.transpose(labels, amap.perm)
        ratios = [dst_shape[c] / max(x.shape[c], 1) for c in range(3)]
        for c in sorted(range(3), key=lambda c: ratios[c]):
            x = _nearest_along(x, c, amap.coords(c, dst_shape[c]))
        return np.ascontiguousarray(x)
