"""The growth network in MONAI's engines: batches, the validation metric's input, and the evaluation.

:class:`GrowthPrepareBatch` gives MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator`` the baseline crop as the
input, the interval (and the baseline mask, for a network with ``use_mask_input``) as keyword arguments of the
network, and the follow-up crop and masks as the targets of :class:`~lung_nodule_mtl.losses.GrowthLoss` (keys
:class:`~lung_nodule_mtl.constants.GrowthBatchKeys`, the loss's defaults).
:func:`evaluate_growth` scores a trained network on a datalist split beside the two baselines of
:mod:`lung_nodule_mtl.metrics.growth` (no change; linear extrapolation of volume fitted on the training split).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lung_nodule_mtl.constants import GrowthBatchKeys, GrowthKeys, GrowthOutputKeys, Keys
from lung_nodule_mtl.engines.prepare_batch import MultiTaskPrepareBatch
from lung_nodule_mtl.metrics.growth import (
    fit_growth_rate,
    growth_scores,
    no_change_prediction,
    summarise_growth,
    volume_extrapolation_prediction,
)
from lung_nodule_mtl.utils.io import atomic_write_csv, atomic_write_json, json_safe

__all__ = ["GrowthPrepareBatch", "evaluate_growth", "followup_mask_output"]

logger = logging.getLogger(__name__)


class GrowthPrepareBatch(MultiTaskPrepareBatch):
    """``(baseline, targets, (), {"interval_days": ..., ["mask": baseline mask]})`` on ``device``.

    Args:
        mask_input: pass the baseline mask to the network (``NoduleGrowthNet(use_mask_input=True)``).
        image_key, mask_key, interval_key: batch keys of the baseline crop, its mask and the interval.
        target_keys: batch keys moved into the targets dict when present.
    """

    def __init__(
        self,
        mask_input: bool = False,
        image_key: str = GrowthBatchKeys.IMAGE,
        mask_key: str = GrowthBatchKeys.LABEL,
        interval_key: str = GrowthBatchKeys.INTERVAL,
        target_keys: Sequence[str] = (
            GrowthBatchKeys.LABEL.value,
            GrowthBatchKeys.FOLLOWUP_IMAGE.value,
            GrowthBatchKeys.FOLLOWUP_LABEL.value,
        ),
    ) -> None:
        super().__init__(image_key=image_key, target_keys=target_keys)
        self.mask_input = bool(mask_input)
        self.mask_key, self.interval_key = str(mask_key), str(interval_key)

    def __call__(  # type: ignore[override]
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple, dict[str, torch.Tensor]]:
        if self.interval_key not in batchdata:
            raise KeyError(f"growth batch has no {self.interval_key!r} (keys: {sorted(map(str, batchdata))}).")
        image, targets = super().__call__(batchdata, device, non_blocking, **kwargs)
        interval = torch.as_tensor(batchdata[self.interval_key], dtype=torch.float32, device=image.device)
        # keyword arguments of NoduleGrowthNet.forward(x, interval_days, mask)
        net_kwargs: dict[str, torch.Tensor] = {"interval_days": interval.reshape(-1)}
        if self.mask_input:
            net_kwargs["mask"] = batchdata[self.mask_key].to(device=device, non_blocking=non_blocking, **kwargs)
        return image, targets, (), net_kwargs


def followup_mask_output(output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(predicted follow-up mask, true follow-up mask)`` as 0/1 batches, for MONAI's ``MeanDice`` handler
    (``output_transform``) on an evaluator with ``decollate=False``."""
    pred, label = output["pred"], output["label"]  # monai.utils.CommonKeys.PRED, .LABEL
    return (pred[GrowthOutputKeys.MASK.value] > 0).float(), (label[GrowthBatchKeys.FOLLOWUP_LABEL.value] > 0.5).float()


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


