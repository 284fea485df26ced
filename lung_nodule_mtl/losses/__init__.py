"""Losses: :class:`MultiTaskLoss` (fixed task weights) and :class:`UncertaintyWeightedLoss` (Kendall et al. 2018)."""

from lung_nodule_mtl.losses.growth import DEFAULT_GROWTH_WEIGHTS, GROWTH_TERMS, GrowthLoss, GrowthLossKeys
from lung_nodule_mtl.losses.multitask import (
    TASKS,
    LossKeys,
    MultiTaskLoss,
    UncertaintyWeightedLoss,
    ranked_probability_score,
)

__all__ = [
    "DEFAULT_GROWTH_WEIGHTS",
    "GROWTH_TERMS",
    "TASKS",
    "GrowthLoss",
    "GrowthLossKeys",
    "LossKeys",
    "MultiTaskLoss",
    "UncertaintyWeightedLoss",
    "ranked_probability_score",
]
