"""Evaluation: segmentation (Dice, IoU, HD95), malignancy (AUC, sensitivity, specificity, ...), attributes, FROC,
nodule growth (image and mask of the follow-up, volume, doubling time)."""

from lung_nodule_mtl.metrics.classification import (
    attribute_accuracy,
    binary_scores,
    malignancy_report,
    paired_auc_bootstrap,
    rank_auc,
)
from lung_nodule_mtl.metrics.froc import evaluate_froc_files, froc, match_candidates
from lung_nodule_mtl.metrics.growth import growth_scores, summarise_growth
from lung_nodule_mtl.metrics.segmentation import segmentation_scores

__all__ = [
    "attribute_accuracy",
    "binary_scores",
    "evaluate_froc_files",
    "froc",
    "growth_scores",
    "malignancy_report",
    "match_candidates",
    "paired_auc_bootstrap",
    "rank_auc",
    "segmentation_scores",
    "summarise_growth",
]
