"""Pieces that plug the multi-task model into MONAI's Ignite engines (used by the bundle configs)."""

from typing import Any

from lung_nodule_mtl.engines.budget import TimeBudget
from lung_nodule_mtl.engines.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    TrainingCheckpoint,
    latest_checkpoint,
)
from lung_nodule_mtl.engines.growth import GrowthPrepareBatch, evaluate_growth, followup_mask_output
from lung_nodule_mtl.engines.inferer import (
    AutocastInferer,
    CompiledNetwork,
    MirrorInferer,
    bf16_native,
    cpu_bf16_native,
    cuda_amp_dtype,
    place_network,
)
from lung_nodule_mtl.engines.loss import TotalLoss
from lung_nodule_mtl.engines.metrics import MultiTaskValidationMetric, mask_probability, multitask_output
from lung_nodule_mtl.engines.prepare_batch import DEFAULT_TARGET_KEYS, MultiTaskPrepareBatch

_MOVED_TO_REPORTS = ("NoduleEvaluationWriter", "NodulePredictionWriter", "SplitPredictiond", "head_predictions")
"""Names that lived here until 0.5 and moved to :mod:`lung_nodule_mtl.reports` (the one home of what the pipeline
writes); still reachable here, with a warning, for configs that name ``lung_nodule_mtl.engines.<name>``."""


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_REPORTS:
        import warnings

        from lung_nodule_mtl.reports import evaluation

        warnings.warn(
            f"lung_nodule_mtl.engines.{name} moved to lung_nodule_mtl.reports.{name}", FutureWarning, stacklevel=2
        )
        return getattr(evaluation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_TARGET_KEYS",
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "AutocastInferer",
    "CompiledNetwork",
    "GrowthPrepareBatch",
    "MirrorInferer",
    "MultiTaskPrepareBatch",
    "MultiTaskValidationMetric",
    "TimeBudget",
    "TotalLoss",
    "TrainingCheckpoint",
    "bf16_native",
    "cpu_bf16_native",
    "cuda_amp_dtype",
    "evaluate_growth",
    "followup_mask_output",
    "latest_checkpoint",
    "mask_probability",
    "multitask_output",
    "place_network",
]
