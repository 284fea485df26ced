"""The cross-validation report: per-configuration mean ± sd over folds, paired differences to the reference, the
pooled out-of-fold malignancy judged against size, and the markdown table (``cv_summary.json``, ``cv_folds.csv``,
``cv_table.md``). :mod:`lung_nodule_mtl.engines.crossval` plans and runs the folds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lung_nodule_mtl.engines.crossval import ABLATION_DESCRIPTIONS, ABLATIONS
from lung_nodule_mtl.inference.fusion import DEFAULT_MALIGNANCY_FEATURES, FUSION_FEATURES
from lung_nodule_mtl.utils.io import atomic_write, atomic_write_csv, atomic_write_json, json_safe, read_json_or_none

__all__ = ["format_cross_validation_table", "pooled_fusion", "pooled_malignancy", "summarise_cross_validation"]


def _flatten(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The figures of one ``metrics.json`` as flat ``name -> value`` (NaN where absent)."""
    row: dict[str, float] = {}
    for key in ("dice", "iou", "hd95"):
        entry = metrics.get("segmentation", {}).get(key)
        if entry is not None:
            row[key] = entry["mean"]
    malignancy = metrics.get("malignancy")
    if malignancy:
        for key in ("auc", "accuracy", "sensitivity", "specificity", "diameter_baseline_auc"):
            if key in malignancy:
                row[f"malignancy_{key}"] = malignancy[key]
        row["indeterminate_mean_prob"] = malignancy.get("indeterminate", {}).get("mean_prob", math.nan)
    if "malignancy_score_mae" in metrics:
        row["malignancy_score_mae"] = metrics["malignancy_score_mae"]
    for name, entry in (metrics.get("attributes") or {}).items():
        row[f"{name}_accuracy"] = entry["accuracy"]
        row[f"{name}_majority"] = entry["majority_accuracy"]
    return {k: (math.nan if v is None else float(v)) for k, v in row.items()}


