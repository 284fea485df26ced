"""``lung-nodule-mtl evaluate-froc``: LUNA16's FROC and CPM of detections against annotations; ``mine-negatives``:
the same matching, writing the false positives as hard negatives for training.

::

    lung-nodule-mtl evaluate-froc --predictions out/predict --annotations luna16/annotations.csv \\
        --excluded luna16/annotations_excluded.csv --cases-from-predictions-dir --bootstrap 1000 --out froc.json
    lung-nodule-mtl mine-negatives --predictions out/predict --annotations luna16/annotations.csv \\
        --excluded luna16/annotations_excluded.csv --out negatives.csv

The work is :func:`lung_nodule_mtl.metrics.froc.evaluate_froc_files` and
:func:`~lung_nodule_mtl.metrics.froc.false_positive_table`; this module only parses, prints and writes.
:func:`register` adds the subcommands to the ``lung-nodule-mtl`` parser.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _print_report(result: dict[str, Any]) -> None:
    inputs = result["inputs"]
    print(f"FROC (LUNA16) of {inputs['predictions']} against {inputs['annotations']}")
    if inputs["excluded"]:
        print(f"  excluded findings: {inputs['excluded']}")
    source = (
        "the <case>.json files of the predictions folder"
        if inputs["scans_from"] == "predictions_dir"
        else ("every case of the tables")
    )
    print(f"  scans               {result['n_scans']} ({source})")
    print(f"  annotations         {result['n_annotations']} ({result['n_detected']} detected at the lowest threshold)")
    print(
        f"  candidates          {result['n_candidates']}: {result['n_false_positives']} false positives, ignored "
        f"{result['n_excluded_hits']} on excluded findings and {result['n_duplicate_hits']} double hits"
    )
    if result["n_candidates_outside_scans"]:
        print(f"  left out            {result['n_candidates_outside_scans']} candidates of other cases")
    boot = result.get("bootstrap")

    def ci(entry: dict[str, float] | None) -> str:
        if entry is None or entry["ci_low"] is None or math.isnan(entry["ci_low"]):
            return ""
        return f"  [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"

    header = "  FP/scan  sensitivity" + (f"  95% CI ({boot['n_valid']} bootstrap samples)" if boot else "")
    print(header)
    for rate, sens in result["sensitivity"].items():
        print(f"  {rate:>7}  {sens:11.3f}{ci(boot['sensitivity'][rate] if boot else None)}")
    print(f"  {'CPM':>7}  {result['cpm']:11.3f}{ci(boot['cpm'] if boot else None)}")
    point = result.get("operating_point")
    if point is not None:
        allowed = f"at most {point['max_fps_per_scan']:g} false positives per scan"
        if point["threshold"] is None:
            print(f"  operating point     none: no nodule is found with {allowed}")
        else:
            print(
                f"  operating point     --threshold {point['threshold']:.3f}: sensitivity {point['sensitivity']:.3f} "
                f"at {point['fps_per_scan']:.2f} false positives per scan (the best with {allowed})"
            )


def _cmd_evaluate_froc(args: argparse.Namespace) -> int:
    from lung_nodule_mtl.metrics.froc import evaluate_froc_files
    from lung_nodule_mtl.utils.io import atomic_write_json, json_safe

    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0, got {args.bootstrap}.")
    result = evaluate_froc_files(
        args.predictions,
        args.annotations,
        excluded=args.excluded,
        cases_from_predictions_dir=args.cases_from_predictions_dir,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
    )
    if args.operating_point is not None:
        from lung_nodule_mtl.metrics.froc import operating_point

        result["operating_point"] = operating_point(result, args.operating_point)
    _print_report(result)
    if args.out:
        path = atomic_write_json(json_safe(result), Path(args.out))
        print(f"  written to {path}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``evaluate-froc`` subcommand to ``lung-nodule-mtl``'s sub-parsers.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers()`` returned; the command runs
            ``args.func(args)`` and returns its exit status, as the other subcommands do.

    Returns:
        The subcommand's parser.
    """
    p = subparsers.add_parser(
        "evaluate-froc",
        help="LUNA16 FROC and CPM of nodule detections against annotations",
        description="Match detections to annotated nodules as LUNA16's evaluation does (a hit lies within the "
        "nodule's radius; one hit per nodule, its best score; hits on excluded findings ignored; centres in world "
        "mm, LUNA16 tables in LPS, the project's in RAS) and report the sensitivity at 1/8 to 8 false positives per "
        "scan and their mean, the CPM.",
    )
    p.add_argument(
        "--predictions",
        required=True,
        metavar="PRED",
        help="detections: a lung-nodule-mtl predict output folder (its summary.csv is read), its summary.csv, or a "
        "LUNA16 submission CSV (seriesuid,coordX,coordY,coordZ,probability); the score is detection_probability "
        "(or probability)",
    )
    p.add_argument("--annotations", required=True, help="reference nodules, e.g. LUNA16 annotations.csv")
    p.add_argument("--excluded", default=None, help="findings whose hits are ignored, e.g. annotations_excluded.csv")
    p.add_argument(
        "--cases-from-predictions-dir",
        action="store_true",
        help="evaluate exactly the scans of the --predictions folder (one <case>.json each, so scans without "
        "detections count and annotated scans it did not run on are left out); default: every case of the "
        "tables (all 888 LUNA16 scans with its two tables)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="bootstrap samples over scans for 95%% intervals (default: 0, none; LUNA16 uses 1000)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    p.add_argument(
        "--operating-point",
        type=float,
        default=None,
        metavar="FPS",
        help="also choose a detection threshold (predict --threshold) on these scans: the best sensitivity with at "
        "most FPS false positives per scan, at the fewest false positives that reach it, half-way to the next score",
    )
    p.add_argument("--out", default=None, help="write the full result (with the FROC curve) to this JSON file")
    p.set_defaults(func=_cmd_evaluate_froc)
    _register_mining(subparsers)
    return p


def _cmd_mine_negatives(args: argparse.Namespace) -> int:
    from lung_nodule_mtl.metrics.froc import false_positive_table

    if not 0.0 <= args.min_probability <= 1.0:
        raise ValueError(f"--min-probability must be in [0, 1], got {args.min_probability}.")
    result = false_positive_table(
        args.predictions, args.annotations, args.out, excluded=args.excluded, min_probability=args.min_probability
    )
    print(
        f"{result['n_false_positives']} false positives of {result['n_scans']} scans written to {result['out']}"
        + (f" ({result['n_left_out_cases']} unannotated cases left out)" if result["n_left_out_cases"] else "")
    )
    return 0


def _register_mining(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "mine-negatives",
        help="a detector's false positives as hard negatives for training (LUNA16 candidates table)",
        description="Match detections to annotated nodules as evaluate-froc does and write the false positives "
        "(LUNA16 candidates format: seriesuid,coordX,coordY,coordZ (LPS mm),class 0,probability), for "
        "train_scans.yaml's scan_negatives. Only scans with annotations or a <case>.json in the predictions "
        "folder are read, and each is taken as fully annotated (a scan without rows has no nodules): run it on scans "
        "whose nodules are all in --annotations, or their unlabelled nodules become negatives.",
    )
    p.add_argument(
        "--predictions",
        required=True,
        metavar="PRED",
        help="detections: a lung-nodule-mtl predict output folder (run it with --threshold 0 --max-nodules 50 to "
        "get the low-scored candidates too) or a prediction table",
    )
    p.add_argument("--annotations", required=True, help="the scans' nodules, e.g. LUNA16 annotations.csv")
    p.add_argument("--excluded", default=None, help="findings that are neither, e.g. annotations_excluded.csv")
    p.add_argument(
        "--min-probability", type=float, default=0.0, help="keep false positives scored at least this (default: 0)"
    )
    p.add_argument("--out", required=True, help="the negatives table to write (CSV)")
    p.set_defaults(func=_cmd_mine_negatives)
