"""Malignancy told the size: a late fusion of the network's malignancy output with the measured nodule size.

LIDC malignancy ratings follow size, so the network's probability is combined with the nodule's measured size
(the equivalent diameter of the predicted mask, log scale) in a logistic model fitted on **out-of-fold**
predictions (each nodule scored by a network that did not train on it)::

    P(malignant) = sigmoid(b0 + b1 · logit(p_network) + b2 · log(diameter_mm))

The fitted model is also the calibration (Platt scaling with size as a second input): its probabilities are
fitted to the readers' labels, not to the network's training loss. Whatever the network adds to size shows as
``b1``; a network that adds nothing gets ``b1 ≈ 0`` and the fusion falls back to a diameter model.

The model is a small JSON file beside the weights (``bundle/models/malignancy_fusion.json``), read by
``predict`` / ``scan_inferring`` (:class:`~lung_nodule_mtl.inference.pipeline.ScanPredictor`) and by
``evaluating`` (:class:`~lung_nodule_mtl.reports.evaluation.NoduleEvaluationWriter`); ``lung-nodule-mtl
fit-malignancy`` fits it (:func:`fit_malignancy_fusion`) on ``evaluating``'s ``per_nodule.csv`` tables.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lung_nodule_mtl.metrics.calibration import LogisticModel

__all__ = [
    "FUSION_FEATURES",
    "FUSION_FILE",
    "MalignancyFusion",
    "fit_malignancy_fusion",
    "fusion_beside",
    "read_oof_predictions",
]

FUSION_FEATURES: tuple[str, ...] = ("malignancy_logit", "log_diameter_mm")
FUSION_FILE = "malignancy_fusion.json"
"""The fusion's file name beside the weights it was fitted for."""
_EPS = 1e-6


def _features(prob: Sequence[float] | np.ndarray, diameter_mm: Sequence[float] | np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(prob, dtype=np.float64), _EPS, 1 - _EPS)
    d = np.asarray(diameter_mm, dtype=np.float64)
    return np.stack([np.log(p / (1 - p)), np.log(np.maximum(d, 1.0))], axis=1)