def pooled_malignancy(config_dir: Path, folds: Sequence[int], n_bootstrap: int = 2000) -> dict[str, Any] | None:
    """The out-of-fold malignancy predictions of every fold pooled, judged on what they add to size.

    Each nodule is scored once, by the model that did not train on it. The 95% intervals resample patients
    (:func:`~lung_nodule_mtl.metrics.classification.paired_auc_bootstrap`). Beside the model-vs-diameter AUC:

    * ``size_matched``: the AUC on size-matched benign and malignant nodules
      (:func:`~lung_nodule_mtl.metrics.calibration.size_matched_auc`, within 3 mm), with its interval and the
      diameter's AUC on the same nodules, paired;
    * ``size_strata``: the AUC within < 10, 10–20, ≥ 20 mm;
    * ``calibration``: Brier score and ECE of the model, and of a diameter-only logistic model fitted, for each
      fold, on the other folds' nodules (so its probabilities are out-of-fold too);
    * ``oof_threshold``: for each fold a threshold chosen (Youden's J) on the other folds' out-of-fold
      predictions, never on the fold itself; accuracy, sensitivity and specificity pooled at those thresholds.

    ``None`` when the configuration has no malignancy head or the folds' ``per_nodule.csv`` lack the columns.
    """
    import csv

    from lung_nodule_mtl.metrics.calibration import (
        LogisticModel,
        calibration_report,
        size_matched_pairs,
        size_strata_auc,
        youden_threshold,
    )
    from lung_nodule_mtl.metrics.classification import paired_auc_bootstrap

    probs, diameters, labels, patients, fold_of = [], [], [], [], []
    for fold in folds:
        table = config_dir / f"fold{fold}" / "evaluation" / "per_nodule.csv"
        if not table.is_file():
            return None
        with open(table, newline="") as f:
            for row in csv.DictReader(f):
                if not row.get("pred_malignancy_prob") or row.get("malignancy") not in ("0", "1", "0.0", "1.0"):
                    continue
                if not row.get("diameter_mm") or float(row["diameter_mm"]) <= 0:
                    continue
                probs.append(float(row["pred_malignancy_prob"]))
                diameters.append(float(row["diameter_mm"]))
                labels.append(float(row["malignancy"]))
                patients.append(row.get("patient_id") or row["case_id"])
                fold_of.append(fold)
    if not probs or len(set(labels)) < 2:
        return None
    result = paired_auc_bootstrap(probs, diameters, labels, patients, n_bootstrap=n_bootstrap, seed=0)
    out: dict[str, Any] = {"model_auc": result.pop("auc_a"), "diameter_auc": result.pop("auc_b"),
                           "ci_model": result.pop("ci_a"), "ci_diameter": result.pop("ci_b"), **result}  # fmt: skip
    p, d, y, g, k = (np.asarray(v) for v in (probs, diameters, labels, patients, fold_of))
    y = y.astype(np.float64)
    pairs = size_matched_pairs(d, y)
    if pairs:
        idx = np.array([i for pair in pairs for i in pair])
        matched = paired_auc_bootstrap(p[idx], d[idx], y[idx], g[idx], n_bootstrap=n_bootstrap, seed=0)
        out["size_matched"] = {"auc": matched["auc_a"], "ci": matched["ci_a"], "diameter_auc": matched["auc_b"],
                               "ci_diameter": matched["ci_b"], "n_pairs": len(pairs),
                               "mean_gap_mm": float(np.mean([abs(d[a] - d[b]) for a, b in pairs]))}  # fmt: skip
    out["size_strata"] = size_strata_auc(p, y, d)
    size_oof = np.full(p.size, math.nan)
    thresholds: dict[str, float] = {}
    called = np.zeros(p.size, dtype=bool)
    for fold in sorted(set(fold_of)):
        here, rest = k == fold, k != fold
        if len(set(y[rest].tolist())) < 2:
            return out  # too few folds to fit on the others
        size_oof[here] = LogisticModel.fit(np.log(d[rest]), y[rest]).predict(np.log(d[here]))
        thresholds[str(fold)] = youden_threshold(p[rest], y[rest])
        called[here] = p[here] >= thresholds[str(fold)]
    model_cal, size_cal = calibration_report(p, y), calibration_report(size_oof, y)
    out["calibration"] = {"model": {k2: model_cal[k2] for k2 in ("brier", "ece", "n")},
                          "diameter_logistic": {k2: size_cal[k2] for k2 in ("brier", "ece", "n")},
                          "bins": {"model": model_cal["bins"], "diameter_logistic": size_cal["bins"]}}  # fmt: skip
    pos = y == 1
    out["oof_threshold"] = {
        "thresholds": thresholds,
        "accuracy": float((called == pos).mean()),
        "sensitivity": float(called[pos].mean()),
        "specificity": float((~called[~pos]).mean()),
    }
    return out


FUSION_VARIANTS: dict[str, tuple[str, ...]] = {
    "network logit + size": FUSION_FEATURES,
    "size + density (no network)": DEFAULT_MALIGNANCY_FEATURES,
    "network logit + size + density": ("malignancy_logit", *DEFAULT_MALIGNANCY_FEATURES),
}
"""The late fusions :func:`pooled_fusion` judges (``fit-malignancy --features``)."""


