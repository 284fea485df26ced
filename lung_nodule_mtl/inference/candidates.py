"""Blob proposals and a candidate classifier: a second way to find small nodules, and a second opinion on each.

The sliding-window mask proposes a small nodule only when a window happens to fall near it, and the network's
detection head does not tell small nodules from vessel fragments (README "Where the small nodules are lost"). Both
gaps are the ones classic CT lung CAD closes with measured features (Li, Sone & Doi, Med Phys 2003: Hessian
eigenvalues tell a dot from a line; Murphy et al., Med Image Anal 2009: local maxima as candidates, a classifier on
their features), so this module adds, beside the network:

1. **Blob proposals** (:func:`blob_proposals`): local maxima of the scale-normalised Laplacian of Gaussian of the
   1 mm image inside the lungs (σ 1–3.5 mm), each described by the Hessian's eigenvalues at four scales
   (:data:`PROPOSAL_FEATURES`); a logistic model ranks them and the best ``max_proposals`` per scan that are not
   near a mask candidate become candidates too (centred crops, the same heads).
2. **A candidate classifier** (:class:`CandidateClassifier`): each candidate's detection probability is a
   logistic model of measured features at its centre (:func:`candidate_features`: Hessian eigenvalues at five
   scales, the Hounsfield units around it, the shape of its bright component) **and** the detection head's logit,
   so the head's evidence is kept and the measurements are added to it.

Both models are small standardised logistic regressions (:class:`~lung_nodule_mtl.metrics.calibration.LogisticModel`)
kept as JSON beside the weights (``bundle/models/candidate_classifier.json``, read with no code execution), fitted
by ``lung-nodule-mtl fit-candidate-classifier`` (:func:`fit_candidate_classifier`) on annotated whole scans with
exactly the candidates ``predict`` meets. The classifier uses the head's logit, so it records the weights it was
fitted for and is not used beside others.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lung_nodule_mtl.inference.head_refit import _SAMPLE_SETTINGS as _HEAD_SAMPLE_SETTINGS
from lung_nodule_mtl.metrics.calibration import LogisticModel

__all__ = [
    "CANDIDATE_FEATURES",
    "CLASSIFIER_FILE",
    "GEOMETRY_FEATURES",
    "PROPOSAL_FEATURES",
    "CandidateClassifier",
    "CandidateSamples",
    "blob_proposals",
    "candidate_features",
    "classifier_beside",
    "collect_candidate_samples",
    "domain_aucs",
    "fit_candidate_classifier",
]

logger = logging.getLogger(__name__)

CLASSIFIER_FILE = "candidate_classifier.json"
"""The classifier's file name beside the weights it was fitted for."""
FORMAT_VERSION = 1

PROPOSAL_SIGMAS_MM: tuple[float, ...] = (1.0, 1.6, 2.5, 3.5)
"""Scales (Gaussian σ, mm) of the blob filter and of the proposals' Hessian features."""
FEATURE_SIGMAS_MM: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.5)
"""Scales (Gaussian σ, mm) of the candidates' Hessian features."""
_HU_RANGE = (-1000.0, 400.0)
"""Hounsfield units are clipped to this range first (bone and metal do not drown the lung's contrast)."""

PROPOSAL_FEATURES: tuple[str, ...] = (
    "log_response",
    *(f"p{s:g}_{name}" for s in PROPOSAL_SIGMAS_MM for name in ("l1", "l2", "l3", "hu")),
)
"""A proposal's features: its scale-normalised LoG response, and per scale the Hessian's eigenvalues (scale-
normalised, ascending: ``l1`` most negative) and the smoothed HU at the maximum."""

_COMPONENT_FEATURES = ("log_volume", "border_faces", "log_core", "core_fraction", "fill_6mm", "pca_02", "pca_12")
CANDIDATE_FEATURES: tuple[str, ...] = (
    *(f"h{s:g}_{name}" for s in FEATURE_SIGMAS_MM for name in ("l1", "l2", "l3", "blob", "line", "r13", "r23")),
    "hu_1_5mm",
    "hu_3mm",
    "hu_5mm",
    "hu_5_8mm",
    *_COMPONENT_FEATURES,
)
"""A candidate's measured features at its centre (:func:`candidate_features`); the classifier adds
``head_logit`` (the detection head's logit, mirrored where ``predict`` mirrors it)."""
HEAD_LOGIT = "head_logit"
GEOMETRY_FEATURES: tuple[str, ...] = (
    *(f"h{s:g}_{name}" for s in FEATURE_SIGMAS_MM[1:] for name in ("r13", "r23")),
    *_COMPONENT_FEATURES,
    HEAD_LOGIT,
)
"""A scorer that reads only scale-free geometry (eigenvalue ratios from σ 1.5 mm up, the bright component's shape)
and the head: no Hounsfield-unit level, no contrast magnitude and nothing at the 1 mm scale of the noise, where
synthetic host scans and real ones differ most (``--features geometry``)."""
_RADIUS = 20  # half the side of the cube the features see, voxels (mm at the 1 mm grid)


def _clipped(hu: NDArray[Any]) -> NDArray[np.float32]:
    return np.clip(np.asarray(hu, dtype=np.float32), *_HU_RANGE)


