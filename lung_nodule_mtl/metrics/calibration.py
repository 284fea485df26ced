"""Malignancy beyond size: size-matched and size-stratified AUC, calibration, and the diameter-only model.

LIDC readers' malignancy ratings follow nodule size (the diameter alone scores AUC ≈ 0.9), so a malignancy
score is judged here on what it adds to size:

* :func:`size_matched_auc`: each malignant nodule paired with the benign nodule of nearest diameter (within
  ``max_gap_mm``, 3 mm, each benign nodule used once), the AUC on the paired nodules: size can no longer
  separate them (the diameter's own AUC on the same nodules is reported beside, near 0.5 when the matching
  worked), as the LUNA25 challenge reports its malignancy AUC.
* :func:`size_strata_auc`: the AUC within diameter strata (< 10, 10–20, ≥ 20 mm).
* :func:`calibration_report`: Brier score, expected calibration error (ECE) and the reliability bins;
  :func:`write_reliability_diagram` draws them as a PNG (Pillow, no plotting library).
* :class:`LogisticModel`: a logistic regression of a few features (Newton–Raphson with a small ridge), the
  diameter-only model whose Brier score a calibrated malignancy probability must beat, and the model of a
  late fusion or of Platt scaling.
* :func:`youden_threshold`: a decision threshold chosen on other nodules (the training folds' out-of-fold
  predictions), never on the nodules it is reported on.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lung_nodule_mtl.metrics.classification import rank_auc

__all__ = [
    "DIAMETER_STRATA_MM",
    "LogisticModel",
    "calibration_report",
    "size_matched_auc",
    "size_matched_pairs",
    "size_strata_auc",
    "write_reliability_diagram",
    "youden_threshold",
]

DIAMETER_STRATA_MM: tuple[float, float] = (10.0, 20.0)


def _arrays(*values: Sequence[float] | NDArray[Any], names: Sequence[str]) -> list[NDArray[np.float64]]:
    out = [np.asarray(v, dtype=np.float64).reshape(-1) for v in values]
    if len({a.size for a in out}) > 1:
        sizes = ", ".join(f"{n} {a.size}" for n, a in zip(names, out, strict=True))
        raise ValueError(f"need one value per nodule in each of {', '.join(names)}; got {sizes}.")
    return out


def _binary(labels: NDArray[np.float64]) -> NDArray[np.bool_]:
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 (benign) or 1 (malignant), got {sorted(set(labels.tolist()) - {0, 1})}.")
    return labels == 1


def size_matched_pairs(
    diameters_mm: Sequence[float] | NDArray[Any], labels: Sequence[float] | NDArray[Any], max_gap_mm: float = 3.0
) -> list[tuple[int, int]]:
    """Pairs ``(malignant index, benign index)`` of nearest diameter, at most ``max_gap_mm`` apart.

    Matching without replacement, closest pairs first (ties by index): a deterministic nearest-neighbour
    matching, each nodule in at most one pair.
    """
    d, y = _arrays(diameters_mm, labels, names=("diameters_mm", "labels"))
    if not np.isfinite(d).all():
        raise ValueError("diameters_mm must be finite.")
    if max_gap_mm < 0:
        raise ValueError(f"max_gap_mm must be >= 0, got {max_gap_mm}.")
    malignant = _binary(y)
    m_idx, b_idx = np.flatnonzero(malignant), np.flatnonzero(~malignant)
    if not m_idx.size or not b_idx.size:
        return []
    gap = np.abs(d[m_idx][:, None] - d[b_idx][None, :])
    order = np.lexsort((np.broadcast_to(b_idx, gap.shape).ravel(), np.repeat(m_idx, b_idx.size), gap.ravel()))
    used_m, used_b, pairs = set(), set(), []
    for flat in order:
        i, j = divmod(int(flat), b_idx.size)
        if gap[i, j] > max_gap_mm:
            break
        if i in used_m or j in used_b:
            continue
        used_m.add(i)
        used_b.add(j)
        pairs.append((int(m_idx[i]), int(b_idx[j])))
    return sorted(pairs)


def size_matched_auc(
    probs: Sequence[float] | NDArray[Any],
    labels: Sequence[float] | NDArray[Any],
    diameters_mm: Sequence[float] | NDArray[Any],
    max_gap_mm: float = 3.0,
) -> dict[str, Any]:
    """The AUC of ``probs`` on size-matched benign and malignant nodules (:func:`size_matched_pairs`).

    Returns:
        ``{"auc", "diameter_auc", "concordance", "n_pairs", "n_malignant", "n_benign", "mean_gap_mm",
        "max_gap_mm"}``: ``auc`` on the paired nodules, ``diameter_auc`` the diameter's AUC on the same nodules
        (what size still tells apart), ``concordance`` the share of pairs whose malignant nodule scores higher
        (ties one half). ``nan`` where there is no pair.
    """
    p, y, d = _arrays(probs, labels, diameters_mm, names=("probs", "labels", "diameters_mm"))
    pairs = size_matched_pairs(d, y, max_gap_mm)
    out: dict[str, Any] = {"n_pairs": len(pairs), "n_malignant": int((y == 1).sum()), "n_benign": int((y == 0).sum())}
    out["max_gap_mm"] = float(max_gap_mm)
    if not pairs:
        return {"auc": math.nan, "diameter_auc": math.nan, "concordance": math.nan, "mean_gap_mm": math.nan, **out}
    idx = np.array([k for pair in pairs for k in pair])
    m, b = np.array([i for i, _ in pairs]), np.array([j for _, j in pairs])
    concordance = float(np.mean((p[m] > p[b]) + 0.5 * (p[m] == p[b])))
    return {
        "auc": rank_auc(p[idx], y[idx]),
        "diameter_auc": rank_auc(d[idx], y[idx]),
        "concordance": concordance,
        "mean_gap_mm": float(np.abs(d[m] - d[b]).mean()),
        **out,
    }


def size_strata_auc(
    probs: Sequence[float] | NDArray[Any],
    labels: Sequence[float] | NDArray[Any],
    diameters_mm: Sequence[float] | NDArray[Any],
    edges_mm: Sequence[float] = DIAMETER_STRATA_MM,
) -> dict[str, dict[str, Any]]:
    """The AUC of ``probs`` and of the diameter within diameter strata.

    Args:
        edges_mm: increasing stratum edges; ``(10, 20)`` gives ``"<10 mm"``, ``"10-20 mm"``, ``">=20 mm"``
            (a nodule on an edge goes to the upper stratum).

    Returns:
        stratum name -> ``{"auc", "diameter_auc", "n_malignant", "n_benign", "lower_mm", "upper_mm"}`` (``nan``
        where a stratum lacks one of the classes).
    """
    p, y, d = _arrays(probs, labels, diameters_mm, names=("probs", "labels", "diameters_mm"))
    _binary(y)
    e = [float(v) for v in edges_mm]
    if any(b <= a for a, b in itertools.pairwise(e)):
        raise ValueError(f"edges_mm must increase, got {list(edges_mm)}.")
    bounds = list(zip([-math.inf, *e], [*e, math.inf], strict=True))
    out: dict[str, dict[str, Any]] = {}
    for lo, hi in bounds:
        if lo == -math.inf:
            name = f"<{hi:g} mm"
        elif hi == math.inf:
            name = f">={lo:g} mm"
        else:
            name = f"{lo:g}-{hi:g} mm"
        inside = (d >= lo) & (d < hi)
        out[name] = {
            "auc": rank_auc(p[inside], y[inside]),
            "diameter_auc": rank_auc(d[inside], y[inside]),
            "n_malignant": int((y[inside] == 1).sum()),
            "n_benign": int((y[inside] == 0).sum()),
            "lower_mm": None if lo == -math.inf else lo,
            "upper_mm": None if hi == math.inf else hi,
        }
    return out


def calibration_report(
    probs: Sequence[float] | NDArray[Any], labels: Sequence[float] | NDArray[Any], n_bins: int = 10
) -> dict[str, Any]:
    """Brier score, expected calibration error and the reliability bins of probabilities for 0/1 labels.

    Bins are ``n_bins`` equal-width intervals of the probability (the last one closed). ECE is the bins'
    ``|mean probability − observed frequency|`` weighted by their share of the nodules.

    Returns:
        ``{"brier", "ece", "n", "prevalence", "bins": [{"lower", "upper", "n", "mean_prob", "observed"}, ...]}``
        (empty bins have ``n`` 0 and ``None`` means).
    """
    p, y = _arrays(probs, labels, names=("probs", "labels"))
    _binary(y)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}.")
    if p.size and (not np.isfinite(p).all() or p.min() < 0 or p.max() > 1):
        raise ValueError("probs must be probabilities in [0, 1].")
    which = np.minimum((p * n_bins).astype(int), n_bins - 1)
    bins, ece = [], 0.0
    for k in range(n_bins):
        inside = which == k
        n = int(inside.sum())
        mean_prob = float(p[inside].mean()) if n else None
        observed = float(y[inside].mean()) if n else None
        if n:
            ece += n / p.size * abs(mean_prob - observed)  # type: ignore[operator]
        bins.append({"lower": k / n_bins, "upper": (k + 1) / n_bins, "n": n, "mean_prob": mean_prob,
                     "observed": observed})  # fmt: skip
    return {
        "brier": float(np.mean((p - y) ** 2)) if p.size else math.nan,
        "ece": float(ece) if p.size else math.nan,
        "n": int(p.size),
        "prevalence": float(y.mean()) if p.size else math.nan,
        "bins": bins,
    }


def write_reliability_diagram(
    curves: dict[str, dict[str, Any]], path: str | os.PathLike[str], title: str = "Malignancy: reliability"
) -> Path:
    """Draw reliability diagrams (:func:`calibration_report` results, one per name) as one PNG, atomically.

    Each curve is the bins' observed frequency against their mean probability (a dot per non-empty bin, its
    area growing with the bin's count), the diagonal is perfect calibration; the legend gives each curve's
    Brier score and ECE.
    """
    from PIL import Image, ImageDraw

    from lung_nodule_mtl.utils.io import atomic_write

    size, margin = 480, 60
    img = Image.new("RGB", (size + 2 * margin, size + 2 * margin + 20 * len(curves)), "white")
    draw = ImageDraw.Draw(img)

    def xy(px: float, py: float) -> tuple[float, float]:
        return margin + px * size, margin + (1 - py) * size

    draw.rectangle([xy(0, 1), xy(1, 0)], outline="black")
    for t in (0.25, 0.5, 0.75):
        draw.line([xy(t, 0), xy(t, 1)], fill=(225, 225, 225))
        draw.line([xy(0, t), xy(1, t)], fill=(225, 225, 225))
        draw.text((xy(t, 0)[0] - 8, xy(t, 0)[1] + 6), f"{t:g}", fill="black")
        draw.text((margin - 30, xy(0, t)[1] - 6), f"{t:g}", fill="black")
    draw.line([xy(0, 0), xy(1, 1)], fill=(150, 150, 150), width=1)
    draw.text((margin, 20), title, fill="black")
    draw.text((margin + size / 2 - 70, margin + size + 22), "mean predicted probability", fill="black")
    draw.text((5, margin - 20), "observed frequency", fill="black")
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]
    for k, (name, report) in enumerate(curves.items()):
        colour = colours[k % len(colours)]
        points = [(b["mean_prob"], b["observed"], b["n"]) for b in report["bins"] if b["n"]]
        if len(points) > 1:
            draw.line([xy(px, py) for px, py, _ in points], fill=colour, width=2)
        for px, py, n in points:
            r = 2 + 2 * math.sqrt(n / max(report["n"], 1) * 25)
            cx, cy = xy(px, py)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        legend_y = margin + size + 40 + 20 * k
        draw.rectangle([margin, legend_y, margin + 12, legend_y + 12], fill=colour)
        draw.text((margin + 20, legend_y), f"{name}: Brier {report['brier']:.3f}, ECE {report['ece']:.3f}, "
                                           f"n {report['n']}", fill="black")  # fmt: skip
    dest = Path(path)
    with atomic_write(dest, mode="wb") as f:
        img.save(f, format="PNG")
    return dest


@dataclass
class LogisticModel:
    """``P(malignant) = sigmoid(intercept + coef · x)``, fitted by Newton–Raphson with a ridge ``l2`` on ``coef``.

    Used for the diameter-only baseline (``x = log diameter``), Platt scaling (``x = logit p``) and late fusion
    (``x = [logit p, log diameter, ...]``). ``to_dict`` / ``from_dict`` keep it as JSON beside the weights.
    """

    coef: list[float]
    intercept: float
    features: list[str]

    @classmethod
    def fit(
        cls,
        x: Sequence[Sequence[float]] | NDArray[Any],
        labels: Sequence[float] | NDArray[Any],
        features: Sequence[str] | None = None,
        l2: float = 1e-3,
        max_iter: int = 100,
    ) -> LogisticModel:
        """Fit on ``x`` ``(n, k)`` and 0/1 ``labels``; raises ``ValueError`` without both classes."""
        X = np.asarray(x, dtype=np.float64)
        X = X[:, None] if X.ndim == 1 else X
        (y,) = _arrays(labels, names=("labels",))
        if X.shape[0] != y.size:
            raise ValueError(f"x has {X.shape[0]} rows for {y.size} labels.")
        _binary(y)
        if y.min() == y.max():
            raise ValueError("a logistic model needs benign and malignant nodules; got one class only.")
        if not np.isfinite(X).all():
            raise ValueError("x must be finite.")
        A = np.hstack([np.ones((X.shape[0], 1)), X])
        w = np.zeros(A.shape[1])
        ridge = np.full(A.shape[1], l2 * X.shape[0])
        ridge[0] = 0.0
        for _ in range(max_iter):
            q = 1.0 / (1.0 + np.exp(-np.clip(A @ w, -30, 30)))
            grad = A.T @ (q - y) + ridge * w
            hess = (A * (q * (1 - q))[:, None]).T @ A + np.diag(ridge) + 1e-9 * np.eye(A.shape[1])
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-10:
                break
        names = list(features) if features is not None else [f"x{k}" for k in range(X.shape[1])]
        if len(names) != X.shape[1]:
            raise ValueError(f"{len(names)} feature names for {X.shape[1]} features.")
        return cls(coef=[float(v) for v in w[1:]], intercept=float(w[0]), features=names)

    def predict(self, x: Sequence[Sequence[float]] | NDArray[Any]) -> NDArray[np.float64]:
        X = np.asarray(x, dtype=np.float64)
        X = X[:, None] if X.ndim == 1 else X
        if X.shape[1] != len(self.coef):
            raise ValueError(f"the model takes {len(self.coef)} features ({self.features}), got {X.shape[1]}.")
        z = np.clip(self.intercept + X @ np.asarray(self.coef), -30, 30)
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"coef": self.coef, "intercept": self.intercept, "features": self.features}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogisticModel:
        try:
            return cls(coef=[float(v) for v in data["coef"]], intercept=float(data["intercept"]),
                       features=[str(f) for f in data["features"]])  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a logistic model (needs coef, intercept, features): {e}") from e


def youden_threshold(probs: Sequence[float] | NDArray[Any], labels: Sequence[float] | NDArray[Any]) -> float:
    """The probability threshold maximising sensitivity + specificity − 1 on these nodules (ties: the lowest).

    Choose it on other nodules than those it is reported on (the training folds' out-of-fold predictions).
    """
    p, y = _arrays(probs, labels, names=("probs", "labels"))
    pos = _binary(y)
    if pos.all() or not pos.any():
        raise ValueError("a threshold needs benign and malignant nodules; got one class only.")
    candidates = np.unique(p)
    j = [(p[pos] >= t).mean() + (p[~pos] < t).mean() - 1 for t in candidates]
    return float(candidates[int(np.argmax(j))])
