"""Nodule growth evaluation: how well a predicted follow-up crop and mask match the real follow-up.

Per nodule (:func:`growth_scores`): PSNR and SSIM over the whole crop and over the nodule region (the bounding
box of the baseline and follow-up masks, grown by ``margin`` voxels), Dice / sensitivity / PPV of the follow-up
mask, the relative volume error, and the volume-doubling time implied by the predicted volume against the true
one. Image scores use MONAI's :class:`~monai.metrics.PSNRMetric` and :class:`~monai.metrics.SSIMMetric` on
intensities in ``[0, data_range]`` (the windowed channels the network sees).

Two baselines every model must beat (:func:`no_change_prediction`, :func:`volume_extrapolation_prediction`):

* **no change**: the follow-up is the baseline (image and mask);
* **linear extrapolation of volume**: the baseline mask scaled about its centroid to exactly the volume
  ``V0 * (1 + rate * interval_days)`` (the most central voxels of the scaled mask), where ``rate`` is the
  median relative growth rate per day of the *training* pairs (:func:`fit_growth_rate`); the image is the
  baseline's (a volume model says nothing about texture).

The volume-doubling time is ``VDT = interval * ln 2 / ln(V1 / V0)`` (days; ``inf`` for no change, negative for
shrinking). Errors in VDT are compared as growth rates ``ln(V1 / V0) / interval`` (per year), which stay finite
for stable nodules.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from types import EllipsisType
from typing import Any

import numpy as np
import torch
from monai.metrics import IterationMetric, PSNRMetric, SSIMMetric
from numpy.typing import NDArray
from scipy import ndimage

__all__ = [
    "doubling_time_days",
    "fit_growth_rate",
    "growth_rate_per_year",
    "growth_scores",
    "no_change_prediction",
    "summarise_growth",
    "volume_extrapolation_prediction",
]

_MIN_SSIM_SIZE = 7
"""SSIM's Gaussian window (MONAI default 11, here 7) needs a region at least this large per axis."""


def doubling_time_days(v0: float, v1: float, interval_days: float) -> float:
    """Volume-doubling time (days) from two volumes ``interval_days`` apart; ``inf`` if unchanged."""
    if v0 <= 0 or v1 <= 0 or interval_days <= 0:
        return math.nan
    ratio = math.log(v1 / v0)
    return math.inf if ratio == 0 else interval_days * math.log(2.0) / ratio


def growth_rate_per_year(v0: float, v1: float, interval_days: float) -> float:
    """Exponential growth rate ``ln(V1 / V0)`` per year (0 when stable, negative when shrinking)."""
    if v0 <= 0 or v1 <= 0 or interval_days <= 0:
        return math.nan
    return math.log(v1 / v0) * 365.25 / interval_days


def fit_growth_rate(pairs: Iterable[Mapping[str, Any]]) -> float:
    """Median relative volume growth per day, ``(V1 / V0 - 1) / interval``, of training pairs (keys
    ``baseline_volume_mm3``, ``followup_volume_mm3``, ``interval_days``)."""
    rates = [
        (float(p["followup_volume_mm3"]) / float(p["baseline_volume_mm3"]) - 1.0) / float(p["interval_days"])
        for p in pairs
        if float(p["baseline_volume_mm3"]) > 0 and float(p["interval_days"]) > 0
    ]
    if not rates:
        raise ValueError("fit_growth_rate: no pair with a positive baseline volume and interval.")
    return float(np.median(rates))


def no_change_prediction(baseline: NDArray, baseline_mask: NDArray) -> tuple[NDArray, NDArray]:
    """The no-change baseline: the follow-up is the baseline."""
    return np.asarray(baseline), np.asarray(baseline_mask) > 0


def volume_extrapolation_prediction(
    baseline: NDArray, baseline_mask: NDArray, rate_per_day: float, interval_days: float
) -> tuple[NDArray, NDArray]:
    """The linear-extrapolation baseline: the baseline mask scaled about its centroid to ``V0 (1 + rate t)``."""
    mask = np.asarray(baseline_mask) > 0
    if not mask.any():
        return np.asarray(baseline), mask
    factor = max(1.0 + float(rate_per_day) * float(interval_days), 1e-3)
    scale = factor ** (1.0 / 3.0)  # linear size
    centre = np.argwhere(mask).mean(axis=0)
    # output voxel p samples the baseline mask at centre + (p - centre) / scale
    matrix = np.eye(3) / scale
    offset = centre - matrix @ centre
    scaled = ndimage.affine_transform(mask.astype(np.float32), matrix, offset=offset, order=1, mode="constant")
    # the k most inside voxels, k = the extrapolated voxel count (thresholding at 0.5 loses the surface)
    k = min(max(round(factor * int(mask.sum())), 1), scaled.size)
    out = np.zeros(scaled.size, dtype=bool)
    out[np.argsort(-scaled.ravel(), kind="stable")[:k]] = True
    return np.asarray(baseline), out.reshape(scaled.shape)


def _region(masks: Sequence[NDArray], shape: Sequence[int], margin: int) -> tuple[slice, ...]:
    union = np.zeros(shape, dtype=bool)
    for m in masks:
        union |= np.asarray(m) > 0
    if not union.any():
        return tuple(slice(0, n) for n in shape)
    out = []
    for axis, n in enumerate(shape):
        hits = np.flatnonzero(union.any(axis=tuple(a for a in range(len(shape)) if a != axis)))
        lo, hi = int(hits[0]) - margin, int(hits[-1]) + 1 + margin
        if hi - lo < _MIN_SSIM_SIZE:  # grow to the SSIM window, centred
            extra = _MIN_SSIM_SIZE - (hi - lo)
            lo, hi = lo - extra // 2, hi + extra - extra // 2
        lo, hi = max(lo, 0), min(hi, n)
        out.append(slice(lo, hi))
    return tuple(out)


