"""Per-nodule segmentation scores: Dice, IoU and the 95th-percentile Hausdorff distance (mm).

Thin wrappers of MONAI's :func:`~monai.metrics.compute_dice`, :func:`~monai.metrics.compute_iou`
and :func:`~monai.metrics.compute_hausdorff_distance` for one binary nodule mask, with the voxel
spacing passed through so HD95 is in millimetres on anisotropic grids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou

__all__ = ["segmentation_scores"]


def _as_batch(mask: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask.detach().cpu())
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3:
        raise ValueError(f"{name} must be a 3D mask (H, W, D) or (1, H, W, D), got shape {tuple(t.shape)}.")
    return (t > 0).float()[None, None]


def segmentation_scores(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    spacing: Sequence[float] | None = None,
) -> dict[str, float]:
    """Dice, IoU and HD95 of one predicted nodule mask against its reference.

    Args:
        pred: predicted mask ``(H, W, D)`` or ``(1, H, W, D)``; values ``> 0`` are nodule.
        target: reference mask on the same grid.
        spacing: voxel size in mm along ``(H, W, D)``; HD95 is in voxels when ``None``.

    Returns:
        ``{"dice", "iou", "hd95"}``. With an empty reference the scores are ``nan`` (the nodule is
        not scorable); an empty prediction of a non-empty reference scores Dice = IoU = 0 and
        HD95 = ``inf``.
    """
    p, t = _as_batch(pred, "pred"), _as_batch(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target must share one grid, got {tuple(p.shape[2:])} and {tuple(t.shape[2:])}.")
    if spacing is not None and len(spacing) != 3:
        raise ValueError(f"spacing must give 3 voxel sizes in mm, got {list(spacing)!r}.")
    if not t.any():
        return {"dice": math.nan, "iou": math.nan, "hd95": math.nan}
    dice = float(compute_dice(p, t, include_background=True)[0, 0])
    iou = float(compute_iou(p, t, include_background=True)[0, 0])
    if not p.any():
        return {"dice": 0.0, "iou": 0.0, "hd95": math.inf}
    hd95 = float(
        compute_hausdorff_distance(
            p, t, include_background=True, percentile=95, spacing=None if spacing is None else list(spacing)
        )[0, 0]
    )
    return {"dice": dice, "iou": iou, "hd95": hd95}
