"""Detection: the FROC analysis and CPM of the LUNA16 challenge, with a bootstrap over scans.

Follows LUNA16's ``noduleCADEvaluationLUNA16.py`` (Setio et al., Medical Image Analysis 42, 2017):

* A candidate **hits** an annotation when its centre lies at a distance ``< diameter / 2`` from the
  annotation's centre (strictly; world mm, both centres in the same convention, RAS here). An
  annotation without a diameter (LUNA16's ``-1``) gets ``missing_diameter_mm`` (10 mm, LUNA16's rule).
* Each (included) annotation counts once, with the highest score among the candidates that hit it; it
  is **detected** at every threshold up to that score. The other candidates on it (double
  detections) are ignored: neither true nor false positives.
* A candidate that hits several annotations counts for each of them (LUNA16 does the same, with a
  warning: "CAD mark detected two nodules"), so it can be the best hit of two nodules at once.
* A candidate that hits no annotation but an **excluded** one (``annotations_excluded.csv``:
  non-nodules, nodules < 3 mm, nodules marked by fewer than 3 readers) is ignored.
* Every other candidate is a false positive of its scan.

The FROC curve gives, at each candidate score taken as the threshold, the sensitivity (detected
annotations / all annotations) against the mean number of false positives per scan; the CPM is the
mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per scan, read off the curve by
linear interpolation (and the last sensitivity beyond the curve's end), as MONAI's
:func:`~monai.metrics.compute_froc_score` does. The curve is the same as MONAI's
:func:`~monai.metrics.compute_froc_curve_data` gives (the tests check it), computed in
``O(n log n)`` instead of ``O(n × thresholds)`` so that full LUNA16 submissions and the bootstrap stay
fast, and without its one quirk (it drops the lowest score as a threshold, meant for a ``0`` score
of missed targets, so a system that misses nothing would lose its last operating point). LUNA16's
script reads the sensitivities off the curve resampled at 10 001 FP rates from 1/8 to 8, which can
differ from the exact interpolation here in the fourth decimal.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from monai.metrics import compute_froc_score
from numpy.typing import NDArray

from lung_nodule_mtl.constants import ras_to_lps

if TYPE_CHECKING:
    from lung_nodule_mtl.data.nodule_table import NoduleRecord

__all__ = [
    "DEFAULT_FPS_PER_SCAN",
    "LUNA16_MISSING_DIAMETER_MM",
    "PREDICTIONS_SUMMARY",
    "CaseMatch",
    "evaluate_froc_files",
    "false_positive_table",
    "froc",
    "match_candidates",
    "operating_point",
    "prediction_dir_cases",
]

logger = logging.getLogger(__name__)

DEFAULT_FPS_PER_SCAN: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""The false-positive rates per scan whose mean sensitivity is LUNA16's CPM."""

LUNA16_MISSING_DIAMETER_MM = 10.0
"""Diameter LUNA16's evaluation gives an annotation without one (``diameter_mm = -1``)."""

PREDICTIONS_SUMMARY = "summary.csv"
"""The table of all detections in an output folder of ``lung-nodule-mtl predict`` (one ``<case>.json`` per scan)."""

CI_PERCENTILES = (2.5, 97.5)
"""Percentiles of the bootstrap distribution reported as the 95% confidence interval."""


@dataclass(frozen=True)
class CaseMatch:
    """Candidates of one scan matched to its annotations (see :func:`match_candidates`).

    Attributes:
        tp_scores: ``(n_annotations,)`` the best score among the candidates hitting each annotation,
            ``nan`` where none does (a missed nodule).
        fp_scores: ``(n_false_positives,)`` the scores of the false positives.
        n_candidates: the candidates of the scan.
        n_duplicate_hits: candidates that hit an annotation but are not its best hit (ignored).
        n_excluded_hits: candidates that hit only excluded annotations (ignored).
        fp_index: ``(n_false_positives,)`` the false positives' positions in the candidates given, in the order
            of ``fp_scores`` (for mining them as hard negatives, :func:`false_positive_table`).
    """

    tp_scores: NDArray[np.float64]
    fp_scores: NDArray[np.float64]
    n_candidates: int
    n_duplicate_hits: int
    n_excluded_hits: int
    fp_index: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def _centres(records: Sequence[NoduleRecord]) -> NDArray[np.float64]:
    return np.asarray([r.center_ras_mm for r in records], dtype=np.float64).reshape(-1, 3)


