"""What the pipeline writes, in one place.

* :mod:`~lung_nodule_mtl.reports.evaluation`: ``evaluating``'s ``metrics.json``, ``per_nodule.csv`` and reliability
  diagram (:class:`NoduleEvaluationWriter`), ``inferring``'s predictions (:class:`NodulePredictionWriter`), the
  heads' outputs as report values (:func:`head_predictions`).
* :mod:`~lung_nodule_mtl.reports.scan`: ``predict``'s per-case ``<case>.json``, its QC figures and the batch's
  ``summary.csv``.
* :mod:`~lung_nodule_mtl.reports.qc`: the per-nodule QC figure (axial, coronal, sagittal with the outline).
* :mod:`~lung_nodule_mtl.reports.crossval`: ``cross-validate``'s ``cv_summary.json``, ``cv_folds.csv``,
  ``cv_table.md`` and the pooled out-of-fold malignancy.
"""

from lung_nodule_mtl.reports.evaluation import (
    NoduleEvaluationWriter,
    NodulePredictionWriter,
    SplitPredictiond,
    head_predictions,
)

__all__ = ["NoduleEvaluationWriter", "NodulePredictionWriter", "SplitPredictiond", "head_predictions"]
