"""``lung-nodule-mtl cross-validate``: k-fold cross-validation and the ablations with the bundle's commands.

::

    lung-nodule-mtl cross-validate --dataset-dir data/lidc_vois --out runs/cv --jobs 2 --threads 1 \\
        --set epochs=4 --set "patch_size=[32,32,32]" --set num_workers=0
    lung-nodule-mtl cross-validate --out runs/cv --summary-only
    lung-nodule-mtl fit-malignancy --cv-dir runs/cv/multitask --out malignancy_fusion.json

The work is :mod:`lung_nodule_mtl.engines.crossval`; this module only parses and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register"]


def _parse_set(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` overrides; VALUE is read as JSON when it parses (numbers, lists, true/false), else kept as text."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE (a train.yaml key), got {item!r}.")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def _console(text: str) -> None:
    """Print ``text``; on a console that cannot show ± and — (an ASCII locale), print +/- and - instead."""
    try:
        text.encode(sys.stdout.encoding or "ascii")
    except UnicodeEncodeError:
        text = text.replace("±", "+/-").replace("—", "-").encode("ascii", "replace").decode("ascii")
    print(text)


def _cmd_cross_validate(args: argparse.Namespace) -> int:
    from lung_nodule_mtl.engines.crossval import plan_cross_validation, run_cross_validation
    from lung_nodule_mtl.reports.crossval import format_cross_validation_table, summarise_cross_validation

    failed = 0
    if not args.summary_only:
        if args.dataset_dir is None:
            raise ValueError("--dataset-dir is required unless --summary-only.")
        runs = plan_cross_validation(args.out, args.configs, args.folds, _parse_set(args.set))
        records = run_cross_validation(args.dataset_dir, runs, jobs=args.jobs, threads=args.threads, gpus=args.gpus)
        for record in records:
            _console(f"  {record['config']:<24} fold {record['fold']}: {record['status']}")
        failed = sum(not r["status"].startswith("done") for r in records)
    summary = summarise_cross_validation(args.out, args.configs if not args.summary_only else None)
    _console(f"Cross-validation summary of {args.out} (mean ± sd over folds; (paired difference to multitask)):")
    _console(format_cross_validation_table(summary))
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``cross-validate`` subcommand to ``lung-nodule-mtl``'s sub-parsers."""
    from lung_nodule_mtl.engines.crossval import ABLATIONS

    p = subparsers.add_parser(
        "cross-validate",
        help="patient-level k-fold cross-validation and the seeds' ablations, with the bundle's commands",
        description="For each configuration and fold: the bundle's `training` with --val_fold k (no validation "
        "during training), then `evaluating` of the final weights on fold k; resumable (finished folds are "
        "skipped); then mean ± sd over folds and each ablation's paired difference to the multi-task network "
        "(cv_summary.json, cv_folds.csv, cv_table.md in --out).",
    )
    p.add_argument("--dataset-dir", default=None, help="folder with the datalist.json of prepare-vois/prepare-lidc")
    p.add_argument("--out", required=True, help="study folder: <out>/<configuration>/fold<k>/ per run")
    p.add_argument(
        "--configs", nargs="+", default=list(ABLATIONS), choices=list(ABLATIONS), help="configurations (default: all)"
    )
    p.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="folds to report (default 0-4)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="train.yaml override for every run, e.g. epochs=4 or 'patch_size=[32,32,32]' (repeatable)",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time (default 1)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS per run (default: inherited)")
    p.add_argument(
        "--gpus",
        type=int,
        nargs="+",
        default=None,
        metavar="INDEX",
        help="GPUs the runs share, the --jobs slots dealt round-robin (CUDA_VISIBLE_DEVICES per run): '--jobs 5 "
        "--gpus 0' trains five folds at once on one GPU (default: every run sees this process's GPUs)",
    )
    p.add_argument("--summary-only", action="store_true", help="only summarise the folds that have finished")
    p.set_defaults(func=_cmd_cross_validate)
    _register_fusion(subparsers)
    return p


