"""Use a multi-task loss that returns a dict of terms inside MONAI's ``SupervisedTrainer``.

``SupervisedTrainer`` back-propagates ``loss_function(pred, targets).mean()``, so it needs a tensor;
:class:`~lung_nodule_mtl.losses.MultiTaskLoss` returns ``{"loss": total, <term>: value, ...}``.
:class:`TotalLoss` returns the total and keeps the running epoch means of every term, which
:meth:`TotalLoss.attach` publishes as ``engine.state.metrics["train_<term>"]`` at the end of each
epoch, where MONAI's ``StatsHandler`` / ``TensorBoardStatsHandler`` (and MLflow) log them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

__all__ = ["TotalLoss"]


class TotalLoss(nn.Module):
    """Wrap a loss returning a dict of scalars: ``forward`` returns ``out[total_key]``.

    The wrapped loss stays a sub-module, so ``TotalLoss(loss).parameters()`` holds its learnable
    weights (e.g. :class:`~lung_nodule_mtl.losses.UncertaintyWeightedLoss`'s log-variances), which
    the optimiser must include.

    Args:
        loss: module whose ``forward(pred, targets)`` returns a dict of scalar tensors.
        total_key: the key of the term to back-propagate.
    """

    def __init__(self, loss: nn.Module, total_key: str = "loss") -> None:
        super().__init__()
        self.loss = loss
        self.total_key = total_key
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0

    def forward(self, pred: Mapping[str, torch.Tensor], targets: Mapping[str, Any]) -> torch.Tensor:
        terms = self.loss(pred, targets)
        if not isinstance(terms, Mapping) or self.total_key not in terms:
            raise TypeError(
                f"the wrapped loss must return a dict with {self.total_key!r}, got "
                f"{sorted(terms) if isinstance(terms, Mapping) else type(terms).__name__}."
            )
        for name, value in terms.items():
            if name != self.total_key and isinstance(value, torch.Tensor) and value.numel() == 1:
                self._sums[name] += float(value.detach())
        self._count += 1
        return terms[self.total_key]

    def epoch_means(self) -> dict[str, float]:
        """Mean of each term over the iterations since the last reset."""
        return {name: total / max(self._count, 1) for name, total in self._sums.items()}

    def reset(self) -> None:
        self._sums.clear()
        self._count = 0

    def attach(self, engine: Engine, prefix: str = "train_") -> None:
        """Reset at each epoch start; publish ``<prefix><term>`` means in ``engine.state.metrics`` at its end."""

        def _publish(e: Engine) -> None:
            e.state.metrics.update({f"{prefix}{k}": v for k, v in self.epoch_means().items()})

        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.reset())
        engine.add_event_handler(Events.EPOCH_COMPLETED, _publish)