def pooled_fusion(config_dir: Path, folds: Sequence[int], n_bootstrap: int = 2000) -> dict[str, Any] | None:
    """What a late fusion of the out-of-fold predictions adds, judged out of fold again.

    For each of :data:`FUSION_VARIANTS` and each fold, a fusion fitted on the **other** folds' out-of-fold
    predictions and predicted-mask measurements (``m_*`` columns of ``per_nodule.csv``) scores the fold
    (:func:`~lung_nodule_mtl.inference.fusion.fit_malignancy_fusion`): pooled AUC with its patient-level
    interval, the difference to the reference and to the predicted mask's diameter, the size-matched AUC and
    the Brier score; per attribute, the exact accuracy of a model of the measurements beside the network's and
    the majority rating's. ``None`` where the tables lack the measurements (evaluated before they existed) or a
    malignancy head, or a fold is missing.
    """
    import csv

    from lung_nodule_mtl.inference.fusion import DEFAULT_ATTRIBUTE_FEATURES, fit_malignancy_fusion

    tables = [config_dir / f"fold{k}" / "evaluation" / "per_nodule.csv" for k in folds]
    if len(tables) < 2 or not all(t.is_file() for t in tables):
        return None
    with open(tables[0], newline="") as f:
        names = set(csv.DictReader(f).fieldnames or [])
    if not {"m_log_diameter_mm", "pred_malignancy_prob", "pred_diameter_mm"} <= names:
        return None
    out: dict[str, Any] = {"malignancy": {}}
    keep = ("n_nodules", "fused_auc", "ci_fused", "mask_diameter_auc", "fused_minus_mask_diameter",
            "ci_fused_minus_mask_diameter", "reference_diameter_auc", "fused_minus_reference_diameter",
            "ci_fused_minus_reference_diameter", "size_matched_fused", "brier", "ece", "network_auc")  # fmt: skip
    measured = [f for f in DEFAULT_ATTRIBUTE_FEATURES if f"m_{f}" in names]  # the tables' measurements
    try:
        for name, features in FUSION_VARIANTS.items():
            if any(f != "malignancy_logit" and f not in measured for f in features):
                continue
            _, report = fit_malignancy_fusion(tables, n_bootstrap=n_bootstrap, features=features)
            m = report["malignancy"]
            out["malignancy"][name] = {"features": list(features), **{k: m[k] for k in keep if k in m}}
        _, report = fit_malignancy_fusion(tables, features=None, attribute_features=measured)
    except ValueError:
        return None  # too few rated nodules to fit on
    out["attributes"] = report["attributes"]
    return out


def summarise_cross_validation(
    out_dir: str | os.PathLike[str],
    configs: Sequence[str] | None = None,
    reference: str = "multitask",
    n_bootstrap: int = 2000,
) -> dict[str, Any]:
    """Mean ± sd over folds per configuration, and each configuration's paired difference to ``reference``.

    Reads ``<out_dir>/<config>/fold*/evaluation/metrics.json`` (finished folds only) and writes
    ``cv_summary.json``, ``cv_folds.csv`` (one row per configuration and fold) and ``cv_table.md`` into
    ``out_dir``.

    The difference to the reference is taken fold by fold on the folds both have (same patients), so the
    between-fold spread, which is large on a few hundred nodules, cancels: ``delta_mean`` ± ``delta_std``.
    ``pooled_malignancy`` (:func:`pooled_malignancy`) puts the out-of-fold malignancy AUC beside the
    diameter-only AUC on the same nodules, with patient-level bootstrap intervals (``n_bootstrap``).
    """
    out = Path(out_dir)
    names = list(configs) if configs is not None else [c for c in ABLATIONS if (out / c).is_dir()]
    folds: dict[str, dict[int, dict[str, float]]] = {}
    rows: list[dict[str, Any]] = []
    for name in names:
        folds[name] = {}
        for metrics_file in sorted((out / name).glob("fold*/evaluation/metrics.json")):
            fold = int(metrics_file.parents[1].name.removeprefix("fold"))
            metrics = read_json_or_none(metrics_file)
            if metrics is None:
                continue
            flat = _flatten(metrics)
            folds[name][fold] = flat
            record = read_json_or_none(metrics_file.parents[1] / "run.json") or {}
            rows.append({"config": name, "fold": fold, "n_nodules": metrics.get("n_nodules"), **flat,
                         "training_s": record.get("training_s")})  # fmt: skip
    summary: dict[str, Any] = {"reference": reference, "configs": {}}
    reference_folds = folds.get(reference, {})
    for name, per_fold in folds.items():
        if not per_fold:
            continue
        keys = sorted({k for flat in per_fold.values() for k in flat})
        entry: dict[str, Any] = {"folds": sorted(per_fold), "description": ABLATION_DESCRIPTIONS.get(name, "")}
        for key in keys:
            values = np.array([per_fold[k].get(key, math.nan) for k in sorted(per_fold)], dtype=np.float64)
            finite = values[np.isfinite(values)]
            stats: dict[str, Any] = {
                "mean": float(finite.mean()) if finite.size else math.nan,
                "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
                "n_folds": int(finite.size),
            }
            if name != reference:
                shared = sorted(set(per_fold) & set(reference_folds))
                diffs = np.array(
                    [per_fold[k].get(key, math.nan) - reference_folds[k].get(key, math.nan) for k in shared]
                )
                diffs = diffs[np.isfinite(diffs)]
                stats["delta_mean"] = float(diffs.mean()) if diffs.size else math.nan
                stats["delta_std"] = float(diffs.std(ddof=1)) if diffs.size > 1 else math.nan
                stats["delta_n_folds"] = int(diffs.size)
            entry[key] = stats
        summary["configs"][name] = entry
    for name, entry in summary["configs"].items():
        pooled = pooled_malignancy(out / name, entry["folds"], n_bootstrap=n_bootstrap)
        if pooled is not None:
            entry["pooled_malignancy"] = pooled
        fused = pooled_fusion(out / name, entry["folds"], n_bootstrap=n_bootstrap)
        if fused is not None:
            entry["pooled_fusion"] = fused
    summary = json_safe(summary)
    atomic_write_json(summary, out / "cv_summary.json")
    atomic_write_csv(rows, out / "cv_folds.csv")
    with atomic_write(out / "cv_table.md") as f:
        f.write(format_cross_validation_table(summary) + "\n")
    return summary


