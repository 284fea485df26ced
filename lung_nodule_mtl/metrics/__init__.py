"""Evaluation: segmentation (Dice, IoU, HD95), malignancy (AUC, sensitivity, specificity, ...), attributes, FROC."""

from lung_nodule_mtl.metrics.classification import attribute_accuracy, binary_scores, malignancy_report
from lung_nodule_mtl.metrics.froc import evaluate_froc_files, froc, match_candidates
from lung_nodule_mtl.metrics.segmentation import segmentation_scores

__all__ = [
    "attribute_accuracy",
    "binary_scores",
    "evaluate_froc_files",
    "froc",
    "malignancy_report",
    "match_candidates",
    "segmentation_scores",
]
