"""Render a patient and its nodules on a voxel grid: CT in HU, nodule mask, tissue map.

Order of the rendering (all before the scanner's blur): the static anatomy as a tissue map with
per-patient densities; the dependent gradient and correlated texture of the parenchyma; vessels
(inside the lungs) and airways (inside the thoracic cavity, outside the heart and great vessels) as
partial-volume occupancies; the nodules; white noise; then one Gaussian blur (``PSF_SIGMA_MM``
in-plane, ``PSF_SIGMA_Z_VOXELS`` along z) for the reconstruction kernel, the slice profile and the
partial volume, which also correlates the noise. Values are rounded and clipped to
``[HU_MIN, HU_MAX]``.

Vessels and airways thicker than about a voxel are drawn exactly (the overlap of each voxel with
the tube); thinner vessels are splatted along their axis as the fraction of voxel volume they fill,
so that sub-voxel vessels keep their partial-volume contrast instead of flickering in and out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from lung_nodule_mtl.data.synthetic import config as C
from lung_nodule_mtl.data.synthetic.anatomy import Patient, Segments
from lung_nodule_mtl.data.synthetic.config import Tissue
from lung_nodule_mtl.data.synthetic.geometry import Grid, segment_distance, slab_occupancy
from lung_nodule_mtl.data.synthetic.nodules import Nodule, render_nodule

__all__ = ["SyntheticVolume", "render_volume"]

_FLOAT = np.float32
_TRUNCATE = 3.0
"""Gaussian kernels are cut at this many sigmas."""
_THIN_RADIUS_FACTOR = 0.6
"""Vessels thinner than this times the geometric mean pixel size (mm) are splatted."""
_SPLAT_STEP = 0.5
"""Splatting step along a vessel, as a fraction of the smallest voxel size."""


@dataclass
class SyntheticVolume:
    """One rendered volume and its ground truth (all arrays ``(nx, ny, nz)`` in L,P,S voxel order).

    Attributes:
        name: the case id (file stem).
        image: CT, int16 HU.
        mask: nodule mask, uint8 0/1 (every nodule rendered in the volume).
        tissue: :class:`Tissue` class of each voxel, uint8 (before blur and noise).
        lung: lung mask (bool), before vessels and nodules.
        grid: the voxel grid; ``grid.affine`` is the RAS affine written to the NIfTI files.
        nodules: the nodules this volume's datalist items describe.
        visible: all nodules that appear in the volume (in crops, possibly another of the patient's).
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    tissue: np.ndarray
    lung: np.ndarray
    grid: Grid
    nodules: list[Nodule]
    visible: list[Nodule] = field(default_factory=list)

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-RAS matrix (mm)."""
        return self.grid.affine

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size ``(sx, sy, sz)`` in mm."""
        return self.grid.spacing


def _gauss_noise_gain(sigma: float) -> float:
    """Standard deviation left of unit white noise after a 1D Gaussian filter of ``sigma`` voxels."""
    if sigma <= 0:
        return 1.0
    radius = int(_TRUNCATE * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    return float(np.sqrt(np.sum(k * k)))


def _noise_gain(sigmas: tuple[float, ...]) -> float:
    return float(np.prod([_gauss_noise_gain(s) for s in sigmas]))


def _grid_box_mm(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    corners = grid.voxel_to_world(np.array([[0, 0, 0], np.asarray(grid.shape) - 1], dtype=np.float64))
    return corners.min(axis=0), corners.max(axis=0)


def _tube_occupancy(
    segs: Segments, grid: Grid, out: np.ndarray, lumen_out: np.ndarray | None = None, h: float = 1.0
) -> None:
    """Max-accumulate the exact occupancy of each segment (and of its lumen) into ``out``."""
    for a, b, r, rl in zip(segs.p0, segs.p1, segs.radius, segs.lumen, strict=True):
        pad = r + h
        box = grid.box(np.minimum(a, b) - pad, np.maximum(a, b) + pad)
        if box is None:
            continue
        dist, _ = segment_distance(*grid.box_axes(box), a, b)
        np.maximum(out[box], slab_occupancy(dist, r, h), out=out[box])
        if lumen_out is not None and rl > 0:
            np.maximum(lumen_out[box], slab_occupancy(dist, rl, h), out=lumen_out[box])


def _splat_thin(segs: Segments, grid: Grid, out: np.ndarray) -> None:
    """Add the volume fraction of thin tubes to ``out``, spread trilinearly along their axes."""
    if len(segs) == 0:
        return
    step = _SPLAT_STEP * min(grid.spacing)
    length = np.linalg.norm(segs.p1 - segs.p0, axis=1)
    n = np.maximum(np.ceil(length / step).astype(int), 1)
    seg = np.repeat(np.arange(len(segs)), n)
    first = np.cumsum(n) - n
    t = (np.arange(int(n.sum())) - first[seg] + 0.5) / n[seg]
    pts = segs.p0[seg] + t[:, None] * (segs.p1 - segs.p0)[seg]
    weight = np.pi * segs.radius[seg] ** 2 * (length / n)[seg] / grid.voxel_volume
    vox = grid.world_to_voxel(pts)
    base = np.floor(vox).astype(np.int64)
    frac = vox - base
    shape = np.asarray(grid.shape)
    flat = out.reshape(-1)
    for corner in range(8):
        off = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        idx = base + off
        w = weight * np.prod(np.where(off == 1, frac, 1.0 - frac), axis=1)
        ok = np.all((idx >= 0) & (idx < shape), axis=1)
        lin = np.ravel_multi_index(tuple(idx[ok].T), grid.shape)
        np.add.at(flat, lin, w[ok].astype(_FLOAT))


def render_volume(
    patient: Patient,
    grid: Grid,
    nodules: list[Nodule],
    rng: np.random.Generator,
    name: str = "volume",
    described: list[Nodule] | None = None,
) -> SyntheticVolume:
    """Render the patient's chest and nodules on ``grid``.

    Args:
        patient: the anatomy.
        grid: the voxel grid (any position, spacing and size).
        nodules: nodules to paint (those outside the grid are skipped).
        rng: generator of the image noise and texture (one per volume).
        name: the case id.
        described: the nodules the volume's datalist items describe (default: all that appear).

    Returns:
        The :class:`SyntheticVolume`.
    """
    tissue, lung, cavity = patient.tissue_map(grid)
    cavity &= tissue != Tissue.ORGAN  # airways run in the lungs and mediastinal fat, not through the heart
    lut = np.zeros(256, dtype=_FLOAT)
    for cls, value in patient.hu.items():
        lut[cls] = value
    hu = lut[tissue]
    white = rng.standard_normal(grid.shape, dtype=_FLOAT)
    y = grid.axes_mm()[1]
    h = float(np.prod(grid.spacing)) ** (1.0 / 3.0)

    lo, hi = patient.lung_box()
    lung_box = grid.box(lo, hi)
    if lung_box is not None and lung[lung_box].any():
        sub, lsub = hu[lung_box], lung[lung_box]
        gravity = (-patient.lung_gravity * (y[lung_box[1]] - patient.y0)).astype(_FLOAT)
        np.add(sub, gravity[None, :, None], out=sub, where=lsub)
        sigma = tuple(C.LUNG_TEXTURE_SIGMA_MM / s for s in grid.spacing)
        texture = ndimage.gaussian_filter(white[lung_box], sigma, truncate=_TRUNCATE)
        texture *= _FLOAT(patient.lung_texture / _noise_gain(sigma))
        np.add(sub, texture, out=sub, where=lsub)
        del texture

    g_lo, g_hi = _grid_box_mm(grid)
    vessels = patient.vessels.subset(patient.vessels.in_box(g_lo, g_hi))
    if len(vessels):
        frac = np.zeros(grid.shape, dtype=_FLOAT)
        thin = vessels.radius < _THIN_RADIUS_FACTOR * float(np.sqrt(grid.spacing[0] * grid.spacing[1]))
        _tube_occupancy(vessels.subset(~thin), grid, frac, h=h)
        _splat_thin(vessels.subset(thin), grid, frac)
        np.minimum(frac, 1.0, out=frac)
        frac *= lung
        hu += frac * (_FLOAT(patient.hu[Tissue.VESSEL]) - hu)
        tissue[frac >= 0.5] = Tissue.VESSEL
        del frac

    airways = patient.airways.subset(patient.airways.in_box(g_lo, g_hi))
    if len(airways):
        wall = np.zeros(grid.shape, dtype=_FLOAT)
        lumen = np.zeros(grid.shape, dtype=_FLOAT)
        _tube_occupancy(airways, grid, wall, lumen, h=h)
        wall *= cavity
        lumen *= cavity
        hu += wall * (_FLOAT(patient.hu[Tissue.AIRWAY_WALL]) - hu)
        hu += lumen * (_FLOAT(C.AIR_HU) - hu)
        tissue[wall >= 0.5] = Tissue.AIRWAY_WALL
        tissue[lumen >= 0.5] = Tissue.AIRWAY_LUMEN
        del wall, lumen

    mask = np.zeros(grid.shape, dtype=np.uint8)
    visible = [nod for nod in nodules if render_nodule(nod, grid, hu, tissue, lung, mask)]

    psf = (
        *(max(patient.psf_mm / s, C.PSF_MIN_SIGMA_VOXELS) for s in grid.spacing[:2]),
        C.PSF_SIGMA_Z_VOXELS,
    )
    white *= _FLOAT(patient.noise_hu / _noise_gain(psf))
    hu += white
    del white
    image = ndimage.gaussian_filter(hu, psf, truncate=_TRUNCATE)
    del hu
    np.rint(image, out=image)
    np.clip(image, C.HU_MIN, C.HU_MAX, out=image)
    described = visible if described is None else described
    return SyntheticVolume(
        name=name,
        image=image.astype(np.int16),
        mask=mask,
        tissue=tissue,
        lung=lung,
        grid=grid,
        nodules=list(described),
        visible=visible,
    )
