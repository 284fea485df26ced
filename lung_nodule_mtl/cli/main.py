"""The ``lung-nodule-mtl`` command: one entry point, one subcommand per pipeline stage.

Each subcommand only parses its arguments and calls the library function that does the work, so
everything the command line can do is importable too::

    lung-nodule-mtl synth --out data/synthetic --cases 24 --seed 0 --mode crops
    lung-nodule-mtl synth --out data/growth --cases 24 --seed 0 --mode growth
    lung-nodule-mtl prepare-vois --vois ../shared/data/lidc_vois --out data/lidc_vois --folds 5
    lung-nodule-mtl prepare-vois --vois external_vois/ --out data/external --folds 1   # all in 'test'
    lung-nodule-mtl export-bundle --out dist/lung_nodule_ct_mtl_v0.1.0.zip
    lung-nodule-mtl predict -i scans/ -o predictions/ [--nodules annotations.csv] [--qc]
    lung-nodule-mtl luna25 -i /input -o /output   # LUNA25 / grand-challenge: one case, given nodule locations
    lung-nodule-mtl cross-validate --dataset-dir data/lidc_vois --out runs/cv --jobs 2 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from lung_nodule_mtl import __version__
from lung_nodule_mtl.cli.candidates import register as register_candidates
from lung_nodule_mtl.cli.common import print_summary
from lung_nodule_mtl.cli.crossval import register as register_crossval
from lung_nodule_mtl.cli.froc import register as register_froc
from lung_nodule_mtl.cli.growth import register as register_growth
from lung_nodule_mtl.cli.head_refit import register as register_head_refit
from lung_nodule_mtl.cli.insertion import register as register_insertion
from lung_nodule_mtl.cli.lidc import register as register_lidc
from lung_nodule_mtl.cli.luna16 import register as register_luna16
from lung_nodule_mtl.cli.luna25 import register as register_luna25

__all__ = ["build_parser", "main"]

logger = logging.getLogger("lung_nodule_mtl")

EVALUATE_TEST_COMMAND = (
    "python -m monai.bundle run evaluating --meta_file bundle/configs/metadata.json --config_file "
    "\"['bundle/configs/train.yaml','bundle/configs/train_scans.yaml','bundle/configs/evaluate.yaml']\" "
    "--logging_file bundle/configs/logging.conf --dataset_dir {dataset_dir} --eval_split test "
    "--ckpt_file bundle/models/model.pt --output_dir eval/test"
)
"""The bundle's ``evaluating`` of the released weights on the ``test`` list of ``{dataset_dir}/datalist.json``
(``prepare-vois --folds 1``), from the repository root; weights trained with ``train.yaml`` alone: without
``train_scans.yaml``, with their ``--ckpt_file``."""


def _cmd_synth(args: argparse.Namespace) -> int:
    from lung_nodule_mtl.data.synthetic import synthesize_dataset

    options: dict[str, Any] = {"scan_shape": tuple(args.scan_shape)} if args.scan_shape else {}
    growth_options = {
        "followup_intervals_days": ("--interval-days", args.interval_days),
        "registration_shift_mm": ("--registration-shift-mm", args.registration_shift_mm),
        "registration_rotation_deg": ("--registration-rotation-deg", args.registration_rotation_deg),
    }
    for key, (flag, value) in growth_options.items():
        if value is None:
            continue
        if args.mode != "growth":
            raise ValueError(f"{flag} applies to --mode growth only, got --mode {args.mode}.")
        options[key] = tuple(value) if isinstance(value, list) else value
    summary = synthesize_dataset(
        args.out,
        cases=args.cases,
        seed=args.seed,
        mode=args.mode,
        n_folds=args.folds,
        test_fraction=args.test_fraction,
        overwrite=args.overwrite,
        **options,
    )
    print_summary(f"Synthetic chest CT ({args.mode}) written to {args.out}", summary, skip=("notes",))
    for note in summary["notes"]:
        print(f"  note: {note}")
    return 0


def _cmd_prepare_vois(args: argparse.Namespace) -> int:
    from lung_nodule_mtl.data.lidc_vois import LIDC_CITATION, prepare_vois

    summary = prepare_vois(
        args.vois,
        args.out,
        n_folds=args.folds,
        val_fold=args.val_fold,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )
    print_summary(f"LIDC-IDRI VOI datalist written to {summary['datalist']}", summary, skip=("notes",))
    for note in summary["notes"]:
        print(f"  note: {note}")
    if args.folds == 1:
        print(f"  evaluate it: {EVALUATE_TEST_COMMAND.format(dataset_dir=args.out)}")
    print(f"  Data: {LIDC_CITATION}")
    return 0


def _cmd_export_bundle(args: argparse.Namespace) -> int:
    from lung_nodule_mtl.zoo.export import export_bundle

    path = export_bundle(args.out, bundle_dir=args.bundle, ckpt=args.ckpt, overwrite=args.overwrite)
    print(f"Self-contained MONAI bundle written to {path}")
    print(f"  check it: python -m lung_nodule_mtl.zoo.checks {path} --schema meta_schema_20240725.json")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from lung_nodule_mtl.inference import load_scan_predictor, predict_batch

    overrides: dict[str, Any] = {"device_name": args.device, "use_lung_mask": not args.no_lung_mask, "qc": args.qc}
    for key, value in (
        ("ckpt_file", args.checkpoint),
        ("sw_roi_size", args.roi_size),
        ("sw_overlap", args.overlap),
        ("sw_batch_size", args.sw_batch_size),
        ("detection_threshold", args.threshold),
        ("mask_threshold", args.mask_threshold),
        ("min_diameter_mm", args.min_diameter_mm),
        ("max_nodules", args.max_nodules),
        ("mirror_tta", args.tta),
    ):
        if value is not None:
            overrides[key] = value
    if args.candidate_classifier is not None:
        overrides["candidate_classifier"] = None if args.candidate_classifier == "none" else args.candidate_classifier
    predictor, _ = load_scan_predictor(args.bundle, overrides)
    result = predict_batch(
        args.input,
        args.output,
        predictor,
        nodules_csv=args.nodules,
        qc=args.qc,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        html_report=args.report,
        dicom=not args.no_dicom,
    )
    for case_id, reason in result.failed.items():
        print(f"lung-nodule-mtl predict: error: {case_id}: {reason}", file=sys.stderr)
    return 0 if result.ok else 1


def _add_split_args(
    p: argparse.ArgumentParser,
    test_fraction: float,
    folds_help: str = "patient-level cross-validation folds, fewer (with a note) for fewer patients (default: 5)",
) -> None:
    p.add_argument("--folds", type=int, default=5, help=folds_help)
    p.add_argument(
        "--test-fraction",
        type=float,
        default=test_fraction,
        help=f"fraction of patients held out as 'test' (default: {test_fraction})",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lung-nodule-mtl`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="lung-nodule-mtl",
        description="Lung nodule segmentation, malignancy and LIDC-IDRI attributes from chest CT (MONAI).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "synth",
        help="generate the built-in synthetic chest CT data set and its datalist",
        description="Generate deterministic synthetic chest CT (NIfTI, HU, int16) with nodule masks, "
        "malignancy and LIDC attributes, plus a datalist JSON split by patient.",
    )
    p.add_argument("--out", required=True, help="output folder (images/, labels/, datalist.json)")
    p.add_argument("--cases", type=int, default=24, help="number of patients (default: 24)")
    p.add_argument(
        "--mode",
        choices=("crops", "scans", "growth"),  # synthetic.config.MODES, not imported: it loads the generator
        default="crops",
        help="'crops': nodule-centred volumes; 'scans': whole chest volumes with several nodules; 'growth': "
        "per nodule a baseline and a follow-up crop on one grid, with the growth truth (default: crops)",
    )
    p.add_argument(
        "--scan-shape",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="voxels of a whole scan in scans mode (default 256 256 160; 512 512 N gives clinical 0.6-0.75 mm pixels)",
    )
    p.add_argument(
        "--interval-days",
        type=float,
        nargs="+",
        metavar="DAYS",
        help="growth mode: follow-up intervals drawn uniformly (default: 90/180/365/730 days by nodule type)",
    )
    p.add_argument(
        "--registration-shift-mm",
        type=float,
        metavar="MM",
        help="growth mode: largest shift of the follow-up crop against the baseline (default: 2 mm)",
    )
    p.add_argument(
        "--registration-rotation-deg",
        type=float,
        metavar="DEG",
        help="growth mode: largest rotation of the follow-up crop about the nodule centre (default: 3 degrees)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an output folder that holds other files (a previous synth output is always refreshed)",
    )
    _add_split_args(p, test_fraction=0.2)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser(
        "prepare-vois",
        help="write a datalist for the LIDC-IDRI nodule crops (image/, nodule_mask/, nodules.csv)",
        description="Build the project's datalist for a folder of LIDC-IDRI VOIs, split by patient into folds. "
        "Images are referenced in place, not copied. With --folds 1 (an external test set) every nodule goes in "
        "'test'; evaluate the released weights on it, from the repository root, with: "
        + EVALUATE_TEST_COMMAND.format(dataset_dir="OUT")
        + " (weights trained with train.yaml alone: leave train_scans.yaml out and give their --ckpt_file).",
    )
    p.add_argument("--vois", required=True, help="folder holding nodules.csv, image/ and nodule_mask/")
    p.add_argument("--out", required=True, help="output folder for datalist.json")
    p.add_argument("--val-fold", type=int, default=0, help="fold used as the 'validation' list (default: 0)")
    _add_split_args(
        p,
        test_fraction=0.0,
        folds_help="patient-level cross-validation folds, fewer (with a note) for fewer patients; 1: an "
        "evaluation-only datalist, every nodule in 'test', no folds, empty 'training'/'validation' (default: 5)",
    )
    p.set_defaults(func=_cmd_prepare_vois)

    p = sub.add_parser(
        "export-bundle",
        help="export the MONAI bundle as a self-contained folder or .zip for the Model Zoo",
        description="Copy the bundle (configs, docs, LICENSE, models) with the package in scripts/ and configs "
        "rewritten to use it, so it runs without this repository. Written atomically.",
    )
    p.add_argument("--out", required=True, help="output folder, or a path ending in .zip for an archive")
    p.add_argument("--bundle", default=None, help="bundle folder to export (default: bundle/ of this source checkout)")
    p.add_argument("--ckpt", default=None, help="weights to ship as models/model.pt (default: the bundle's own)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    p.set_defaults(func=_cmd_export_bundle)

    p = sub.add_parser(
        "predict",
        help="whole-scan inference: nodule label maps and a per-nodule malignancy report for a batch of CT scans",
        description="Find, segment and characterise lung nodules in CT scans (NIfTI, MetaImage or DICOM series). "
        "Per case: <case>_nodules.nii.gz on the input's grid, <case>.json; for the batch: summary.csv. Complete "
        "cases are skipped on a re-run; a failing case is reported and the others go on (exit status 1).",
    )
    p.add_argument("-i", "--input", required=True, help="a NIfTI/MetaImage file, a DICOM series folder, or a folder")
    p.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    p.add_argument(
        "--nodules",
        default=None,
        help="CSV of nodule centres to analyse instead of detecting them: LUNA16 annotations.csv "
        "(seriesuid = case id, LPS mm) or a summary.csv of this command (RAS mm)",
    )
    p.add_argument("--bundle", default=None, help="bundle folder (default: $LUNG_NODULE_MTL_BUNDLE or bundle/)")
    p.add_argument("--checkpoint", default=None, help="weights to use instead of the bundle's models/model.pt")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto (CUDA if any)")
    p.add_argument("--roi-size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="sliding window (default: patch)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: 0.25)")
    p.add_argument("--sw-batch-size", type=int, default=None, help="windows per forward pass (default: 4)")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="detection probability a nodule needs to be reported: the operating point (default: the bundle's "
        "detection_threshold, chosen on development scans; 0 reports every candidate up to --max-nodules)",
    )
    p.add_argument("--mask-threshold", type=float, default=None, help="mask probability threshold (default: 0.5)")
    p.add_argument("--min-diameter-mm", type=float, default=None, help="smallest nodule reported (default: 3)")
    p.add_argument("--max-nodules", type=int, default=None, help="most nodules per scan (default: 20)")
    p.add_argument("--no-lung-mask", action="store_true", help="analyse the whole image, not only the lungs")
    p.add_argument(
        "--candidate-classifier",
        default=None,
        help="candidate_classifier.json (blob proposals and the detection probability from measured features and the "
        "head, fit-candidate-classifier) to use, or 'none' for the detection head alone (default: the file beside "
        "the weights, where there is one)",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-time mirroring (8 passes per crop): the reported nodules' malignancy, score, attributes, the "
        "masks of given centres, and the detection probability of the candidates the bundle's "
        "mirror_candidates_above selects (the default operating point was chosen with it); --no-tta: one pass, "
        "faster, more false positives; default: the bundle's mirror_tta",
    )
    p.add_argument("--qc", action="store_true", help="also write qc/<case>_nodule<k>.png per nodule")
    p.add_argument(
        "--no-dicom",
        action="store_true",
        help="for DICOM series inputs, do not write <case>_seg.dcm and <case>_sr.dcm (the nodules as a DICOM "
        "Segmentation and their measurements as a TID 1500 Structured Report)",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="also write <case>_report.html: one self-contained page per scan for a radiologist (location, size, "
        "malignancy, attributes in the readers' words, three views per nodule, the model's limits)",
    )
    p.add_argument("--overwrite", action="store_true", help="redo cases whose outputs are complete")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)

    register_crossval(sub)
    register_froc(sub)
    register_growth(sub)
    register_head_refit(sub)
    register_candidates(sub)
    register_insertion(sub)
    register_lidc(sub)
    register_luna16(sub)
    register_luna25(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lung-nodule-mtl``; returns the exit status (0 success, 1 bad input, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (FileNotFoundError, ValueError) as e:
        # Bad input: one clear line, no traceback (use --verbose for it).
        logger.debug("traceback", exc_info=True)
        print(f"lung-nodule-mtl {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
