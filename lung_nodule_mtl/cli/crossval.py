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


def _feature_list(text: str) -> list[str] | None:
    """``--features`` as typed: comma-separated names, ``none`` for no model, ``measured`` / ``first`` for the
    named sets."""
    from lung_nodule_mtl.inference.fusion import (
        DEFAULT_ATTRIBUTE_FEATURES,
        DEFAULT_MALIGNANCY_FEATURES,
        FUSION_FEATURES,
    )

    named = {"none": None, "measured": list(DEFAULT_MALIGNANCY_FEATURES), "first": list(FUSION_FEATURES),
             "calibrate": ["malignancy_logit"],
             "all-measured": list(DEFAULT_ATTRIBUTE_FEATURES)}  # fmt: skip
    key = text.strip().lower()
    if key in named:
        return named[key]
    return [f.strip() for f in text.split(",") if f.strip()]


def _cmd_fit_malignancy(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lung_nodule_mtl.inference.fusion import fit_malignancy_fusion, weights_fingerprint
    from lung_nodule_mtl.utils.io import atomic_write_json, json_safe

    tables = [Path(t) for t in args.tables]
    for folder in args.cv_dir or []:
        found = sorted(Path(folder).glob("fold*/evaluation/per_nodule.csv"))
        if not found:
            raise FileNotFoundError(f"{folder}: no fold*/evaluation/per_nodule.csv (a cross-validate configuration).")
        tables += found
    if not tables:
        raise ValueError("give --cv-dir or --tables.")
    fusion, report = fit_malignancy_fusion(
        tables,
        n_bootstrap=args.bootstrap,
        features=_feature_list(args.features),
        attribute_features=_feature_list(args.attribute_features),
        attribute_tables=[Path(t) for t in args.attribute_tables] if args.attribute_tables else None,
    )
    fusion.fitted_on["description"] = args.description
    if args.weights:
        fusion.fitted_on["weights"] = weights_fingerprint(args.weights)
    if args.report:
        atomic_write_json(json_safe(report), args.report)
    fusion.save(args.out)

    def ci(pair: list[float]) -> str:
        return f"[{pair[0]:+.3f}, {pair[1]:+.3f}]"

    if "malignancy" in report:
        m = report["malignancy"]
        network = f", network {m['network_auc']:.3f}" if "network_auc" in m else ""
        _console(f"malignancy ({', '.join(m['features'])}): fitted on {m['n_nodules']} nodules "
                 f"({m['n_malignant']} malignant) of {len(tables)} table(s); "
                 f"out of fold ({m['n_folds']} groups):")  # fmt: skip
        gain = f"{m['fused_minus_mask_diameter']:+.3f} {ci(m['ci_fused_minus_mask_diameter'])}"
        _console(f"  AUC fused {m['fused_auc']:.3f}{network}, measured diameter {m['mask_diameter_auc']:.3f} "
                 f"(fused - diameter {gain})")  # fmt: skip
        if "reference_diameter_auc" in m:
            _console(f"  reference diameter {m['reference_diameter_auc']:.3f} (fused - it "
                     f"{m['fused_minus_reference_diameter']:+.3f} {ci(m['ci_fused_minus_reference_diameter'])}); "
                     f"size-matched AUC fused {m['size_matched_fused']['auc']:.3f} "
                     f"({m['size_matched_fused']['n_pairs']} pairs)")  # fmt: skip
        b = m["brier"]
        network_brier = f", network {b['network']:.3f}" if "network" in b else ""
        _console(f"  Brier fused {b['fused']:.3f}{network_brier}, diameter-only {b['mask_diameter_logistic']:.3f}")
    for name, r in report.get("attributes", {}).items():
        _console(f"{name}: exact / within one, fused {r['fused']['exact']:.3f} / {r['fused']['within_one']:.3f}, "
                 f"network {r['network']['exact']:.3f} / {r['network']['within_one']:.3f}, majority "
                 f"{r['majority']['exact']:.3f} / {r['majority']['within_one']:.3f} ({r['n']} nodules)")  # fmt: skip
    _console(f"fusion -> {args.out}")
    return 0


def _register_fusion(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "fit-malignancy",
        help="fit the late fusion (malignancy and attributes told the mask's measurements) on evaluating's tables",
        description="Fit a logistic model of malignancy and a multinomial model per LIDC attribute on the "
        "predicted mask's measurements (size, Hounsfield units, shape: the m_* columns of evaluating's "
        "per_nodule.csv) and, where the predictions are out of fold, the network's malignancy logit; report what "
        "they are worth out of fold (models fitted on the other tables score each table; one table: five groups "
        "of patients) and write them as JSON. Put it beside the weights it was fitted for as "
        "malignancy_fusion.json: predict, scan_inferring and evaluating then use it.",
    )
    p.add_argument("--cv-dir", nargs="+", default=None, help="cross-validate configuration folder(s) with fold*/")
    p.add_argument("--tables", nargs="+", default=[], help="per_nodule.csv tables (one per fold)")
    p.add_argument(
        "--attribute-tables",
        nargs="+",
        default=None,
        help="fit the attribute models on these per_nodule.csv tables instead (default: those of the malignancy)",
    )
    p.add_argument("--out", required=True, help="the fusion JSON to write, e.g. bundle/models/malignancy_fusion.json")
    p.add_argument("--report", default=None, help="write the out-of-fold report to this JSON")
    p.add_argument(
        "--weights",
        default=None,
        help="the weights whose predictions the tables hold: their sha256 is recorded, and the fusion is not used "
        "beside other weights",
    )
    p.add_argument("--description", default="", help="what the predictions are (kept in the file)")
    p.add_argument("--bootstrap", type=int, default=2000, help="patient-level bootstrap samples (default 2000)")
    p.add_argument(
        "--features",
        default="first",
        help="the malignancy model's features: comma-separated names (malignancy_logit and the measurements), "
        "'first' (malignancy_logit,log_diameter_mm: out-of-fold network outputs), 'calibrate' (malignancy_logit "
        "alone: Platt scaling of held-out network outputs), 'measured' (size and density of the mask, no network "
        "output) or 'none' (default: first)",
    )
    p.add_argument(
        "--attribute-features",
        default="none",
        help="the attribute models' features: comma-separated names, 'all-measured' (every measurement) or "
        "'none' (default: none)",
    )
    p.set_defaults(func=_cmd_fit_malignancy)
