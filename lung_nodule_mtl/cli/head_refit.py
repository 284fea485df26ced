"""``lung-nodule-mtl refit-detection-head``: refit the false-positive-reduction head on annotated whole scans.

::

    lung-nodule-mtl refit-detection-head --scans train_scans/images --annotations train_scans/annotations.csv \\
        --out refit/

The work is :func:`lung_nodule_mtl.inference.head_refit.refit_detection_head`; this module only parses and prints.
"""

from __future__ import annotations

import argparse

from lung_nodule_mtl.cli.common import add_annotated_scan_arguments, print_summary

__all__ = ["register"]


def _cmd_refit(args: argparse.Namespace) -> int:
    from lung_nodule_mtl.inference.head_refit import refit_detection_head

    summary = refit_detection_head(
        args.scans,
        args.annotations,
        args.out,
        excluded=args.excluded,
        bundle_dir=args.bundle,
        checkpoint=args.checkpoint,
        device=args.device,
        min_diameter_mm=args.min_diameter_mm,
        jitter=args.jitter,
        epochs=args.epochs,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    print_summary(
        f"Detection head refit: {summary['weights_file']}",
        {
            "scans": summary["n_scans"],
            "crops": f"{summary['crops']} ({summary['positive_crops']} nodule, {summary['negative_crops']} not)",
            "crop AUC before": summary["training_crop_auc_before"],
            "crop AUC after": summary["training_crop_auc_after"],
            "fusion": summary["fusion"],
            "summary": f"{args.out}/head_refit.json",
        },
    )
    print(
        "Choose its detection threshold on development scans: predict --checkpoint "
        f"{summary['weights_file']} --threshold 0 --max-nodules 50, then evaluate-froc --operating-point 2."
    )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``refit-detection-head`` to the ``lung-nodule-mtl`` subcommands."""
    p = subparsers.add_parser(
        "refit-detection-head",
        help="refit the detection (false-positive reduction) head on annotated whole scans; nothing else changes",
        description="Score every candidate predict finds on annotated scans and each annotated nodule's centre with "
        "the frozen network (8 mirror images each), train only the detection head on those features (nodules "
        "against the vessel and pleura fragments the mask proposes), and write the weights with that head "
        "replaced: masks, malignancy and attributes are unchanged. Refit on scans whose nodules are all annotated, "
        "never on the scans that choose the threshold or report the results.",
    )
    add_annotated_scan_arguments(
        p, "output folder: model.pt, head_refit.json, samples/", "weights to refit (default: the bundle's)"
    )
    p.add_argument(
        "--min-diameter-mm",
        type=float,
        default=1.5,
        help="smallest candidate mask component scored for training (default: 1.5; predict's own is 3)",
    )
    p.add_argument("--jitter", type=int, default=2, help="moved copies of each annotated centre (default: 2)")
    p.add_argument("--epochs", type=int, default=60, help="passes over the crops (default: 60)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: 1e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default: 1e-4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=_cmd_refit)
    return p
