"""The synthetic chest: implicit functions of world coordinates, sampled on any voxel grid.

A :class:`Patient` holds the per-patient draws (body size and position, wall layers, ribs, spine,
mediastinum, lungs, the airway and vessel trees, tissue densities). Its methods evaluate the
anatomy at world points (RAS, mm), so nodule placement, the crop mode and the scan mode all use one
model. Coordinates relative to the body centre are ``X = x - x0`` (towards the patient's right),
``Y = y - y0`` (anterior), and absolute ``z`` (superior); ``phi = atan2(X, Y)`` is the angle from the
anterior midline (``+pi/2`` right, ``+-pi`` posterior). The airway and vessel trees are grown by
:mod:`lung_nodule_mtl.data.synthetic.trees` (its :class:`Segments`, :func:`grow_tree`,
:func:`colonize` and :func:`sample_lung_points` are re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lung_nodule_mtl.data.synthetic import config as C
from lung_nodule_mtl.data.synthetic.config import Tissue
from lung_nodule_mtl.data.synthetic.geometry import Grid, uniform
from lung_nodule_mtl.data.synthetic.trees import (
    Segments,
    colonize,
    grow_airways_and_vessels,
    grow_tree,
    sample_lung_points,
)

__all__ = ["Patient", "Segments", "colonize", "draw_patient", "grow_tree", "sample_lung_points"]

_BOX_PAD_MM = 12.0
"""Padding of the bounding boxes in which local structures are evaluated on a grid."""
_FAR_MM = 100.0
"""Vertical reach (mm) of the long structures (aorta, spine) beyond the lungs."""
_FLOAT = np.float32


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
    u = lambda r: uniform(rng, r)  # noqa: E731 - local shorthand
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
    x0, y0 = u(C.BODY_CENTER_X_MM), u(C.BODY_CENTER_Y_MM)
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
    grow_airways_and_vessels(patient, rng)
    return patient
