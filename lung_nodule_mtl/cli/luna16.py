"""``lung-nodule-mtl prepare-luna16``: LUNA16 MetaImage scans and annotations to NIfTI and a datalist.

::

    lung-nodule-mtl prepare-luna16 --luna-root LUNA16 --annotations LUNA16/annotations.csv --out data/luna16 \\
        [--excluded LUNA16/annotations_excluded.csv] [--candidates LUNA16/candidates.csv] [--no-labels] \\
        [--workers 2] [--overwrite]

The work is :func:`lung_nodule_mtl.data.luna16.prepare_luna16`; this module only parses and prints.
:func:`register` adds the subcommand to the ``lung-nodule-mtl`` parser. Exit status: 0 when every scan found was
converted (annotated scans missing from the folder are reported, not an error), 1 when a scan failed (one line
per failed scan on stderr, naming the file) or the input cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register"]

_COMMAND = "prepare-luna16"


def _print_summary(summary: dict[str, Any], out: str) -> None:
    print(f"LUNA16 converted to {out}")
    print(
        f"  scans               {summary['scans_found']} found: {summary['scans_converted']} converted, "
        f"{summary['scans_skipped']} already done, {summary['scans_failed']} failed "
        f"({summary['scans_with_nodules']} with nodules, {summary['scans_without_nodules']} without)"
    )
    print(
        f"  nodules             {summary['nodules']} in the datalist, of {summary['annotations']} annotations "
        f"in {summary['annotated_scans']} scans"
    )
    print(
        f"  missing scans       {summary['missing_scans']} annotated scans not under --luna-root "
        f"({summary['nodules_in_missing_scans']} nodules)"
    )
    if summary["excluded"] is not None:
        print(f"  excluded findings   {summary['excluded']} ({summary['excluded_outside_scan']} outside their scan)")
    if summary["candidates"] is not None:
        outside = summary["candidates_outside_scan"]
        print(f"  candidates          {summary['candidates']} ({outside} outside their scan)")
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    print(f"  folds               {summary['n_folds']} ({summary['fold_source']}); {splits}")
    print(f"  labels              {summary['label_source'] or 'none'}")
    print(f"  datalist            {summary['datalist']}")
    print(f"  scans table         {summary['scans_table']}")
    for warning in summary["warnings"]:
        print(f"  warning             {warning}")
    print(f"  time                {summary['seconds']:.1f} s")


def _cmd_prepare_luna16(args: argparse.Namespace) -> int:
    from lung_nodule_mtl.data.luna16 import LUNA16_CITATION, prepare_luna16

    result = prepare_luna16(
        args.luna_root,
        args.annotations,
        args.out,
        excluded=args.excluded,
        candidates=args.candidates,
        labels=not args.no_labels,
        n_folds=args.folds,
        val_fold=args.val_fold,
        seed=args.seed,
        overwrite=args.overwrite,
        workers=args.workers,
    )
    _print_summary(result.summary, args.out)
    print(f"  Data: {LUNA16_CITATION}")
    for reason in result.failed.values():
        print(f"lung-nodule-mtl {_COMMAND}: error: {reason}", file=sys.stderr)
    return 0 if result.ok else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``prepare-luna16`` subcommand to ``lung-nodule-mtl``'s sub-parsers.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers()`` returned; the command runs ``args.func(args)`` and
            returns its exit status, as the other subcommands do.

    Returns:
        The subcommand's parser.
    """
    p = subparsers.add_parser(
        _COMMAND,
        help="convert LUNA16 (MetaImage scans + annotations.csv) to NIfTI and a datalist",
        description="Convert every <seriesuid>.mhd under --luna-root (subset0/ ... subset9/ or any nesting) to "
        "images/<seriesuid>.nii.gz (HU, on exactly the MetaImage's grid, RAS affine), draw spherical nodule masks "
        "from the annotation diameters in labels/ (LUNA16 has no masks: items say label_source 'sphere'), and "
        "write datalist.json (one item per annotated nodule, centres in RAS mm, fold = LUNA16 subset) and "
        "scans.csv. Annotated scans missing from the folder are counted, not an error; a scan that fails (e.g. a "
        "nodule centre outside its image) is reported and the others go on (exit status 1). A re-run skips "
        "complete scans.",
    )
    p.add_argument("--luna-root", required=True, help="folder of <seriesuid>.mhd + .raw files, at any depth")
    p.add_argument("--annotations", required=True, help="LUNA16 annotations.csv (seriesuid,coordX,..., LPS mm)")
    p.add_argument("--out", required=True, help="output folder (images/, labels/, meta/, datalist.json, scans.csv)")
    p.add_argument("--excluded", default=None, help="annotations_excluded.csv: counted per scan, path recorded")
    p.add_argument("--candidates", default=None, help="candidates.csv: counted per scan, path recorded")
    p.add_argument(
        "--no-labels",
        action="store_true",
        help="write no sphere masks; items then have no 'label' (default: labels/<seriesuid>.nii.gz)",
    )
    p.add_argument(
        "--folds",
        type=int,
        default=10,
        help="patient-level folds, used only when the scans are not all in subsetK folders (default: 10)",
    )
    p.add_argument("--val-fold", type=int, default=0, help="fold used as the 'validation' list (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the patient-level folds (default: 0)")
    p.add_argument("--workers", type=int, default=1, help="scans converted in parallel, processes (default: 1)")
    p.add_argument("--overwrite", action="store_true", help="redo scans whose outputs are complete")
    p.set_defaults(func=_cmd_prepare_luna16)
    return p