def _hessian_at(smoothed: NDArray[np.float32], points: NDArray[np.int64]) -> NDArray[np.float32]:
    """``(N, 3, 3)`` Hessians of ``smoothed`` at integer ``points`` (central differences; points not on the
    border)."""
    z, y, x = points.T

    def at(dz: int, dy: int, dx: int) -> NDArray[np.float32]:
        return smoothed[z + dz, y + dy, x + dx]

    c = at(0, 0, 0)
    h = np.empty((len(points), 3, 3), dtype=np.float32)
    h[:, 0, 0] = at(1, 0, 0) - 2 * c + at(-1, 0, 0)
    h[:, 1, 1] = at(0, 1, 0) - 2 * c + at(0, -1, 0)
    h[:, 2, 2] = at(0, 0, 1) - 2 * c + at(0, 0, -1)
    h[:, 0, 1] = h[:, 1, 0] = (at(1, 1, 0) - at(1, -1, 0) - at(-1, 1, 0) + at(-1, -1, 0)) / 4
    h[:, 0, 2] = h[:, 2, 0] = (at(1, 0, 1) - at(1, 0, -1) - at(-1, 0, 1) + at(-1, 0, -1)) / 4
    h[:, 1, 2] = h[:, 2, 1] = (at(0, 1, 1) - at(0, 1, -1) - at(0, -1, 1) + at(0, -1, -1)) / 4
    return h


