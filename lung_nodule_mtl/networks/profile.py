"""Parameter count and FLOPs per patch of LNMSNet variants.

Run ``python -m lung_nodule_mtl.networks.profile`` (``--help`` for options). FLOPs are counted by
:class:`torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per multiply–accumulate of convolutions, transposed
convolutions and linear layers; normalisation, activations and pooling are not counted) for one forward pass in
eval mode at batch size 1. The model runs on the ``meta`` device by default, so nothing is computed and the count
is instantaneous even for the full-width variant.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from lung_nodule_mtl.networks.lnmsnet import LNMSNet

__all__ = ["VARIANTS", "main", "profile_table", "profile_variant"]

VARIANTS: dict[str, dict[str, Any]] = {
    "small (init_filters=8)": {"init_filters": 8},
    "medium (init_filters=16)": {"init_filters": 16},
    "full (init_filters=32)": {"init_filters": 32},
    "ResNet-18 widths (init_filters=64)": {"init_filters": 64},
    "small, no MSConv": {"init_filters": 8, "msconv": False},
    "full, no MSConv": {"init_filters": 32, "msconv": False},
    "full, segmentation only": {"init_filters": 32, "heads": []},
    "full, classification only": {"init_filters": 32, "segmentation": False, "feature_combination": False},
}
"""Configurations reported in the LNMSNet docstring (other arguments at their defaults)."""


def profile_variant(
    kwargs: Mapping[str, Any], in_channels: int = 1, patch: Sequence[int] = (64, 64, 64), device: str = "meta"
) -> tuple[int, int]:
    """Parameter count and forward FLOPs of one LNMSNet configuration on a ``(1, in_channels, *patch)`` input.

    Args:
        kwargs: LNMSNet arguments (``in_channels`` is set from the argument).
        in_channels: input channels (1 window, or 3 windows as in seed 5).
        patch: spatial size of the patch in voxels.
        device: ``"meta"`` (no computation) or a real device.

    Returns:
        ``(parameters, flops)``.
    """
    with torch.device(device):
        net = LNMSNet(**{**kwargs, "in_channels": in_channels}).eval()
        x = torch.zeros(1, in_channels, *patch)
    params = sum(p.numel() for p in net.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    return params, int(counter.get_total_flops())


def profile_table(
    variants: Mapping[str, Mapping[str, Any]] = VARIANTS,
    channels: Sequence[int] = (1, 3),
    patch: Sequence[int] = (64, 64, 64),
    device: str = "meta",
) -> str:
    """A reStructuredText/Markdown-friendly table of parameters and GFLOPs per patch for each variant."""
    size = "×".join(str(p) for p in patch)
    header = ["variant", "params (M)"] + [f"GFLOPs / {size}, {c} ch" for c in channels]
    rows = []
    for name, kwargs in variants.items():
        cells = [name]
        for i, c in enumerate(channels):
            params, flops = profile_variant(kwargs, c, patch, device)
            if i == 0:
                cells.append(f"{params / 1e6:.3f}")
            cells.append(f"{flops / 1e9:.1f}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table (command-line entry point)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64], help="patch size in voxels")
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 3], help="input channel counts")
    parser.add_argument("--device", default="meta", help="'meta' (count only) or a real device")
    args = parser.parse_args(argv)
    print(profile_table(VARIANTS, args.channels, args.patch, args.device))
    print(
        "\nparams include all ten heads unless stated; parameters do not depend on the input channels except "
        "the stem (in_channels × init_filters × 27 weights)."
    )


if __name__ == "__main__":
    main()
