"""``lung-nodule-mtl prepare-lidc``: LIDC-IDRI DICOM + reading XML -> CT NIfTI, consensus nodule masks, datalist.

::

    lung-nodule-mtl prepare-lidc --lidc-root LIDC-IDRI/ --out data/lidc [--consensus 0.5] [--rating median|mean] \\
        [--min-readers 1] [--folds 5] [--seed 0] [--overwrite]

The work is :func:`lung_nodule_mtl.data.lidc_idri.prepare_lidc`; this module only parses and prints. A patient
folder that cannot be used is reported in one line and the others go on; the exit status is then 1.
:func:`register` adds the subcommand to the ``lung-nodule-mtl`` parser.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]

_SHOWN_WARNINGS = 10


def _cmd_prepare_lidc(args: argparse.Namespace) -> int:
    from lung_nodule_mtl.cli.common import print_summary
    from lung_nodule_mtl.data.lidc_idri import prepare_lidc
    from lung_nodule_mtl.data.lidc_vois import LIDC_CITATION

    summary = prepare_lidc(
        args.lidc_root,
        args.out,
        consensus=args.consensus,
        rating=args.rating,
        min_readers=args.min_readers,
        n_folds=args.folds,
        val_fold=args.val_fold,
        test_fraction=args.test_fraction,
        seed=args.seed,
        overwrite=args.overwrite,
        include_contour=args.include_contour,
        cluster_tol_mm=args.cluster_tol_mm,
        patients=args.patients,
        progress=(lambda line: None) if args.quiet else (lambda line: print(line, flush=True)),
    )
    print_summary(
        f"LIDC-IDRI converted into {args.out} (datalist: {summary['datalist']})",
        summary,
        skip=("datalist", "failed", "notes"),
    )
    for note in summary["notes"]:
        print(f"  note: {note}")
    if summary["n_warnings"]:
        print(f"  {summary['n_warnings']} warning(s): see {args.out}/prepare_lidc.json")
    print(f"  Data: {LIDC_CITATION}")
    for patient, reason in summary["failed"].items():
        print(f"lung-nodule-mtl prepare-lidc: error: {patient}: {reason}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``prepare-lidc`` subcommand to ``lung-nodule-mtl``'s sub-parsers.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers()`` returned; the command runs ``args.func(args)`` and
            returns its exit status, as the other subcommands do.

    Returns:
        The subcommand's parser.
    """
    p = subparsers.add_parser(
        "prepare-lidc",
        help="convert LIDC-IDRI (DICOM + reading XML) into CT NIfTI, consensus nodule masks and a datalist",
        description="For each LIDC-IDRI patient folder (as TCIA ships it): the CT as NIfTI in HU, every reader's "
        "nodule outlines on the CT grid, readers' annotations clustered into nodules, a consensus mask per nodule, "
        "median (or mean) ratings, tables of all nodules, readers' annotations, small nodules and non-nodules, "
        "and a datalist split by patient. A patient folder that cannot be used is reported and the others go on "
        "(exit status 1).",
    )
    p.add_argument("--lidc-root", required=True, help="folder of LIDC-IDRI patient folders (or one patient folder)")
    p.add_argument("--out", required=True, help="output folder (images/, labels/, datalist.json, *.csv)")
    p.add_argument(
        "--consensus",
        type=float,
        default=0.5,
        help="a voxel is in a nodule's mask when at least this fraction of the readers who marked the nodule "
        "included it (default: 0.5)",
    )
    p.add_argument(
        "--rating",
        choices=("median", "mean"),
        default="median",
        help="how readers' ratings are combined: median (attributes: upper median) or mean (attributes rounded "
        "half up) (default: median); malignancy > 3.5 is 1, < 2.5 is 0, else -1 (indeterminate, kept)",
    )
    p.add_argument(
        "--min-readers",
        type=int,
        default=1,
        help="nodules marked by fewer readers stay out of the datalist (listed in nodules.csv) (default: 1)",
    )
    p.add_argument("--folds", type=int, default=5, help="patient-level cross-validation folds (default: 5)")
    p.add_argument("--val-fold", type=int, default=0, help="fold used as the 'validation' list (default: 0)")
    p.add_argument(
        "--test-fraction", type=float, default=0.0, help="fraction of patients held out as 'test' (default: 0)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the folds (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="redo scans converted before with the same options")
    p.add_argument(
        "--include-contour",
        action="store_true",
        help="count the readers' outline pixels as nodule (default: no; LIDC's outlines lie just outside the nodule)",
    )
    p.add_argument(
        "--cluster-tol-mm",
        type=float,
        default=None,
        help="readers' outlines closer than this are one nodule (default: the scan's slice spacing)",
    )
    p.add_argument("--patients", nargs="+", default=None, metavar="NAME", help="only these patient folders")
    p.add_argument("--quiet", action="store_true", help="no line per scan")
    p.set_defaults(func=_cmd_prepare_lidc)
    return p
