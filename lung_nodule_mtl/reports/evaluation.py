"""What the bundle's ``evaluating`` and ``inferring`` runs write: per-nodule tables and a summary.

* :class:`NoduleEvaluationWriter` (evaluation): for every nodule Dice, IoU and HD95 of the mask
  (on the resampled crop, mm), the malignancy probability against the LIDC label, the score, the
  attributes; at the end ``metrics.json`` (means ± std; malignancy AUC / accuracy / sensitivity /
  specificity on benign vs malignant with indeterminates reported apart and the diameter-only
  baseline beside, what the model adds to size: size-matched and size-stratified AUC, calibration;
  attribute accuracy), ``per_nodule.csv`` and ``reliability.png`` (the reliability diagram of the model
  and of a diameter-only logistic model).
* :class:`SplitPredictiond` + MONAI's ``Invertd`` + :class:`NodulePredictionWriter` (inference):
  the mask probability put back on the original image grid, thresholded and written as NIfTI per
  nodule, and ``predictions.csv`` / ``predictions.json`` with the malignancy probability, score and
  attributes per nodule.

Every file is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor, decollate_batch
from monai.transforms import MapTransform
from numpy.typing import NDArray

from lung_nodule_mtl import __version__
from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, IGNORE_INDEX, Keys, OutputKeys, malignancy_label_from_score
from lung_nodule_mtl.engines.metrics import mask_probability
from lung_nodule_mtl.io.geometry import equivalent_diameter_mm
from lung_nodule_mtl.metrics import attribute_accuracy, malignancy_report, segmentation_scores
from lung_nodule_mtl.metrics.calibration import write_reliability_diagram
from lung_nodule_mtl.metrics.measurements import (
    MEASURE_WINDOW_HU,
    MEASUREMENTS,
    hu_from_lung_window,
    nodule_measurements,
)
from lung_nodule_mtl.utils.io import atomic_write_csv, atomic_write_json, atomic_write_nifti, json_safe

__all__ = ["NoduleEvaluationWriter", "NodulePredictionWriter", "SplitPredictiond", "head_predictions"]


def _scalar(value: Any) -> float | None:
    """A Python float from a 0-d/1-element tensor or number; ``None`` for missing (IGNORE_INDEX, NaN, None)."""
    if value is None:
        return None
    v = float(torch.as_tensor(value).reshape(-1)[0])
    return None if (math.isnan(v) or v == IGNORE_INDEX) else v


def measure_crop(
    image: Any, mask: torch.Tensor | NDArray[Any], spacing_mm: Sequence[float] | float, channel: int = 0,
    window: Sequence[float] = MEASURE_WINDOW_HU,
) -> dict[str, float] | None:  # fmt: skip
    """The predicted ``mask``'s :func:`~lung_nodule_mtl.metrics.measurements.nodule_measurements` on the input
    crop's lung-window ``channel`` (``(C, H, W, D)``; ``window`` its HU range); ``None`` without an image or a
    mask voxel."""
    if image is None:
        return None
    data = torch.as_tensor(image)[channel].float().cpu().numpy()
    hu = hu_from_lung_window(data, window)
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return nodule_measurements(hu, m.reshape(hu.shape), spacing_mm)


def head_predictions(pred: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """One nodule's head outputs in readable units.

    Args:
        pred: one sample's network outputs (no batch dimension): malignancy logit ``(1,)``,
            score ``(1,)``, attribute logits ``(n_classes,)``.

    Returns:
        ``malignancy_prob`` in ``[0, 1]``, ``nodule_prob`` (detection head) in ``[0, 1]``, ``malignancy_score``
        on 1-5, and each attribute as its LIDC rating (1-based argmax); only the heads the network has.
    """
    out: dict[str, Any] = {}
    if OutputKeys.MALIGNANCY in pred:
        out["malignancy_prob"] = float(torch.sigmoid(pred[OutputKeys.MALIGNANCY].float()).reshape(-1)[0])
    if OutputKeys.NODULE in pred:
        out["nodule_prob"] = float(torch.sigmoid(pred[OutputKeys.NODULE].float()).reshape(-1)[0])
    if OutputKeys.MALIGNANCY_SCORE in pred:
        out["malignancy_score"] = float(pred[OutputKeys.MALIGNANCY_SCORE].float().reshape(-1)[0])
    for name in ATTRIBUTE_CLASSES:
        if name in pred:
            out[name] = int(torch.argmax(pred[name].float().reshape(-1))) + 1
    return out


def _batch_values(batch: Any, key: str, n: int) -> list[Any]:
    """Per-sample values of ``key`` from a collated batch dict or a decollated list of dicts (``None`` if absent)."""
    if isinstance(batch, Mapping):
        values = batch.get(key)
        return list(values) if isinstance(values, Sequence | torch.Tensor) and len(values) == n else [None] * n
    if isinstance(batch, Sequence) and len(batch) == n:
        return [item.get(key) if isinstance(item, Mapping) else None for item in batch]
    return [None] * n


def _mean_std(values: Sequence[float | None]) -> dict[str, float]:
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    return {
        "mean": float(finite.mean()) if finite.size else math.nan,
        "std": float(finite.std()) if finite.size else math.nan,
        "n": int(finite.size),
    }


class NoduleEvaluationWriter:
    """Collect per-nodule scores during an evaluator run and write ``metrics.json`` + ``per_nodule.csv``.

    Attach to a MONAI ``SupervisedEvaluator`` whose batches carry ``case_id`` and whose targets come
    from :class:`~lung_nodule_mtl.engines.prepare_batch.MultiTaskPrepareBatch` (``decollate=False``
    or ``True`` both work).

    Args:
        output_dir: folder for the two files (created if needed).
        spacing_mm: voxel size of the crops in mm (the transform chain's ``spacing_mm``), for HD95.
        threshold: probability above which a voxel is nodule and a nodule is called malignant.
        malignancy_fusion: a fusion file (:class:`~lung_nodule_mtl.inference.fusion.MalignancyFusion`): the
            malignancy probability is then the network's output fused with the predicted mask's size, as
            ``predict`` reports it; the network's own is kept as ``pred_malignancy_prob_network`` and scored
            apart (``malignancy_network``). ``None``: the network's output.
        measure_channel: the input channel holding the lung window, on which the predicted mask's
            :mod:`~lung_nodule_mtl.metrics.measurements` (``m_*`` columns) are taken; ``measure_window``: its
            ``(low, high)`` HU (the bundle's ``windows['lung']``).
    """

    def __init__(
        self,
        output_dir: str | Path,
        spacing_mm: Sequence[float] | float,
        threshold: float = 0.5,
        malignancy_fusion: str | Path | None = None,
        measure_channel: int = 0,
        measure_window: Sequence[float] = MEASURE_WINDOW_HU,
    ) -> None:
        from lung_nodule_mtl.inference.fusion import MalignancyFusion

        self.output_dir = Path(output_dir)
        self.fusion = MalignancyFusion.from_config(malignancy_fusion)
        spacing = [float(spacing_mm)] * 3 if isinstance(spacing_mm, int | float) else [float(s) for s in spacing_mm]
        if len(spacing) != 3 or not all(s > 0 for s in spacing):
            raise ValueError(f"spacing_mm must be one or 3 positive voxel sizes in mm, got {spacing_mm!r}.")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}.")
        self.spacing_mm = spacing
        self.threshold = threshold
        self.measure_channel = int(measure_channel)
        self.measure_window = (float(measure_window[0]), float(measure_window[1]))
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.rows = []

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        samples = output if isinstance(output, list) else decollate_batch(output)
        case_ids = _batch_values(engine.state.batch, Keys.CASE_ID, len(samples))
        patient_ids = _batch_values(engine.state.batch, Keys.PATIENT_ID, len(samples))
        images = _batch_values(engine.state.batch, Keys.IMAGE, len(samples))
        for i, sample in enumerate(samples):
            pred, target = sample["pred"], sample["label"]
            row: dict[str, Any] = {"case_id": case_ids[i], "patient_id": patient_ids[i]}
            pred_volume, measured = None, None
            if OutputKeys.MASK in pred:
                mask = mask_probability(pred[OutputKeys.MASK][None].float())[0] > self.threshold
                pred_volume = float(mask.sum()) * float(np.prod(self.spacing_mm))  # mm³
                if Keys.LABEL in target:
                    row.update(segmentation_scores(mask, target[Keys.LABEL], spacing=self.spacing_mm))
                measured = measure_crop(images[i], mask, self.spacing_mm, self.measure_channel, self.measure_window)
            row["diameter_mm"] = _scalar(target.get(Keys.DIAMETER))
            # the size predict reports: the equivalent diameter of the predicted mask
            pred_diameter = equivalent_diameter_mm(pred_volume) if pred_volume else None
            row["pred_diameter_mm"] = None if pred_diameter is None else round(pred_diameter, 3)
            heads = head_predictions(pred)
            if self.fusion is not None:
                told = measured
                if told is None and pred_diameter is not None:  # no input image: the size is all that is measured
                    told = {"log_diameter_mm": math.log(max(pred_diameter, 1.0))}
                heads = self.fusion.fuse_heads(heads, told)
            score = _scalar(target.get(Keys.MALIGNANCY_SCORE))
            label = _scalar(target.get(Keys.MALIGNANCY))
            # the rating tells indeterminate (3) apart from missing, which the encoded label cannot
            row["malignancy"] = malignancy_label_from_score(score) if score is not None else label
            row["malignancy_score"] = score
            for key, value in heads.items():
                row[f"pred_{key}"] = value
            for name in MEASUREMENTS:
                row[f"m_{name}"] = None if measured is None else measured[name]
            for name in ATTRIBUTE_CLASSES:
                value = _scalar(target.get(name))
                row[name] = None if value is None else int(value) + 1  # 0-based class → LIDC rating
            self.rows.append(row)

    def summary(self) -> dict[str, Any]:
        """The aggregated scores of the nodules collected so far."""
        rows = self.rows
        out: dict[str, Any] = {"n_nodules": len(rows), "model_version": __version__}
        if rows and "dice" in rows[0]:
            out["segmentation"] = {k: _mean_std([r.get(k) for r in rows]) for k in ("dice", "iou", "hd95")}
        # the reported probability (fused with the size where a fusion is given), and the network's own beside it
        reports = (("malignancy", "pred_malignancy_prob"), ("malignancy_network", "pred_malignancy_prob_network"))
        for key, column in reports:
            if rows and column in rows[0]:
                out[key] = malignancy_report(
                    [r[column] for r in rows],
                    [None if r["malignancy"] is None else int(r["malignancy"]) for r in rows],
                    [r["diameter_mm"] for r in rows],
                    threshold=self.threshold,
                )
        scored = [(r["pred_malignancy_score"], r["malignancy_score"]) for r in rows if "pred_malignancy_score" in r]
        scored = [(p, t) for p, t in scored if t is not None]
        if scored:
            out["malignancy_score_mae"] = float(np.mean([abs(p - t) for p, t in scored]))
        for key, suffix in (("attributes", ""), ("attributes_network", "_network")):
            predicted = {n: [r.get(f"pred_{n}{suffix}") for r in rows] for n in ATTRIBUTE_CLASSES
                         if f"pred_{n}{suffix}" in rows[0]}  # fmt: skip
            if predicted:
                out[key] = attribute_accuracy(predicted, {n: [r[n] for r in rows] for n in predicted})
        return out

    def _write(self, engine: Engine) -> None:
        summary = self.summary()
        atomic_write_json(json_safe(summary), self.output_dir / "metrics.json")
        atomic_write_csv(self.rows, self.output_dir / "per_nodule.csv")
        malignancy = summary.get("malignancy") or {}
        if malignancy.get("calibration", {}).get("n"):
            curves = {"model": malignancy["calibration"]}
            if "diameter_logistic" in malignancy:
                curves["diameter only (logistic, fitted here)"] = malignancy["diameter_logistic"]["calibration"]
            write_reliability_diagram(curves, self.output_dir / "reliability.png")


class SplitPredictiond(MapTransform):
    """Post-processing: replace the multi-task prediction dict by the mask probability and head values.

    After it, ``data[pred_key]`` is the foreground probability ``(1, H, W, D)`` (a ``MetaTensor``
    carrying the image's meta, so MONAI's ``Invertd`` can put it back on the original grid) and
    ``data[heads_key]`` the readable head outputs of :func:`head_predictions`.

    Args:
        keys: the prediction key (``"pred"``).
        heads_key: where to put the head outputs.
        image_key: key of the input image whose meta the mask inherits.
        malignancy_fusion: a fusion file (:class:`~lung_nodule_mtl.inference.fusion.MalignancyFusion`, the
            bundle's: the one beside the weights): the heads are then the fusion's, told the predicted mask's
            measurements on the crop (mask probability > ``threshold``), as ``evaluating`` and ``predict`` report
            them, with the network's own beside them (``<head>_network``); ``None``: the network's.
        threshold: mask probability above which a voxel is measured as nodule.
        measure_channel, measure_window: the crop's lung-window channel and its HU range.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable] = "pred",
        heads_key: str = "pred_heads",
        image_key: str = Keys.IMAGE,
        allow_missing_keys: bool = False,
        malignancy_fusion: str | Path | None = None,
        threshold: float = 0.5,
        measure_channel: int = 0,
        measure_window: Sequence[float] = MEASURE_WINDOW_HU,
    ) -> None:
        from lung_nodule_mtl.inference.fusion import MalignancyFusion

        super().__init__(keys, allow_missing_keys)
        self.heads_key = heads_key
        self.image_key = image_key
        self.fusion = MalignancyFusion.from_config(malignancy_fusion)
        self.threshold = float(threshold)
        self.measure_channel = int(measure_channel)
        self.measure_window = (float(measure_window[0]), float(measure_window[1]))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            if not isinstance(pred, Mapping):
                raise TypeError(f"{key!r} must be the network's dict of outputs, got {type(pred).__name__}.")
            heads = head_predictions(pred)
            measured = None
            if OutputKeys.MASK in pred:
                prob = mask_probability(pred[OutputKeys.MASK][None].float())[0]
                image = d.get(self.image_key)
                if self.fusion is not None:
                    spacing = image.pixdim.tolist() if isinstance(image, MetaTensor) else 1.0
                    measured = measure_crop(image, prob > self.threshold, spacing, self.measure_channel,
                                            self.measure_window)  # fmt: skip
                if isinstance(image, MetaTensor):
                    prob = MetaTensor(prob, affine=image.affine, meta=dict(image.meta))
                d[key] = prob
            d[self.heads_key] = heads if self.fusion is None else self.fusion.fuse_heads(heads, measured)
        return d


class NodulePredictionWriter:
    """Write each nodule's mask (on the input image's grid) and the table of head predictions.

    Attach to an evaluator whose post-processing is ``SplitPredictiond`` → ``Invertd`` →
    thresholding: for each decollated sample ``<case_id>_mask.nii.gz`` is written (uint8, the
    original image's affine) and, at the end, ``predictions.csv`` and ``predictions.json``.

    Args:
        output_dir: folder for the outputs.
        pred_key: key of the mask after inversion; ``heads_key``: key of the head values.
    """

    def __init__(self, output_dir: str | Path, pred_key: str = "pred", heads_key: str = "pred_heads") -> None:
        self.output_dir = Path(output_dir)
        self.pred_key = pred_key
        self.heads_key = heads_key
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:

        output = engine.state.output
        samples = output if isinstance(output, list) else decollate_batch(output)
        ids = {key: _batch_values(engine.state.batch, key, len(samples)) for key in (Keys.PATIENT_ID, Keys.NODULE_ID)}
        case_ids = _batch_values(engine.state.batch, Keys.CASE_ID, len(samples))
        for i, sample in enumerate(samples):
            case_id = str(case_ids[i]) if case_ids[i] is not None else f"case_{len(self.rows):05d}"
            row: dict[str, Any] = {"case_id": case_id}
            for key, values in ids.items():
                if values[i] is not None:
                    row[str(key)] = str(values[i])
            mask = sample.get(self.pred_key)
            if isinstance(mask, torch.Tensor):
                affine = mask.affine.cpu().numpy() if isinstance(mask, MetaTensor) else np.eye(4)
                path = self.output_dir / f"{case_id}_mask.nii.gz"
                array = (mask.detach().cpu().numpy()[0] > 0.5).astype(np.uint8)
                atomic_write_nifti(array, affine, path, dtype=np.uint8)
                row["mask"] = path.name
                row["mask_voxels"] = int(array.sum())
            row.update(sample.get(self.heads_key, {}))
            row["model_version"] = __version__
            self.rows.append(row)

    def _write(self, engine: Engine) -> None:
        atomic_write_csv(self.rows, self.output_dir / "predictions.csv")
        atomic_write_json(json_safe({"nodules": self.rows}), self.output_dir / "predictions.json")
