"""Real nodules in real-looking lungs: a bank of nodules cut out along their masks and pasted into whole CT scans.

The LIDC-IDRI VOIs of ``../shared/data/lidc_vois`` are cut tightly around each nodule (median 30 x 30 x 7.6 mm; in
456 of 818 the mask touches the first and the last slice), so a crop padded out to a training window is the nodule's
slab between two slabs of air, which no real scan looks like. This module keeps what is real about a VOI — the
nodule's own voxels, in HU, and its radiologists' mask and ratings — and puts it where a detector meets nodules:
inside the lungs of whole scans, solitary, against vessels or against the pleura.

* :class:`NoduleBank` — every nodule of a datalist of nodule crops (``prepare-vois``, ``synth --mode crops``,
  ``prepare-lidc``) resampled to the training grid (isotropic ``spacing_mm``, RAS), cut to its mask's bounding box
  plus a margin: HU patch, mask, and the item's labels and identifiers (patient, fold). Saved as one ``.npz``.
* :func:`paste_nodule` — blend one bank nodule into a HU region on the same grid, in place:
  ``out = (1 - a) host + a max(nodule, host)`` with ``a`` the mask with a Gaussian soft edge (``edge_mm``), so the
  nodule's own HU replace the host's inside the mask, partial-volume at its edge, and anything denser of the host
  (a vessel, the chest wall) shows through a ground-glass nodule instead of being erased; the label gets the exact
  (flipped/rotated) mask.
* :func:`sampling_points` — where, in a scan, windows are centred: lung parenchyma (``hu < -400`` inside the lung
  mask: solitary places, random negatives) and dense voxels inside the lung mask (``hu >= -500``: vessels, airway
  walls, the pleura and chest wall within the mask's margin: the hard negatives, and juxta-vascular /
  juxta-pleural places for an inserted nodule).
* :func:`nodule_place` — where a nodule goes for such a place: centred on parenchyma, or moved off a dense voxel by
  its radius into the lung so that it abuts the vessel or the pleura; rejected when more than
  :data:`DEFAULT_MAX_DENSE_OVERLAP` of its mask would lie on dense host voxels (:func:`dense_overlap`), where
  ``max(nodule, host)`` shows the host and the label would claim chest wall or mediastinum as nodule.
* :func:`insert_nodules` — several bank nodules into one whole scan, apart from each other and from the scan's own
  nodules, for evaluation scans (``lung-nodule-mtl insert-nodules``).

LIDC-IDRI (CC BY 3.0): Armato SG III et al., Medical Physics 38:915-931, 2011, doi:10.7937/K9/TCIA.2015.LO9QL9SX.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lung_nodule_mtl.constants import AIR_HU, ATTRIBUTE_NAMES, Keys
from lung_nodule_mtl.io import equivalent_diameter_mm, find_cases, load_ct
from lung_nodule_mtl.utils.deprecation import renamed_keyword

__all__ = [
    "BANK_LABEL_KEYS",
    "BankNodule",
    "NoduleBank",
    "dense_overlap",
    "insert_into_scans",
    "insert_nodules",
    "nodule_place",
    "paste_nodule",
    "random_orientation",
    "sampling_points",
]

logger = logging.getLogger(__name__)

BANK_LABEL_KEYS: tuple[str, ...] = (
    str(Keys.MALIGNANCY),
    str(Keys.MALIGNANCY_SCORE),
    *ATTRIBUTE_NAMES,
)
"""Labels a bank nodule carries from its datalist item to the windows it is pasted into."""
_INFO_KEYS = (str(Keys.CASE_ID), str(Keys.PATIENT_ID), str(Keys.NODULE_ID), str(Keys.FOLD), str(Keys.DIAMETER))

PARENCHYMA_MAX_HU = -400.0
"""Lung voxels below this are parenchyma: places for solitary nodules and random negative windows."""
DENSE_MIN_HU = -500.0
"""Lung-mask voxels at or above this with parenchyma around them are vessels, airway walls and the pleura."""
DENSE_CONTEXT_MM = 7.0
"""Side of the cube around a dense voxel in which :data:`DENSE_MIN_PARENCHYMA` of the voxels must be parenchyma (so
dense places are in or against the lung, not deep in the chest wall or the mediastinum that the lung mask's margin
reaches)."""
DENSE_MIN_PARENCHYMA = 0.25
PARENCHYMA_MIN_CONTEXT = 0.5
"""A parenchyma place needs at least this share of parenchyma in its 7 mm cube (not an air pocket of the trachea,
the oesophagus or the bowel that the lung mask's margin reaches)."""
DEFAULT_EDGE_MM = 1.0
"""Standard deviation of the Gaussian soft edge of a pasted nodule, mm."""
DENSE_OVERLAP_HU = -300.0
"""Host voxels at or above this under a pasted nodule's mask hide that part of it (``max(nodule, host)`` keeps the
host): vessels, airway walls, the pleura, the chest wall, the mediastinum."""
DEFAULT_MAX_DENSE_OVERLAP = 0.15
"""Largest share of a pasted nodule's mask that may fall on dense host voxels (:data:`DENSE_OVERLAP_HU`): a vessel
may cross a nodule, but a nodule half inside the chest wall or the mediastinum is invisible there while its label
still claims it."""
DEFAULT_MARGIN_MM = 3.0
"""Margin kept around a bank nodule's mask, mm (room for the soft edge)."""


@dataclass
class BankNodule:
    """One nodule of a :class:`NoduleBank`: HU patch and mask on the bank's isotropic RAS grid, and its labels.

    The patch's voxel ``shape // 2`` is the centre of the mask's bounding box (not necessarily of mass).
    """

    hu: NDArray[np.int16]
    mask: NDArray[np.bool_]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def volume_voxels(self) -> int:
        return int(self.mask.sum())

    def labels(self) -> dict[str, Any]:
        """The nodule's labels (``None`` where unknown), as a datalist item has them."""
        return {k: self.info.get(k) for k in BANK_LABEL_KEYS}


def _cut(hu: NDArray[Any], mask: NDArray[np.bool_], centre_vox: NDArray[np.float64], margin: int) -> BankNodule | None:
    """The mask component at (or nearest to) ``centre_vox`` with ``margin`` voxels around it; ``None`` if empty."""
    comp, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return None
    c = np.clip(np.round(centre_vox).astype(int), 0, np.asarray(mask.shape) - 1)
    chosen = int(comp[tuple(c)])
    if chosen == 0:  # the centre is off the mask: the nearest component
        _, idx = ndimage.distance_transform_edt(comp == 0, return_indices=True)
        chosen = int(comp[tuple(int(i[tuple(c)]) for i in idx)])
    m = comp == chosen
    box = ndimage.find_objects(m.astype(np.int32))[0]
    lo = [s.start - margin for s in box]
    hi = [s.stop + margin for s in box]
    pad = [(max(-a, 0), max(b - n_, 0)) for a, b, n_ in zip(lo, hi, mask.shape, strict=True)]
    src = tuple(slice(max(a, 0), min(b, n_)) for a, b, n_ in zip(lo, hi, mask.shape, strict=True))
    patch = np.pad(np.asarray(hu[src], dtype=np.float32), pad, mode="constant", constant_values=AIR_HU)
    mpatch = np.pad(m[src], pad, mode="constant", constant_values=False)
    return BankNodule(np.round(np.clip(patch, -32768, 32767)).astype(np.int16), mpatch)


def _load_item(args: tuple[dict[str, Any], tuple[float, float, float], float]) -> BankNodule | None:
    """Load one datalist item (image + mask), resample to the isotropic RAS grid and cut its nodule out."""
    item, spacing, margin_mm = args
    from monai.transforms import Compose

    from lung_nodule_mtl.io.geometry import world_to_voxel  # (here: transforms imports this module)
    from lung_nodule_mtl.transforms.chains import _load  # the training chains' own load → RAS → spacing

    keys = [str(Keys.IMAGE), str(Keys.LABEL)]
    data = Compose(_load(keys, spacing, str(Keys.IMAGE)))({k: item[k] for k in keys})
    image, label = data[keys[0]], data[keys[1]]
    centre = world_to_voxel(np.asarray(image.affine, dtype=np.float64), np.asarray(item[str(Keys.CENTER_WORLD)]))
    margin = max(math.ceil(margin_mm / min(spacing)), 1)
    nodule = _cut(image[0].numpy(), label[0].numpy() > 0.5, np.asarray(centre, dtype=np.float64), margin)
    if nodule is None:
        return None
    nodule.info = {k: item.get(k) for k in (*_INFO_KEYS, *BANK_LABEL_KEYS)}
    return nodule


class NoduleBank:
    """Nodules cut out of a datalist of nodule crops, on one isotropic RAS grid, ready to paste into scans.

    Args:
        nodules: the nodules.
        spacing_mm: their grid's voxel size (mm), that of the scans they are pasted into.
    """

    def __init__(self, nodules: Sequence[BankNodule], spacing_mm: Sequence[float] = (1.0, 1.0, 1.0)) -> None:
        self.nodules = list(nodules)
        self.spacing_mm = tuple(float(s) for s in spacing_mm)

    def __len__(self) -> int:
        return len(self.nodules)

    def __getitem__(self, index: int) -> BankNodule:
        return self.nodules[index]

    @classmethod
    def from_items(
        cls,
        items: Iterable[Mapping[str, Any]],
        spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
        margin_mm: float = DEFAULT_MARGIN_MM,
        workers: int = 0,
    ) -> NoduleBank:
        """Build a bank from datalist items (``image``, ``label``, ``center_world_mm``, labels); items whose mask is
        empty are skipped with a warning.

        Args:
            items: nodule-crop items with absolute paths (as :func:`~lung_nodule_mtl.data.load_datalist` gives).
            spacing_mm: the grid of the scans the nodules go into (the training grid).
            margin_mm: margin kept around each mask.
            workers: processes to load with (0: in this process).

        Raises:
            ValueError: an item without ``image``, ``label`` or ``center_world_mm``.
        """
        items = list(items)
        for i, item in enumerate(items):
            missing = [k for k in (Keys.IMAGE, Keys.LABEL, Keys.CENTER_WORLD) if item.get(str(k)) is None]
            if missing:
                raise ValueError(f"NoduleBank: item {i} ({item.get(str(Keys.CASE_ID))!r}) has no {missing[0]!s}.")
        sx, sy, sz = (float(s) for s in spacing_mm)
        jobs = [(dict(item), (sx, sy, sz), float(margin_mm)) for item in items]
        if workers and workers > 0 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=int(workers)) as pool:
                loaded = list(pool.map(_load_item, jobs, chunksize=8))
        else:
            loaded = [_load_item(j) for j in jobs]
        nodules = []
        for item, nodule in zip(items, loaded, strict=True):
            if nodule is None:
                logger.warning("NoduleBank: %s has an empty mask: skipped.", item.get(str(Keys.CASE_ID)))
                continue
            nodules.append(nodule)
        return cls(nodules, (sx, sy, sz))

    def select(self, folds: Iterable[int] | None = None, patients: Iterable[str] | None = None) -> NoduleBank:
        """The nodules of the given folds and/or patients."""
        fold_set = None if folds is None else {int(f) for f in folds}
        patient_set = None if patients is None else {str(p) for p in patients}
        keep = [
            n
            for n in self.nodules
            if (
                fold_set is None or (n.info.get(str(Keys.FOLD)) is not None and int(n.info[str(Keys.FOLD)]) in fold_set)
            )
            and (patient_set is None or str(n.info.get(str(Keys.PATIENT_ID))) in patient_set)
        ]
        return NoduleBank(keep, self.spacing_mm)

    def patients(self) -> set[str]:
        return {str(n.info.get(str(Keys.PATIENT_ID))) for n in self.nodules}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the bank as one compressed ``.npz`` (temporary file, then rename)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {}
        for i, n in enumerate(self.nodules):
            arrays[f"hu_{i}"] = n.hu
            arrays[f"mask_{i}"] = n.mask
        meta = {"spacing_mm": list(self.spacing_mm), "info": [n.info for n in self.nodules]}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        tmp = p.with_name(f".{p.name}.tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NoduleBank:
        """Read a bank written by :meth:`save`.

        Raises:
            ValueError: the file is not such a bank (the message names it).
        """
        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode("utf-8"))
                nodules = [
                    BankNodule(z[f"hu_{i}"].astype(np.int16), z[f"mask_{i}"].astype(bool), dict(info))
                    for i, info in enumerate(meta["info"])
                ]
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{p}: not a nodule bank written by NoduleBank.save ({e}).") from e
        return cls(nodules, meta["spacing_mm"])