def _hits(candidates: NDArray[np.float64], nodules: Sequence[NoduleRecord], missing_diameter_mm: float) -> NDArray:
    """``(n_candidates, n_nodules)`` whether each candidate lies strictly inside each nodule's radius."""
    radius = np.asarray(
        [missing_diameter_mm / 2 if n.diameter_mm is None else n.diameter_mm / 2 for n in nodules], dtype=np.float64
    )
    d2 = ((candidates[:, None, :] - _centres(nodules)[None, :, :]) ** 2).sum(-1)
    return d2 < radius[None, :] ** 2


def match_candidates(
    candidates: Sequence[NoduleRecord],
    annotations: Sequence[NoduleRecord],
    excluded: Sequence[NoduleRecord] = (),
    missing_diameter_mm: float = LUNA16_MISSING_DIAMETER_MM,
) -> CaseMatch:
    """Sort the candidates of one scan into hits, ignored and false positives, as LUNA16 does.

    Args:
        candidates: detections of the scan, each with a ``probability`` (the score) and a centre in
            RAS world mm.
        annotations: the scan's reference nodules (centres in RAS world mm, diameters in mm).
        excluded: the scan's findings to ignore (hits on them are neither true nor false positives).
        missing_diameter_mm: diameter used for an annotation without one.

    Returns:
        The per-annotation best scores and the false-positive scores (see :class:`CaseMatch`).

    Raises:
        ValueError: a candidate has no score or a score that is not finite.
    """
    for c in candidates:
        if c.probability is None or not math.isfinite(c.probability):
            raise ValueError(
                f"prediction of case {c.case_id!r} (line {c.row}) needs a finite detection probability, "
                f"got {c.probability!r}."
            )
    scores = np.asarray([c.probability for c in candidates], dtype=np.float64)
    xyz = _centres(candidates)
    hit = _hits(xyz, annotations, missing_diameter_mm)
    tp_scores = np.full(len(annotations), np.nan)
    best: set[int] = set()
    for j in range(len(annotations)):
        idx = np.flatnonzero(hit[:, j])
        if idx.size:
            k = int(idx[np.argmax(scores[idx])])
            tp_scores[j] = scores[k]
            best.add(k)
    on_annotation = hit.any(axis=1)
    on_excluded = _hits(xyz, excluded, missing_diameter_mm).any(axis=1) & ~on_annotation
    false = ~on_annotation & ~on_excluded
    return CaseMatch(
        tp_scores=tp_scores,
        fp_scores=scores[false],
        n_candidates=len(candidates),
        n_duplicate_hits=int(on_annotation.sum()) - len(best),
        n_excluded_hits=int(on_excluded.sum()),
        fp_index=np.flatnonzero(false),
    )