@dataclass
class MalignancyFusion:
    """The fitted fusion; ``fitted_on`` records on what (shown in the model card)."""

    model: LogisticModel
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def __call__(self, prob: float | None, diameter_mm: float | None) -> float | None:
        """The fused probability of one nodule; ``None`` when the network's probability or the size is missing."""
        if prob is None or diameter_mm is None or not (diameter_mm > 0 and math.isfinite(diameter_mm)):
            return None
        return float(self.model.predict(_features([prob], [diameter_mm]))[0])

    def predict(self, prob: Sequence[float] | np.ndarray, diameter_mm: Sequence[float] | np.ndarray) -> np.ndarray:
        return self.model.predict(_features(prob, diameter_mm))

    def save(self, path: str | os.PathLike[str]) -> Path:
        from lung_nodule_mtl.utils.io import atomic_write_json

        dest = Path(path)
        atomic_write_json({"kind": "malignancy_fusion", **self.model.to_dict(), "fitted_on": self.fitted_on}, dest)
        return dest

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MalignancyFusion:
        """Read a fusion JSON; errors name the file and what is wrong with it."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"malignancy fusion file not found: {str(p)!r}.")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON ({e}).") from e
        if not isinstance(data, dict) or data.get("kind") != "malignancy_fusion":
            raise ValueError(f'{p}: not a malignancy fusion file (needs "kind": "malignancy_fusion").')
        try:
            model = LogisticModel.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from e
        if tuple(model.features) != FUSION_FEATURES:
            raise ValueError(f"{p}: features {model.features}, this version reads {list(FUSION_FEATURES)}.")
        return cls(model=model, fitted_on=dict(data.get("fitted_on") or {}))

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None) -> MalignancyFusion | None:
        """``None`` for ``None`` or ``""`` (no fusion), else :meth:`load`."""
        return None if path in (None, "") else cls.load(path)  # type: ignore[arg-type]


def fusion_beside(ckpt_file: str | os.PathLike[str] | None) -> str | None:
    """The fusion fitted for these weights: :data:`FUSION_FILE` in the weights' folder if it exists, else ``None``.

    A fusion belongs to the network whose out-of-fold outputs it was fitted on, so it is looked up beside the
    weights, never elsewhere: other weights (a run of your own) get no fusion unless one is put beside them.
    """
    if ckpt_file in (None, ""):
        return None
    path = Path(str(ckpt_file)).parent / FUSION_FILE
    return str(path) if path.is_file() else None


def read_oof_predictions(tables: Sequence[str | os.PathLike[str]]) -> dict[str, np.ndarray]:
    """Benign and malignant nodules of ``evaluating``'s ``per_nodule.csv`` tables, one fold per table.

    Reads the network's probability (``pred_malignancy_prob_network`` where the table has it, i.e. where it was
    written with a fusion, else ``pred_malignancy_prob``), the predicted mask's size (``pred_diameter_mm``), the
    reference diameter and label, and the patient.

    Returns:
        ``{"prob", "pred_diameter_mm", "diameter_mm", "label", "patient", "fold"}`` arrays (``fold``: the table's
        position).

    Raises:
        FileNotFoundError: a table is missing. ValueError: a table lacks the columns.
    """
    cols: dict[str, list[Any]] = {
        k: [] for k in ("prob", "pred_diameter_mm", "diameter_mm", "label", "patient", "fold")
    }
    for k, table in enumerate(tables):
        path = Path(table)
        if not path.is_file():
            raise FileNotFoundError(f"per-nodule table not found: {str(path)!r}.")
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            names = set(reader.fieldnames or [])
            prob_col = (
                "pred_malignancy_prob_network" if "pred_malignancy_prob_network" in names else "pred_malignancy_prob"
            )
            missing = {prob_col, "pred_diameter_mm", "malignancy"} - names
            if missing:
                raise ValueError(
                    f"{path}: lacks the columns {sorted(missing)} (evaluating's per_nodule.csv of a network with a "
                    "malignancy head, written by this version)."
                )
            for row in reader:
                if row["malignancy"] not in ("0", "1", "0.0", "1.0") or not row[prob_col]:
                    continue
                if not row["pred_diameter_mm"]:
                    continue
                cols["prob"].append(float(row[prob_col]))
                cols["pred_diameter_mm"].append(float(row["pred_diameter_mm"]))
                cols["diameter_mm"].append(float(row["diameter_mm"]) if row.get("diameter_mm") else math.nan)
                cols["label"].append(float(row["malignancy"]))
                cols["patient"].append(f"{k}:{row.get('patient_id') or row.get('case_id')}")
                cols["fold"].append(k)
    return {k: np.asarray(v) for k, v in cols.items()}


def fit_malignancy_fusion(
    tables: Sequence[str | os.PathLike[str]], l2: float = 1e-2, n_bootstrap: int = 2000
) -> tuple[MalignancyFusion, dict[str, Any]]:
    """Fit the fusion on out-of-fold predictions and say what it is worth, out of fold again.

    Args:
        tables: ``evaluating``'s ``per_nodule.csv`` of each fold of a cross-validation (each nodule predicted by
            the fold's network that did not train on it), or of one held-out set (then the evaluation below
            splits its patients into five groups).
        l2: ridge on the coefficients (relative to the number of nodules).
        n_bootstrap: patient-level bootstrap samples of the intervals.

    Returns:
        The fusion fitted on all nodules, and a report: for each fold a fusion fitted on the **other** folds
        scores it, and the pooled scores give the fused AUC, its paired difference to the diameter alone (the
        measured mask size, and the reference diameter) with patient-level 95% intervals, the size-matched AUC
        (reference diameters) and the Brier score of the fused, the network's and a diameter-only model's
        probabilities.
    """
    from lung_nodule_mtl.metrics.calibration import calibration_report, size_matched_auc
    from lung_nodule_mtl.metrics.classification import paired_auc_bootstrap, rank_auc

    data = read_oof_predictions(tables)
    groups = [str(g) for g in data["patient"]]
    y, p, dp, dref, fold = data["label"], data["prob"], data["pred_diameter_mm"], data["diameter_mm"], data["fold"]
    if y.size < 10 or len(set(y.tolist())) < 2:
        raise ValueError(
            f"too few benign and malignant nodules to fit on ({y.size}, classes {sorted(set(y.tolist()))})."
        )
    if len(tables) == 1:  # one held-out set: five groups of patients
        patients = np.unique(data["patient"], return_inverse=True)[1]
        order = np.random.default_rng(0).permutation(int(patients.max()) + 1)
        fold = order[patients] % 5
    fused, size_only = np.full(y.size, math.nan), np.full(y.size, math.nan)
    for k in np.unique(fold):
        here, rest = fold == k, fold != k
        if len(set(y[rest].tolist())) < 2:
            raise ValueError(f"fold {k}: the other folds hold one class only; cannot fit out of fold.")
        model = LogisticModel.fit(_features(p[rest], dp[rest]), y[rest], list(FUSION_FEATURES), l2=l2)
        fused[here] = model.predict(_features(p[here], dp[here]))
        size_model = LogisticModel.fit(np.log(np.maximum(dp[rest], 1.0)), y[rest], ["log_diameter_mm"], l2=l2)
        size_only[here] = size_model.predict(np.log(np.maximum(dp[here], 1.0)))
    cal_fused, cal_network = calibration_report(fused, y), calibration_report(p, y)
    vs_mask = paired_auc_bootstrap(fused, dp, y, groups, n_bootstrap=n_bootstrap, seed=0)
    report: dict[str, Any] = {
        "n_nodules": int(y.size),
        "n_malignant": int(y.sum()),
        "n_folds": int(np.unique(fold).size),
        "fused_auc": vs_mask["auc_a"],
        "ci_fused": vs_mask["ci_a"],
        "network_auc": rank_auc(p, y),
        "mask_diameter_auc": vs_mask["auc_b"],
        "fused_minus_mask_diameter": vs_mask["difference"],
        "ci_fused_minus_mask_diameter": vs_mask["ci_difference"],
        "brier": {
            "fused": cal_fused["brier"],
            "network": cal_network["brier"],
            "mask_diameter_logistic": calibration_report(size_only, y)["brier"],
        },
        "ece": {"fused": cal_fused["ece"], "network": cal_network["ece"]},
    }
    ok = np.isfinite(dref)
    if ok.any() and len(set(y[ok].tolist())) == 2:
        vs_ref = paired_auc_bootstrap(
            fused[ok], dref[ok], y[ok], [g for g, k in zip(groups, ok, strict=True) if k], n_bootstrap=n_bootstrap
        )
        report.update(
            reference_diameter_auc=vs_ref["auc_b"],
            fused_minus_reference_diameter=vs_ref["difference"],
            ci_fused_minus_reference_diameter=vs_ref["ci_difference"],
            size_matched_fused=size_matched_auc(fused[ok], y[ok], dref[ok]),
            size_matched_network=size_matched_auc(p[ok], y[ok], dref[ok]),
        )
    final = LogisticModel.fit(_features(p, dp), y, list(FUSION_FEATURES), l2=l2)
    fitted_on = {
        "tables": [str(t) for t in tables],
        "n_nodules": int(y.size),
        "n_malignant": int(y.sum()),
        "out_of_fold": {k: report[k] for k in ("fused_auc", "mask_diameter_auc", "network_auc", "brier")},
    }
    return MalignancyFusion(model=final, fitted_on=fitted_on), report