def random_orientation(nodule: BankNodule, rng: np.random.Generator) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """The nodule's HU patch and mask under a random flip of each axis and an axial-plane 90-degree rotation
    (the cranio-caudal axis stays cranio-caudal: the slice blur of the source scan stays along z)."""
    hu = nodule.hu.astype(np.float32)
    mask = nodule.mask
    for axis in range(3):
        if rng.random() < 0.5:
            hu, mask = np.flip(hu, axis), np.flip(mask, axis)
    k = int(rng.integers(4))
    if k:
        hu, mask = np.rot90(hu, k, axes=(0, 1)), np.rot90(mask, k, axes=(0, 1))
    return np.ascontiguousarray(hu), np.ascontiguousarray(mask)


def soft_edge(mask: NDArray[np.bool_], edge_mm: float, spacing_mm: Sequence[float]) -> NDArray[np.float32]:
    """Blending weight: 1 inside the mask, a Gaussian fall-off (standard deviation ``edge_mm``) outside."""
    m = mask.astype(np.float32)
    if edge_mm <= 0:
        return m
    sigma = [edge_mm / float(s) for s in spacing_mm]
    return np.maximum(m, np.clip(2.0 * ndimage.gaussian_filter(m, sigma), 0.0, 1.0))


@renamed_keyword("centre", "center")
def paste_nodule(
    region_hu: NDArray[np.floating],
    region_label: NDArray[Any] | None,
    hu: NDArray[np.floating],
    mask: NDArray[np.bool_],
    center: Sequence[int],
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    edge_mm: float = DEFAULT_EDGE_MM,
    label_value: int = 1,
) -> tuple[slice, slice, slice] | None:
    """Blend a nodule patch into ``region_hu`` (same grid) with its voxel ``shape // 2`` at ``center``, in place.

    ``out = (1 - a) · host + a · max(nodule, host)``, ``a`` = :func:`soft_edge` of the mask; ``region_label`` (if
    given) gets ``label_value`` on the mask's voxels. Parts of the patch outside the region are dropped.
    ``centre``: deprecated spelling of ``center``.

    Returns:
        The region's slices that were touched, or ``None`` if the patch lies wholly outside.
    """
    alpha = soft_edge(mask, edge_mm, spacing_mm)
    start = np.asarray(center, dtype=int) - np.asarray(hu.shape) // 2
    dst, src = [], []
    for s, n_patch, n_region in zip(start, hu.shape, region_hu.shape, strict=True):
        a, b = max(int(s), 0), min(int(s) + n_patch, n_region)
        if a >= b:
            return None
        dst.append(slice(a, b))
        src.append(slice(a - int(s), b - int(s)))
    d, s_ = tuple(dst), tuple(src)
    host = region_hu[d].astype(np.float32)
    weight = alpha[s_]
    region_hu[d] = (1.0 - weight) * host + weight * np.maximum(hu[s_], host)
    if region_label is not None:
        region_label[d][mask[s_]] = label_value
    return d  # type: ignore[return-value]