TABLE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("dice", "Dice", 3),
    ("iou", "IoU", 3),
    ("hd95", "HD95 (mm)", 2),
    ("malignancy_auc", "malignancy AUC", 3),
    ("malignancy_diameter_baseline_auc", "diameter-only AUC", 3),
    ("malignancy_accuracy", "accuracy", 3),
    ("malignancy_sensitivity", "sensitivity", 3),
    ("malignancy_specificity", "specificity", 3),
    ("indeterminate_mean_prob", "rating 3: mean probability", 2),
    ("malignancy_score_mae", "rating MAE", 2),
)


def _cell(stats: Mapping[str, Any] | None, digits: int, delta: bool) -> str:
    if not stats or stats.get("mean") is None or not math.isfinite(stats["mean"]):
        return "—"
    text = f"{stats['mean']:.{digits}f}"
    if stats.get("std") is not None and math.isfinite(stats["std"]):
        text += f" ± {stats['std']:.{digits}f}"
    if delta and stats.get("delta_mean") is not None and math.isfinite(stats["delta_mean"]):
        text += f" ({stats['delta_mean']:+.{digits}f})"
    return text


def _interval(low_high: Sequence[float | None]) -> str:
    return "—" if None in low_high else f"[{low_high[0]:.3f}, {low_high[1]:.3f}]"


def _signed(low_high: Sequence[float | None]) -> str:
    return "—" if None in low_high else f"[{low_high[0]:+.3f}, {low_high[1]:+.3f}]"


