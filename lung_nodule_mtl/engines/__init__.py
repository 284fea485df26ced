"""Pieces that plug the multi-task model into MONAI's Ignite engines (used by the bundle configs)."""

from lung_nodule_mtl.engines.budget import TimeBudget
from lung_nodule_mtl.engines.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    TrainingCheckpoint,
    latest_checkpoint,
)
from lung_nodule_mtl.engines.growth import GrowthPrepareBatch, evaluate_growth, followup_mask_output
from lung_nodule_mtl.engines.inferer import AutocastInferer, cpu_bf16_native
from lung_nodule_mtl.engines.loss import TotalLoss
from lung_nodule_mtl.engines.metrics import MultiTaskValidationMetric, mask_probability, multitask_output
from lung_nodule_mtl.engines.prepare_batch import DEFAULT_TARGET_KEYS, MultiTaskPrepareBatch
from lung_nodule_mtl.engines.report import (
    NoduleEvaluationWriter,
    NodulePredictionWriter,
    SplitPredictiond,
    head_predictions,
)

__all__ = [
    "DEFAULT_TARGET_KEYS",
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "AutocastInferer",
    "GrowthPrepareBatch",
    "MultiTaskPrepareBatch",
    "MultiTaskValidationMetric",
    "NoduleEvaluationWriter",
    "NodulePredictionWriter",
    "SplitPredictiond",
    "TimeBudget",
    "TotalLoss",
    "TrainingCheckpoint",
    "cpu_bf16_native",
    "evaluate_growth",
    "followup_mask_output",
    "head_predictions",
    "latest_checkpoint",
    "mask_probability",
    "multitask_output",
]
