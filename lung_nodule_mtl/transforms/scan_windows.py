"""Training windows from whole scans: nodules (the scan's own, or real ones pasted in) and the lung around them.

A detector runs over whole lungs, so it must be trained on what whole lungs look like: windows centred on nodules
**and** windows centred on everything else a lung holds, above all what looks like a nodule to a network trained
only on nodule-centred crops (vessels, airway walls, the pleura). This is nnU-Net's foreground oversampling (a set
share of windows holds foreground, the rest is drawn from the volume) and MONAI's ``RandCropByPosNegLabeld``, with
two additions: the negatives are drawn from inside the lungs, half of them from dense voxels (hard negatives), and
a positive window may get a **real nodule pasted in** from a :class:`~lung_nodule_mtl.data.insertion.NoduleBank`
(a scan with no labelled nodules, or a held-out patient's, still teaches the network real nodules in real
context). A pasted nodule lies in parenchyma or abuts a vessel or the pleura, with at most ``max_dense_overlap`` of
its mask on dense host voxels (:func:`~lung_nodule_mtl.data.insertion.nodule_place`): centred on the pleura, half of
it would lie in the chest wall, invisible there (``max(nodule, host)``) while its label teaches the mask that chest
wall is nodule.

Each window is one of four kinds (``fractions``):

==============  ============================================================  ===========  ==================
kind            centre                                                        ``nodule``   rating labels
==============  ============================================================  ===========  ==================
``centred``     a nodule, jittered by at most ``max_shift_mm``                1            the nodule's
``anywhere``    a nodule, jittered by at most ``anywhere_shift_mm``           unknown      unknown
``hard``        a dense lung voxel (vessel, airway wall, pleura, chest wall)  0            unknown
``random``      a parenchyma voxel                                            0            unknown
==============  ============================================================  ===========  ==================

Negatives are at least ``negative_clearance_mm`` beyond the radius of every labelled nodule of the scan; any part of
a labelled nodule inside a window is in its mask (the mask is the scan's label map, never only the centred nodule's).
``centred`` teaches the detection head (``nodule``) and the rating heads in the regime they are used in (a crop
centred on a candidate); ``anywhere`` teaches the mask to find a nodule wherever the sliding window puts it.

:class:`ScanSamplingPointsd` (deterministic, cached by ``CacheDataset``) computes the lung mask and the places;
:class:`RandScanWindowsd` draws the windows. Both work on the isotropic RAS grid the training chain resamples to.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from numpy.typing import NDArray

from lung_nodule_mtl.constants import AIR_HU, Keys
from lung_nodule_mtl.data.insertion import (
    BANK_LABEL_KEYS,
    DEFAULT_EDGE_MM,
    DEFAULT_MAX_DENSE_OVERLAP,
    NoduleBank,
    nodule_place,
    paste_nodule,
    random_orientation,
    sampling_points,
)
from lung_nodule_mtl.io.geometry import world_to_voxel
from lung_nodule_mtl.transforms.lung import lung_mask

__all__ = [
    "DEFAULT_WINDOW_FRACTIONS",
    "NODULES_KEY",
    "POINTS_KEY",
    "WINDOW_KINDS",
    "RandScanWindowsd",
    "ScanSamplingPointsd",
]

NODULES_KEY = "nodules"
"""Datalist key of a scan item: its labelled nodules, each a dict with ``center_world_mm``, ``diameter_mm`` and the
rating labels (``null`` where unknown)."""
NEGATIVES_KEY = "negatives"
"""Optional datalist key of a scan item: RAS-mm centres of known non-nodules (e.g. LUNA16 candidates, a previous
model's false positives), drawn among the hard negatives."""
POINTS_KEY = "sampling_points"
"""Key :class:`ScanSamplingPointsd` writes: ``{"parenchyma": (n, 3), "dense": (m, 3), "nodules": (k, 3) voxel
centres, "radii": (k,) voxel radii, "negatives": (j, 3)}`` (int32 / float32)."""
WINDOW_KINDS: tuple[str, ...] = ("centred", "anywhere", "hard", "random")
DEFAULT_WINDOW_FRACTIONS: dict[str, float] = {"centred": 0.25, "anywhere": 0.15, "hard": 0.35, "random": 0.25}
"""40% of the windows hold a nodule (nnU-Net: a third), the rest are negatives from inside the lungs."""


def _fractions(fractions: Mapping[str, float] | None) -> NDArray[np.float64]:
    f = dict(DEFAULT_WINDOW_FRACTIONS if fractions is None else fractions)
    unknown = sorted(set(f) - set(WINDOW_KINDS))
    values = np.asarray([float(f.get(k, 0.0)) for k in WINDOW_KINDS])
    if unknown or not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
        raise ValueError(
            f"fractions must map some of {list(WINDOW_KINDS)} to weights >= 0 (not all 0), got {fractions!r}."
        )
    return values / values.sum()


class ScanSamplingPointsd(MapTransform):
    """Lung mask and window places of a whole scan on the isotropic training grid (deterministic; cache it).

    Reads ``image`` (``(1, H, W, D)`` HU ``MetaTensor``), the item's ``nodules`` (RAS mm) and optional
    ``negatives``; writes :data:`POINTS_KEY`, casts the image to int16 and the label to uint8 (a whole scan in
    a cache costs a quarter of its float32 size), and adds an all-zero label when the item has none (a scan without
    labelled nodules, e.g. a host for pasted nodules).

    Args:
        keys: ``(image, label)``.
        spacing_mm: the grid's voxel size (for the lung mask's morphology).
        max_points: places kept per kind.
        seed: seed of the subsampling of the places (per scan: the same scan gives the same places).
    """

    def __init__(
        self,
        keys: KeysCollection = (str(Keys.IMAGE), str(Keys.LABEL)),
        spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
        max_points: int = 50_000,
        seed: int = 0,
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.image_key, self.label_key = [*list(self.keys), str(Keys.LABEL)][:2]
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.max_points = int(max_points)
        self.seed = int(seed)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        hu = np.asarray(image[0].detach().cpu().numpy() if isinstance(image, torch.Tensor) else image[0])
        affine = np.asarray(getattr(image, "affine", np.eye(4)), dtype=np.float64)
        lung = lung_mask(hu, self.spacing_mm)
        name = str(d.get(str(Keys.CASE_ID), d.get(str(Keys.PATIENT_ID), "")))
        rng = np.random.default_rng([self.seed, *name.encode("utf-8")])
        points: dict[str, Any] = sampling_points(hu, lung, rng, self.max_points, self.spacing_mm)
        nodules = list(d.get(NODULES_KEY) or [])
        centres = np.asarray(
            [world_to_voxel(affine, np.asarray(n[str(Keys.CENTER_WORLD)], dtype=np.float64)) for n in nodules],
            dtype=np.float32,
        ).reshape(-1, 3)
        radii = np.asarray(
            [0.5 * float(n.get(str(Keys.DIAMETER)) or 10.0) / min(self.spacing_mm) for n in nodules], dtype=np.float32
        )
        negatives = [np.asarray(c, dtype=np.float64) for c in d.get(NEGATIVES_KEY) or []]
        points["nodules"], points["radii"] = centres, radii
        points["negatives"] = np.asarray([world_to_voxel(affine, c) for c in negatives], dtype=np.float32).reshape(
            -1, 3
        )
        d[POINTS_KEY] = points
        if isinstance(image, torch.Tensor):
            d[self.image_key] = image.clamp(-32768, 32767).round().to(torch.int16)
        label = d.get(self.label_key)
        if label is None or isinstance(label, str):
            zeros = torch.zeros(tuple(image.shape), dtype=torch.uint8)
            d[self.label_key] = zeros
        else:
            d[self.label_key] = (torch.as_tensor(label) > 0.5).to(torch.uint8)
        return d


def _window(volume: torch.Tensor, start: NDArray[np.int64], size: Sequence[int], fill: float) -> NDArray[np.float32]:
    """``volume[0]`` over ``[start, start + size)`` (float32), ``fill`` where the window leaves the volume."""
    arr = volume[0]
    out = np.full(tuple(size), fill, dtype=np.float32)
    src, dst = [], []
    for s, n, k in zip(start, arr.shape, size, strict=True):
        a, b = max(int(s), 0), min(int(s) + k, n)
        if a >= b:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - int(s), b - int(s)))
    out[tuple(dst)] = np.asarray(arr[tuple(src)], dtype=np.float32)
    return out