def _metric_mean(metric: IterationMetric, pred: torch.Tensor, target: torch.Tensor) -> float:
    """The mean of a MONAI metric over a batch-first tensor pair (a tensor in gives a tensor out)."""
    value = metric(pred, target)
    if not isinstance(value, torch.Tensor):  # only list inputs give a list
        raise TypeError(f"{type(metric).__name__} gave {type(value).__name__}, expected a tensor.")
    return float(value.mean())


def _image_scores(pred: NDArray, target: NDArray, data_range: float) -> tuple[float, float]:
    p = torch.as_tensor(np.asarray(pred, dtype=np.float32))
    t = torch.as_tensor(np.asarray(target, dtype=np.float32))
    if p.ndim == 3:
        p, t = p[None], t[None]
    p, t = p[None], t[None]  # (1, C, ...)
    psnr = _metric_mean(PSNRMetric(max_val=data_range), p, t)
    if min(p.shape[2:]) < _MIN_SSIM_SIZE:
        return psnr, math.nan
    ssim = _metric_mean(SSIMMetric(spatial_dims=3, data_range=data_range, win_size=_MIN_SSIM_SIZE), p, t)
    return psnr, ssim


def growth_scores(
    pred_image: NDArray,
    pred_mask: NDArray,
    target_image: NDArray,
    target_mask: NDArray,
    baseline_mask: NDArray,
    interval_days: float,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    data_range: float = 1.0,
    margin: int = 4,
) -> dict[str, float]:
    """Scores of one predicted follow-up against the real one.

    Args:
        pred_image, target_image: ``(C, D, H, W)`` or ``(D, H, W)`` intensities in ``[0, data_range]``.
        pred_mask, target_mask, baseline_mask: ``(D, H, W)`` masks (values > 0 or >= 0.5 for probabilities).
        interval_days: baseline → follow-up interval.
        spacing_mm: voxel size, for the volumes.
        data_range: intensity range of the images.
        margin: voxels added around the masks' bounding box for the nodule region.

    Returns:
        ``psnr``, ``ssim`` (whole crop), ``psnr_nodule``, ``ssim_nodule``, ``dice``, ``sensitivity``, ``ppv``,
        ``volume_mm3`` / ``true_volume_mm3`` / ``baseline_volume_mm3``, ``relative_volume_error``,
        ``growth_rate_per_year`` / ``true_growth_rate_per_year`` and ``vdt_days`` / ``true_vdt_days``.
    """
    pred_m = np.asarray(pred_mask) >= 0.5
    true_m = np.asarray(target_mask) >= 0.5
    base_m = np.asarray(baseline_mask) >= 0.5
    if not pred_m.shape == true_m.shape == base_m.shape:
        raise ValueError(f"masks differ in shape: {pred_m.shape}, {true_m.shape}, {base_m.shape}.")
    voxel = float(np.prod(spacing_mm))
    psnr, ssim = _image_scores(pred_image, target_image, data_range)
    region = _region([true_m, base_m], true_m.shape, margin)
    img_region: tuple[EllipsisType | slice, ...] = (Ellipsis, *region)
    psnr_n, ssim_n = _image_scores(np.asarray(pred_image)[img_region], np.asarray(target_image)[img_region], data_range)
    tp = float(np.logical_and(pred_m, true_m).sum())
    n_pred, n_true = float(pred_m.sum()), float(true_m.sum())
    v_pred, v_true, v0 = n_pred * voxel, n_true * voxel, float(base_m.sum()) * voxel
    return {
        "psnr": psnr,
        "ssim": ssim,
        "psnr_nodule": psnr_n,
        "ssim_nodule": ssim_n,
        "dice": 2.0 * tp / (n_pred + n_true) if n_pred + n_true else 1.0,
        "sensitivity": tp / n_true if n_true else math.nan,
        "ppv": tp / n_pred if n_pred else math.nan,
        "volume_mm3": v_pred,
        "true_volume_mm3": v_true,
        "baseline_volume_mm3": v0,
        "relative_volume_error": (v_pred - v_true) / v_true if v_true else math.nan,
        "growth_rate_per_year": growth_rate_per_year(v0, v_pred, interval_days),
        "true_growth_rate_per_year": growth_rate_per_year(v0, v_true, interval_days),
        "vdt_days": doubling_time_days(v0, v_pred, interval_days),
        "true_vdt_days": doubling_time_days(v0, v_true, interval_days),
    }


def summarise_growth(rows: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and count of every finite score over nodules, plus ``abs_relative_volume_error``
    and the absolute growth-rate error (per year)."""
    keys = ["psnr", "ssim", "psnr_nodule", "ssim_nodule", "dice", "sensitivity", "ppv", "relative_volume_error"]
    derived = {
        "abs_relative_volume_error": [abs(r["relative_volume_error"]) for r in rows],
        "abs_growth_rate_error_per_year": [
            abs(r["growth_rate_per_year"] - r["true_growth_rate_per_year"]) for r in rows
        ],
    }
    out: dict[str, dict[str, float]] = {}
    for key, values in [*((k, [r[k] for r in rows]) for k in keys), *derived.items()]:
        v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
        out[key] = {
            "mean": float(v.mean()) if v.size else math.nan,
            "std": float(v.std()) if v.size else math.nan,
            "n": int(v.size),
        }
    return out