class _Pooled:
    """All scans' hits and false positives sorted by score, to compute the curve for any scan weights."""

    def __init__(self, matches: Sequence[CaseMatch]) -> None:
        scores, is_tp, case = [], [], []
        for i, m in enumerate(matches):
            tp = m.tp_scores[~np.isnan(m.tp_scores)]
            scores += [tp, m.fp_scores]
            is_tp += [np.ones(tp.size), np.zeros(m.fp_scores.size)]
            case += [np.full(tp.size + m.fp_scores.size, i)]
        s = np.concatenate(scores) if scores else np.zeros(0)
        order = np.argsort(-s, kind="stable")
        self.scores = s[order]
        self.is_tp = np.concatenate(is_tp)[order] if is_tp else np.zeros(0)
        self.case = np.concatenate(case)[order].astype(np.int64) if case else np.zeros(0, np.int64)
        # the last entry of each run of equal scores: one operating point per distinct score
        self.ends = np.flatnonzero(np.append(self.scores[1:] != self.scores[:-1], True)) if s.size else np.zeros(0, int)
        self.n_annotations = np.asarray([m.tp_scores.size for m in matches], dtype=np.int64)

    def curve(
        self, n_scans: int, counts: NDArray[np.int64] | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """FROC curve, in MONAI's order (thresholds ascending, ending with ``(0, 0)`` at ``+inf``).

        Args:
            n_scans: scans the false positives are divided by.
            counts: how many times each scan is drawn (a bootstrap sample); all once when ``None``.

        Returns:
            ``(fps_per_scan, sensitivity, thresholds)``.
        """
        w = np.ones(self.scores.size) if counts is None else counts[self.case].astype(np.float64)
        n_targets = self.n_annotations.sum() if counts is None else (counts * self.n_annotations).sum()
        tp = np.cumsum(w * self.is_tp)[self.ends][::-1]
        fp = np.cumsum(w * (1.0 - self.is_tp))[self.ends][::-1]
        fps = np.append(fp, 0.0) / float(n_scans)
        sens = np.append(tp, 0.0) / float(n_targets)
        return fps, sens, np.append(self.scores[self.ends][::-1], np.inf)


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


def _sensitivities(fps: NDArray[np.float64], sens: NDArray[np.float64], rates: Sequence[float]) -> NDArray[np.float64]:
    # the interpolation of monai.metrics.compute_froc_score, kept per rate
    return np.interp(rates, fps[::-1], sens[::-1])


def _check_rates(fps_per_scan: Sequence[float]) -> list[float]:
    rates = [float(r) for r in fps_per_scan]
    if not rates or any(not math.isfinite(r) or r <= 0 for r in rates):
        raise ValueError(f"fps_per_scan must be positive false-positive rates per scan, got {list(fps_per_scan)!r}.")
    if len({_rate_key(r) for r in rates}) != len(rates):
        raise ValueError(f"fps_per_scan has a rate twice: {list(fps_per_scan)!r}.")
    return rates


def _bootstrap(pooled: _Pooled, n_scans: int, rates: list[float], n_bootstrap: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    cpms, sens_at = [], []
    for _ in range(n_bootstrap):
        counts = np.bincount(rng.integers(0, n_scans, n_scans), minlength=n_scans)
        if (counts * pooled.n_annotations).sum() == 0:
            continue  # no annotation drawn: sensitivity undefined, the sample is left out
        fps, sens, _ = pooled.curve(n_scans, counts)
        s = _sensitivities(fps, sens, rates)
        sens_at.append(s)
        cpms.append(float(s.mean()))

    def summary(values: Sequence[float]) -> dict[str, float]:
        if not len(values):
            return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan}
        low, high = np.percentile(values, CI_PERCENTILES)
        return {"mean": float(np.mean(values)), "ci_low": float(low), "ci_high": float(high)}

    table = np.asarray(sens_at).reshape(-1, len(rates))
    if len(cpms) < n_bootstrap:
        logger.warning(
            "FROC bootstrap: %d of %d samples drew no annotation and were left out.",
            n_bootstrap - len(cpms),
            n_bootstrap,
        )
    return {
        "n_samples": n_bootstrap,
        "n_valid": len(cpms),
        "seed": seed,
        "confidence": 0.95,
        "cpm": summary(cpms),
        "sensitivity": {_rate_key(r): summary(table[:, i].tolist()) for i, r in enumerate(rates)},
    }


def froc(
    predictions: Mapping[str, Sequence[NoduleRecord]],
    annotations: Mapping[str, Sequence[NoduleRecord]],
    excluded: Mapping[str, Sequence[NoduleRecord]] | None = None,
    case_ids: Sequence[str] | None = None,
    fps_per_scan: Sequence[float] = DEFAULT_FPS_PER_SCAN,
    n_bootstrap: int = 0,
    seed: int = 0,
    missing_diameter_mm: float = LUNA16_MISSING_DIAMETER_MM,
) -> dict[str, Any]:
    """LUNA16's FROC analysis: sensitivity at fixed false positives per scan, and the CPM.

    Matching rules are in the module docstring. All centres must be in one convention (RAS world mm,
    as :func:`~lung_nodule_mtl.data.nodule_table.read_nodule_table` returns them).

    Args:
        predictions: ``{case_id: candidates}``, each candidate with a ``probability`` (its score).
        annotations: ``{case_id: nodules}`` to detect (LUNA16's ``annotations.csv``).
        excluded: ``{case_id: findings}`` whose hits are ignored (``annotations_excluded.csv``).
        case_ids: the scans evaluated; the false positives are divided by their number. Scans
            without candidates or annotations count; annotations and candidates of other scans are
            left out (with a warning for candidates). Default: every case of ``annotations``,
            ``predictions`` and ``excluded`` (sorted). LUNA16 uses its list of 888 scans, which is
            exactly the cases of its two annotation tables. When the detector ran on only some scans
            (a fold), pass those: otherwise the annotated scans it did not see count as misses.
        fps_per_scan: false-positive rates at which the sensitivity is read; the CPM is their mean.
        n_bootstrap: bootstrap samples of scans (drawn with replacement, as LUNA16's evaluation
            does) for 95% percentile intervals; ``0`` for none. Samples that draw no annotated scan
            are left out.
        seed: seed of the bootstrap.
        missing_diameter_mm: diameter of an annotation or excluded finding without one.

    Returns:
        A JSON-friendly dict: ``sensitivity`` ``{rate: value}`` keyed by the rate as a string
        (``"0.125"``, ..., ``"8"``), ``cpm``, ``n_scans``, ``n_annotations``, ``n_detected``
        (annotations hit at the lowest threshold), ``n_candidates``, ``n_false_positives``,
        ``n_duplicate_hits`` and ``n_excluded_hits`` (ignored candidates),
        ``n_candidates_outside_scans`` and ``n_annotations_outside_scans`` (left out), and ``curve``:
        ``{"fps_per_scan", "sensitivity", "thresholds"}`` lists from ``(0, 0)`` (threshold ``None``,
        i.e. above every score) to the lowest score. With ``n_bootstrap > 0`` also ``bootstrap``:
        ``{"n_samples", "n_valid", "seed", "confidence", "cpm": {"mean", "ci_low", "ci_high"},
        "sensitivity": {rate: {...}}}``. Without candidates every sensitivity is 0.

    Raises:
        ValueError: no scans, a scan listed twice, no annotation in the evaluated scans (the
            sensitivity is undefined), a candidate without a finite score, or a bad argument.
    """
    rates = _check_rates(fps_per_scan)
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, numbers.Integral) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be an integer >= 0, got {n_bootstrap!r}.")
    if not math.isfinite(missing_diameter_mm) or missing_diameter_mm <= 0:
        raise ValueError(f"missing_diameter_mm must be a positive number of mm, got {missing_diameter_mm!r}.")
    excluded = excluded or {}
    if case_ids is None:
        scans = sorted(set(annotations) | set(predictions) | set(excluded))
    else:
        scans = [str(c) for c in case_ids]
        if len(set(scans)) != len(scans):
            twice = sorted({c for c in scans if scans.count(c) > 1})
            raise ValueError(f"case_ids lists a scan more than once: {twice[:5]!r}.")
    if not scans:
        raise ValueError("no scans to evaluate: case_ids is empty, or there are neither annotations nor predictions.")
    in_scans = set(scans)
    outside_candidates = sum(len(v) for k, v in predictions.items() if k not in in_scans)
    outside_annotations = sum(len(v) for k, v in annotations.items() if k not in in_scans)
    if outside_candidates:
        others = sum(1 for k in predictions if k not in in_scans)
        logger.warning(
            "FROC: %d candidates of %d cases outside the evaluated scans are left out.", outside_candidates, others
        )

    matches = [
        match_candidates(predictions.get(c, ()), annotations.get(c, ()), excluded.get(c, ()), missing_diameter_mm)
        for c in scans
    ]
    pooled = _Pooled(matches)
    n_annotations = int(pooled.n_annotations.sum())
    if n_annotations == 0:
        raise ValueError(
            f"no annotations in the {len(scans)} evaluated scans: the FROC sensitivity is undefined "
            f"({outside_annotations} annotations lie in other cases)."
        )
    fps, sens, thresholds = pooled.curve(len(scans))
    at = _sensitivities(fps, sens, rates)
    result: dict[str, Any] = {
        "sensitivity": {_rate_key(r): float(s) for r, s in zip(rates, at, strict=True)},
        "cpm": float(compute_froc_score(fps, sens, tuple(rates))),
        "n_scans": len(scans),
        "n_annotations": n_annotations,
        "n_detected": int(sum((~np.isnan(m.tp_scores)).sum() for m in matches)),
        "n_candidates": sum(m.n_candidates for m in matches),
        "n_false_positives": sum(m.fp_scores.size for m in matches),
        "n_duplicate_hits": sum(m.n_duplicate_hits for m in matches),
        "n_excluded_hits": sum(m.n_excluded_hits for m in matches),
        "n_candidates_outside_scans": outside_candidates,
        "n_annotations_outside_scans": outside_annotations,
        "curve": {
            "fps_per_scan": fps[::-1].tolist(),
            "sensitivity": sens[::-1].tolist(),
            "thresholds": [None if math.isinf(t) else float(t) for t in thresholds[::-1]],
        },
    }
    if n_bootstrap:
        result["bootstrap"] = _bootstrap(pooled, len(scans), rates, int(n_bootstrap), seed)
    return result