def _cmd_fit_malignancy(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lung_nodule_mtl.inference.fusion import fit_malignancy_fusion
    from lung_nodule_mtl.utils.io import atomic_write_json, json_safe

    tables = [Path(t) for t in args.tables]
    for folder in args.cv_dir or []:
        found = sorted(Path(folder).glob("fold*/evaluation/per_nodule.csv"))
        if not found:
            raise FileNotFoundError(f"{folder}: no fold*/evaluation/per_nodule.csv (a cross-validate configuration).")
        tables += found
    if not tables:
        raise ValueError("give --cv-dir or --tables.")
    fusion, report = fit_malignancy_fusion(tables, n_bootstrap=args.bootstrap)
    fusion.fitted_on["description"] = args.description
    fusion.save(args.out)
    if args.report:
        atomic_write_json(json_safe(report), args.report)

    def ci(pair: list[float]) -> str:
        return f"[{pair[0]:+.3f}, {pair[1]:+.3f}]"

    _console(f"fitted on {report['n_nodules']} nodules ({report['n_malignant']} malignant) of {len(tables)} table(s); "
             f"out of fold ({report['n_folds']} groups):")  # fmt: skip
    _console(f"  AUC fused {report['fused_auc']:.3f}, network {report['network_auc']:.3f}, measured diameter "
             f"{report['mask_diameter_auc']:.3f} (fused - diameter {report['fused_minus_mask_diameter']:+.3f} "
             f"{ci(report['ci_fused_minus_mask_diameter'])})")  # fmt: skip
    if "reference_diameter_auc" in report:
        _console(f"  reference diameter {report['reference_diameter_auc']:.3f} (fused - it "
                 f"{report['fused_minus_reference_diameter']:+.3f} {ci(report['ci_fused_minus_reference_diameter'])});"
                 f" size-matched AUC fused {report['size_matched_fused']['auc']:.3f}, network "
                 f"{report['size_matched_network']['auc']:.3f} "
                 f"({report['size_matched_fused']['n_pairs']} pairs)")  # fmt: skip
    b = report["brier"]
    _console(f"  Brier fused {b['fused']:.3f}, network {b['network']:.3f}, "
             f"diameter-only {b['mask_diameter_logistic']:.3f}")  # fmt: skip
    coef = ", ".join(f"{n} {c:+.3f}" for n, c in zip(fusion.model.features, fusion.model.coef, strict=True))
    _console(f"fusion: intercept {fusion.model.intercept:+.3f}, {coef} -> {args.out}")
    return 0


def _register_fusion(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "fit-malignancy",
        help="fit the malignancy fusion (network output + measured size, calibrated) on out-of-fold predictions",
        description="Fit a logistic model of the network's malignancy logit and the log equivalent diameter of "
        "its mask on out-of-fold predictions (evaluating's per_nodule.csv of each fold of a cross-validation, or "
        "of one held-out set), report what it is worth out of fold (a fusion fitted on the other folds scores "
        "each fold), and write it as JSON. Put it beside the weights it was fitted for as "
        "malignancy_fusion.json: predict, scan_inferring and evaluating then use it.",
    )
    p.add_argument("--cv-dir", nargs="+", default=None, help="cross-validate configuration folder(s) with fold*/")
    p.add_argument("--tables", nargs="+", default=[], help="per_nodule.csv tables (one per fold)")
    p.add_argument("--out", required=True, help="the fusion JSON to write, e.g. bundle/models/malignancy_fusion.json")
    p.add_argument("--report", default=None, help="write the out-of-fold report to this JSON")
    p.add_argument("--description", default="", help="what the predictions are (kept in the file)")
    p.add_argument("--bootstrap", type=int, default=2000, help="patient-level bootstrap samples (default 2000)")
    p.set_defaults(func=_cmd_fit_malignancy)
