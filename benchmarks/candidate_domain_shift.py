"""Which candidate features tell a real scan from a synthetic one: the domain shift behind README "Blob proposals and
a candidate classifier".

Reads the samples ``lung-nodule-mtl fit-candidate-classifier`` cached (``OUT/samples/<case>.candidates.npz``) and,
with ``--scans``/``--annotations``, collects the same rows on further annotated real scans (e.g. LIDC-IDRI-0001 with
the LUNA16 table ``tools/eval_detection_cpu.sh`` writes: measured here, never fitted on). Cases named by ``--real``
and every ``--scans`` case are real hosts; the other cached cases synthetic hosts. For every feature:

* ``nodule_auc``: annotated nodules (and their jittered copies) against the candidates that are not nodules, on the
  synthetic hosts (what a fit on synthetic hosts learns from);
* ``domain_auc``: the non-nodule candidates of the real hosts against those of the synthetic hosts (0.5: the feature
  cannot tell a real background from a synthetic one; far from 0.5: a cue that moves when the host is real);
* ``real_nodule_auc``: nodules against non-nodule candidates on the real hosts (when they hold nodules).

With ``--images DIR`` (the cached cases' scans, e.g. ``runs/clf/train/images``): where the non-nodule candidates lie,
per domain: their distance to the lungs' surface (the lung mask closed by 8 mm, without its margin; Euclidean
distance on the scan's own grid, mm), median and share within 3 mm (against the pleura, the diaphragm or the
mediastinum) — what a synthetic host would have to reproduce.

For each ``--classifier FILE[:THRESHOLD]``: its score's three AUCs and, at the threshold, the share of non-nodule
candidates at or above it per domain (false positives per candidate) and the share of nodule rows.

    WORK=runs/clf bash tools/fit_candidate_classifier_cpu.sh        # the cached samples
    python benchmarks/candidate_domain_shift.py --samples runs/clf/fit/samples --real example_ct \\
        --scans ../shared/data/lidc_idri/LIDC-IDRI-0001 --annotations runs/eval/lidc0001_annotations.csv \\
        --excluded runs/eval/lidc0001_annotations_excluded.csv --ranking runs/clf/fit/candidate_classifier.json \\
        --classifier runs/clf/fit/candidate_classifier.json:0.577 --images runs/clf/train/images --out shift.json

Seconds once the samples exist; ~2 min more per added scan on 2 CPU cores (one forward pass).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _auc(score: np.ndarray, y: np.ndarray) -> float | None:
    from lung_nodule_mtl.metrics.classification import rank_auc

    ok = np.isfinite(score)
    if ok.sum() == 0 or np.unique(y[ok]).size < 2:
        return None
    return round(float(rank_auc(score[ok], y[ok])), 4)


def _collect(a: argparse.Namespace) -> Any:
    """Rows of the ``--scans`` cases, as the fit collects them (the ranking of ``--ranking`` adds the proposals)."""
    from lung_nodule_mtl.data.nodule_table import read_nodule_table
    from lung_nodule_mtl.inference.bundle import load_scan_predictor
    from lung_nodule_mtl.inference.candidates import CandidateClassifier, CandidateSamples, collect_candidate_samples
    from lung_nodule_mtl.io.ct import find_cases, load_ct

    predictor, _ = load_scan_predictor(
        None, {"device_name": "cpu", "candidate_classifier": None, "ckpt_file": a.checkpoint}
    )
    ranking = CandidateClassifier.load(a.ranking) if a.ranking else None
    table = read_nodule_table(a.annotations)
    skip = read_nodule_table(a.excluded) if a.excluded else {}
    parts = []
    for case in find_cases(a.scans):
        if case.case_id not in table:
            raise SystemExit(f"{a.annotations}: no row for {case.case_id} of {a.scans}.")
        parts.append(
            collect_candidate_samples(
                predictor,
                load_ct(case).image,
                case.case_id,
                table.get(case.case_id, []),
                skip.get(case.case_id, []),
                classifier=ranking,
            )
        )
    return CandidateSamples.concatenate(parts)


def _wall_distances(cases: list[Any], s: Any) -> np.ndarray:
    """Each row's distance (mm) to the surface of its scan's lungs (NaN where its scan is not in ``cases`` or has no
    lung mask)."""
    from scipy import ndimage

    from lung_nodule_mtl.io.ct import load_ct
    from lung_nodule_mtl.io.geometry import world_to_voxel
    from lung_nodule_mtl.transforms.lung import lung_mask

    out = np.full(len(s.labels), np.nan)
    for case in cases:
        rows = np.flatnonzero(s.case_ids == case.case_id)
        if not rows.size:
            continue
        image = load_ct(case).image
        affine = np.asarray(image.affine, dtype=np.float64)
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        lung = lung_mask(image[0].numpy(), spacing.tolist(), margin_mm=0.0)
        if lung is None:
            continue
        inside = ndimage.distance_transform_edt(lung, sampling=spacing)
        vox = np.rint(world_to_voxel(affine, s.centres_ras[rows])).astype(np.int64)
        vox = np.clip(vox, 0, np.asarray(lung.shape) - 1)
        out[rows] = inside[vox[:, 0], vox[:, 1], vox[:, 2]]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", required=True, help="fit-candidate-classifier's OUT/samples folder")
    p.add_argument("--real", nargs="*", default=[], help="cached case ids whose host is a real scan")
    p.add_argument("--drop", nargs="*", default=[], help="cached case ids left out (e.g. a real host, to compare one)")
    p.add_argument("--scans", default=None, help="further annotated real scans to collect rows on (not cached)")
    p.add_argument("--annotations", default=None, help="their nodules (LUNA16 columns, case id as seriesuid)")
    p.add_argument("--excluded", default=None, help="their findings that are neither nodule nor not")
    p.add_argument("--ranking", default=None, help="classifier JSON whose proposal ranking adds proposals there")
    p.add_argument("--checkpoint", default="bundle/models/model.pt")
    p.add_argument("--classifier", action="append", default=[], help="FILE[:THRESHOLD], repeatable")
    p.add_argument("--images", nargs="*", default=[], help="the cached cases' scans: where their candidates lie")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    a = p.parse_args(argv)

    from lung_nodule_mtl.inference.candidates import (
        CANDIDATE_FEATURES,
        HEAD_LOGIT,
        CandidateClassifier,
        CandidateSamples,
        domain_aucs,
    )

    files = sorted(Path(a.samples).glob("*.candidates.npz"))
    if not files:
        raise SystemExit(f"{a.samples}: no <case>.candidates.npz (run fit-candidate-classifier first).")
    parts = [CandidateSamples.load(f) for f in files]
    parts = [p for p in parts if not (len(p) and str(p.case_ids[0]) in set(a.drop))]
    cached = {str(s.case_ids[0]) for s in parts if len(s)}
    missing = sorted(set(a.real) - cached)
    if missing:
        raise SystemExit(f"{a.samples}: no samples of {missing} (cases: {sorted(cached)}).")
    real_cases = set(a.real)
    if a.scans:
        if not a.annotations:
            raise SystemExit("--scans needs --annotations.")
        extra = _collect(a)
        parts.append(extra)
        real_cases |= {str(c) for c in np.unique(extra.case_ids)}
    s = CandidateSamples.concatenate(parts)
    real = np.isin(s.case_ids, sorted(real_cases))
    y = s.labels.astype(np.float64)
    neg = y == 0
    x = np.column_stack([s.features.astype(np.float64), s.head_logit.astype(np.float64)])
    names = [*CANDIDATE_FEATURES, HEAD_LOGIT]

    def aucs(score: np.ndarray) -> dict[str, Any]:
        return {
            "nodule_auc": _auc(score[~real], y[~real]),
            "domain_auc": _auc(score[neg], real[neg].astype(np.float64)),
            "real_nodule_auc": _auc(score[real], y[real]),
        }

    domain = domain_aucs(s, real)  # what fit-candidate-classifier --drop-shifted reads
    features = {n: {**aucs(x[:, i]), "domain_auc": domain[n]} for i, n in enumerate(names)}

    def shift(v: dict[str, Any]) -> float:
        return abs(v["domain_auc"] - 0.5) if v["domain_auc"] is not None else 0.0

    classifiers = {}
    for spec in a.classifier:
        path, _, thr = spec.partition(":")
        clf = CandidateClassifier.load(path)
        score = clf.score(s.features, s.head_logit)
        entry: dict[str, Any] = {"features": len(clf.scorer.model.features), **aucs(score)}
        if thr:
            t = float(thr)
            entry["threshold"] = t
            for name, rows in (("synthetic", ~real), ("real", real)):
                n_neg, n_pos = int((rows & neg).sum()), int((rows & ~neg).sum())
                entry[f"{name}_non_nodules_at_threshold"] = (
                    f"{int((score[rows & neg] >= t).sum())}/{n_neg}" if n_neg else None
                )
                entry[f"{name}_nodule_rows_at_threshold"] = (
                    f"{int((score[rows & ~neg] >= t).sum())}/{n_pos}" if n_pos else None
                )
        classifiers[path] = entry

    def counts(rows: np.ndarray) -> dict[str, int]:
        return {"nodule": int((rows & ~neg).sum()), "non_nodule": int((rows & neg).sum())}

    walls = None
    if a.images or a.scans:
        from lung_nodule_mtl.io.ct import find_cases

        cases = [c for d in [*a.images, *([a.scans] if a.scans else [])] for c in find_cases(d)]
        dist = _wall_distances(cases, s)
        walls = {}
        for name, rows in (("synthetic", ~real & neg), ("real", real & neg)):
            d = dist[rows][np.isfinite(dist[rows])]
            walls[name] = (
                {
                    "n": int(d.size),
                    "median_mm": round(float(np.median(d)), 1),
                    "within_3mm": round(float((d <= 3).mean()), 3),
                }
                if d.size
                else None
            )

    result = {
        "rows": {
            "synthetic_hosts": {"cases": len(np.unique(s.case_ids[~real])), **counts(~real)},
            "real_hosts": {"cases": sorted(real_cases), **counts(real)},
        },
        "features_by_domain_shift": dict(sorted(features.items(), key=lambda kv: -shift(kv[1]))),
        "classifiers": classifiers,
        "non_nodules_to_lung_surface": walls,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "features_by_domain_shift"}, indent=2))
    print("most shifted features (domain AUC, nodule AUC on synthetic hosts, on real hosts):")
    for n, v in list(result["features_by_domain_shift"].items())[:12]:
        print(f"  {n:28s} {v['domain_auc']}  {v['nodule_auc']}  {v['real_nodule_auc']}")
    if a.out:
        from lung_nodule_mtl.utils.io import atomic_write_json

        atomic_write_json(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