def operating_point(result: Mapping[str, Any], max_fps_per_scan: float) -> dict[str, Any]:
    """A detection threshold chosen on a FROC result (e.g. of development scans): the best sensitivity reached with
    at most ``max_fps_per_scan`` false positives per scan, at the fewest false positives that reach it; the threshold
    is half-way between the lowest score that point needs and the next score below it (so a small change of the
    scores, another precision or device, does not move the point).

    Args:
        result: what :func:`froc` returns (its ``curve``).
        max_fps_per_scan: the false positives per scan allowed (``> 0``).

    Returns:
        ``{"threshold", "sensitivity", "fps_per_scan", "max_fps_per_scan", "lowest_score_kept", "next_score"}``;
        ``threshold`` is ``None`` when no hit is reached within the allowance (``next_score`` ``None`` when nothing
        scores below the point).

    Raises:
        ValueError: a non-positive allowance, or a result without its curve.
    """
    if not isinstance(max_fps_per_scan, (int, float)) or not max_fps_per_scan > 0:
        raise ValueError(f"max_fps_per_scan must be a positive number, got {max_fps_per_scan!r}.")
    curve = result.get("curve")
    if not isinstance(curve, Mapping) or not {"fps_per_scan", "sensitivity", "thresholds"} <= set(curve):
        raise ValueError("operating_point needs the 'curve' of a froc() result.")
    fps, sens, thresholds = curve["fps_per_scan"], curve["sensitivity"], curve["thresholds"]
    eligible = [i for i, f in enumerate(fps) if f <= max_fps_per_scan]  # the curve starts at (0, 0): never empty
    best = max(sens[i] for i in eligible)
    i = min(i for i in eligible if sens[i] == best)  # ascending false positives: the fewest that reach it
    kept = thresholds[i]
    nxt = thresholds[i + 1] if i + 1 < len(thresholds) else None
    threshold = None if kept is None or best == 0 else (kept if nxt is None else (kept + nxt) / 2.0)
    return {
        "threshold": threshold,
        "sensitivity": float(best),
        "fps_per_scan": float(fps[i]),
        "max_fps_per_scan": float(max_fps_per_scan),
        "lowest_score_kept": kept,
        "next_score": nxt,
    }


