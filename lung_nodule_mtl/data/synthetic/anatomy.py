"""The synthetic chest: implicit functions of world coordinates, sampled on any voxel grid.

A :class:`Patient` holds the per-patient draws (body size and position, wall layers, ribs, spine,
mediastinum, lungs, the airway and vessel trees, tissue densities). Its methods evaluate the
anatomy at world points (RAS, mm), so nodule placement, the crop mode and the scan mode all use one
model. Coordinates relative to the body centre are ``X = x - x0`` (towards the patient's right),
``Y = y - y0`` (anterior), and absolute ``z`` (superior); ``phi = atan2(X, Y)`` is the angle from the
anterior midline (``+pi/2`` right, ``+-pi`` posterior).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lung_nodule_mtl.data.synthetic import config as C
from lung_nodule_mtl.data.synthetic.config import Tissue
from lung_nodule_mtl.data.synthetic.geometry import Grid, perpendicular_unit

__all__ = ["Patient", "Segments", "colonize", "draw_patient", "grow_tree", "sample_lung_points"]

_BOX_PAD_MM = 12.0
"""Padding of the bounding boxes in which local structures are evaluated on a grid."""
_FAR_MM = 100.0
"""Vertical reach (mm) of the long structures (aorta, spine) beyond the lungs."""
_FLOAT = np.float32


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


@dataclass
class Segments:
    """A set of tube segments (airways or vessels) in world space.

    Attributes:
        p0: start points ``(N, 3)``, RAS mm.
        p1: end points ``(N, 3)``, RAS mm.
        radius: outer radius of each segment, mm.
        lumen: lumen (air) radius, mm; 0 for vessels.
    """

    p0: np.ndarray
    p1: np.ndarray
    radius: np.ndarray
    lumen: np.ndarray

    def __len__(self) -> int:
        return len(self.radius)

    @classmethod
    def empty(cls) -> Segments:
        """No segments."""
        z3 = np.zeros((0, 3))
        return cls(z3, z3.copy(), np.zeros(0), np.zeros(0))

    @classmethod
    def concat(cls, parts: list[Segments]) -> Segments:
        """Join several segment sets."""
        parts = [p for p in parts if len(p)] or [cls.empty()]
        return cls(
            np.concatenate([p.p0 for p in parts]),
            np.concatenate([p.p1 for p in parts]),
            np.concatenate([p.radius for p in parts]),
            np.concatenate([p.lumen for p in parts]),
        )

    def subset(self, index: np.ndarray) -> Segments:
        """The segments at ``index`` (an index or boolean array)."""
        return Segments(self.p0[index], self.p1[index], self.radius[index], self.lumen[index])

    def in_box(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Boolean ``(N,)``: the segment's bounding box (widened by its radius) meets ``[lo, hi]`` (mm)."""
        r = self.radius[:, None]
        seg_lo = np.minimum(self.p0, self.p1) - r
        seg_hi = np.maximum(self.p0, self.p1) + r
        return np.all((seg_hi >= lo) & (seg_lo <= hi), axis=1)

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Distance ``(P, N)`` (mm) from each point ``(P, 3)`` to each segment's axis."""
        d = self.p1 - self.p0
        length2 = np.maximum(np.sum(d * d, axis=1), 1e-12)
        rel = points[:, None, :] - self.p0[None, :, :]
        t = np.clip(np.sum(rel * d[None], axis=2) / length2, 0.0, 1.0)
        return np.linalg.norm(rel - t[..., None] * d[None], axis=2)


