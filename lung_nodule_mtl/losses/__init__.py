"""Losses: :class:`MultiTaskLoss` (fixed task weights) and :class:`UncertaintyWeightedLoss` (Kendall et al. 2018)."""

from lung_nodule_mtl.losses.multitask import TASKS, LossKeys, MultiTaskLoss, UncertaintyWeightedLoss

__all__ = ["TASKS", "LossKeys", "MultiTaskLoss", "UncertaintyWeightedLoss"]
