"""Ignite validation metric for the multi-task model: mask Dice and malignancy AUC, and their mean.

Used as the ``key_val_metric`` of the bundle's ``SupervisedEvaluator``: model selection then
rewards both tasks. It reads ``engine.state.output`` as MONAI's evaluators leave it
(``{"pred": {name: tensor}, "label": {name: tensor}}``, see
:class:`~lung_nodule_mtl.engines.prepare_batch.MultiTaskPrepareBatch`), and works under
``torch.distributed`` (every rank's nodules are gathered before the scores are computed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from monai.data import MetaTensor
from monai.metrics import compute_dice
from monai.utils import evenly_divisible_all_gather

from lung_nodule_mtl.constants import Keys, OutputKeys
from lung_nodule_mtl.metrics.classification import binary_scores

__all__ = ["MultiTaskValidationMetric", "mask_probability", "multitask_output"]


def _plain(t: torch.Tensor) -> torch.Tensor:
    """A plain ``torch.Tensor`` on the CPU (MONAI ``MetaTensor`` meta cannot be gathered or sliced as a batch)."""
    return (t.as_tensor() if isinstance(t, MetaTensor) else t).detach().cpu()


def multitask_output(output: Mapping[str, Any]) -> tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]:
    """``(pred, targets)`` from an engine's output dict (the default ``output_transform``)."""
    return output["pred"], output["label"]


def mask_probability(logits: torch.Tensor) -> torch.Tensor:
    """Foreground probability ``(B, 1, ...)`` from mask logits: sigmoid of 1 channel, softmax of several."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)[:, 1:].sum(dim=1, keepdim=True)


class MultiTaskValidationMetric(Metric):
    """Mean Dice of the nodule masks, malignancy AUC on benign vs malignant nodules, and their mean.

    :meth:`compute` returns the key score ``(dice + auc) / 2`` (Dice alone while the AUC is
    undefined, e.g. a validation set with one class); on completion the components are also put
    in ``engine.state.metrics`` as ``<name>_dice`` and ``<name>_auc``.

    Args:
        threshold: probability above which a voxel is nodule.
        output_transform: maps ``engine.state.output`` to ``(pred dict, target dict)``.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        output_transform: Callable[[Any], Any] = multitask_output,
        device: str | torch.device = "cpu",
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}.")
        self.threshold = threshold
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._dice: list[torch.Tensor] = []
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def update(self, output: tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]) -> None:
        pred, target = output
        if OutputKeys.MASK in pred and Keys.LABEL in target:
            mask = (mask_probability(pred[OutputKeys.MASK].float()) > self.threshold).float()
            dice = compute_dice(mask, (target[Keys.LABEL] > 0.5).float(), include_background=True)[:, 0]
            self._dice.append(_plain(dice))
        if OutputKeys.MALIGNANCY in pred and Keys.MALIGNANCY in target:
            probs = _plain(torch.sigmoid(pred[OutputKeys.MALIGNANCY].float()).reshape(-1))
            labels = _plain(target[Keys.MALIGNANCY].float().reshape(-1))
            keep = (labels == 0) | (labels == 1)  # IGNORE_INDEX (missing) and a soft 0.5 (indeterminate) are left out
            self._probs.append(probs[keep])
            self._labels.append(labels[keep])

    def _gathered(self, parts: list[torch.Tensor]) -> torch.Tensor:
        local = torch.cat(parts) if parts else torch.zeros(0)
        if idist.get_world_size() > 1:  # ranks may hold different numbers of nodules (uneven shards)
            local = evenly_divisible_all_gather(local.to(idist.device()), concat=True)
        return torch.as_tensor(local).cpu()

    def components(self) -> dict[str, float]:
        """``{"dice", "auc"}`` over everything seen (all ranks); ``nan`` where undefined."""
        dice = self._gathered(self._dice)
        dice = dice[~torch.isnan(dice)]
        probs, labels = self._gathered(self._probs), self._gathered(self._labels)
        return {
            "dice": float(dice.mean()) if dice.numel() else math.nan,
            "auc": binary_scores(probs.numpy(), labels.numpy())["auc"] if labels.numel() else math.nan,
        }

    @staticmethod
    def _combine(parts: Mapping[str, float]) -> float:
        known = [v for v in parts.values() if not math.isnan(v)]
        return float(sum(known) / len(known)) if known else 0.0

    def compute(self) -> float:
        return self._combine(self.components())

    def completed(self, engine: Engine, name: str) -> None:
        parts = self.components()  # gathered once across ranks, then used for the key score and its parts
        engine.state.metrics[name] = self._combine(parts)
        for key, value in parts.items():
            engine.state.metrics[f"{name}_{key}"] = value