def dense_overlap(host_hu: Any, mask: NDArray[np.bool_], center: Sequence[int]) -> float:
    """Share of ``mask``'s voxels (its voxel ``shape // 2`` at ``center`` of ``host_hu``, as :func:`paste_nodule`
    places it) that fall on host voxels at or above :data:`DENSE_OVERLAP_HU` or outside the host volume.

    ``host_hu``: a 3D array or anything sliced like one (a ``(H, W, D)`` view of a tensor); only the patch's box is
    read."""
    n = int(mask.sum())
    if n == 0:
        return 0.0
    start = np.asarray(center, dtype=int) - np.asarray(mask.shape) // 2
    src, dst = [], []
    for s, n_patch, n_host in zip(start, mask.shape, host_hu.shape, strict=True):
        a, b = max(int(s), 0), min(int(s) + n_patch, int(n_host))
        if a >= b:
            return 1.0
        src.append(slice(a, b))
        dst.append(slice(a - int(s), b - int(s)))
    inside = mask[tuple(dst)]
    host = np.asarray(host_hu[tuple(src)], dtype=np.float32)
    hidden = int((host[inside] >= DENSE_OVERLAP_HU).sum()) + (n - int(inside.sum()))  # outside the volume: hidden
    return hidden / n


def nodule_place(
    host_hu: Any,
    mask: NDArray[np.bool_],
    point: Sequence[int] | NDArray[np.integer],
    kind: str,
    rng: np.random.Generator,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    max_dense_overlap: float = DEFAULT_MAX_DENSE_OVERLAP,
) -> tuple[NDArray[np.int64], float] | None:
    """Where a nodule with ``mask`` goes for a sampled ``point`` of ``host_hu`` (:func:`sampling_points`), and the
    share of its mask on dense host voxels there (:func:`dense_overlap`), or ``None`` if that share exceeds
    ``max_dense_overlap``.

    ``kind`` ``"parenchyma"``: centred on the point (solitary). ``"dense"`` (the point is on a vessel, an airway
    wall or the pleura): moved off it by the nodule's equivalent radius along the mean direction of the parenchyma
    (``hu < -400``) around it, a random direction where parenchyma surrounds it (a thin vessel), so the nodule abuts
    the structure (juxta-vascular, juxta-pleural) instead of straddling it with half its mask in the chest wall.
    """
    if kind not in ("parenchyma", "dense"):
        raise ValueError(f"nodule_place: kind must be 'parenchyma' or 'dense', got {kind!r}.")
    point_v = np.asarray(point, dtype=np.int64)
    centre = point_v
    if kind == "dense":
        spacing = np.asarray(spacing_mm, dtype=np.float64)
        radius_mm = (3.0 * float(mask.sum()) * float(np.prod(spacing)) / (4.0 * math.pi)) ** (1.0 / 3.0)
        reach = np.ceil((radius_mm + 2.0) / spacing).astype(np.int64)
        lo = np.maximum(point_v - reach, 0)
        hi = np.minimum(point_v + reach + 1, np.asarray(host_hu.shape, dtype=np.int64))
        region = np.asarray(host_hu[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))])
        offsets = (np.argwhere(region < PARENCHYMA_MAX_HU) + lo - point_v) * spacing
        mean = offsets.mean(axis=0) if len(offsets) else np.zeros(3)
        spread = float(np.linalg.norm(offsets, axis=1).mean()) if len(offsets) else 0.0
        if len(offsets) and np.linalg.norm(mean) >= 0.25 * spread:
            direction = mean / np.linalg.norm(mean)
        else:
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
        centre = point_v + np.round(direction * radius_mm / spacing).astype(np.int64)
    overlap = dense_overlap(host_hu, mask, centre.tolist())
    if overlap > float(max_dense_overlap):
        return None
    return centre, overlap


