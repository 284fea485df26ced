"""Voxel grids with DICOM-like affines, and the small geometric helpers of the generator.

A :class:`Grid` is an axis-aligned voxel lattice written the way DICOM-derived NIfTI files are: the
RAS affine is ``diag(-sx, -sy, sz)`` plus a translation, so voxel axes point to the patient's
Left, Posterior and Superior (``nibabel.aff2axcodes`` gives ``('L', 'P', 'S')``). Voxel centres of
axis ``i`` therefore sit at world ``x = origin_x - i * sx`` (mm, RAS), and likewise ``y``; ``z``
grows with ``k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "AXIS_SIGNS",
    "Grid",
    "fibonacci_sphere",
    "random_rotation",
    "random_unit_vectors",
    "segment_distance",
    "slab_occupancy",
    "surface_occupancy",
    "uniform",
]

AXIS_SIGNS = np.array([-1.0, -1.0, 1.0])
"""Sign of each voxel axis in RAS world space (L, P, S orientation)."""


@dataclass(frozen=True)
class Grid:
    """An L,P,S-oriented voxel grid.

    Attributes:
        shape: ``(nx, ny, nz)`` voxels.
        spacing: ``(sx, sy, sz)`` voxel size in mm (positive).
        origin: RAS world position (mm) of the centre of voxel ``(0, 0, 0)``.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-RAS matrix (mm), ``diag(-sx, -sy, sz)`` with the origin as translation."""
        aff = np.diag([*(AXIS_SIGNS * np.asarray(self.spacing, dtype=np.float64)), 1.0])
        aff[:3, 3] = self.origin
        return aff

    @property
    def voxel_volume(self) -> float:
        """Volume of one voxel, mm^3."""
        return float(np.prod(self.spacing))

    def axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates (RAS mm, float64) of the voxel centres along ``i``, ``j`` and ``k``."""
        return tuple(  # type: ignore[return-value]
            self.origin[a] + AXIS_SIGNS[a] * self.spacing[a] * np.arange(self.shape[a], dtype=np.float64)
            for a in range(3)
        )

    def world_to_voxel(self, points: np.ndarray) -> np.ndarray:
        """Continuous voxel coordinates ``(N, 3)`` of RAS world points ``(N, 3)`` (mm)."""
        pts = np.asarray(points, dtype=np.float64)
        return (pts - np.asarray(self.origin)) / (AXIS_SIGNS * np.asarray(self.spacing))

    def voxel_to_world(self, voxels: np.ndarray) -> np.ndarray:
        """RAS world points (mm) of voxel coordinates ``(N, 3)``."""
        vox = np.asarray(voxels, dtype=np.float64)
        return np.asarray(self.origin) + vox * AXIS_SIGNS * np.asarray(self.spacing)

    def box(self, lo_mm: np.ndarray, hi_mm: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels whose centres lie in the world box ``[lo_mm, hi_mm]`` (RAS mm).

        Returns ``None`` when the box misses the grid.
        """
        a = self.world_to_voxel(np.asarray(lo_mm, dtype=np.float64)[None])[0]
        b = self.world_to_voxel(np.asarray(hi_mm, dtype=np.float64)[None])[0]
        start = np.ceil(np.minimum(a, b) - 1e-9).astype(int)
        stop = np.floor(np.maximum(a, b) + 1e-9).astype(int) + 1
        start = np.maximum(start, 0)
        stop = np.minimum(stop, self.shape)
        if np.any(stop <= start):
            return None
        return tuple(slice(int(s), int(e)) for s, e in zip(start, stop, strict=True))  # type: ignore[return-value]

    def box_axes(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates (mm) of the voxel centres of ``box``, shaped to broadcast to its 3D shape."""
        axes = self.axes_mm()
        x, y, z = (axes[a][box[a]] for a in range(3))
        return x[:, None, None], y[None, :, None], z[None, None, :]

    def contains(self, points: np.ndarray, margin_voxels: float = 0.0) -> np.ndarray:
        """Whether world points ``(N, 3)`` lie inside the grid, at least ``margin_voxels`` from its faces."""
        vox = self.world_to_voxel(points)
        return np.all((vox >= margin_voxels - 0.5) & (vox <= np.asarray(self.shape) - 0.5 - margin_voxels), axis=1)


def surface_occupancy(signed_distance_mm: np.ndarray, width_mm: float) -> np.ndarray:
    """Fraction of a voxel inside a surface, from the signed distance (mm, negative inside).

    A linear ramp of ``width_mm`` centred on the surface: 1 deep inside, 0.5 on the surface.
    """
    out = np.multiply(signed_distance_mm, -1.0 / width_mm, dtype=np.float32)
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def slab_occupancy(distance_mm: np.ndarray, radius_mm: np.ndarray | float, width_mm: float) -> np.ndarray:
    """Fraction of a voxel of width ``width_mm`` covered by a tube of ``radius_mm`` at ``distance_mm``.

    The overlap of the voxel's extent ``[d - w/2, d + w/2]`` with ``[-r, r]``, divided by ``w``: it
    tends to :func:`surface_occupancy` for thick tubes and to ``2 r / w`` (the partial volume of a
    thin tube) when the tube is thinner than the voxel.
    """
    half = 0.5 * width_mm
    upper = np.minimum(distance_mm + half, radius_mm)
    lower = np.maximum(distance_mm - half, -np.asarray(radius_mm))
    out = np.subtract(upper, lower, dtype=np.float32)
    out *= 1.0 / width_mm
    return np.clip(out, 0.0, 1.0, out=out)


def segment_distance(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) from broadcastable coordinates to the segment ``a -> b``, and the position along it.

    Returns:
        ``(distance, t)`` with ``t`` in ``[0, 1]`` the parameter of the nearest point on the segment.
    """
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    length2 = float(d @ d)
    dx, dy, dz = x - a[0], y - a[1], z - a[2]
    if length2 <= 0.0:
        t = np.zeros(np.broadcast_shapes(np.shape(dx), np.shape(dy), np.shape(dz)), dtype=np.float32)
    else:
        t = np.clip((dx * d[0] + dy * d[1] + dz * d[2]) / length2, 0.0, 1.0).astype(np.float32)
    ex, ey, ez = dx - t * d[0], dy - t * d[1], dz - t * d[2]
    return np.sqrt(ex * ex + ey * ey + ez * ez).astype(np.float32), t


def fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors ``(n, 3)`` (a deterministic quadrature of the sphere)."""
    i = np.arange(n, dtype=np.float64) + 0.5
    zc = 1.0 - 2.0 * i / n
    r = np.sqrt(1.0 - zc * zc)
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), zc], axis=1)


def uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """One float drawn uniformly from ``[bounds[0], bounds[1])``."""
    return float(rng.uniform(bounds[0], bounds[1]))


def random_unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random unit vectors ``(n, 3)``, uniform on the sphere."""
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def perpendicular_unit(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random unit vectors perpendicular to each row of ``d`` (``(N, 3)`` unit vectors)."""
    v = rng.standard_normal(d.shape)
    v -= np.sum(v * d, axis=1, keepdims=True) * d
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norm, 1e-9)