@dataclass
class Patient:
    """Per-patient anatomy: every length in mm, every position in RAS world mm, densities in HU."""

    x0: float
    y0: float
    a: float
    b_ant: float
    b_post: float
    p: float
    z_base: float
    height: float
    taper: float
    skin: float
    fat0: float
    fat_phase: float
    muscle0: float
    pectoral: float
    paraspinal: float
    intercostal: float
    rib_pitch: float
    rib_drop: float
    rib_half_h: float
    rib_half_t: float
    rib_z0: float
    dome_right: float
    dome_left: float
    apex_radius: float
    col_half: float
    col_hilum: float
    col_phase: float
    heart_c: np.ndarray
    heart_axes: np.ndarray
    aorta_r: float
    aorta_xy: np.ndarray
    arch_top: float
    asc_xy: np.ndarray
    vb_r: float
    vb_y: float
    canal_r: float
    disc: float
    sternum_hw: float
    sternum_ht: float
    trachea_xy: np.ndarray
    trachea_r: float
    carina_z: float
    oes_xy: np.ndarray
    table_gap: float
    hu: dict[int, float]
    lung_gravity: float
    lung_texture: float
    noise_hu: float
    psf_mm: float
    airways: Segments = field(default_factory=Segments.empty)
    vessels: Segments = field(default_factory=Segments.empty)
    hila: dict[str, np.ndarray] = field(default_factory=dict)

    # ----------------------------------------------------------------------------------- body
    @property
    def z_apex(self) -> float:
        """World z (mm) of the lung apices."""
        return self.z_base + self.height

    def scale(self, z: np.ndarray) -> np.ndarray:
        """Body scale ``s(z)``: 1 up to mid-chest, narrowing quadratically by ``taper`` to the apices."""
        z0 = self.z_base + C.TAPER_START * self.height
        u = np.clip((np.asarray(z, dtype=np.float64) - z0) / (self.z_apex - z0), 0.0, 1.0)
        return 1.0 - self.taper * u * u

    def _inv_k(self, phi: np.ndarray) -> np.ndarray:
        """Radius (mm) of the body outline in direction ``phi`` at scale 1 (superellipse)."""
        sx = np.abs(np.sin(phi)) / self.a
        b = np.where(np.cos(phi) >= 0, self.b_ant, self.b_post)
        sy = np.abs(np.cos(phi)) / b
        return 1.0 / np.power(sx**self.p + sy**self.p, 1.0 / self.p)

    def fat(self, phi: np.ndarray) -> np.ndarray:
        """Subcutaneous fat thickness (mm) at angle ``phi``."""
        return self.fat0 * (1.0 + C.FAT_VARIATION * np.cos(2.0 * phi + self.fat_phase))

    def muscle(self, phi: np.ndarray) -> np.ndarray:
        """Chest-wall muscle thickness (mm): base + pectorals (anterolateral) + paraspinal (posterior)."""
        aphi = np.abs(phi)
        pect = self.pectoral * np.exp(-(((aphi - C.PECTORAL_ANGLE_RAD) / C.PECTORAL_WIDTH_RAD) ** 2))
        para = self.paraspinal * np.exp(-(((np.pi - aphi) / C.PARASPINAL_WIDTH_RAD) ** 2))
        return self.muscle0 + pect + para

    def wall(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Depths (mm from the skin) of the fat/muscle, muscle/intercostal and wall/cavity boundaries."""
        t_fat = self.skin + self.fat(phi)
        t_mus = t_fat + self.muscle(phi)
        return t_fat, t_mus, t_mus + self.intercostal

    def polar(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(phi, r)`` of world ``(x, y)`` about the body centre."""
        xx, yy = x - self.x0, y - self.y0
        return np.arctan2(xx, yy), np.hypot(xx, yy)

    def depth(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Depth below the skin (mm, radial; negative outside the body) of world points (broadcast)."""
        phi, r = self.polar(x, y)
        return self._inv_k(phi) * self.scale(z) - r

    def vertebra_y(self, z: np.ndarray) -> np.ndarray:
        """World y (mm) of the vertebral bodies' centre at height ``z`` (scaled with the body)."""
        return self.y0 + self.vb_y * self.scale(z)

    # ----------------------------------------------------------------------------------- lungs
    def dome(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """World z (mm) of the diaphragm under world ``(x, y)``."""
        xx, yy = x - self.x0, y - self.y0
        h = np.where(xx >= 0, self.dome_right, self.dome_left)
        u = (np.abs(xx) - C.DOME_PEAK_X * self.a) / (C.DOME_HALF_WIDTH_X * self.a)
        v = (yy - C.DOME_PEAK_Y * self.b_ant) / (C.DOME_HALF_WIDTH_Y * self.b_ant)
        return self.z_base + h * np.clip(1.0 - u * u - v * v, 0.0, None)

    def apex_top(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """World z (mm) of the top of the lung above world ``(x, y)`` (an elliptic paraboloid)."""
        xx, yy = x - self.x0, y - self.y0
        u = np.abs(xx) - C.APEX_X * self.a
        v = yy - C.APEX_Y * self.b_post
        return self.z_apex - u * u / (2.0 * self.apex_radius) - v * v / (2.0 * C.APEX_AP_STRETCH * self.apex_radius)

    def column_half(self, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Half-width (mm) of the mediastinum at world ``(y, z)`` (broadcast).

        Widest at the level of the hila and antero-posteriorly at the trachea, narrowing towards the
        anterior junction of the lungs and, less, towards the spine, with a slow craniocaudal wobble.
        """
        z = np.asarray(z, dtype=np.float64)
        hilum = (z - self.carina_z + C.HILUM_BELOW_CARINA_MM) / C.HILUM_HALF_HEIGHT_MM
        level = self.col_half + self.col_hilum * np.exp(-(hilum**2))
        wobble = np.sin(2.0 * np.pi * z / C.MEDIASTINUM_WOBBLE_PERIOD_MM + self.col_phase)
        level = level + C.MEDIASTINUM_WOBBLE_MM * wobble
        dy = np.asarray(y, dtype=np.float64) - self.trachea_xy[1]
        floor = np.where(dy > 0, C.MEDIASTINUM_ANTERIOR_FRACTION, C.MEDIASTINUM_POSTERIOR_FRACTION)
        shape = floor + (1.0 - floor) * np.exp(-((dy / C.MEDIASTINUM_AP_SIGMA_MM) ** 2))
        return level * shape

    def _local_terms(self) -> list[tuple[Callable[..., np.ndarray], np.ndarray, np.ndarray]]:
        """Lung-margin terms of local structures: ``(term(x, y, z), box_lo, box_hi)`` in world mm."""
        zlo, zhi = self.z_base - _FAR_MM, self.z_apex + _FAR_MM
        hc, ha = self.heart_c, self.heart_axes
        rmin = float(ha.min())

        def heart(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
            e = np.sqrt(((x - hc[0]) / ha[0]) ** 2 + ((y - hc[1]) / ha[1]) ** 2 + ((z - hc[2]) / ha[2]) ** 2)
            return (e - 1.0) * rmin - C.PLEURA_MM

        ax, ay = self.aorta_xy

        def aorta(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
            zc = np.clip(z, None, self.arch_top)
            return np.sqrt((x - ax) ** 2 + (y - ay) ** 2 + (z - zc) ** 2) - self.aorta_r - C.PLEURA_MM

        a0 = np.array([ax, ay, self.arch_top])
        a1 = np.array([self.asc_xy[0], self.asc_xy[1], self.arch_top + C.ARCH_RISE_MM])

        def arch(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
            d = a1 - a0
            t = np.clip(((x - a0[0]) * d[0] + (y - a0[1]) * d[1] + (z - a0[2]) * d[2]) / float(d @ d), 0.0, 1.0)
            dist = np.sqrt((x - a0[0] - t * d[0]) ** 2 + (y - a0[1] - t * d[1]) ** 2 + (z - a0[2] - t * d[2]) ** 2)
            return dist - self.aorta_r - C.PLEURA_MM

        vw = C.VERTEBRA_WIDTH_RATIO * self.vb_r

        def spine(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
            e = np.sqrt(((x - self.x0) / vw) ** 2 + ((y - self.vertebra_y(z)) / self.vb_r) ** 2)
            return (e - 1.0) * self.vb_r - C.PLEURA_MM

        pad = _BOX_PAD_MM
        ry = self.vb_r + pad
        yv = self.y0 + self.vb_y
        return [
            (heart, hc - ha - pad, hc + ha + pad),
            (
                aorta,
                np.array([ax - self.aorta_r - pad, ay - self.aorta_r - pad, zlo]),
                np.array([ax + self.aorta_r + pad, ay + self.aorta_r + pad, self.arch_top + self.aorta_r + pad]),
            ),
            (arch, np.minimum(a0, a1) - self.aorta_r - pad, np.maximum(a0, a1) + self.aorta_r + pad),
            (spine, np.array([self.x0 - vw - pad, yv - ry, zlo]), np.array([self.x0 + vw + pad, yv + ry, zhi])),
        ]

    def lung_margin(self, points: np.ndarray) -> np.ndarray:
        """Approximate distance (mm) of world points ``(N, 3)`` inside the lungs to their boundary.

        Positive inside a lung, negative outside; the minimum of the terms of the chest wall, the
        mediastinum, the heart, the aorta, the spine, the diaphragm and the apices.
        """
        x, y, z = (np.asarray(points, dtype=np.float64)[:, a] for a in range(3))
        return np.minimum(self._wall_margin(x, y, z), self._central_margin(x, y, z))

    def _wall_margin(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Distance (mm) to the inner surface of the chest wall (the costal pleura), radially."""
        phi, r = self.polar(x, y)
        return self._inv_k(phi) * self.scale(z) - r - self.wall(phi)[2]

    def _central_margin(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Lung margin from every boundary but the chest wall (points ``(N,)``)."""
        m = np.abs(x - self.x0) - self.column_half(y, z) - C.PLEURA_MM
        m = np.minimum(m, z - self.dome(x, y))
        m = np.minimum(m, self.apex_top(x, y) - z)
        for term, _, _ in self._local_terms():
            m = np.minimum(m, term(x, y, z))
        return m

    def lung_margin_grid(self, grid: Grid, depth: np.ndarray, wall_inner: np.ndarray) -> np.ndarray:
        """:meth:`lung_margin` on every voxel of ``grid`` (float32 mm), reusing the precomputed depth.

        Args:
            grid: the voxel grid.
            depth: :meth:`depth` on the grid, ``(nx, ny, nz)``.
            wall_inner: cavity depth :meth:`wall` ``[2]`` on the grid's in-plane points ``(nx, ny)``.
        """
        x, y, z = grid.axes_mm()
        m = np.subtract(depth, wall_inner[:, :, None], dtype=_FLOAT)
        half = (self.column_half(y[:, None], z[None, :]) + C.PLEURA_MM).astype(_FLOAT)  # (ny, nz)
        ax = np.abs(x - self.x0).astype(_FLOAT)[:, None, None]
        np.minimum(m, ax - half[None], out=m)
        xx, yy = x[:, None], y[None, :]
        dome = self.dome(xx, yy).astype(_FLOAT)
        ks = np.nonzero(z < float(dome.max()))[0]
        if ks.size:
            sl = slice(int(ks[0]), int(ks[-1]) + 1)
            np.minimum(m[:, :, sl], z[None, None, sl].astype(_FLOAT) - dome[:, :, None], out=m[:, :, sl])
        top = self.apex_top(xx, yy).astype(_FLOAT)
        ks = np.nonzero(z > float(top.min()))[0]
        if ks.size:
            sl = slice(int(ks[0]), int(ks[-1]) + 1)
            np.minimum(m[:, :, sl], top[:, :, None] - z[None, None, sl].astype(_FLOAT), out=m[:, :, sl])
        for term, lo, hi in self._local_terms():
            box = grid.box(lo, hi)
            if box is None:
                continue
            bx, by, bz = grid.box_axes(box)
            np.minimum(m[box], term(bx, by, bz).astype(_FLOAT), out=m[box])
        return m

    # ----------------------------------------------------------------------------------- tissue map
    def tissue_map(self, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample the static anatomy (no airways, vessels or nodules) on ``grid``.

        Returns:
            ``(tissue, lung, cavity)``: the :class:`Tissue` class of each voxel (uint8), the lung mask
            and the thoracic-cavity mask (inside the chest wall), each ``(nx, ny, nz)``.
        """
        x, y, z = grid.axes_mm()
        xx, yy = x[:, None], y[None, :]
        phi, r = self.polar(xx, yy)
        inv_k = self._inv_k(phi)
        depth = np.multiply(inv_k[:, :, None], self.scale(z)[None, None, :], dtype=_FLOAT)
        depth -= r[:, :, None].astype(_FLOAT)
        t_fat, _, t_cav = (t.astype(_FLOAT)[:, :, None] for t in self.wall(phi))
        layer = (depth > 0).view(np.uint8)
        layer += (depth > self.skin).view(np.uint8)
        layer += (depth > t_fat).view(np.uint8)
        cavity = depth > t_cav
        layer += cavity.view(np.uint8)
        layer_classes = np.array([Tissue.OUTSIDE_AIR, Tissue.MUSCLE, Tissue.FAT, Tissue.MUSCLE, Tissue.FAT], np.uint8)
        tissue = layer_classes[layer]
        del layer
        margin = self.lung_margin_grid(grid, depth, t_cav[:, :, 0].astype(np.float64))
        lung = margin > 0
        del margin
        self._paint_organs(grid, tissue, cavity, lung)
        self._paint_ribs(grid, tissue, depth, phi, r, lung)
        self._paint_sternum(grid, tissue, depth, phi)
        self._paint_spine(grid, tissue, lung)
        if self.table_gap >= 0:
            self._paint_table(grid, tissue, xx, yy)
        tissue[lung] = Tissue.LUNG
        return tissue, lung, cavity

    def _paint_organs(self, grid: Grid, tissue: np.ndarray, cavity: np.ndarray, lung: np.ndarray) -> None:
        """Heart, aorta, oesophagus and upper abdomen: :attr:`Tissue.ORGAN` inside the cavity."""
        x, y, z = grid.axes_mm()
        dome = self.dome(x[:, None], y[None, :]).astype(_FLOAT)
        ks = np.nonzero(z < float(dome.max()))[0]
        if ks.size:
            sl = slice(int(ks[0]), int(ks[-1]) + 1)
            below = (z[None, None, sl].astype(_FLOAT) < dome[:, :, None]) & cavity[:, :, sl]
            tissue[:, :, sl][below] = Tissue.ORGAN
        for term, lo, hi in self._local_terms()[:3]:  # heart, descending aorta, arch
            box = grid.box(lo, hi)
            if box is None:
                continue
            inside = (term(*grid.box_axes(box)) < -C.PLEURA_MM) & cavity[box]
            tissue[box][inside] = Tissue.ORGAN
        ox, oy = self.oes_xy
        lo = np.array([ox - C.OESOPHAGUS_RADIUS_MM, oy - C.OESOPHAGUS_RADIUS_MM, self.z_base])
        box = grid.box(lo, np.array([ox + C.OESOPHAGUS_RADIUS_MM, oy + C.OESOPHAGUS_RADIUS_MM, 1e4]))
        if box is not None:
            bx, by, _ = grid.box_axes(box)
            disk = ((bx - ox) ** 2 + (by - oy) ** 2 < C.OESOPHAGUS_RADIUS_MM**2) & cavity[box] & ~lung[box]
            tissue[box][disk] = Tissue.ORGAN

    def _rib_band(self, phi: np.ndarray) -> np.ndarray:
        """Depth (mm) of the rib centre line at angle ``phi``: just inside the chest-wall muscles."""
        return self.wall(phi)[1] + self.rib_half_t + C.RIB_GAP_MM

    def _paint_ribs(
        self, grid: Grid, tissue: np.ndarray, depth: np.ndarray, phi: np.ndarray, r: np.ndarray, lung: np.ndarray
    ) -> None:
        """Ribs (cortex, marrow) and costal cartilage, on the in-plane band where they can lie.

        ``phi`` and ``r`` are the in-plane polar coordinates ``(nx, ny)`` of the grid about the body centre.
        """
        z = grid.axes_mm()[2]
        centre = self._rib_band(phi)
        aphi = np.abs(phi)
        band2d = aphi <= math.radians(C.RIB_POSTERIOR_MAX_DEG)
        band2d &= aphi >= math.radians(C.STERNUM_HALF_WIDTH_DEG)
        s = self.scale(z)
        d2 = self._inv_k(phi)
        # Depth range over all slices: depth(s) = inv_k * s - r; keep the pixels where a rib can lie.
        dmin, dmax = d2 * s.min() - r, d2 * s.max() - r
        band2d &= (dmax >= centre - self.rib_half_t - 1.0) & (dmin <= centre + self.rib_half_t + 1.0)
        ii, jj = np.nonzero(band2d)
        if ii.size == 0:
            return
        zoff = -self.rib_drop * ((np.pi - aphi[ii, jj]) / np.pi) ** C.RIB_DROP_EXPONENT
        dr = depth[ii, jj, :] - centre[ii, jj, None].astype(_FLOAT)
        u = (z[None, :] - zoff[:, None] - self.rib_z0) / self.rib_pitch
        k = np.rint(u)
        dz = ((u - k) * self.rib_pitch).astype(_FLOAT)
        valid = (k >= 0) & (k < C.RIB_COUNT)
        e_out = (dr / self.rib_half_t) ** 2 + (dz / self.rib_half_h) ** 2
        bone = (e_out <= 1.0) & valid
        if not bone.any():
            return
        e_in = (dr / (self.rib_half_t - C.CORTEX_MM)) ** 2 + (dz / (self.rib_half_h - C.CORTEX_MM)) ** 2
        bony = (aphi[ii, jj] >= math.radians(C.RIB_BONY_MIN_DEG))[:, None]
        cls = np.where(bony, np.where(e_in <= 1.0, Tissue.BONE_MARROW, Tissue.BONE_CORTEX), Tissue.CARTILAGE)
        sub = tissue[ii, jj, :]
        keep = bone & ~lung[ii, jj, :]
        sub[keep] = cls[keep]
        tissue[ii, jj, :] = sub

    def _paint_sternum(self, grid: Grid, tissue: np.ndarray, depth: np.ndarray, phi: np.ndarray) -> None:
        """The sternum: a flat bone behind the anterior midline of the chest wall."""
        z = grid.axes_mm()[2]
        lo, hi = (self.z_base + f * self.height for f in C.STERNUM_HEIGHT)
        ks = np.nonzero((z >= lo) & (z <= hi))[0]
        x = grid.axes_mm()[0] - self.x0
        iis = np.nonzero(np.abs(x) <= self.sternum_hw)[0]
        near = np.abs(phi[iis]) < math.radians(C.STERNUM_MAX_DEG)
        if ks.size == 0 or iis.size == 0 or not near.any():
            return
        box = (slice(int(iis[0]), int(iis[-1]) + 1), slice(None), slice(int(ks[0]), int(ks[-1]) + 1))
        centre = (self.wall(np.zeros(1))[0][0] + 0.5 * self.muscle0 + self.sternum_ht).astype(np.float64)
        dr = depth[box] - _FLOAT(centre)
        dx = (x[box[0]] / self.sternum_hw)[:, None, None]
        front = (np.abs(phi[box[0], :]) < math.radians(C.STERNUM_MAX_DEG))[:, :, None]
        e_out = dx**4 + (dr / self.sternum_ht) ** 2
        e_in = (np.abs(x[box[0]]) / (self.sternum_hw - C.CORTEX_MM))[:, None, None] ** 4 + (
            dr / (self.sternum_ht - C.CORTEX_MM)
        ) ** 2
        bone = (e_out <= 1.0) & front
        sub = tissue[box]
        sub[bone] = np.where(e_in <= 1.0, Tissue.BONE_MARROW, Tissue.BONE_CORTEX)[bone]

    def _paint_spine(self, grid: Grid, tissue: np.ndarray, lung: np.ndarray) -> None:
        """Vertebral bodies with discs, the spinal canal, arches, spinous and transverse processes."""
        vw = C.VERTEBRA_WIDTH_RATIO * self.vb_r
        reach = self.vb_r + 2 * self.canal_r + C.VERTEBRAL_ARCH_MM + C.SPINOUS_PROCESS_LENGTH_MM
        half_x = max(vw, self.canal_r + C.TRANSVERSE_PROCESS_LENGTH_MM) + 2.0
        yv = self.y0 + self.vb_y
        box = grid.box(
            np.array([self.x0 - half_x, yv - reach, -1e4]), np.array([self.x0 + half_x, yv + self.vb_r, 1e4])
        )
        if box is None:
            return
        bx, by, bz = grid.box_axes(box)
        dx = bx - self.x0
        dy = by - self.vertebra_y(bz)  # (1, ny, nz)
        e = np.sqrt((dx / vw) ** 2 + (dy / self.vb_r) ** 2)
        e_in = np.sqrt((dx / (vw - C.CORTEX_MM)) ** 2 + (dy / (self.vb_r - C.CORTEX_MM)) ** 2)
        level = np.mod(bz - self.rib_z0, self.rib_pitch)
        disc = level < self.disc
        body = e <= 1.0
        cls = np.full(np.broadcast_shapes(e.shape, bz.shape), 255, np.uint8)
        cls[np.broadcast_to(body, cls.shape)] = Tissue.BONE_CORTEX
        cls[np.broadcast_to((e_in <= 1.0), cls.shape)] = Tissue.BONE_MARROW
        cls[np.broadcast_to(body & disc, cls.shape)] = Tissue.ORGAN
        cy = dy + self.vb_r + self.canal_r + C.CANAL_GAP_MM  # relative to the canal centre
        rc = np.sqrt(dx * dx + cy * cy)
        arch = (rc > self.canal_r) & (rc <= self.canal_r + C.VERTEBRAL_ARCH_MM) & (cy < C.ARCH_FRONT * self.canal_r)
        w = C.PROCESS_HALF_WIDTH_MM
        spinous = (np.abs(dx) <= w) & (cy <= -self.canal_r) & (cy >= -self.canal_r - C.SPINOUS_PROCESS_LENGTH_MM)
        transverse = (
            (np.abs(cy + C.TRANSVERSE_PROCESS_BEHIND * self.canal_r) <= w)
            & (np.abs(dx) > self.canal_r)
            & (np.abs(dx) <= self.canal_r + C.TRANSVERSE_PROCESS_LENGTH_MM)
        )
        cls[np.broadcast_to(arch | spinous | transverse, cls.shape)] = Tissue.BONE_CORTEX
        cls[np.broadcast_to(rc <= self.canal_r, cls.shape)] = Tissue.ORGAN
        sub = tissue[box]
        paint = (cls != 255) & ~lung[box] & (sub != Tissue.OUTSIDE_AIR)
        sub[paint] = cls[paint]

    def _paint_table(self, grid: Grid, tissue: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> None:
        """The scanner table: a curved two-shell board under the patient's back (foam core = air)."""
        X = xx - self.x0
        top = self.y0 - self.b_post - self.table_gap + X * X / (2.0 * C.TABLE_CURVATURE_RADIUS_MM)
        dy = top - yy
        shell = ((dy >= 0) & (dy <= C.TABLE_SHELL_MM)) | (
            (dy >= C.TABLE_THICKNESS_MM - C.TABLE_SHELL_MM) & (dy <= C.TABLE_THICKNESS_MM)
        )
        shell &= np.abs(X) <= C.TABLE_HALF_WIDTH_MM
        ii, jj = np.nonzero(shell)
        if ii.size:
            sub = tissue[ii, jj, :]
            sub[sub == Tissue.OUTSIDE_AIR] = Tissue.TABLE
            tissue[ii, jj, :] = sub

    # ----------------------------------------------------------------------------------- misc
    def lung_box(self) -> tuple[np.ndarray, np.ndarray]:
        """World bounding box ``(lo, hi)`` (mm) of the lungs."""
        lo = np.array([self.x0 - self.a, self.y0 - self.b_post, self.z_base])
        hi = np.array([self.x0 + self.a, self.y0 + self.b_ant, self.z_apex])
        return lo, hi

    def body_half_extent(self) -> tuple[float, float]:
        """Largest half-width and half-depth of the body (mm)."""
        return self.a, max(self.b_ant, self.b_post)


def draw_patient(rng: np.random.Generator, noise_hu: tuple[float, float] = (10.0, 30.0)) -> Patient:
    """Draw one patient's anatomy (body, wall, bones, mediastinum, lungs, densities) and its trees.

    Args:
        rng: the patient's random generator.
        noise_hu: range of the scanner noise standard deviation (HU).
    """
    u = lambda r: _u(rng, r)  # noqa: E731 - local shorthand
    a, b_ant = u(C.BODY_HALF_WIDTH_MM), u(C.BODY_HALF_DEPTH_MM)
    b_post = b_ant * u(C.BACK_FLATTENING)
    z_base, height = u(C.LUNG_BASE_Z_MM), u(C.LUNG_HEIGHT_MM)
    skin, fat0, muscle0 = u(C.SKIN_MM), u(C.FAT_MM), u(C.MUSCLE_MM)
    fat_phase = u(C.FAT_PHASE_RAD)
    rib_half_t, rib_half_h = u(C.RIB_HALF_THICKNESS_MM), u(C.RIB_HALF_HEIGHT_MM)
    intercostal = 2 * rib_half_t + u(C.INTERCOSTAL_EXTRA_MM)
    vb_r = u(C.VERTEBRA_RADIUS_MM)
    back = u(C.BACK_TO_VERTEBRA_MM)
    fat_back = fat0 * (1.0 + C.FAT_VARIATION * math.cos(2.0 * math.pi + fat_phase))
    paraspinal = max(C.MIN_PARASPINAL_MM, back + 0.5 * vb_r - (skin + fat_back + muscle0 + intercostal))
    vb_y = -b_post + back + vb_r  # relative to the body centre, at scale 1
    dome_right = u(C.DOME_RIGHT_MM)
    dome_left = dome_right - u(C.DOME_LEFT_LOWER_MM)
    carina_z = z_base + u(C.CARINA_HEIGHT) * height
    hax = np.array([u(r) for r in C.HEART_SEMI_AXES_MM])
    x0, y0 = u(C.BODY_CENTRE_X_MM), u(C.BODY_CENTRE_Y_MM)
    heart_c = np.array(
        [
            x0 - u(C.HEART_LEFT_SHIFT_MM),
            y0 + u(C.HEART_ANTERIOR) * b_ant,
            z_base + dome_left + hax[2] * u(C.HEART_ON_DOME),
        ]
    )
    aorta_r = u(C.AORTA_RADIUS_MM)
    side_frac, front_frac = C.AORTA_BESIDE_SPINE
    aorta_xy = np.array([x0 - (side_frac * C.VERTEBRA_WIDTH_RATIO * vb_r + aorta_r), y0 + vb_y + front_frac * vb_r])
    trachea_r = u(C.TRACHEA_RADIUS_MM)
    trachea_xy = np.array([x0 + u(C.TRACHEA_RIGHT_MM), y0 + vb_y + vb_r + u(C.TRACHEA_BEFORE_SPINE_MM)])
    oes_xy = np.array([x0 + C.OESOPHAGUS_XY_MM[0], trachea_xy[1] - trachea_r - C.OESOPHAGUS_XY_MM[1]])
    asc_xy = np.array([x0 + C.ASCENDING_AORTA_XY_MM[0], trachea_xy[1] + C.ASCENDING_AORTA_XY_MM[1]])
    hu = {
        Tissue.OUTSIDE_AIR: C.AIR_HU,
        Tissue.FAT: u(C.FAT_HU),
        Tissue.MUSCLE: u(C.MUSCLE_HU),
        Tissue.ORGAN: u(C.ORGAN_HU),
        Tissue.CARTILAGE: u(C.CARTILAGE_HU),
        Tissue.BONE_MARROW: u(C.BONE_MARROW_HU),
        Tissue.BONE_CORTEX: u(C.BONE_CORTEX_HU),
        Tissue.LUNG: u(C.LUNG_HU),
        Tissue.VESSEL: u(C.VESSEL_HU),
        Tissue.AIRWAY_LUMEN: C.AIR_HU,
        Tissue.AIRWAY_WALL: u(C.AIRWAY_WALL_HU),
        Tissue.TABLE: u(C.TABLE_HU),
    }
    patient = Patient(
        x0=x0,
        y0=y0,
        a=a,
        b_ant=b_ant,
        b_post=b_post,
        p=u(C.BODY_EXPONENT),
        z_base=z_base,
        height=height,
        taper=u(C.UPPER_TAPER),
        skin=skin,
        fat0=fat0,
        fat_phase=fat_phase,
        muscle0=muscle0,
        pectoral=u(C.PECTORAL_MM),
        paraspinal=paraspinal,
        intercostal=intercostal,
        rib_pitch=u(C.RIB_PITCH_MM),
        rib_drop=u(C.RIB_DROP_MM),
        rib_half_h=rib_half_h,
        rib_half_t=rib_half_t,
        rib_z0=z_base - C.RIB_BELOW_LUNG_MM,
        dome_right=dome_right,
        dome_left=dome_left,
        apex_radius=u(C.APEX_RADIUS_MM),
        col_half=u(C.MEDIASTINUM_HALF_WIDTH_MM),
        col_hilum=u(C.MEDIASTINUM_HILUM_EXTRA_MM),
        col_phase=u((0.0, 2.0 * math.pi)),
        heart_c=heart_c,
        heart_axes=hax,
        aorta_r=aorta_r,
        aorta_xy=aorta_xy,
        arch_top=carina_z + u(C.ARCH_ABOVE_CARINA_MM),
        asc_xy=asc_xy,
        vb_r=vb_r,
        vb_y=vb_y,
        canal_r=u(C.SPINAL_CANAL_RADIUS_MM),
        disc=u(C.DISC_MM),
        sternum_hw=u(C.STERNUM_HALF_WIDTH_MM),
        sternum_ht=u(C.STERNUM_HALF_THICKNESS_MM),
        trachea_xy=trachea_xy,
        trachea_r=trachea_r,
        carina_z=carina_z,
        oes_xy=oes_xy,
        table_gap=u(C.TABLE_GAP_MM),
        hu={int(k): float(v) for k, v in hu.items()},
        lung_gravity=u(C.LUNG_GRAVITY_HU_PER_MM),
        lung_texture=u(C.LUNG_TEXTURE_HU),
        noise_hu=u(noise_hu),
        psf_mm=u(C.PSF_SIGMA_MM),
    )
    _grow_airways_and_vessels(patient, rng)
    return patient


# --------------------------------------------------------------------------------------------- trees
def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


_LENGTH_FACTORS = (1.0, 0.6, 0.35)
"""Tries of a segment's length (fractions of the drawn one) until its end is well inside the lung."""


def _margin_gradient(margin: Callable[[np.ndarray], np.ndarray], pts: np.ndarray, h: float = 1.0) -> np.ndarray:
    """Unit gradient of the lung margin at ``pts`` (points into the lung, away from its boundary)."""
    g = np.empty_like(pts)
    for a in range(3):
        e = np.zeros(3)
        e[a] = h
        g[:, a] = margin(pts + e) - margin(pts - e)
    return _unit(g)


def grow_tree(
    roots: list[tuple[np.ndarray, np.ndarray, float]],
    margin: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
    min_radius: float,
    max_segments: int,
    length_per_radius: tuple[float, float] = C.TREE_LENGTH_PER_RADIUS,
    major_ratio: tuple[float, float] = C.TREE_MAJOR_RATIO,
    minor_ratio: tuple[float, float] = C.TREE_MINOR_RATIO,
    lumen_fraction: float | None = None,
) -> Segments:
    """Grow a branching tree of tubes inside the lungs, one generation at a time (vectorised).

    Each segment of radius ``r`` has length ``r * U(length_per_radius) + TREE_MIN_LENGTH_MM`` and
    splits into a major and a minor child (radii ``r * U(major_ratio)`` and ``r * U(minor_ratio)``,
    angles ``U(TREE_MAJOR_ANGLE_DEG)`` and ``U(TREE_MINOR_ANGLE_DEG)`` on either side of a random
    plane). Children lean away from their root (``TREE_OUTWARD_BIAS``) and away from the lung boundary
    when near it (``TREE_WALL_AVOIDANCE``); a segment whose end would leave the lung (margin below its
    radius + 1 mm) is shortened, then dropped. Growth stops below ``min_radius``, after
    ``TREE_MAX_GENERATIONS`` or at ``max_segments``.

    Args:
        roots: ``(start, direction, radius)`` of each root segment (world mm).
        margin: the lung margin function of world points ``(N, 3)`` (mm).
        rng: random generator.
        min_radius: radius (mm) under which no child is made.
        max_segments: cap on the number of segments.
        length_per_radius: segment length per mm of radius.
        major_ratio: radius ratio of the major child.
        minor_ratio: radius ratio of the minor child.
        lumen_fraction: for airways, the lumen radius as a fraction of the outer radius (``None``:
            wall thickness ``AIRWAY_WALL_FRACTION`` of the radius, at least ``AIRWAY_MIN_WALL_MM``).

    Returns:
        The segments.
    """
    if not roots:
        return Segments.empty()
    pos = np.array([r[0] for r in roots], dtype=np.float64)
    dirs = _unit(np.array([r[1] for r in roots], dtype=np.float64))
    rad = np.array([r[2] for r in roots], dtype=np.float64)
    origin = pos.copy()
    out_p0, out_p1, out_r = [], [], []
    count = 0
    for _ in range(C.TREE_MAX_GENERATIONS):
        if len(rad) == 0 or count >= max_segments:
            break
        length = rad * rng.uniform(*length_per_radius, size=len(rad)) + C.TREE_MIN_LENGTH_MM
        ok = np.zeros(len(rad), dtype=bool)
        end = pos.copy()
        for factor in _LENGTH_FACTORS:
            todo = ~ok
            if not todo.any():
                break
            cand = pos[todo] + dirs[todo] * (factor * length[todo])[:, None]
            good = margin(cand) >= rad[todo] + C.TREE_END_MARGIN_MM
            idx = np.nonzero(todo)[0][good]
            end[idx] = cand[good]
            ok[idx] = True
        pos, end, dirs, rad, origin = pos[ok], end[ok], dirs[ok], rad[ok], origin[ok]
        n = min(len(rad), max_segments - count)
        pos, end, dirs, rad, origin = pos[:n], end[:n], dirs[:n], rad[:n], origin[:n]
        out_p0.append(pos)
        out_p1.append(end)
        out_r.append(rad)
        count += n
        if n == 0:
            break
        r_major = rad * rng.uniform(*major_ratio, size=n)
        r_minor = rad * rng.uniform(*minor_ratio, size=n)
        perp = perpendicular_unit(dirs, rng)
        a_major = np.radians(rng.uniform(*C.TREE_MAJOR_ANGLE_DEG, size=n))[:, None]
        a_minor = np.radians(rng.uniform(*C.TREE_MINOR_ANGLE_DEG, size=n))[:, None]
        d_major = np.cos(a_major) * dirs + np.sin(a_major) * perp
        d_minor = np.cos(a_minor) * dirs - np.sin(a_minor) * perp
        outward = _unit(end - origin)
        m_end = margin(end)
        grad = _margin_gradient(margin, end)
        near = (m_end < 2.0 * rad * length_per_radius[1])[:, None]
        steer = C.TREE_OUTWARD_BIAS * outward + np.where(near, C.TREE_WALL_AVOIDANCE * grad, 0.0)
        d_major = _unit(d_major + steer)
        d_minor = _unit(d_minor + steer)
        keep_major = r_major >= min_radius
        keep_minor = r_minor >= min_radius
        budget = max_segments - count
        if keep_major.sum() + keep_minor.sum() > budget:
            keep_minor[:] = False
        pos = np.concatenate([end[keep_major], end[keep_minor]])
        dirs = np.concatenate([d_major[keep_major], d_minor[keep_minor]])
        rad = np.concatenate([r_major[keep_major], r_minor[keep_minor]])
        origin = np.concatenate([origin[keep_major], origin[keep_minor]])
    p0, p1, r = np.concatenate(out_p0), np.concatenate(out_p1), np.concatenate(out_r)
    if lumen_fraction is None:
        lumen = np.zeros_like(r)
    else:
        lumen = np.maximum(r - np.maximum(C.AIRWAY_MIN_WALL_MM, (1.0 - lumen_fraction) * r), 0.0)
    return Segments(p0, p1, r, lumen)


def sample_lung_points(
    patient: Patient, rng: np.random.Generator, side: int, spacing_mm: float, min_margin: float = 2.0
) -> np.ndarray:
    """Uniform random points ``(N, 3)`` (world mm) in one lung (``side`` +1 right, -1 left).

    One point per ``spacing_mm^3`` of the lung's bounding box, kept where the lung margin is at least
    ``min_margin`` mm.
    """
    lo, hi = patient.lung_box()
    if side > 0:
        lo = np.array([patient.x0, lo[1], lo[2]])
    else:
        hi = np.array([patient.x0, hi[1], hi[2]])
    volume = float(np.prod(hi - lo))
    pts = lo + rng.random((int(volume / spacing_mm**3), 3)) * (hi - lo)
    return pts[patient.lung_margin(pts) >= min_margin]


def colonize(
    roots: list[tuple[np.ndarray, np.ndarray, float]],
    attractors: np.ndarray,
    margin: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
    step: float = C.VESSEL_STEP_MM,
    kill: float = C.VESSEL_KILL_MM,
    influence: float = C.VESSEL_INFLUENCE_MM,
    leaf_radius: float = C.VESSEL_MIN_RADIUS_MM,
    murray: float = C.MURRAY_EXPONENT,
    max_radius: float = C.VESSEL_ROOT_RADIUS_MM[1],
) -> Segments:
    """Grow a space-filling vessel tree towards attractor points (space colonisation, Runions et al. 2007).

    Each attractor pulls the tree node nearest to it (within ``influence`` mm); every pulled node
    grows a new node ``step`` mm towards the mean direction of its attractors (plus a little jitter);
    an attractor is removed once a node comes within ``kill`` mm. New nodes must lie inside the lung.
    Radii follow a pipe model: leaves have ``leaf_radius`` and a parent's radius is
    ``(sum of children's radius^murray)^(1 / murray)``, at most ``max_radius``.

    Args:
        roots: ``(start, direction, radius)`` of each root (world mm); the direction is unused.
        attractors: points ``(N, 3)`` (world mm) the tree grows towards.
        margin: lung margin of world points (mm).
        rng: random generator (jitter).
        step: node spacing (mm).
        kill: attractor removal distance (mm).
        influence: attraction radius (mm).
        leaf_radius: radius (mm) of terminal branches.
        murray: exponent of the pipe model (3 is Murray's law).
        max_radius: radius cap (mm).

    Returns:
        One segment per non-root node, from its parent.
    """
    from scipy.spatial import cKDTree

    if not roots or len(attractors) == 0:
        return Segments.empty()
    cap = C.VESSEL_MAX_NODES
    pos = np.empty((cap, 3))
    parent = np.full(cap, -1, dtype=np.int64)
    n = len(roots)
    pos[:n] = [r[0] for r in roots]
    alive = np.ones(len(attractors), dtype=bool)
    best = np.full(len(attractors), np.inf)
    owner = np.full(len(attractors), -1, dtype=np.int64)
    blocked = np.zeros(cap, dtype=bool)
    new = np.arange(n)
    batches: list[tuple[int, int]] = []  # index range of the nodes made by each iteration
    for _ in range(C.VESSEL_MAX_ITERATIONS):
        idx = np.nonzero(alive)[0]
        if idx.size == 0 or new.size == 0:
            break
        d, j = cKDTree(pos[new]).query(attractors[idx], distance_upper_bound=influence)
        closer = d < best[idx]
        best[idx[closer]] = d[closer]
        owner[idx[closer]] = new[j[closer]]
        alive &= best >= kill
        act = np.nonzero(alive & (owner >= 0))[0]
        act = act[~blocked[owner[act]]]
        if act.size == 0:
            break
        vec = attractors[act] - pos[owner[act]]
        vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-9)
        acc = np.zeros((n, 3))
        np.add.at(acc, owner[act], vec)
        grow = np.unique(owner[act])
        dirs = acc[grow]
        strong = np.linalg.norm(dirs, axis=1) > 1e-3
        grow, dirs = grow[strong], _unit(dirs[strong])
        dirs = _unit(dirs + rng.normal(0.0, C.VESSEL_JITTER, dirs.shape))
        cand = pos[grow] + step * dirs
        ok = margin(cand) >= C.VESSEL_NODE_MIN_MARGIN_MM
        blocked[grow[~ok]] = True
        grow, cand = grow[ok], cand[ok]
        m = min(len(grow), cap - n)
        if m <= 0:
            break
        pos[n : n + m] = cand[:m]
        parent[n : n + m] = grow[:m]
        new = np.arange(n, n + m)
        batches.append((n, n + m))
        n += m
    pos, parent = pos[:n], parent[:n]
    weight = np.zeros(n)
    has_child = np.zeros(n, dtype=bool)
    has_child[parent[parent >= 0]] = True
    weight[~has_child] = leaf_radius**murray
    for lo, hi in reversed(batches):  # children are always made after their parents
        np.add.at(weight, parent[lo:hi], weight[lo:hi])
    radius = np.minimum(weight ** (1.0 / murray), max_radius)
    child = np.arange(len(roots), n)
    return Segments(pos[parent[child]], pos[child], radius[child], np.zeros(child.size))


_HILUM_STEP_MM = 2.0
_HILUM_MAX_STEPS = 60


def _enter_lung(
    margin: Callable[[np.ndarray], np.ndarray], start: np.ndarray, direction: np.ndarray, side: int, radius: float
) -> np.ndarray | None:
    """First point (world mm) on a lateral-leaning line from a hilar ``start`` that is well inside the lung.

    Trees start where their root reaches the lung (margin at least its radius + 1.5 mm); ``None``
    if it does not within ``_HILUM_STEP_MM * _HILUM_MAX_STEPS``.
    """
    step = _unit(direction + np.array([float(side), 0.0, 0.0])) * _HILUM_STEP_MM
    pts = start + step * np.arange(1, _HILUM_MAX_STEPS + 1)[:, None]
    ok = np.nonzero(margin(pts) >= radius + C.HILUM_ENTRY_MARGIN_MM)[0]
    return pts[ok[0]] if ok.size else None


def _airway_lumen(r: float) -> float:
    return max(r - max(C.AIRWAY_MIN_WALL_MM, C.AIRWAY_WALL_FRACTION * r), 0.0)


def _grow_airways_and_vessels(patient: Patient, rng: np.random.Generator) -> None:
    """Trachea, main bronchi, the bronchial trees and the pulmonary arterial and venous trees."""
    u = lambda r: _u(rng, r)  # noqa: E731
    tx, ty = patient.trachea_xy
    top = np.array([tx, ty, patient.z_apex + C.TRACHEA_ABOVE_APEX_MM])
    carina = np.array([tx, ty, patient.carina_z])
    rt = patient.trachea_r
    trachea = Segments(top[None], carina[None], np.array([rt]), np.array([_airway_lumen(rt)]))
    segs = [trachea]
    margin = patient.lung_margin
    airway_roots: list[tuple[np.ndarray, np.ndarray, float]] = []
    vessel_roots: dict[int, list[tuple[np.ndarray, np.ndarray, float]]] = {1: [], -1: []}
    hilar: list[Segments] = []
    for side, (angle, length_range, ratio) in C.MAIN_BRONCHI.items():
        jitter = C.BRONCHUS_ANGLE_JITTER_DEG
        ang = math.radians(angle + u((-jitter, jitter)))
        d = _unit(np.array([side * math.sin(ang), -C.BRONCHUS_POSTERIOR_TILT, -math.cos(ang)]))
        r_main = rt * ratio
        end = carina + d * u(length_range)
        segs.append(Segments(carina[None], end[None], np.array([r_main]), np.array([_airway_lumen(r_main)])))
        patient.hila["right" if side > 0 else "left"] = end
        lateral = np.array([side, 1.0, 1.0])
        for dv in C.LOBAR_DIRECTIONS[side]:
            dj = _unit(np.array(dv) + rng.normal(0.0, C.LOBAR_DIRECTION_JITTER, 3))
            r_lobar = r_main * u(C.LOBAR_RADIUS_RATIO)
            entry = _enter_lung(margin, end, dj, side, r_lobar)
            if entry is not None:
                hilar.append(Segments(end[None], entry[None], np.array([r_lobar]), np.array([_airway_lumen(r_lobar)])))
                airway_roots.append((entry, dj, r_lobar))
            start = end + lateral * np.array(C.ARTERY_OFFSET_MM)
            dv_art = _unit(dj + rng.normal(0.0, C.VESSEL_DIRECTION_JITTER, 3))
            r_art = u(C.VESSEL_ROOT_RADIUS_MM)
            entry = _enter_lung(margin, start, dv_art, side, r_art)
            if entry is not None:
                vessel_roots[side].append((entry, dv_art, r_art))
        venous = end + lateral * np.array(C.VEIN_OFFSET_MM)
        for dv in C.VEIN_DIRECTIONS:
            dv_vein = _unit(lateral * np.array(dv) + rng.normal(0.0, C.VESSEL_DIRECTION_JITTER, 3))
            r_vein = u(C.VESSEL_ROOT_RADIUS_MM)
            entry = _enter_lung(margin, venous, dv_vein, side, r_vein)
            if entry is not None:
                vessel_roots[side].append((entry, dv_vein, r_vein))
    airways = grow_tree(
        airway_roots,
        margin,
        rng,
        min_radius=C.AIRWAY_MIN_RADIUS_MM,
        max_segments=C.AIRWAY_MAX_SEGMENTS,
        length_per_radius=C.AIRWAY_LENGTH_PER_RADIUS,
        major_ratio=C.AIRWAY_MAJOR_RATIO,
        minor_ratio=C.AIRWAY_MINOR_RATIO,
        lumen_fraction=1.0 - C.AIRWAY_WALL_FRACTION,
    )
    patient.airways = Segments.concat([*segs, *hilar, airways])
    patient.vessels = Segments.concat(
        [
            colonize(roots, sample_lung_points(patient, rng, side, C.VESSEL_ATTRACTOR_SPACING_MM), margin, rng)
            for side, roots in vessel_roots.items()
        ]
    )