def sampling_points(
    hu: NDArray[Any],
    lung: NDArray[np.bool_] | None,
    rng: np.random.Generator,
    max_points: int = 50_000,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
) -> dict[str, NDArray[np.int32]]:
    """Voxel indices ``(n, 3)`` where windows may be centred: ``"parenchyma"`` (lung, ``hu < -400``, at least half of
    a 7 mm cube around it so) and
    ``"dense"`` (lung mask, ``hu >= -500``, with at least a quarter of a 7 mm cube around it parenchyma: vessels,
    airway walls, the pleura), each at most ``max_points`` drawn at random. Without a lung mask, the whole image
    stands for it."""
    inside = np.ones(hu.shape, dtype=bool) if lung is None else lung
    parenchyma = inside & (hu < PARENCHYMA_MAX_HU)
    size = [max(round(DENSE_CONTEXT_MM / float(s)), 1) for s in spacing_mm]
    context = ndimage.uniform_filter(parenchyma.astype(np.float32), size=size, mode="constant")
    out = {}
    for name, sel in (
        ("parenchyma", parenchyma & (context >= PARENCHYMA_MIN_CONTEXT)),
        ("dense", inside & (hu >= DENSE_MIN_HU) & (context >= DENSE_MIN_PARENCHYMA)),
    ):
        idx = np.flatnonzero(sel)
        if idx.size > max_points:
            idx = np.sort(rng.choice(idx, size=max_points, replace=False))
        out[name] = np.stack(np.unravel_index(idx, hu.shape), axis=1).astype(np.int32)
    return out


