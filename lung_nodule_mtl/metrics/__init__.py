"""Evaluation: segmentation (Dice, IoU, HD95), malignancy (AUC, accuracy, sensitivity, specificity), attributes."""

from lung_nodule_mtl.metrics.classification import attribute_accuracy, binary_scores, malignancy_report
from lung_nodule_mtl.metrics.segmentation import segmentation_scores

__all__ = ["attribute_accuracy", "binary_scores", "malignancy_report", "segmentation_scores"]