@torch.inference_mode()
def evaluate_growth(
    network: nn.Module,
    dataloader: Iterable[Mapping[str, Any]],
    train_items: Sequence[Mapping[str, Any]],
    output_dir: str | os.PathLike[str],
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    device: str | torch.device = "cpu",
    prepare_batch: GrowthPrepareBatch | None = None,
) -> dict[str, Any]:
    """Score ``network`` on every pair of ``dataloader`` beside the no-change and volume-extrapolation baselines.

    Writes ``metrics.json`` (per method: mean, std and count of every score; the fitted growth rate) and
    ``per_nodule.csv`` (one row per pair and method) in ``output_dir``, atomically.

    Args:
        network: the trained growth network (put in eval mode).
        dataloader: batches of the growth transforms (``train=False``).
        train_items: the training split's datalist items (their volumes and intervals fit the extrapolation).
        output_dir: where the files go.
        spacing_mm: voxel size of the crops, for volumes.
        device: where the network runs.
        prepare_batch: how batches become network inputs (default :class:`GrowthPrepareBatch`).

    Returns:
        The metrics dict written to ``metrics.json``.
    """
    prepare = prepare_batch or GrowthPrepareBatch()
    rate = fit_growth_rate(
        {
            GrowthKeys.BASELINE_VOLUME.value: it[GrowthKeys.BASELINE_MASK_VOLUME.value],
            GrowthKeys.FOLLOWUP_VOLUME.value: it[GrowthKeys.FOLLOWUP_MASK_VOLUME.value],
            GrowthKeys.INTERVAL_DAYS.value: it[GrowthKeys.INTERVAL_DAYS.value],
        }
        for it in train_items
    )
    network.eval()
    rows: list[dict[str, Any]] = []
    for batch in dataloader:
        x, targets, args, kwargs = prepare(batch, device)
        out = network(x, *args, **kwargs)
        ids = batch.get(Keys.CASE_ID.value, [str(i) for i in range(x.shape[0])])
        for i in range(x.shape[0]):
            interval = float(kwargs["interval_days"][i])
            base_img, base_mask = _as_numpy(x[i]), _as_numpy(targets[GrowthBatchKeys.LABEL.value][i, 0])
            true_img = _as_numpy(targets[GrowthBatchKeys.FOLLOWUP_IMAGE.value][i])
            true_mask = _as_numpy(targets[GrowthBatchKeys.FOLLOWUP_LABEL.value][i, 0])
            pred_img, pred_mask = out[GrowthOutputKeys.IMAGE.value][i], out[GrowthOutputKeys.MASK.value][i, 0]
            predictions = {
                "model": (np.clip(_as_numpy(pred_img), 0.0, 1.0), _as_numpy(pred_mask) > 0),
                "no_change": no_change_prediction(base_img, base_mask),
                "volume_extrapolation": volume_extrapolation_prediction(base_img, base_mask, rate, interval),
            }
            for method, (img, mask) in predictions.items():
                scores = growth_scores(img, mask, true_img, true_mask, base_mask, interval, spacing_mm)
                row = {Keys.CASE_ID.value: str(ids[i]), "method": method, GrowthKeys.INTERVAL_DAYS.value: interval}
                rows.append({**row, **scores})
    methods = ("model", "no_change", "volume_extrapolation")
    metrics: dict[str, Any] = {
        "n_pairs": sum(r["method"] == "model" for r in rows),
        "extrapolation_rate_per_day": rate,
        **{m: summarise_growth([r for r in rows if r["method"] == m]) for m in methods},
    }
    out_dir = Path(output_dir)
    atomic_write_json(json_safe(metrics), out_dir / "metrics.json")
    if rows:
        atomic_write_csv(rows, out_dir / "per_nodule.csv")
    logger.info(
        "growth evaluation of %d pairs: follow-up Dice model %.3f, no change %.3f, volume extrapolation %.3f",
        metrics["n_pairs"],
        metrics["model"]["dice"]["mean"],
        metrics["no_change"]["dice"]["mean"],
        metrics["volume_extrapolation"]["dice"]["mean"],
    )
    return metrics