def insert_nodules(
    hu: NDArray[np.floating],
    affine: NDArray[np.floating],
    lung: NDArray[np.bool_] | None,
    bank: NoduleBank,
    count: int,
    rng: np.random.Generator,
    avoid_world_mm: Sequence[Sequence[float]] = (),
    min_distance_mm: float = 30.0,
    dense_fraction: float = 0.5,
    edge_mm: float = DEFAULT_EDGE_MM,
    max_tries: int = 200,
    max_dense_overlap: float = DEFAULT_MAX_DENSE_OVERLAP,
) -> tuple[NDArray[np.float32], NDArray[np.uint8], list[dict[str, Any]]]:
    """Paste ``count`` distinct bank nodules into a whole scan on the bank's grid.

    Each nodule is centred on a parenchyma voxel (solitary) or, with probability ``dense_fraction``, placed against
    a dense voxel (a vessel, an airway or the pleura; :func:`nodule_place`), with at most ``max_dense_overlap`` of
    its mask on dense host voxels (so no nodule hides in the chest wall or the mediastinum while its label claims
    it), at least ``min_distance_mm`` from every other inserted nodule and from ``avoid_world_mm`` (the scan's own
    nodules). A nodule with no such place in ``max_tries`` tries is skipped for the next one of the bank.

    Args:
        hu: ``(H, W, D)`` HU on the bank's grid (isotropic ``bank.spacing_mm``, RAS), not modified.
        affine: its voxel → RAS-mm affine.
        lung: its lung mask (:func:`~lung_nodule_mtl.transforms.lung.lung_mask`), or ``None``.
        bank: where the nodules come from (drawn without replacement).
        count: how many.
        rng: random generator.
        avoid_world_mm: centres (RAS mm) to keep away from.
        min_distance_mm: smallest distance between centres.
        dense_fraction: probability of a dense (juxta-vascular / juxta-pleural) place.
        edge_mm: soft edge, see :func:`paste_nodule`.
        max_tries: places tried per nodule.
        max_dense_overlap: largest share of a nodule's mask on dense host voxels (1: no limit).

    Returns:
        The new HU volume (float32), a label map (uint8, inserted nodule ``k`` is ``k``), and one record per
        inserted nodule: ``center_world_mm`` (RAS, the pasted mask's centre of mass), ``diameter_mm`` (volume-
        equivalent of the pasted mask), ``placement``, ``dense_overlap`` and the bank nodule's labels and
        identifiers.

    Raises:
        ValueError: more nodules asked for than the bank holds, or than 254; ``max_dense_overlap`` outside [0, 1].
    """
    if count > len(bank) or count > 254:
        raise ValueError(f"insert_nodules: count {count} exceeds the bank ({len(bank)}) or 254.")
    if not 0.0 <= float(max_dense_overlap) <= 1.0:
        raise ValueError(f"insert_nodules: max_dense_overlap must lie in [0, 1], got {max_dense_overlap!r}.")
    out = np.asarray(hu, dtype=np.float32).copy()
    labels = np.zeros(out.shape, dtype=np.uint8)
    points = sampling_points(out, lung, rng, spacing_mm=bank.spacing_mm)
    spacing = np.asarray(bank.spacing_mm, dtype=np.float64)
    aff = np.asarray(affine, dtype=np.float64)
    taken: list[NDArray[np.float64]] = [np.asarray(c, dtype=np.float64) for c in avoid_world_mm]
    records: list[dict[str, Any]] = []
    order = rng.permutation(len(bank))
    voxel_mm3 = float(np.prod(spacing))
    for index in order:
        if len(records) == count:
            break
        nodule = bank[int(index)]
        p_hu, p_mask = random_orientation(nodule, rng)
        placed: tuple[NDArray[np.int64], float, str] | None = None
        for _ in range(max_tries):
            kind = "dense" if rng.random() < dense_fraction and len(points["dense"]) else "parenchyma"
            if not len(points[kind]):
                break
            point = points[kind][int(rng.integers(len(points[kind])))]
            place = nodule_place(out, p_mask, point, kind, rng, bank.spacing_mm, max_dense_overlap)
            if place is None:
                continue
            world = aff[:3, :3] @ place[0] + aff[:3, 3]
            if all(np.linalg.norm(world - t) >= min_distance_mm for t in taken):
                placed = (place[0], place[1], kind)
                break
        if placed is None:
            logger.info("no place for bank nodule %s in %d tries", nodule.info.get(str(Keys.CASE_ID)), max_tries)
            continue
        centre, overlap, kind = placed
        k = len(records) + 1
        touched = paste_nodule(out, labels, p_hu, p_mask, centre.tolist(), bank.spacing_mm, edge_mm, label_value=k)
        if touched is None:
            continue
        inside = labels[touched] == k
        if not inside.any():
            continue
        com = np.argwhere(inside).mean(axis=0) + np.asarray([s.start for s in touched])
        world_com = aff[:3, :3] @ com + aff[:3, 3]
        taken.append(world_com)
        volume = float(inside.sum()) * voxel_mm3
        records.append(
            {
                **nodule.info,
                str(Keys.CENTER_WORLD): [round(float(v), 4) for v in world_com],
                str(Keys.DIAMETER): round(equivalent_diameter_mm(volume), 3),
                "source_diameter_mm": nodule.info.get(str(Keys.DIAMETER)),
                "placement": "juxta_dense" if kind == "dense" else "solitary",
                "dense_overlap": round(overlap, 3),
                "label_value": k,
            }
        )
    return out, labels, records


