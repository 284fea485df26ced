"""Malignancy and attribute scores over a set of nodules.

Malignancy follows the LIDC convention of the datalists: label ``1`` malignant (rating >= 4),
``0`` benign (<= 2), ``-1`` indeterminate (rating 3). AUC, accuracy, sensitivity and specificity
are computed on the benign and malignant nodules only; the indeterminate ones are reported apart
(how many, and the mean predicted probability), never silently mixed in.

Because LIDC malignancy ratings follow nodule size, every malignancy report can carry the
**diameter-only baseline** (the AUC of ``diameter_mm`` used as the score): a model earns its place
only by beating it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_roc_auc

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, MalignancyLabel

__all__ = ["attribute_accuracy", "binary_scores", "malignancy_report", "paired_auc_bootstrap", "rank_auc"]


def _vector(values: Sequence[float] | np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    a = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    if a.ndim != 1:
        a = a.reshape(-1)
    return a


def binary_scores(
    probs: Sequence[float] | np.ndarray | torch.Tensor,
    labels: Sequence[float] | np.ndarray | torch.Tensor,
    threshold: float = 0.5,
) -> dict[str, float]:
    """AUC, accuracy, sensitivity and specificity of scores for binary labels.

    Args:
        probs: predicted probability (or any score for the AUC) per case.
        labels: 0/1 per case; nothing else is allowed here.
        threshold: a case is called positive when ``prob >= threshold``.

    Returns:
        ``{"auc", "accuracy", "sensitivity", "specificity", "n_positive", "n_negative"}``; a score
        that is undefined (e.g. AUC with one class only) is ``nan``.
    """
    p, y = _vector(probs, "probs"), _vector(labels, "labels")
    if p.shape != y.shape:
        raise ValueError(f"probs and labels must have the same length, got {p.size} and {y.size}.")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got values {sorted(set(y.tolist()) - {0.0, 1.0})}.")
    if not np.isfinite(p).all():
        raise ValueError("probs must be finite.")
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    called = p >= threshold
    auc = (
        float(compute_roc_auc(torch.as_tensor(p), torch.as_tensor(y)))  # type: ignore[arg-type]
        if n_pos and n_neg
        else math.nan
    )
    return {
        "auc": auc,
        "accuracy": float((called == (y == 1)).mean()) if y.size else math.nan,
        "sensitivity": float(called[y == 1].mean()) if n_pos else math.nan,
        "specificity": float((~called[y == 0]).mean()) if n_neg else math.nan,
        "n_positive": n_pos,
        "n_negative": n_neg,
    }


def malignancy_report(
    probs: Sequence[float] | np.ndarray | torch.Tensor,
    labels: Sequence[float | None] | np.ndarray,
    diameters_mm: Sequence[float | None] | np.ndarray | None = None,
    threshold: float = 0.5,
) -> dict[str, object]:
    """Malignancy scores on benign vs malignant nodules, indeterminates apart, diameter baseline beside.

    Args:
        probs: predicted malignancy probability per nodule.
        labels: :class:`~lung_nodule_mtl.constants.MalignancyLabel` per nodule (1, 0, -1) or ``None``
            where unknown (ignored).
        diameters_mm: nodule diameters; when given, ``"diameter_baseline_auc"`` is the AUC of the
            diameter alone on the same benign/malignant nodules, and the report says what the model adds to
            size (:mod:`lung_nodule_mtl.metrics.calibration`).
        threshold: probability at which a nodule is called malignant.

    Returns:
        The :func:`binary_scores` of the model, ``"indeterminate": {"n", "mean_prob"}``, ``"n_unknown"``,
        ``"calibration"`` (Brier score, ECE, reliability bins) and, with diameters, ``"diameter_baseline_auc"``,
        ``"size_matched"`` (AUC on size-matched benign and malignant nodules), ``"size_strata"`` (AUC within
        < 10, 10–20, ≥ 20 mm) and ``"diameter_logistic"`` (the calibration of a logistic model of the log
        diameter fitted on these same nodules: an optimistic baseline for the Brier score).
    """
    from lung_nodule_mtl.metrics.calibration import (
        LogisticModel,
        calibration_report,
        size_matched_auc,
        size_strata_auc,
    )

    p = _vector(probs, "probs")
    y = np.array([math.nan if v is None else float(v) for v in labels], dtype=np.float64)
    if p.shape != y.shape:
        raise ValueError(f"probs and labels must have the same length, got {p.size} and {y.size}.")
    known = np.isin(y, (MalignancyLabel.BENIGN, MalignancyLabel.MALIGNANT))
    indeterminate = y == MalignancyLabel.INDETERMINATE
    report: dict[str, object] = dict(binary_scores(p[known], y[known], threshold))
    report["indeterminate"] = {
        "n": int(indeterminate.sum()),
        "mean_prob": float(p[indeterminate].mean()) if indeterminate.any() else math.nan,
    }
    report["n_unknown"] = int((~known & ~indeterminate).sum())
    if ((p[known] >= 0) & (p[known] <= 1)).all():
        report["calibration"] = calibration_report(p[known], y[known])
    if diameters_mm is not None:
        d = np.array([math.nan if v is None else float(v) for v in diameters_mm], dtype=np.float64)
        if d.shape != y.shape:
            raise ValueError(f"diameters_mm must have one value per nodule, got {d.size} for {y.size}.")
        ok = known & np.isfinite(d) & (d > 0)
        report["diameter_baseline_auc"] = binary_scores(d[ok], y[ok], threshold=math.inf)["auc"]
        report["size_matched"] = size_matched_auc(p[ok], y[ok], d[ok])
        report["size_strata"] = size_strata_auc(p[ok], y[ok], d[ok])
        if len(set(y[ok].tolist())) == 2:
            size_model = LogisticModel.fit(np.log(d[ok]), y[ok], features=["log_diameter_mm"])
            report["diameter_logistic"] = {
                **size_model.to_dict(),
                "calibration": calibration_report(size_model.predict(np.log(d[ok])), y[ok]),
            }
    return report


def attribute_accuracy(
    predicted: Mapping[str, Sequence[int | None]],
    reference: Mapping[str, Sequence[int | None]],
) -> dict[str, dict[str, float]]:
    """Per-attribute accuracy, exact and within one level, on LIDC's 1-based scales.

    Args:
        predicted: attribute name -> predicted rating per nodule.
        reference: attribute name -> reference rating per nodule (``None`` where unknown: skipped).

    Returns:
        attribute -> ``{"accuracy", "within_one", "n", "majority_accuracy"}`` for every attribute present in
        both. ``majority_accuracy`` is the accuracy of always answering the most frequent reference rating of
        these nodules: the baseline a head that learned nothing but the class prior reaches (optimistic, as the
        mode is taken on the evaluated nodules themselves). An attribute head earns its place only above it.
    """
    out: dict[str, dict[str, float]] = {}
    for name in ATTRIBUTE_CLASSES:
        if name not in predicted or name not in reference:
            continue
        pred, ref = list(predicted[name]), list(reference[name])
        if len(pred) != len(ref):
            raise ValueError(f"attribute {name!r}: {len(pred)} predictions for {len(ref)} references.")
        pairs = [(int(a), int(b)) for a, b in zip(pred, ref, strict=True) if a is not None and b is not None]
        if not pairs:
            out[name] = {"accuracy": math.nan, "within_one": math.nan, "n": 0, "majority_accuracy": math.nan}
            continue
        diff = np.array([abs(a - b) for a, b in pairs])
        majority = np.bincount([b for _, b in pairs]).max() / len(pairs)
        out[name] = {
            "accuracy": float((diff == 0).mean()),
            "within_one": float((diff <= 1).mean()),
            "n": len(pairs),
            "majority_accuracy": float(majority),
        }
    return out


def rank_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half); ``nan`` without both classes.

    The same value as :func:`monai.metrics.compute_roc_auc`, in O(n log n), for resampling loops.
    """
    from scipy.stats import rankdata

    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels) == 1
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def paired_auc_bootstrap(
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    labels: Sequence[float] | np.ndarray,
    groups: Sequence[Any] | None = None,
    n_bootstrap: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """AUCs of two scores on the same cases, their difference, and percentile bootstrap intervals.

    Cases are resampled by ``groups`` (e.g. patients: a patient's nodules are not independent), the same
    resample for both scores, so the interval of ``auc_a - auc_b`` is a paired one.

    Args:
        scores_a, scores_b: two scores per case (e.g. a model's probability and the nodule diameter).
        labels: 0/1 per case.
        groups: cluster of each case (default: each case its own).
        n_bootstrap: resamples; those with one class only are skipped and counted out of ``n_valid``.
        seed: seed of the resampling.
        level: coverage of the intervals.

    Returns:
        ``{"auc_a", "auc_b", "difference", "ci_a", "ci_b", "ci_difference", "p_a_not_better", "n_valid",
        "n_positive", "n_negative", "n_groups"}``; ``p_a_not_better`` is the fraction of resamples where
        ``auc_a <= auc_b`` (a one-sided bootstrap p-value).
    """
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if not (a.shape == b.shape == y.shape) or a.ndim != 1:
        raise ValueError(f"scores and labels must be 1D, one value per case; got {a.shape}, {b.shape}, {y.shape}.")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores must be finite.")
    if n_bootstrap < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need n_bootstrap >= 1 and 0 < level < 1, got {n_bootstrap} and {level}.")
    if groups is not None and len(groups) != y.size:
        raise ValueError(f"groups must have one entry per case, got {len(groups)} for {y.size}.")
    keys = np.arange(y.size) if groups is None else np.unique([str(g) for g in groups], return_inverse=True)[1]
    members = [np.flatnonzero(keys == g) for g in range(int(keys.max()) + 1 if keys.size else 0)]
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_bootstrap):
        pick = rng.integers(0, len(members), len(members))
        idx = np.concatenate([members[g] for g in pick])
        pa, pb = rank_auc(a[idx], y[idx]), rank_auc(b[idx], y[idx])
        if math.isfinite(pa):
            samples.append((pa, pb))
    boot = np.array(samples).reshape(-1, 2)
    tail = 100 * (1 - level) / 2

    def interval(values: np.ndarray) -> list[float]:
        return [float(v) for v in np.percentile(values, [tail, 100 - tail])] if values.size else [math.nan, math.nan]

    auc_a, auc_b = rank_auc(a, y), rank_auc(b, y)
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "difference": auc_a - auc_b,
        "ci_a": interval(boot[:, 0]),
        "ci_b": interval(boot[:, 1]),
        "ci_difference": interval(boot[:, 0] - boot[:, 1]),
        "p_a_not_better": float((boot[:, 0] <= boot[:, 1]).mean()) if boot.size else math.nan,
        "n_valid": int(boot.shape[0]),
        "n_positive": int((y == 1).sum()),
        "n_negative": int((y == 0).sum()),
        "n_groups": len(members),
    }
