"""``lung-nodule-mtl fit-candidate-classifier``: blob proposals and a detection probability from measured features.

::

    lung-nodule-mtl fit-candidate-classifier --scans train_scans/images --annotations train_scans/annotations.csv \\
        --out clf/                                   # clf/candidate_classifier.json
    lung-nodule-mtl predict -i dev_scans/ -o dev_pred --candidate-classifier clf/candidate_classifier.json \\
        --threshold 0 --max-nodules 50

The work is :func:`lung_nodule_mtl.inference.candidates.fit_candidate_classifier`; this module only parses and
prints.
"""

from __future__ import annotations

import argparse

from lung_nodule_mtl.cli.common import add_annotated_scan_arguments, print_summary

__all__ = ["register"]


def _cmd_fit(args: argparse.Namespace) -> int:
    from lung_nodule_mtl.inference.candidates import GEOMETRY_FEATURES, fit_candidate_classifier

    presets = {"all": None, "geometry": list(GEOMETRY_FEATURES)}
    features = presets[args.features[0]] if len(args.features) == 1 and args.features[0] in presets else args.features

    summary = fit_candidate_classifier(
        args.scans,
        args.annotations,
        args.out,
        excluded=args.excluded,
        bundle_dir=args.bundle,
        checkpoint=args.checkpoint,
        device=args.device,
        max_proposals=args.max_proposals,
        min_distance_mm=args.min_distance_mm,
        jitter=args.jitter,
        l2=args.l2,
        seed=args.seed,
        features=features,
        proposals_need_mask=not args.maskless_proposals,
        drop_shifted=args.drop_shifted,
        keep_range=tuple(args.keep_range),
    )
    auc = summary["auc"]
    shift = summary["feature_shift"]
    dropped = (
        f"{len(shift['dropped'])} of {len(shift['domain_auc'])}: {', '.join(shift['dropped']) or '-'}" if shift else ""
    )
    print_summary(
        f"Candidate classifier: {summary['classifier_file']}",
        {
            "scans": summary["n_scans"],
            "proposals": f"{summary['n_proposals']} ({summary['n_proposals_on_nodules']} on nodules)",
            "rows": f"{summary['n_rows']} ({summary['n_rows_nodule']} nodule)",
            "candidates added": f"{summary['n_candidates_added']} ({summary['n_candidates_added_on_nodules']} on "
            "nodules)",
            "candidate AUC (head / classifier, scan held out)": f"{auc['candidates']['head']} / "
            f"{auc['candidates']['classifier_scan_held_out']}",
            "small nodules vs candidates": f"{auc['small_nodules_vs_candidates']['head']} / "
            f"{auc['small_nodules_vs_candidates']['classifier_scan_held_out']}",
            **({"features dropped as shifted": dropped} if dropped else {}),
            "summary": f"{args.out}/candidate_classifier_fit.json",
        },
    )
    print(
        "Choose its detection threshold on development scans: predict --candidate-classifier "
        f"{summary['classifier_file']} --threshold 0 --max-nodules 50, then evaluate-froc --operating-point 2."
    )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``fit-candidate-classifier`` to the ``lung-nodule-mtl`` subcommands."""
    p = subparsers.add_parser(
        "fit-candidate-classifier",
        help="fit blob proposals and a candidate classifier (measured features + the detection head) on annotated "
        "whole scans",
        description="Rank the blob proposals (LoG maxima in the lungs) of annotated scans by their Hessian features, "
        "then score every candidate predict meets with them (the mask's, the proposals it adds, each annotated "
        "centre) by measured features at its centre and the detection head's logit: two small logistic models in "
        "one JSON file. Fit on scans whose nodules are all annotated, never on the scans that choose the threshold "
        "or report the results; put the file beside the weights (models/candidate_classifier.json) for predict to "
        "use it by default.",
    )
    add_annotated_scan_arguments(
        p,
        "output folder: candidate_classifier.json, its fit summary, samples/",
        "weights whose head it uses (default: the bundle's)",
    )
    p.add_argument("--max-proposals", type=int, default=40, help="blob proposals added per scan (default: 40)")
    p.add_argument(
        "--min-distance-mm", type=float, default=5.0, help="no proposal nearer a candidate than this (default: 5)"
    )
    p.add_argument(
        "--features",
        nargs="+",
        default=["all"],
        help="the scorer's inputs: 'all' (default), 'geometry' (eigenvalue ratios from 1.5 mm up, the bright "
        "component's shape, the head's logit: no HU level, nothing at the noise's scale) or feature names "
        "(lung_nodule_mtl.inference.candidates.CANDIDATE_FEATURES and head_logit)",
    )
    p.add_argument(
        "--drop-shifted",
        nargs="+",
        default=[],
        metavar="CASE",
        help="case ids of scans whose background differs in kind from the others' (e.g. the real CTs among "
        "synthetic hosts): measured features whose domain AUC between their non-nodule candidates and the others' "
        "lies outside --keep-range are left out (the head's logit stays; recorded in candidate_classifier_fit.json)",
    )
    p.add_argument(
        "--keep-range",
        nargs=2,
        type=float,
        default=[0.35, 0.65],
        metavar=("LOW", "HIGH"),
        help="domain AUCs kept by --drop-shifted (default: 0.35 0.65)",
    )
    p.add_argument(
        "--maskless-proposals",
        action="store_true",
        help="keep proposals whose centred crop has no mask component (default: dropped)",
    )
    p.add_argument("--jitter", type=int, default=2, help="moved copies of each annotated centre (default: 2)")
    p.add_argument("--l2", type=float, default=1e-2, help="ridge of the logistic models (default: 0.01)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=_cmd_fit)
    return p