def _host_nodules(path: str | os.PathLike[str] | None) -> dict[str, list[dict[str, Any]]]:
    """A host's own nodules from a LUNA16-style CSV (``seriesuid`` = the host's case id, LPS mm, ``diameter_mm``)."""
    if path in (None, ""):
        return {}
    import csv

    from lung_nodule_mtl.constants import lps_to_ras

    out: dict[str, list[dict[str, Any]]] = {}
    with open(path, newline="", encoding="utf-8") as f:  # type: ignore[arg-type]
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                lps = [float(row[k]) for k in ("coordX", "coordY", "coordZ")]
                diameter = float(row["diameter_mm"])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{line}: needs seriesuid, coordX, coordY, coordZ, diameter_mm ({e}).") from e
            out.setdefault(str(row["seriesuid"]), []).append(
                {str(Keys.CENTER_WORLD): [float(v) for v in lps_to_ras(lps)], str(Keys.DIAMETER): diameter}
            )
    return out


def insert_into_scans(
    hosts: Sequence[str | os.PathLike[str]],
    bank: NoduleBank,
    out_dir: str | os.PathLike[str],
    per_scan: int = 3,
    seed: int = 0,
    host_nodules_csv: str | os.PathLike[str] | None = None,
    min_distance_mm: float = 30.0,
    dense_fraction: float = 0.5,
    max_dense_overlap: float = DEFAULT_MAX_DENSE_OVERLAP,
) -> dict[str, Any]:
    """Write each host scan with ``per_scan`` real bank nodules pasted into its lungs, for evaluation and training.

    Every host (anything ``predict`` reads: NIfTI, MetaImage, a DICOM series folder) is resampled to the bank's
    isotropic RAS grid, its lungs found, the nodules pasted (:func:`insert_nodules`; the host's own nodules from
    ``host_nodules_csv`` kept clear of and annotated too), and written as ``images/<case>.nii.gz`` (int16 HU),
    ``labels/<case>.nii.gz`` (uint8: inserted nodule ``k`` is ``k``; the host's own nodules are not in it, they have
    no mask here), with ``annotations.csv`` (LUNA16 format, LPS, every nodule: the FROC reference), ``nodules.csv``
    (per nodule: case, source ``inserted``/``host``, placement, the bank nodule's patient and labels) and
    ``datalist.json`` (one item per inserted nodule, the project's format: a whole-scan datalist for
    ``train_scans.yaml``). A bank nodule is used once across all hosts when the bank is large enough.

    Args:
        hosts: the host scans.
        bank: the nodules to paste (e.g. held-out patients' for a test set).
        out_dir: output folder (created; files are written atomically).
        per_scan: nodules pasted per host.
        seed: random seed (places, nodules, orientations).
        host_nodules_csv: the hosts' own nodules (``seriesuid`` = case id as ``predict`` names it, LPS mm,
            ``diameter_mm``), or ``None``.
        min_distance_mm: smallest distance between nodule centres.
        dense_fraction: share of nodules placed against a vessel or the pleura.
        max_dense_overlap: largest share of a nodule's mask on dense host voxels (:func:`insert_nodules`).

    Returns:
        A summary: hosts, nodules inserted, files.

    Raises:
        ValueError: a host that cannot be read (the message names it), or a bad CSV.
    """
    from lung_nodule_mtl.constants import ras_to_lps
    from lung_nodule_mtl.transforms.chains import AXIS_LABELS, ORIENTATION  # (here: transforms imports this module)
    from lung_nodule_mtl.transforms.lung import lung_mask
    from lung_nodule_mtl.transforms.resample import IsotropicResampler
    from lung_nodule_mtl.utils.io import atomic_write_csv, atomic_write_json, atomic_write_nifti

    out = Path(out_dir)
    own = _host_nodules(host_nodules_csv)
    rng = np.random.default_rng(seed)
    resampler = IsotropicResampler(bank.spacing_mm, ORIENTATION, AXIS_LABELS)
    order = list(rng.permutation(len(bank)))
    annotations: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    cases = [c for h in hosts for c in find_cases(h)]
    for case in cases:
        volume = load_ct(case)
        iso = resampler.to_isotropic(volume.image)
        hu = iso[0].numpy()
        affine = np.asarray(iso.affine, dtype=np.float64)
        lung = lung_mask(hu, bank.spacing_mm)
        if len(order) < per_scan:  # every bank nodule used once: start again
            order = list(rng.permutation(len(bank)))
        chosen = NoduleBank([bank[int(i)] for i in order[:per_scan]], bank.spacing_mm)
        order = order[per_scan:]
        host_own = own.get(case.case_id, [])
        new_hu, labels, records = insert_nodules(
            hu,
            affine,
            lung,
            chosen,
            min(per_scan, len(chosen)),
            rng,
            avoid_world_mm=[n[str(Keys.CENTER_WORLD)] for n in host_own],
            min_distance_mm=min_distance_mm,
            dense_fraction=dense_fraction,
            max_dense_overlap=max_dense_overlap,
        )
        image_rel, label_rel = f"images/{case.case_id}.nii.gz", f"labels/{case.case_id}.nii.gz"
        atomic_write_nifti(np.round(new_hu).astype(np.int16), affine, out / image_rel, dtype=np.int16)
        atomic_write_nifti(labels, affine, out / label_rel, dtype=np.uint8)
        for source, found in (("host", host_own), ("inserted", records)):
            for r in found:
                lps = ras_to_lps(r[str(Keys.CENTER_WORLD)])
                annotations.append(
                    {
                        "seriesuid": case.case_id,
                        **dict(zip(("coordX", "coordY", "coordZ"), lps, strict=True)),
                        "diameter_mm": r[str(Keys.DIAMETER)],
                    }
                )
                row = {
                    "seriesuid": case.case_id,
                    "source": source,
                    "placement": r.get("placement", ""),
                    "dense_overlap": r.get("dense_overlap", ""),
                    "center_ras": r[str(Keys.CENTER_WORLD)],
                    "diameter_mm": r[str(Keys.DIAMETER)],
                }
                if source == "inserted":
                    row |= {"from_case": r.get(str(Keys.CASE_ID)), "from_patient": r.get(str(Keys.PATIENT_ID))}
                    row |= {k: r.get(k) for k in BANK_LABEL_KEYS}
                table.append(row)
        for r in records:
            items.append(
                {
                    str(Keys.IMAGE): image_rel,
                    str(Keys.LABEL): label_rel,
                    str(Keys.CASE_ID): f"{case.case_id}_{r['label_value']}",
                    str(Keys.PATIENT_ID): case.case_id,
                    str(Keys.NODULE_ID): str(r["label_value"]),
                    "seriesuid": case.case_id,
                    str(Keys.CENTER_WORLD): r[str(Keys.CENTER_WORLD)],
                    str(Keys.DIAMETER): r[str(Keys.DIAMETER)],
                    **{k: r.get(k) for k in BANK_LABEL_KEYS},
                    "source_patient_id": r.get(str(Keys.PATIENT_ID)),
                    "placement": r["placement"],
                    str(Keys.FOLD): 0,
                }
            )
        logger.info("%s: %d nodules pasted (%d of its own)", case.case_id, len(records), len(host_own))
    columns = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
    atomic_write_csv(
        [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in a.items()} for a in annotations],
        out / "annotations.csv",
        columns,
    )
    atomic_write_csv(table, out / "nodules.csv", list(dict.fromkeys(k for row in table for k in row)) or ["seriesuid"])
    atomic_write_json(
        {
            "metadata": {
                "format": "lung_nodule_mtl datalist v1",
                "source": "real nodules pasted into host scans (lung_nodule_mtl.data.insertion)",
                "center_world_mm": "RAS world coordinates, mm",
                "seed": seed,
            },
            "training": items,
        },
        out / "datalist.json",
    )
    return {
        "hosts": len(cases),
        "inserted": len(items),
        "host_nodules": sum(len(v) for v in own.values()),
        "out": str(out),
        "annotations": str(out / "annotations.csv"),
    }
