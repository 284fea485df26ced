"""``lung-nodule-mtl prepare-growth``: a user's longitudinal CT pairs → aligned growth crops and a growth datalist.

::

    lung-nodule-mtl prepare-growth --pairs PAIRS.csv --out data/growth_pairs [--crop-mm 48] [--spacing-mm 1|keep] \\
        [--lps] [--no-register] [--folds 5] [--test-fraction 0.2] [--seed 0] [--threads N] [--overwrite]

The work is :func:`lung_nodule_mtl.data.growth_pairs.prepare_growth_pairs` (PAIRS.csv's columns in
:mod:`lung_nodule_mtl.data.growth_pairs.table`, the outputs in the package's docstring); this module only parses
and prints. A row that cannot be used is reported in one line naming the CSV row and the reason and the others go
on; the exit status is then 1.
:func:`register` adds the subcommand to the ``lung-nodule-mtl`` parser.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]

_COMMAND = "prepare-growth"

_EPILOG = """\
PAIRS.csv columns (one row per nodule; relative paths are relative to the CSV's folder):
  patient_id, nodule_id            the pair is named <patient_id>_<nodule_id>; folds are made by patient
  baseline_image, followup_image   CT in HU: NIfTI, MetaImage (.mhd/.mha) or a DICOM series folder
  baseline_mask, followup_mask     the nodule's mask on its scan's grid (NIfTI/MetaImage): 0/1 or a label map;
                                   the connected component of the value at the centre is taken (or the nearest
                                   non-zero value within 3 mm), unless baseline_label / followup_label (optional)
                                   name the nodule's value
  baseline_x, baseline_y, baseline_z, followup_x, followup_y, followup_z
                                   the nodule's centre in each scan's own world space, mm: RAS (NIfTI / MONAI
                                   convention) unless --lps or a coordinate_system column (RAS or LPS) says LPS
                                   (DICOM, ITK, LUNA16: x_ras = -x_lps, y_ras = -y_lps)
  interval_days                    days from baseline to follow-up (> 0); or instead
  baseline_date, followup_date     ISO dates (YYYY-MM-DD)

No masks? `lung-nodule-mtl predict -i SCAN -o OUT --nodules centres.csv` segments the nodules at given centres and
writes OUT/<case>_nodules.nii.gz on the scan's grid: use it as the mask (check it first).

Registration (unless --no-register): Euler3D about the baseline centre, started with the translation
followup centre - baseline centre; Mattes mutual information (32 bins) on HU clipped to [-1000, 400], every
voxel of the baseline crop within crop-mm/2 of the centre and inside the scan; 3 levels (shrink 4, 2, 1;
smoothing 2, 1, 0 mm); regular-step gradient descent. A result rotating > 15 degrees, moving the centre > 10 mm
or not improving the metric is rejected with a warning (the centres' alignment is kept).

Outputs in --out: images/<case>_t0.nii.gz, images/<case>_t1.nii.gz (int16 HU), labels/<case>_t0.nii.gz,
labels/<case>_t1.nii.gz (uint8), all on the baseline crop's grid; datalist.json (split by patient);
pairs_summary.csv (one row per CSV row: volumes, doubling time, registration, or why it failed); records/.
"""


def _spacing(text: str) -> float | None:
    if text.strip().lower() == "keep":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of mm or 'keep', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a spacing > 0 mm, got {text!r}")
    return value


def _cmd_prepare_growth(args: argparse.Namespace) -> int:
    from lung_nodule_mtl.cli.common import print_summary
    from lung_nodule_mtl.data.growth_pairs import RegistrationSettings, prepare_growth_pairs

    summary = prepare_growth_pairs(
        args.pairs,
        args.out,
        crop_mm=args.crop_mm,
        spacing_mm=args.spacing_mm,
        n_folds=args.folds,
        test_fraction=args.test_fraction,
        seed=args.seed,
        register=not args.no_register,
        overwrite=args.overwrite,
        coordinate_system="LPS" if args.lps else "RAS",
        settings=RegistrationSettings(threads=args.threads),
        progress=(lambda line: None) if args.quiet else (lambda line: print(line, flush=True)),
    )
    print_summary(
        f"Growth pairs from {args.pairs} written to {args.out}", summary, skip=("failed", "notes", "warnings")
    )
    for note in summary["notes"]:
        print(f"  note: {note}")
    for case, warnings in summary["warnings"].items():
        for warning in warnings:
            print(f"  warning: {case}: {warning}")
    for where, reason in summary["failed"].items():
        print(f"lung-nodule-mtl {_COMMAND}: error: {where}: {reason}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``prepare-growth`` subcommand to ``lung-nodule-mtl``'s sub-parsers.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers()`` returned; the command runs ``args.func(args)`` and
            returns its exit status, as the other subcommands do.

    Returns:
        The subcommand's parser.
    """
    p = subparsers.add_parser(
        "prepare-growth",
        help="build aligned baseline/follow-up nodule crops and a growth datalist from your longitudinal CT scans",
        description="For each row of PAIRS.csv (a nodule seen in a baseline and a follow-up scan): a cube around\n"
        "the nodule in both scans, the follow-up rigidly registered to the baseline (SimpleITK, initialised by the\n"
        "two centres) and resampled onto the baseline crop's grid, the nodule masks, and a datalist split by\n"
        "patient for the growth model. A row that cannot be used is reported with its line and the others go on\n"
        "(exit status 1); complete pairs are skipped on a re-run.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pairs", required=True, help="the pairs CSV (columns below)")
    p.add_argument("--out", required=True, help="output folder (images/, labels/, datalist.json, pairs_summary.csv)")
    p.add_argument("--crop-mm", type=float, default=48.0, help="edge of the cube around each nodule, mm (default: 48)")
    p.add_argument(
        "--spacing-mm",
        type=_spacing,
        default=1.0,
        help="voxel size of the crops, mm, or 'keep' for the baseline scan's own voxels (default: 1)",
    )
    p.add_argument("--lps", action="store_true", help="centres are in LPS mm (DICOM/ITK/LUNA16), not RAS (NIfTI)")
    p.add_argument(
        "--no-register",
        action="store_true",
        help="align the follow-up by the two centres only (for scans registered before)",
    )
    p.add_argument("--folds", type=int, default=5, help="patient-level cross-validation folds (default: 5)")
    p.add_argument(
        "--test-fraction", type=float, default=0.2, help="fraction of patients held out as 'test' (default: 0.2)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the test draw and the folds (default: 0)")
    p.add_argument("--threads", type=int, default=None, help="ITK threads for registration (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="redo pairs that are complete from an earlier run")
    p.add_argument("--quiet", action="store_true", help="no line per pair")
    p.set_defaults(func=_cmd_prepare_growth)
    return p