def format_cross_validation_table(summary: Mapping[str, Any]) -> str:
    """A markdown table: one row per configuration, mean ± sd over folds, (paired Δ vs the reference)."""
    header = ["configuration", "folds", *(title for _, title, _ in TABLE_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, entry in summary["configs"].items():
        cells = [name, str(len(entry["folds"]))]
        cells += [_cell(entry.get(key), digits, name != summary["reference"]) for key, _, digits in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    pooled = {n: e["pooled_malignancy"] for n, e in summary["configs"].items() if e.get("pooled_malignancy")}
    if pooled:
        lines += [
            "",
            "| configuration | pooled out-of-fold malignancy AUC [95% CI] | diameter only [95% CI] | "
            "difference [95% CI] | P(model not better) | size-matched AUC [95% CI] (diameter) | "
            "Brier: model / diameter-only | sens. / spec. at the out-of-fold threshold |",
            "|" + " --- |" * 8,
        ]
        for name, p in pooled.items():
            matched = p.get("size_matched")
            cal = p.get("calibration")
            oof = p.get("oof_threshold")
            lines.append(
                f"| {name} | {p['model_auc']:.3f} {_interval(p['ci_model'])} | {p['diameter_auc']:.3f} "
                f"{_interval(p['ci_diameter'])} | {p['difference']:+.3f} {_interval(p['ci_difference'])} | "
                f"{p['p_a_not_better']:.3f} | "
                + (f"{matched['auc']:.3f} {_interval(matched['ci'])} ({matched['diameter_auc']:.3f}; "
                   f"{matched['n_pairs']} pairs)" if matched else "—")
                + " | "
                + (f"{cal['model']['brier']:.3f} / {cal['diameter_logistic']['brier']:.3f}" if cal else "—")
                + " | "
                + (f"{oof['sensitivity']:.3f} / {oof['specificity']:.3f}" if oof else "—")
                + " |"
            )  # fmt: skip
    fusions = {n: e["pooled_fusion"] for n, e in summary["configs"].items() if e.get("pooled_fusion")}
    if fusions:
        lines += [
            "",
            "| configuration | late fusion, fitted on the other folds | pooled AUC [95% CI] | − reference diameter "
            "[95% CI] | − predicted mask's diameter [95% CI] | size-matched AUC (pairs) | Brier |",
            "|" + " --- |" * 7,
        ]
        for name, f in fusions.items():
            for variant, m in f["malignancy"].items():
                matched = m.get("size_matched_fused")
                ref = (f"{m['fused_minus_reference_diameter']:+.3f} {_signed(m['ci_fused_minus_reference_diameter'])}"
                       if "fused_minus_reference_diameter" in m else "—")  # fmt: skip
                lines.append(
                    f"| {name} | {variant} | {m['fused_auc']:.3f} {_interval(m['ci_fused'])} | {ref} | "
                    f"{m['fused_minus_mask_diameter']:+.3f} {_signed(m['ci_fused_minus_mask_diameter'])} | "
                    + (f"{matched['auc']:.3f} ({matched['n_pairs']})" if matched else "—")
                    + f" | {m['brier']['fused']:.3f} |"
                )  # fmt: skip
        lines += ["", "| configuration | attribute | exact: measurements / network / majority |", "| --- | --- | --- |"]
        for name, f in fusions.items():
            for attribute, r in f["attributes"].items():
                lines.append(f"| {name} | {attribute} | {r['fused']['exact']:.3f} / {r['network']['exact']:.3f} / "
                             f"{r['majority']['exact']:.3f} |")  # fmt: skip
    attributes = sorted(
        {k.removesuffix("_accuracy") for e in summary["configs"].values() for k in e if k.endswith("_accuracy")}
        - {"malignancy"}
    )
    if attributes:
        lines += ["", "| configuration | " + " | ".join(attributes) + " |", "|" + " --- |" * (len(attributes) + 1)]
        for name, entry in summary["configs"].items():
            if any(f"{a}_accuracy" in entry for a in attributes):
                cells = [_cell(entry.get(f"{a}_accuracy"), 3, name != summary["reference"]) for a in attributes]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
        # the class prior of the reported folds (the same nodules for every configuration)
        majority = [next((e[f"{a}_majority"] for e in summary["configs"].values() if f"{a}_majority" in e), None)
                    for a in attributes]  # fmt: skip
        lines.append("| majority class | " + " | ".join(_cell(m, 3, False) for m in majority) + " |")
    return "\n".join(lines)