class RandScanWindowsd(Randomizable, MapTransform):
    """One training window of a whole scan, of one of :data:`WINDOW_KINDS` (see the module docstring).

    Input: the output of :class:`ScanSamplingPointsd` (image HU, label, :data:`POINTS_KEY`, ``nodules``). Output: a
    new dict with ``image`` ``(1, *roi_size)`` HU float32 (air outside the scan), ``label`` ``(1, *roi_size)`` 0/1,
    ``nodule`` (1, 0 or ``None``), the rating labels (of the centred nodule, else ``None``) and ``window_kind``.

    Args:
        keys: ``(image, label)``.
        roi_size: window size, voxels.
        bank: real nodules to paste (a :class:`~lung_nodule_mtl.data.insertion.NoduleBank` or a path to one);
            ``None``: only the scan's own nodules (a scan without any then gives negatives only).
        fractions: weight of each window kind (normalised).
        insert_prob: for a positive window of a scan that has its own nodules, the probability of pasting a bank
            nodule instead (always pasted when the scan has none).
        max_shift_mm: largest jitter of a ``centred`` window's centre, mm per axis.
        anywhere_shift_mm: largest jitter of an ``anywhere`` window's centre, mm per axis.
        negative_clearance_mm: a negative window's centre is at least this far beyond a labelled nodule's radius.
        dense_insert_fraction: probability that a pasted nodule goes against a dense voxel (a vessel or the
            pleura; :func:`~lung_nodule_mtl.data.insertion.nodule_place`) rather than in parenchyma.
        max_dense_overlap: largest share of a pasted nodule's mask on dense host voxels (>= -300 HU), where it would
            be invisible while its label claims it; places are drawn up to ``place_tries`` times, then the window
            becomes a negative one (1: no limit).
        place_tries: places tried for a pasted nodule.
        edge_mm: soft edge of a pasted nodule.
        spacing_mm: the grid's voxel size.
    """

    def __init__(
        self,
        keys: KeysCollection = (str(Keys.IMAGE), str(Keys.LABEL)),
        roi_size: Sequence[int] | int = (48, 48, 48),
        bank: NoduleBank | str | None = None,
        fractions: Mapping[str, float] | None = None,
        insert_prob: float = 0.5,
        max_shift_mm: float = 4.0,
        anywhere_shift_mm: float = 16.0,
        negative_clearance_mm: float = 8.0,
        dense_insert_fraction: float = 0.5,
        edge_mm: float = DEFAULT_EDGE_MM,
        spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
        max_dense_overlap: float = DEFAULT_MAX_DENSE_OVERLAP,
        place_tries: int = 10,
    ) -> None:
        MapTransform.__init__(self, keys)
        self.image_key, self.label_key = list(self.keys)[:2]
        size = [roi_size] * 3 if isinstance(roi_size, int) else list(roi_size)
        if len(size) != 3 or not all(int(s) >= 1 for s in size):
            raise ValueError(f"roi_size must be an int or 3 ints >= 1, got {roi_size!r}.")
        self.roi_size = tuple(int(s) for s in size)
        self.bank = NoduleBank.load(bank) if isinstance(bank, str) else bank
        self.probs = _fractions(fractions)
        for name, value in (
            ("insert_prob", insert_prob),
            ("dense_insert_fraction", dense_insert_fraction),
            ("max_dense_overlap", max_dense_overlap),
        ):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}.")
        for name, value in (
            ("max_shift_mm", max_shift_mm),
            ("anywhere_shift_mm", anywhere_shift_mm),
            ("negative_clearance_mm", negative_clearance_mm),
            ("edge_mm", edge_mm),
        ):
            if not (math.isfinite(float(value)) and float(value) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 (mm), got {value!r}.")
        self.insert_prob = float(insert_prob)
        self.dense_insert_fraction = float(dense_insert_fraction)
        self.max_dense_overlap = float(max_dense_overlap)
        if int(place_tries) < 1:
            raise ValueError(f"place_tries must be >= 1, got {place_tries!r}.")
        self.place_tries = int(place_tries)
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        mm = min(self.spacing_mm)
        self.max_shift = float(max_shift_mm) / mm
        self.anywhere_shift = float(anywhere_shift_mm) / mm
        self.clearance = float(negative_clearance_mm) / mm
        self.edge_mm = float(edge_mm)

    def randomize(self, data: Any = None) -> None:
        pass

    @staticmethod
    def _shift(rng: np.random.Generator, limit: float) -> NDArray[np.int64]:
        return np.round(rng.uniform(-limit, limit, size=3)).astype(np.int64)

    def _negative_centre(
        self, rng: np.random.Generator, points: Mapping[str, Any], kind: str
    ) -> NDArray[np.int64] | None:
        pool = points["parenchyma"] if kind == "random" else points["dense"]
        if kind == "hard" and len(points["negatives"]) and rng.random() < 0.5:
            pool = points["negatives"]
        if not len(pool):
            pool = points["parenchyma"] if len(points["parenchyma"]) else points["dense"]
        if not len(pool):
            return None
        nodules, radii = points["nodules"], points["radii"]
        for _ in range(20):
            c = np.round(pool[int(rng.integers(len(pool)))]).astype(np.int64)
            if not len(nodules) or np.all(np.linalg.norm(nodules - c, axis=1) >= radii + self.clearance):
                return c
        return None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        rng = np.random.default_rng(int(self.R.randint(0, 2**31 - 1)))  # MONAI seeds self.R (set_random_state)
        points = data[POINTS_KEY]
        image, label = data[self.image_key], data[self.label_key]
        half = np.asarray(self.roi_size) // 2
        nodules = list(data.get(NODULES_KEY) or [])
        kind = WINDOW_KINDS[int(rng.choice(len(WINDOW_KINDS), p=self.probs))]
        centre: NDArray[np.int64] | None = None
        paste: tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.int64]] | None = None
        labels: dict[str, Any] = {k: None for k in BANK_LABEL_KEYS}
        nodule_flag: float | None = None

        if kind in ("centred", "anywhere"):
            shift = self._shift(rng, self.max_shift if kind == "centred" else self.anywhere_shift)
            bank = self.bank
            use_bank = bank is not None and len(bank) > 0 and (not nodules or rng.random() < self.insert_prob)
            if bank is not None and use_bank:
                place_kind = "dense" if rng.random() < self.dense_insert_fraction else "parenchyma"
                if not len(points[place_kind]):
                    place_kind = "parenchyma" if len(points["parenchyma"]) else "dense"
                pool = points[place_kind]
                if len(pool):
                    bank_nodule = bank[int(rng.integers(len(bank)))]
                    hu, mask = random_orientation(bank_nodule, rng)
                    for _ in range(self.place_tries):  # a place where the nodule is not hidden in dense tissue
                        point = np.asarray(pool[int(rng.integers(len(pool)))], dtype=np.int64)
                        place = nodule_place(
                            image[0], mask, point, place_kind, rng, self.spacing_mm, self.max_dense_overlap
                        )
                        if place is not None:
                            centre = place[0] - shift
                            paste = (hu, mask, half + shift)
                            labels = bank_nodule.labels()
                            break
            elif nodules:
                k = int(rng.integers(len(nodules)))
                where = np.round(points["nodules"][k]).astype(np.int64)
                centre = where - shift
                labels = {key: nodules[k].get(key) for key in BANK_LABEL_KEYS}
            if centre is not None:
                nodule_flag = 1.0 if kind == "centred" else None
                if kind == "anywhere":
                    labels = {k: None for k in BANK_LABEL_KEYS}
            else:
                kind = "random"
        if centre is None:
            kind = kind if kind in ("hard", "random") else "random"
            centre = self._negative_centre(rng, points, kind)
            nodule_flag = 0.0
        if centre is None and nodules:  # no place clear of the nodules (a crop around one): a centred positive
            k = int(rng.integers(len(nodules)))
            kind, nodule_flag = "centred", 1.0
            centre = np.round(points["nodules"][k]).astype(np.int64) - self._shift(rng, self.max_shift)
            labels = {key: nodules[k].get(key) for key in BANK_LABEL_KEYS}
        if centre is None:  # no lung, no nodule: the middle of the scan
            centre = np.asarray(image.shape[1:], dtype=np.int64) // 2

        start = centre - half
        img = _window(image, start, self.roi_size, AIR_HU)
        lab = _window(label, start, self.roi_size, 0.0)
        if paste is not None:
            paste_nodule(img, lab, paste[0], paste[1], paste[2].tolist(), self.spacing_mm, self.edge_mm)
        out: dict[Hashable, Any] = {
            self.image_key: torch.from_numpy(img)[None],
            self.label_key: torch.from_numpy((lab > 0.5).astype(np.float32))[None],
            str(Keys.NODULE): nodule_flag,
            "window_kind": kind,
        }
        out.update(labels)
        return out