def prediction_dir_cases(folder: str | os.PathLike[str]) -> list[str]:
    """The scans of an output folder of ``lung-nodule-mtl predict``: those with a ``<case>.json`` report.

    Every scan the detector completed has its report, with or without detections, so these are the
    scans a FROC of the folder divides the false positives by. A scan that failed has no report and
    is not among them. A JSON file counts as a report when it holds an object with a ``nodules``
    list (as ``predict`` writes, and as it checks itself); its ``case_id`` names the scan (the file
    stem when absent). Other JSON files (e.g. a ``froc.json`` written there) and hidden files are skipped.

    Args:
        folder: the output folder.

    Returns:
        The case ids, sorted.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: ``folder`` is not a folder or holds no report.
    """
    d = Path(folder)
    if not d.exists():
        raise FileNotFoundError(f"predictions folder not found: {str(d)!r}.")
    if not d.is_dir():
        raise ValueError(f"{str(d)!r} is not a folder of predictions (summary.csv and one <case>.json per scan).")
    cases = []
    for f in sorted(d.glob("*.json")):
        if f.name.startswith(".") or not f.is_file():
            continue
        try:
            report = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            logger.warning("%s: not a readable JSON report, skipped (%s).", f, e)
            continue
        if isinstance(report, dict) and isinstance(report.get("nodules"), list):
            case_id = report.get("case_id")
            cases.append(case_id if isinstance(case_id, str) and case_id else f.name[: -len(".json")])
    if not cases:
        raise ValueError(
            f"no <case>.json reports in the predictions folder {str(d)!r}: cannot tell which scans it covers."
        )
    return sorted(cases)