def blob_proposals(
    hu: NDArray[Any],
    lung: NDArray[np.bool_] | None = None,
    *,
    sigmas_mm: Sequence[float] = PROPOSAL_SIGMAS_MM,
    min_response: float = 30.0,
    min_hu: float = -750.0,
    footprint: int = 5,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Bright blobs of a 1 mm isotropic CT: local maxima of the scale-normalised negative Laplacian of Gaussian
    (the maximum over ``sigmas_mm``) inside ``lung``, with their :data:`PROPOSAL_FEATURES`.

    Args:
        hu: ``(H, W, D)`` HU on a 1 mm grid (the predictor's isotropic grid; other spacings scale the sigmas).
        lung: where maxima may lie (``None``: anywhere).
        sigmas_mm: Gaussian scales in voxels.
        min_response: smallest scale-normalised response kept (HU).
        min_hu: smallest smoothed (σ 1) HU at the maximum (parenchyma and noise are below).
        footprint: side of the cube a maximum must dominate, voxels.

    Returns:
        ``(N, 3)`` voxel indices and ``(N, len(PROPOSAL_FEATURES))`` features, strongest response first.
    """
    x = np.pad(_clipped(hu), 1, mode="edge")
    inside = np.ones(x.shape, dtype=bool) if lung is None else np.pad(np.asarray(lung, dtype=bool), 1)
    if inside.shape != x.shape:
        raise ValueError(
            f"lung mask shape {list(np.asarray(lung).shape)} differs from the image's {list(np.shape(hu))}."
        )
    smoothed = [ndimage.gaussian_filter(x, float(s)) for s in sigmas_mm]
    best = np.full(x.shape, -np.inf, dtype=np.float32)
    for s, g in zip(sigmas_mm, smoothed, strict=True):
        lap = ndimage.laplace(g)  # the 7-point Laplacian of the smoothed image
        np.maximum(best, -lap * float(s) ** 2, out=best)
    peaks = (best == ndimage.maximum_filter(best, size=int(footprint))) & inside & (best > min_response)
    peaks &= smoothed[0] > min_hu
    for axis in range(3):  # central differences need a neighbour on each side
        index: list[Any] = [slice(None)] * 3
        index[axis] = [0, -1]
        peaks[tuple(index)] = False
    points = np.argwhere(peaks).astype(np.int64)
    response = best[peaks]
    order = np.argsort(-response, kind="stable")
    points, response = points[order], response[order]
    cols = [np.log(np.maximum(response, 1e-3))[:, None]]
    for s, g in zip(sigmas_mm, smoothed, strict=True):
        eig = np.linalg.eigvalsh(_hessian_at(g, points)) * float(s) ** 2 if len(points) else np.zeros((0, 3))
        cols += [eig, g[tuple(points.T)][:, None]]
    feats = np.concatenate(cols, axis=1).astype(np.float32)
    return points - 1, feats


def _gauss_kernels(sigma: float, radius: int) -> tuple[NDArray[np.float64], ...]:
    """1D Gaussian and its first and second derivatives on ``[-radius, radius]`` (sampled, normalised)."""
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    g /= g.sum()
    return g, -t / sigma**2 * g, (t**2 / sigma**4 - 1 / sigma**2) * g


_BALL2 = np.add.outer(np.add.outer(np.arange(-2, 3) ** 2, np.arange(-2, 3) ** 2), np.arange(-2, 3) ** 2) <= 4
_R = np.sqrt(
    np.add.outer(
        np.add.outer(np.arange(-_RADIUS, _RADIUS + 1) ** 2, np.arange(-_RADIUS, _RADIUS + 1) ** 2),
        np.arange(-_RADIUS, _RADIUS + 1) ** 2,
    )
)


def candidate_features(hu: NDArray[Any], centre_voxel: Sequence[float] | NDArray[Any]) -> NDArray[np.float32]:
    """:data:`CANDIDATE_FEATURES` of the candidate at ``centre_voxel`` of a 1 mm isotropic CT ``hu``.

    * per scale σ of :data:`FEATURE_SIGMAS_MM`: the scale-normalised Hessian's eigenvalues at the centre
      (ascending, ``l1`` most negative), Li's blob measure ``|l3|`` where all three are negative, the line measure
      ``|l2| (|l2| - |l3|) / |l1|`` where the two largest are, and the ratios ``|l3|/|l1|``, ``|l2|/|l1|``
      (a dot: all near 1; a vessel: ``l3`` near 0);
    * the mean HU within 1.5, 3 and 5 mm of the centre and between 5 and 8 mm;
    * the bright component (smoothed HU > -500) under the centre within 20 mm: its log volume, the number of faces
      of the 41 mm cube it reaches (a vessel runs on), the log volume of what survives an opening by a 2 mm ball
      (vessels thinner than 4 mm vanish) and its fraction, the share of the 6 mm ball it fills, and its
      principal-axis variance ratios (elongation).

    Outside the image counts as air.
    """
    c = np.round(np.asarray(centre_voxel, dtype=np.float64)).astype(np.int64)
    r = _RADIUS
    shape = np.asarray(hu.shape)
    lo, hi = c - r, c + r + 1
    src = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(lo, hi, shape, strict=True))
    pad = [(max(-a, 0), max(b - n, 0)) for a, b, n in zip(lo, hi, shape, strict=True)]
    crop = np.pad(_clipped(hu[src]), pad, constant_values=_HU_RANGE[0]).astype(np.float64)
    out: list[float] = []
    for s in FEATURE_SIGMAS_MM:
        k = min(math.ceil(4 * s), r)
        g, d1, d2 = _gauss_kernels(s, k)
        cube = crop[r - k : r + k + 1, r - k : r + k + 1, r - k : r + k + 1]
        kern = {0: g, 1: d1, 2: d2}
        hess = np.empty((3, 3))
        for i in range(3):
            for j in range(i, 3):
                order = [0, 0, 0]
                order[i] += 1
                order[j] += 1
                hess[i, j] = hess[j, i] = np.einsum("ijk,i,j,k->", cube, kern[order[0]], kern[order[1]], kern[order[2]])
        l1, l2, l3 = np.linalg.eigvalsh(hess * s * s)  # ascending: l1 most negative
        blob = abs(l3) if l3 < 0 else 0.0
        line = abs(l2) * (abs(l2) - abs(l3)) / max(abs(l1), 1e-3) if l2 < 0 else 0.0
        out += [l1, l2, l3, blob, line, abs(l3) / (abs(l1) + 1e-3), abs(l2) / (abs(l1) + 1e-3)]
    for radius in (1.5, 3.0, 5.0):
        out.append(float(crop[_R <= radius].mean()))
    out.append(float(crop[(_R > 5) & (_R <= 8)].mean()))
    smooth = ndimage.gaussian_filter(crop, 1.0)
    bright = smooth > -500.0
    near = bright & (_R <= 2.5)
    if not near.any():
        out += [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    else:
        seed = np.unravel_index(int(np.argmax(np.where(near, smooth, -np.inf))), smooth.shape)
        labels, _ = ndimage.label(bright)
        comp = labels == labels[seed]
        volume = float(comp.sum())
        faces = sum(bool(comp[idx].any()) for idx in _FACES)
        core_labels, _ = ndimage.label(ndimage.binary_opening(comp, _BALL2))
        core = float((core_labels == core_labels[seed]).sum()) if core_labels[seed] else 0.0
        pts = np.argwhere(comp).astype(np.float64)
        ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T) + 1e-6 * np.eye(3))) if len(pts) > 3 else np.ones(3)
        fill = float((comp & (_R <= 6)).sum()) / float((_R <= 6).sum())
        out += [math.log1p(volume), float(faces), math.log1p(core), core / volume, fill, ev[0] / ev[2], ev[1] / ev[2]]
    return np.asarray(out, dtype=np.float32)


_FACES: tuple[tuple[Any, ...], ...] = (
    (0,),
    (-1,),
    (slice(None), 0),
    (slice(None), -1),
    (slice(None), slice(None), 0),
    (slice(None), slice(None), -1),
)


# -- the classifier ----------------------------------------------------------------------------------------------


@dataclass
class _Model:
    """A standardised logistic model: ``sigmoid(b0 + b · (x - center) / scale)``."""

    model: LogisticModel
    center: list[float]
    scale: list[float]

    @classmethod
    def fit(cls, x: NDArray[Any], y: NDArray[Any], features: Sequence[str], l2: float) -> _Model:
        x = np.asarray(x, dtype=np.float64)
        sd = x.std(axis=0)
        center, scale = x.mean(axis=0), np.where(sd > 1e-9, sd, 1.0)
        return cls(LogisticModel.fit((x - center) / scale, y, list(features), l2=l2), center.tolist(), scale.tolist())

    def logit(self, x: NDArray[Any]) -> NDArray[np.float64]:
        z = (np.asarray(x, dtype=np.float64) - np.asarray(self.center)) / np.asarray(self.scale)
        return np.asarray(self.model.intercept + z @ np.asarray(self.model.coef), dtype=np.float64)

    def predict(self, x: NDArray[Any]) -> NDArray[np.float64]:
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(self.logit(x), -30, 30))), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {**self.model.to_dict(), "center": self.center, "scale": self.scale}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], expected: Sequence[str] | None, where: str) -> _Model:
        """``expected``: the features it must have, in order; ``None``: any of the scorer's (:func:`_columns`)."""
        model = LogisticModel.from_dict(dict(data))
        if expected is None:
            _columns(model.features, where)
            expected = model.features
        if list(model.features) != list(expected):
            raise ValueError(f"{where}: features {list(model.features)} are not this version's {list(expected)}.")
        center, scale = list(map(float, data["center"])), list(map(float, data["scale"]))
        if not (len(center) == len(scale) == len(expected)) or min(scale) <= 0:
            raise ValueError(f"{where}: center/scale need {len(expected)} values each, scales > 0.")
        return cls(model, center, scale)


@dataclass
class CandidateClassifier:
    """Blob proposals and the detection probability of every candidate (module docstring).

    Attributes:
        proposal: ranks blob proposals (:data:`PROPOSAL_FEATURES`).
        scorer: the detection probability (:data:`CANDIDATE_FEATURES` + ``head_logit``).
        max_proposals: proposals per scan added as candidates (the best ranked that are not near a mask candidate);
            0: none, the classifier only rescores the mask's candidates.
        min_distance_mm: a proposal this close to a mask candidate (or a better proposal) is not added.
        proposals_need_mask: a proposal whose centred crop has no mask component there (the network segments
            nothing) is dropped.
        fitted_on: what it was fitted on, including ``weights`` (``{"file", "sha256"}``) it belongs to.
    """

    proposal: _Model
    scorer: _Model
    max_proposals: int = 40
    min_distance_mm: float = 5.0
    fitted_on: dict[str, Any] = field(default_factory=dict)
    proposals_need_mask: bool = True

    def __post_init__(self) -> None:
        if self.max_proposals < 0 or float(self.min_distance_mm) < 0:
            raise ValueError(
                f"max_proposals and min_distance_mm must be >= 0, got {self.max_proposals!r}, {self.min_distance_mm!r}."
            )

    def propose(
        self, points: NDArray[Any], features: NDArray[Any], taken: NDArray[Any], spacing_mm: Sequence[float]
    ) -> NDArray[np.int64]:
        """Indices of the proposals to add: best ranked first, each at least ``min_distance_mm`` from every point
        of ``taken`` (mask candidates, ``(M, 3)`` voxels of the same grid) and from every proposal added before it,
        at most ``max_proposals``."""
        if self.max_proposals == 0 or len(points) == 0:
            return np.zeros(0, dtype=np.int64)
        order = np.argsort(-self.proposal.logit(features), kind="stable")
        sp = np.asarray(spacing_mm, dtype=np.float64)
        kept_mm = [np.asarray(t, dtype=np.float64) * sp for t in np.asarray(taken).reshape(-1, 3)]
        out: list[int] = []
        pts = np.asarray(points, dtype=np.float64) * sp
        for i in order:
            if kept_mm and np.min(np.linalg.norm(np.asarray(kept_mm) - pts[i], axis=1)) < self.min_distance_mm:
                continue
            out.append(int(i))
            kept_mm.append(pts[i])
            if len(out) == self.max_proposals:
                break
        return np.asarray(out, dtype=np.int64)

    def score(self, features: NDArray[Any], head_logits: NDArray[Any]) -> NDArray[np.float64]:
        """Detection probabilities of candidates with :data:`CANDIDATE_FEATURES` rows and the head's logits (the
        scorer reads the columns it was fitted on)."""
        x = np.column_stack(
            [
                np.asarray(features, dtype=np.float64).reshape(-1, len(CANDIDATE_FEATURES)),
                np.asarray(head_logits, dtype=np.float64).reshape(-1),
            ]
        )
        return self.scorer.predict(x[:, _columns(self.scorer.model.features)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "candidate_classifier",
            "version": FORMAT_VERSION,
            "max_proposals": int(self.max_proposals),
            "min_distance_mm": float(self.min_distance_mm),
            "proposals_need_mask": bool(self.proposals_need_mask),
            "proposal": self.proposal.to_dict(),
            "scorer": self.scorer.to_dict(),
            "fitted_on": self.fitted_on,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        from lung_nodule_mtl.utils.io import atomic_write_json

        dest = Path(path)
        atomic_write_json(self.to_dict(), dest)
        return dest

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CandidateClassifier:
        """Read a classifier JSON; errors name the file and what is wrong with it."""
        from lung_nodule_mtl.inference.fusion import read_model_file

        p, data = read_model_file(path, "candidate_classifier", "candidate classifier")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{p}: version {data.get('version')!r}; this package reads version {FORMAT_VERSION}.")
        try:
            return cls(
                proposal=_Model.from_dict(data["proposal"], PROPOSAL_FEATURES, f"{p}: proposal"),
                scorer=_Model.from_dict(data["scorer"], None, f"{p}: scorer"),
                max_proposals=int(data.get("max_proposals", 40)),
                min_distance_mm=float(data.get("min_distance_mm", 5.0)),
                fitted_on=dict(data.get("fitted_on") or {}),
                proposals_need_mask=bool(data.get("proposals_need_mask", True)),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"{p}: missing or malformed entry {e}.") from e
        except ValueError as e:
            message = str(e)
            raise ValueError(message if message.startswith(str(p)) else f"{p}: {message}") from e

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None) -> CandidateClassifier | None:
        """``None`` for ``None`` or ``""`` (no classifier: the head's probability), else :meth:`load`."""
        return None if path in (None, "") else cls.load(path)  # type: ignore[arg-type]


def _columns(features: Sequence[str], where: str = "scorer") -> list[int]:
    """Columns of ``[*CANDIDATE_FEATURES, head_logit]`` that ``features`` name; errors name the unknown ones."""
    known = (*CANDIDATE_FEATURES, HEAD_LOGIT)
    unknown = [f for f in features if f not in known]
    if unknown or not features or len(set(features)) != len(features):
        raise ValueError(f"{where}: features must be distinct names of {list(known)}; unknown: {unknown}.")
    return [known.index(f) for f in features]


def classifier_beside(ckpt_file: str | os.PathLike[str] | None) -> str | None:
    """The classifier fitted for these weights: :data:`CLASSIFIER_FILE` in the weights' folder if it exists and
    was fitted for them, else ``None`` (as :func:`~lung_nodule_mtl.inference.fusion.fusion_beside`)."""
    from lung_nodule_mtl.inference.fusion import file_beside

    return file_beside(ckpt_file, CLASSIFIER_FILE, "lung-nodule-mtl fit-candidate-classifier")


# -- fitting -----------------------------------------------------------------------------------------------------


@dataclass
class CandidateSamples:
    """One or more annotated scans' samples: proposals (for the ranking model) and candidates (for the scorer).

    ``prop_*``: every blob proposal (features, 1 where it lies inside an annotated nodule, case id).
    ``features``, ``head_logit``, ``labels``: the scorer's rows: the mask's candidates, the proposals ``predict``
    would add (with the ranking model it was given; none without), and each annotated centre (+ jittered copies);
    ``kinds`` says which, ``diameters_mm`` the annotation's diameter for annotation rows (the candidate's
    equivalent diameter, 0 for proposals, otherwise).
    """

    prop_features: NDArray[np.float32]
    prop_labels: NDArray[np.float32]
    prop_case_ids: NDArray[np.str_]
    features: NDArray[np.float32]
    head_logit: NDArray[np.float32]
    labels: NDArray[np.float32]
    kinds: NDArray[np.str_]
    case_ids: NDArray[np.str_]
    centres_ras: NDArray[np.float64]
    diameters_mm: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @staticmethod
    def concatenate(parts: Sequence[CandidateSamples]) -> CandidateSamples:
        if not parts:
            raise ValueError("no samples to concatenate.")
        return CandidateSamples(
            **{k: np.concatenate([getattr(p, k) for p in parts]) for k in CandidateSamples.__dataclass_fields__}
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        from lung_nodule_mtl.utils.io import atomic_write

        with atomic_write(path, "wb") as f:
            np.savez_compressed(f, **{k: getattr(self, k) for k in CandidateSamples.__dataclass_fields__})

    @staticmethod
    def load(path: str | os.PathLike[str]) -> CandidateSamples:
        with np.load(path, allow_pickle=False) as data:
            return CandidateSamples(**{k: data[k] for k in CandidateSamples.__dataclass_fields__})


def _logit(p: float) -> float:
    q = min(max(float(p), 1e-6), 1 - 1e-6)
    return math.log(q / (1 - q))


def head_logits(heads: Sequence[Mapping[str, Any]]) -> NDArray[np.float64]:
    """The detection head's logit of each candidate's head predictions (``nodule_prob``, clipped to 1e-6)."""
    return np.asarray([_logit(float(h["nodule_prob"])) for h in heads], dtype=np.float64)


def _inside(centres: NDArray[np.float64], nodules: Sequence[Any], missing_diameter_mm: float) -> NDArray[np.bool_]:
    from lung_nodule_mtl.metrics.froc import _hits

    return np.asarray(
        _hits(np.asarray(centres, dtype=np.float64).reshape(-1, 3), nodules, missing_diameter_mm).any(axis=1),
        dtype=bool,
    )


def collect_candidate_samples(
    predictor: Any,
    image: Any,
    case_id: str,
    annotations: Sequence[Any],
    excluded: Sequence[Any] = (),
    *,
    classifier: CandidateClassifier | None = None,
    proposals_only: bool = False,
    jitter: int = 2,
    jitter_mm: float = 2.0,
    seed: int = 0,
    missing_diameter_mm: float | None = None,
) -> CandidateSamples:
    """The classifier's inputs on one annotated scan, exactly as ``predict`` computes them.

    Args:
        predictor: a :class:`~lung_nodule_mtl.inference.ScanPredictor` whose network has a detection head (its
            own classifier, if any, is not used).
        image: ``(1, H, W, D)`` CT in HU with its RAS ``affine``.
        case_id: the scan's id.
        annotations: its nodules (RAS centres, diameters): the positives (LUNA16's hit rule).
        excluded: findings that are neither: proposals and candidates inside them are left out.
        classifier: its ranking model chooses the proposals added as candidates (as ``predict`` would); ``None``:
            none added.
        proposals_only: only the proposals (no network: for fitting the ranking model first).
        jitter, jitter_mm, seed: copies of each annotated centre moved by 0.5 mm up to ``jitter_mm`` (at most a
            quarter of the diameter), as :func:`~lung_nodule_mtl.inference.head_refit.collect_head_samples`.
        missing_diameter_mm: radius rule for annotations without a diameter (default LUNA16's 10 mm).
    """
    from lung_nodule_mtl.io.geometry import equivalent_diameter_mm, voxel_to_world
    from lung_nodule_mtl.metrics.froc import LUNA16_MISSING_DIAMETER_MM

    if jitter < 0 or jitter_mm <= 0:
        raise ValueError(f"jitter must be >= 0 and jitter_mm > 0, got {jitter!r}, {jitter_mm!r}.")
    missing = LUNA16_MISSING_DIAMETER_MM if missing_diameter_mm is None else float(missing_diameter_mm)
    iso = predictor._resampler.to_isotropic(image)
    hu = iso[0].numpy()
    affine = np.asarray(iso.affine)
    lungs = predictor._find_lungs(hu)
    points, pfeats = predictor._blob_proposals(hu, lungs)
    pworld = np.asarray([voxel_to_world(affine, p.astype(np.float64)) for p in points]).reshape(-1, 3)
    p_on = _inside(pworld, annotations, missing)
    p_keep = p_on | ~_inside(pworld, excluded, missing)
    empty = CandidateSamples(
        prop_features=pfeats[p_keep].astype(np.float32),
        prop_labels=p_on[p_keep].astype(np.float32),
        prop_case_ids=np.asarray([case_id] * int(p_keep.sum()), dtype=np.str_),
        features=np.zeros((0, len(CANDIDATE_FEATURES)), np.float32),
        head_logit=np.zeros(0, np.float32),
        labels=np.zeros(0, np.float32),
        kinds=np.zeros(0, dtype=np.str_),
        case_ids=np.zeros(0, dtype=np.str_),
        centres_ras=np.zeros((0, 3)),
        diameters_mm=np.zeros(0),
    )
    if proposals_only:
        return empty
    prob = predictor._mask_probability(iso, lungs.box, lungs.mask)[0].numpy()
    if lungs.mask is not None:
        prob *= lungs.mask[lungs.box]
    labels_box, _, centres_box = predictor._detect(prob, predictor._voxel_mm3)
    del prob
    sizes = np.bincount(labels_box.ravel(), minlength=len(centres_box) + 1)[1:].astype(np.float64)
    cand_diam = [equivalent_diameter_mm(float(v) * predictor._voxel_mm3) for v in sizes]
    offset = np.asarray([s.start for s in lungs.box], dtype=np.float64)
    taken = np.asarray([c + offset for c in centres_box]).reshape(-1, 3)
    cand = [voxel_to_world(affine, t).tolist() for t in taken]
    kinds = ["candidate"] * len(cand)
    diam = list(cand_diam)
    if classifier is not None:
        for i in classifier.propose(points, pfeats, taken, predictor.spacing_mm):
            cand.append(pworld[i].tolist())
            kinds.append("proposal")
            diam.append(0.0)
    cand_arr = np.asarray(cand, dtype=np.float64).reshape(-1, 3)
    on = _inside(cand_arr, annotations, missing)
    keep = on | ~_inside(cand_arr, excluded, missing)
    rng = np.random.default_rng(seed)
    pos: list[list[float]] = []
    pos_diam: list[float] = []
    for n in annotations:
        c = np.asarray(n.center_ras_mm, dtype=np.float64)
        d = float(n.diameter_mm or missing)
        for k in range(jitter + 1):
            step = np.zeros(3)
            if k:
                step = rng.normal(size=3)
                step *= rng.uniform(0.5, max(min(jitter_mm, d / 4.0), 0.5)) / np.linalg.norm(step)
            pos.append((c + step).tolist())
            pos_diam.append(d)
    centres = pos + [c for c, k in zip(cand, keep, strict=True) if k]
    row_kinds = ["annotation"] * len(pos) + [k for k, kk in zip(kinds, keep, strict=True) if kk]
    row_labels = np.concatenate([np.ones(len(pos)), on[keep].astype(np.float64)])
    row_diam = pos_diam + [d for d, kk in zip(diam, keep, strict=True) if kk]
    heads, crop_probs = predictor._candidate_heads(iso, centres)[:2] if centres else ([], None)
    if classifier is not None and classifier.proposals_need_mask and crop_probs is not None:
        rows = [i for i, k in enumerate(row_kinds) if k != "proposal" or
                predictor._centre_component(crop_probs[i].numpy()) is not None]  # fmt: skip
        centres, heads = [centres[i] for i in rows], [heads[i] for i in rows]
        row_kinds, row_labels, row_diam = [row_kinds[i] for i in rows], row_labels[rows], [row_diam[i] for i in rows]
    feats = predictor._candidate_features(iso, hu, centres)
    return CandidateSamples(
        prop_features=empty.prop_features,
        prop_labels=empty.prop_labels,
        prop_case_ids=empty.prop_case_ids,
        features=feats.astype(np.float32),
        head_logit=head_logits(heads).astype(np.float32),
        labels=np.asarray(row_labels, dtype=np.float32),
        kinds=np.asarray(row_kinds, dtype=np.str_),
        case_ids=np.asarray([case_id] * len(centres), dtype=np.str_),
        centres_ras=np.asarray(centres, dtype=np.float64).reshape(-1, 3),
        diameters_mm=np.asarray(row_diam, dtype=np.float64),
    )


def _per_scan_out(
    x: NDArray[np.float64], y: NDArray[np.float64], groups: NDArray[np.str_], features: Sequence[str], l2: float
) -> NDArray[np.float64]:
    """Each row's probability from the model fitted without its scan (leave one scan out); NaN where the other scans
    lack a class."""
    out = np.full(len(y), np.nan)
    for g in np.unique(groups):
        held = groups == g
        if np.unique(y[~held]).size < 2:
            continue
        out[held] = _Model.fit(x[~held], y[~held], features, l2).predict(x[held])
    return out


def _auc(score: NDArray[Any], y: NDArray[Any]) -> float | None:
    from lung_nodule_mtl.metrics.classification import rank_auc

    ok = np.isfinite(score)
    if np.unique(y[ok]).size < 2:
        return None
    return round(float(rank_auc(score[ok], y[ok])), 4)


def domain_aucs(
    samples: CandidateSamples, reference: NDArray[np.bool_], features: Sequence[str] | None = None
) -> dict[str, float | None]:
    """Each feature's domain AUC: the non-nodule rows of ``reference`` (e.g. the scans whose host is a real CT)
    against the other non-nodule rows (0.5: the feature cannot tell the two backgrounds apart; ``None`` where one side
    is empty). ``features``: names of :data:`CANDIDATE_FEATURES` and ``head_logit`` (default: all of them)."""
    names = list(features) if features is not None else [*CANDIDATE_FEATURES, HEAD_LOGIT]
    x = np.column_stack([samples.features.astype(np.float64), samples.head_logit.astype(np.float64)])
    neg = samples.labels < 0.5
    side = np.asarray(reference, dtype=bool)[neg].astype(np.float64)
    return {n: _auc(x[neg, c], side) for n, c in zip(names, _columns(names, "features"), strict=True)}


def _drop_shifted(
    samples: CandidateSamples, names: list[str], reference_cases: Sequence[str], keep_range: tuple[float, float]
) -> tuple[list[str], dict[str, Any]]:
    """``names`` without the measured features whose :func:`domain_aucs` between ``reference_cases`` and the other
    scans lies outside ``keep_range`` (the head's logit is always kept), and what was measured."""
    known = set(np.unique(samples.case_ids).tolist())
    missing = sorted(set(reference_cases) - known)
    if missing:
        raise ValueError(f"--drop-shifted: {missing} are not among the scans ({', '.join(sorted(known)[:5])}, ...).")
    reference = np.isin(samples.case_ids, list(reference_cases))
    neg = samples.labels < 0.5
    if not (reference & neg).any() or not (~reference & neg).any():
        raise ValueError(
            "--drop-shifted: both the reference scans and the others need candidates that are not nodules."
        )
    lo, hi = float(keep_range[0]), float(keep_range[1])
    aucs = domain_aucs(samples, reference, names)
    kept = [n for n in names if n == HEAD_LOGIT or (aucs[n] is not None and lo <= aucs[n] <= hi)]  # type: ignore[operator]
    if not kept:
        raise ValueError(f"--drop-shifted: every feature's domain AUC lies outside [{lo}, {hi}]; nothing left to fit.")
    info = {"reference_cases": sorted(reference_cases), "keep_range": [lo, hi], "domain_auc": aucs,
            "dropped": [n for n in names if n not in kept]}  # fmt: skip
    return kept, info


def fit_candidate_classifier(
    scans: str | os.PathLike[str],
    annotations: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    excluded: str | os.PathLike[str] | None = None,
    bundle_dir: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
    max_proposals: int = 40,
    min_distance_mm: float = 5.0,
    proposals_need_mask: bool = True,
    jitter: int = 2,
    l2: float = 1e-2,
    seed: int = 0,
    features: Sequence[str] | None = None,
    drop_shifted: Sequence[str] = (),
    keep_range: tuple[float, float] = (0.35, 0.65),
) -> dict[str, Any]:
    """Fit the blob-proposal ranking and the candidate scorer on annotated whole scans; write
    ``out_dir/candidate_classifier.json`` and ``out_dir/candidate_classifier_fit.json`` (the summary returned).

    Two passes over the scans (each cached under ``out_dir/samples``, keyed on everything it depends on): the blob
    proposals of every scan (no network) fit the ranking model; then each scan's candidates as ``predict`` meets
    them with that ranking (the mask's, the proposals it adds, each annotated centre and jittered copies), with
    the head's logit (mirrored where ``predict`` mirrors), fit the scorer. The summary gives the in-sample and
    leave-one-scan-out AUCs of the scorer and of the head alone (candidates: nodules against the rest; small:
    annotated nodules under 8 mm against the candidates that are not nodules).

    Args:
        scans, annotations, excluded, bundle_dir, checkpoint, device: as
            :func:`~lung_nodule_mtl.inference.head_refit.refit_detection_head` (scans whose nodules are all
            annotated; never the scans that choose the operating point or report results).
        max_proposals, min_distance_mm, proposals_need_mask: see :class:`CandidateClassifier`.
        jitter: jittered copies of each annotated centre.
        l2: ridge of both logistic models (relative to the number of rows).
        seed: seed of the jitter.
        features: the scorer's inputs, names of :data:`CANDIDATE_FEATURES` and ``head_logit`` (default: all of them;
            :data:`GEOMETRY_FEATURES`: geometry only). The cached samples hold every feature: changing this refits
            without a forward pass.
        drop_shifted: case ids of scans whose background differs in kind from the others' (e.g. the real CTs among
            synthetic hosts): each measured feature whose :func:`domain_aucs` between their non-nodule candidates and
            the others' lies outside ``keep_range`` is left out of ``features`` (the head's logit stays), so that the
            scorer does not learn what tells the two kinds of background apart (README "Blob proposals and a
            candidate classifier": variant C). The summary's ``feature_shift`` records the AUCs and what was dropped.
    """
    import zlib

    from lung_nodule_mtl.inference.fusion import weights_fingerprint
    from lung_nodule_mtl.inference.head_refit import cached_samples, open_annotated_scans
    from lung_nodule_mtl.io.ct import load_ct
    from lung_nodule_mtl.utils.io import atomic_write_json

    opened = open_annotated_scans(
        scans,
        annotations,
        out_dir,
        excluded=excluded,
        bundle_dir=bundle_dir,
        checkpoint=checkpoint,
        overrides={"device_name": device, "candidate_classifier": None},
    )
    predictor, table, cases, known = opened.predictor, opened.table, opened.cases, opened.known
    if not predictor.has_detection_head:
        raise ValueError("the network has no detection head ('nodule'): the classifier scores its logit.")
    weights = weights_fingerprint(opened.ckpt)
    if not any(table.get(c) for c in known):
        raise ValueError(f"{annotations}: no nodule of the scans in {scans}; the classifier needs positives.")
    if drop_shifted:  # checked before the passes, which take minutes a scan
        if not 0.0 <= keep_range[0] <= 0.5 <= keep_range[1] <= 1.0:
            raise ValueError(f"--keep-range: needs 0 <= low <= 0.5 <= high <= 1, got {list(keep_range)}.")
        if not set(drop_shifted) <= known or set(drop_shifted) == known:
            raise ValueError(
                f"--drop-shifted: {sorted(drop_shifted)} must be some, not all, of the scans of {scans} "
                f"({', '.join(sorted(known)[:5])}, ...)."
            )
    out = Path(out_dir)
    settings = predictor.settings()

    def collect(case: Any, name: str, key: dict[str, Any], **kwargs: Any) -> CandidateSamples:
        return cached_samples(  # type: ignore[no-any-return]
            opened.cache / f"{case.case_id}.{name}.npz",
            key,
            CandidateSamples.load,
            lambda: collect_candidate_samples(
                predictor,
                load_ct(case).image,
                case.case_id,
                table.get(case.case_id, []),
                opened.skip.get(case.case_id, []),
                **kwargs,
            ),
        )

    # pass 1: proposals (no network)
    key = {
        "pass": "proposals",
        "features": list(PROPOSAL_FEATURES),
        "lung_mask": settings["lung_mask"],
        "spacing_mm": settings["spacing_mm"],
    }
    props = CandidateSamples.concatenate([collect(case, "proposals", key, proposals_only=True) for case in cases])
    if np.unique(props.prop_labels).size < 2:
        raise ValueError(f"{scans}: no blob proposal lies inside an annotated nodule; nothing to fit the ranking on.")
    proposal = _Model.fit(props.prop_features, props.prop_labels, PROPOSAL_FEATURES, l2)
    ranking = CandidateClassifier(proposal, proposal, max_proposals, min_distance_mm, {}, proposals_need_mask)
    # pass 2: candidates as predict meets them
    key = {
        "pass": "candidates",
        "weights_sha256": weights["sha256"],
        "proposal": proposal.to_dict(),
        "max_proposals": max_proposals,
        "min_distance_mm": min_distance_mm,
        "proposals_need_mask": proposals_need_mask,
        "jitter": jitter,
        "seed": seed,
        **{k: settings[k] for k in _SAMPLE_SETTINGS},
    }
    parts = []
    for case in cases:
        seed_case = seed + zlib.crc32(case.case_id.encode())
        parts.append(collect(case, "candidates", key, classifier=ranking, jitter=jitter, seed=seed_case))
        logger.info("%s: %d candidate rows", case.case_id, len(parts[-1]))
    samples = CandidateSamples.concatenate(parts)
    names = list(features) if features is not None else [*CANDIDATE_FEATURES, HEAD_LOGIT]
    x = np.column_stack([samples.features.astype(np.float64), samples.head_logit.astype(np.float64)])
    shift = None
    if drop_shifted:
        names, shift = _drop_shifted(samples, names, drop_shifted, keep_range)
    x = x[:, _columns(names, "features")]
    y = samples.labels.astype(np.float64)
    scorer = _Model.fit(x, y, names, l2)
    fitted_on = {
        "weights": weights,
        "scans": str(scans),
        "annotations": str(annotations),
        "n_scans": len(cases),
        "n_nodules": int(sum(len(table.get(c, [])) for c in known)),
    }
    classifier = CandidateClassifier(proposal, scorer, max_proposals, min_distance_mm, fitted_on, proposals_need_mask)
    written = classifier.save(out / CLASSIFIER_FILE)
    # how well it separates, in sample and with each scan held out, beside the head alone
    oos = _per_scan_out(x, y, samples.case_ids, names, l2)
    ins = scorer.predict(x)
    head = samples.head_logit.astype(np.float64)
    cand = samples.kinds != "annotation"
    small = (~cand & (samples.diameters_mm < 8.0)) | (cand & (y < 0.5))
    summary = {
        "scans": str(scans),
        "annotations": str(annotations),
        "excluded": None if excluded is None else str(excluded),
        "weights": weights,
        "n_scans": len(cases),
        "n_scans_without_annotations": len(known - set(table)),
        "annotations_outside_scans": opened.unknown,
        "n_proposals": len(props.prop_labels),
        "n_proposals_on_nodules": int(props.prop_labels.sum()),
        "n_rows": len(samples),
        "n_rows_nodule": int(y.sum()),
        "n_candidates_added": int((samples.kinds == "proposal").sum()),
        "n_candidates_added_on_nodules": int(((samples.kinds == "proposal") & (y > 0.5)).sum()),
        "max_proposals": max_proposals,
        "min_distance_mm": min_distance_mm,
        "proposals_need_mask": proposals_need_mask,
        "features": names,
        "feature_shift": shift,
        "jitter": jitter,
        "l2": l2,
        "seed": seed,
        "auc": {
            "candidates": {
                "head": _auc(head[cand], y[cand]),
                "classifier_in_sample": _auc(ins[cand], y[cand]),
                "classifier_scan_held_out": _auc(oos[cand], y[cand]),
            },
            "small_nodules_vs_candidates": {
                "head": _auc(head[small], y[small]),
                "classifier_in_sample": _auc(ins[small], y[small]),
                "classifier_scan_held_out": _auc(oos[small], y[small]),
            },
        },
        "classifier_file": str(written),
    }
    atomic_write_json(summary, out / "candidate_classifier_fit.json")
    return summary


_SAMPLE_SETTINGS = (
    *_HEAD_SAMPLE_SETTINGS,
    "min_diameter_mm",
    "max_diameter_mm",
    "mirror_tta",
    "mirror_candidates_above",
)
"""The predictor settings a scan's candidate rows depend on (the cache key)."""
