"""``lung-nodule-mtl cross-validate``: k-fold cross-validation and the ablations with the bundle's commands.

::

    lung-nodule-mtl cross-validate --dataset-dir data/lidc_vois --out runs/cv --jobs 2 --threads 1 \\
        --set epochs=4 --set "patch_size=[32,32,32]" --set num_workers=0
    lung-nodule-mtl cross-validate --out runs/cv --summary-only

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
    from lung_nodule_mtl.engines.crossval import (
        format_cross_validation_table,
        plan_cross_validation,
        run_cross_validation,
        summarise_cross_validation,
    )

    failed = 0
    if not args.summary_only:
        if args.dataset_dir is None:
            raise ValueError("--dataset-dir is required unless --summary-only.")
        runs = plan_cross_validation(args.out, args.configs, args.folds, _parse_set(args.set))
        records = run_cross_validation(args.dataset_dir, runs, jobs=args.jobs, threads=args.threads)
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
    p.add_argument("--summary-only", action="store_true", help="only summarise the folds that have finished")
    p.set_defaults(func=_cmd_cross_validate)
    return p