def evaluate_froc_files(
    predictions: str | os.PathLike[str],
    annotations: str | os.PathLike[str],
    excluded: str | os.PathLike[str] | None = None,
    cases_from_predictions_dir: bool = False,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`froc` of a prediction table against LUNA16-style annotation tables, read from files.

    The candidates' score is the ``detection_probability`` column of a lung-nodule-mtl table or the
    ``probability`` of a LUNA16 submission (see :func:`~lung_nodule_mtl.data.nodule_table.read_nodule_table`
    for the formats; every centre is compared in RAS world mm).

    Args:
        predictions: a prediction CSV, or an output folder of ``lung-nodule-mtl predict`` (its
            ``summary.csv`` is read).
        annotations: the reference nodules (LUNA16 ``annotations.csv`` or a table of the same kind).
        excluded: findings whose hits are ignored (LUNA16 ``annotations_excluded.csv``).
        cases_from_predictions_dir: evaluate exactly the scans of the predictions folder (its
            ``<case>.json`` reports, see :func:`prediction_dir_cases`): scans without detections count,
            annotated scans the detector did not see, or failed on, are left out. Otherwise the scans
            are every case of the three tables (the 888 LUNA16 scans with its two tables), so a
            scan without a report but with annotations counts, as all missed.
        n_bootstrap: bootstrap samples over scans for 95% intervals (``0``: none).
        seed: seed of the bootstrap.

    Returns:
        The :func:`froc` result with ``inputs``: the paths read and ``scans_from`` (``"predictions_dir"`` or
        ``"tables"``).

    Raises:
        FileNotFoundError: a file or folder does not exist.
        ValueError: a table cannot be read, a candidate has no score, the folder holds detections of
            scans without a ``<case>.json``, ``cases_from_predictions_dir`` without a folder, or as :func:`froc`.
    """
    from lung_nodule_mtl.data.nodule_table import read_nodule_table

    pred_path = Path(predictions)
    case_ids: list[str] | None = None
    if pred_path.is_dir():
        table_path = pred_path / PREDICTIONS_SUMMARY
        if not table_path.exists():
            raise FileNotFoundError(f"no {PREDICTIONS_SUMMARY} in the predictions folder {str(pred_path)!r}.")
        if cases_from_predictions_dir:
            case_ids = prediction_dir_cases(pred_path)
    elif cases_from_predictions_dir:
        raise ValueError(f"cases_from_predictions_dir needs a predictions folder, got the file {str(pred_path)!r}.")
    else:
        table_path = pred_path
    preds = read_nodule_table(table_path)
    for records in preds.values():
        for r in records:
            if r.probability is None:
                raise ValueError(
                    f"{table_path} line {r.row}: no detection score (the detection_probability or probability "
                    "column is missing or empty)."
                )
    if case_ids is not None:
        unknown = sorted(set(preds) - set(case_ids))
        if unknown:
            raise ValueError(
                f"{table_path} has detections of {len(unknown)} cases without a <case>.json in {str(pred_path)!r}, "
                f"e.g. {unknown[0]!r}."
            )
    refs = read_nodule_table(annotations)
    excl = read_nodule_table(excluded) if excluded is not None else None
    result = froc(preds, refs, excl, case_ids=case_ids, n_bootstrap=n_bootstrap, seed=seed)
    result["inputs"] = {
        "predictions": str(table_path),
        "annotations": str(annotations),
        "excluded": None if excluded is None else str(excluded),
        "scans_from": "predictions_dir" if case_ids is not None else "tables",
    }
    return result


def false_positive_table(
    predictions: str | os.PathLike[str],
    annotations: str | os.PathLike[str],
    out: str | os.PathLike[str],
    excluded: str | os.PathLike[str] | None = None,
    min_probability: float = 0.0,
    missing_diameter_mm: float = LUNA16_MISSING_DIAMETER_MM,
) -> dict[str, Any]:
    """Write a detector's false positives as a LUNA16 candidates table: hard negatives for the next training run.

    A candidate is a false positive by :func:`match_candidates`' rule (it hits no annotation and no excluded finding).
    Only scans with annotations in the tables or a ``<case>.json`` in the predictions folder are read (other cases of a
    prediction table are left out and counted), and each is taken as **fully annotated**: a scan without rows has no
    nodules, so run this on scans whose nodules are all in ``annotations``, or their unlabelled nodules become
    negatives.

    Args:
        predictions: an output folder of ``lung-nodule-mtl predict`` (its ``summary.csv``) or a prediction table.
        annotations: the scans' reference nodules (LUNA16 ``annotations.csv`` or a table of the same kind). Every
            scan whose negatives are wanted must be in it or be a case of the predictions folder (a scan without
            nodules has no rows: its ``<case>.json`` says it was read).
        out: the CSV to write (``seriesuid, coordX, coordY, coordZ, class, probability``; LPS mm as LUNA16's
            ``candidates_V2.csv``, ``class`` 0), written atomically.
        excluded: findings that are neither nodules nor negatives (LUNA16 ``annotations_excluded.csv``).
        min_probability: keep the false positives scored at least this (``0``: all).
        missing_diameter_mm: diameter of an annotation without one.

    Returns:
        ``{"n_scans", "n_false_positives", "n_left_out_cases", "out"}``.

    Raises:
        FileNotFoundError, ValueError: as :func:`evaluate_froc_files`.
    """
    from lung_nodule_mtl.data.nodule_table import read_nodule_table
    from lung_nodule_mtl.utils.io import atomic_write_csv

    pred_path = Path(predictions)
    known: set[str] = set()
    table_path = pred_path
    if pred_path.is_dir():
        table_path = pred_path / PREDICTIONS_SUMMARY
        if not table_path.exists():
            raise FileNotFoundError(f"no {PREDICTIONS_SUMMARY} in the predictions folder {str(pred_path)!r}.")
        known.update(prediction_dir_cases(pred_path))
    preds = read_nodule_table(table_path)
    refs = read_nodule_table(annotations)
    excl = read_nodule_table(excluded) if excluded is not None else {}
    known.update(refs)
    rows: list[tuple[str, float, float, float, float]] = []
    left_out = sorted(set(preds) - known)
    for case in sorted(set(preds) & known):
        cands = preds[case]
        match = match_candidates(cands, refs.get(case, []), excl.get(case, []), missing_diameter_mm)
        for k in match.fp_index:
            c = cands[int(k)]
            if c.probability is not None and c.probability >= min_probability:
                x, y, z = ras_to_lps(c.center_ras_mm)
                rows.append((case, x, y, z, float(c.probability)))
    if left_out:
        logger.warning(
            "%d cases of %s are neither annotated nor a <case>.json of the folder, left out (e.g. %r).",
            len(left_out),
            table_path,
            left_out[0],
        )
    columns = ("seriesuid", "coordX", "coordY", "coordZ", "class", "probability")
    atomic_write_csv(
        [
            dict(zip(columns, (case, round(x, 3), round(y, 3), round(z, 3), 0, round(p, 6)), strict=True))
            for case, x, y, z, p in rows
        ],
        out,
        columns,
    )
    return {
        "n_scans": len(set(preds) & known),
        "n_false_positives": len(rows),
        "n_left_out_cases": len(left_out),
        "out": str(out),
    }
