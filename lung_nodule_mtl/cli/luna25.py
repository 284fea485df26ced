"""``lung-nodule-mtl luna25``: the LUNA25 / grand-challenge interface, one case per run.

::

    lung-nodule-mtl luna25 -i /input -o /output [--bundle DIR] [--checkpoint FILE] [--device auto|cpu|cuda]

The work is :func:`lung_nodule_mtl.inference.luna25.run_luna25` (layout, probability rule); this module builds
the bundle's predictor as ``predict`` does and prints the output path. :func:`register` adds the subcommand to the
``lung-nodule-mtl`` parser. Exit status: 0 when the likelihoods file is written, 1 on bad input (one line naming
the file, nothing written).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]

_COMMAND = "luna25"


def _cmd_luna25(args: argparse.Namespace) -> int:
    from lung_nodule_mtl.inference import load_scan_predictor
    from lung_nodule_mtl.inference.luna25 import run_luna25

    # given centres only: the lung mask would only be measured, not used, so it is not computed
    overrides: dict[str, Any] = {"device_name": args.device, "use_lung_mask": False}
    for key, value in (("ckpt_file", args.checkpoint), ("mask_threshold", args.mask_threshold)):
        if value is not None:
            overrides[key] = value
    predictor, _ = load_scan_predictor(args.bundle, overrides)
    path = run_luna25(args.input, args.output, predictor)
    print(f"Malignancy likelihoods written to {path}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``luna25`` subcommand to ``lung-nodule-mtl``'s sub-parsers.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers()`` returned; the command runs ``args.func(args)`` and
            returns its exit status, as the other subcommands do.

    Returns:
        The subcommand's parser.
    """
    p = subparsers.add_parser(
        _COMMAND,
        help="LUNA25 / grand-challenge interface: a malignancy likelihood per given nodule location",
        description="Read INPUT/nodule-locations.json (grand-challenge 'Multiple points', world mm in LPS as ITK "
        "reports them), the one CT in INPUT/images/chest-ct/ (.mha; .mhd, .nii, .nii.gz too; TIFF is refused: it "
        "carries no spatial metadata) and, if present, INPUT/clinical-information-lung-ct.json (not used); write "
        "OUTPUT/lung-nodule-malginancy-likelihoods.json (the organisers' spelling): the same points, names and "
        "order, each with a 'probability' in [0, 1]. Each point is analysed as a given nodule centre; its "
        "probability is the malignancy probability predict reports for that centre (the network's, fused with the "
        "measured size where the weights have a fusion and a mask is found), else 0.5 with a warning. Bad input "
        "(a point outside the image, an empty points list, no or several images): one line naming the file, "
        "nothing written, exit status 1.",
    )
    p.add_argument("-i", "--input", required=True, help="input folder (grand-challenge: /input)")
    p.add_argument("-o", "--output", required=True, help="output folder, created if missing (grand-challenge: /output)")
    p.add_argument("--bundle", default=None, help="bundle folder (default: $LUNG_NODULE_MTL_BUNDLE or bundle/)")
    p.add_argument("--checkpoint", default=None, help="weights to use instead of the bundle's models/model.pt")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto (CUDA if any)")
    p.add_argument("--mask-threshold", type=float, default=None, help="mask probability threshold (default: 0.5)")
    p.set_defaults(func=_cmd_luna25)
    return p
