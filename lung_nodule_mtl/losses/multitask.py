"""Joint loss of the multi-task network: mask, malignancy, malignancy score, LIDC attributes, size priors.

``loss(pred, batch)`` pairs ``pred[name]`` (the network's dict, see :class:`~lung_nodule_mtl.networks.LNMSNet`) with
``batch[name]`` (labels encoded as in :mod:`lung_nodule_mtl.constants`) and returns a dict of tensors: the total
under :attr:`~lung_nodule_mtl.constants.LossKeys.TOTAL` (``"loss"``, the one to back-propagate) and every component,
for logging.

Two task-weighting strategies share one interface and are chosen by ``_target_`` in a bundle config:

* :class:`MultiTaskLoss`: fixed weights ``Σ_t w_t · L_t``;
* :class:`UncertaintyWeightedLoss`: learned homoscedastic-uncertainty weights (Kendall et al. 2018),
  ``Σ_t w_t · exp(-s_t) · L_t + s_t / 2`` with a learnable ``s_t = log σ_t²`` per task. It has parameters: move it
  to the device and give them to the optimiser, e.g. in a bundle config::

      "loss": {"_target_": "lung_nodule_mtl.losses.UncertaintyWeightedLoss", ...},
      "loss_fn": "$@loss.to(@device)",
      "optimizer": {"_target_": "torch.optim.AdamW",
                    "params": "$list(@network.parameters()) + list(@loss_fn.parameters())", "lr": 1e-4}

  (with :class:`MultiTaskLoss` ``loss.parameters()`` is empty, so the same optimiser line works for both).

References:
    Kendall, Gal, Cipolla. "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and Semantics."
    CVPR 2018.
    Seed 2 (``docs/SEEDS.md``): classification output as a prior on nodule size, with spatial regularisation.
    Seed 5: ``L = L_Dice + Σ_i CE(attribute_i) + L1(malignancy)``.
    LNMSNet (2026): joint segmentation and malignancy loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceFocalLoss
from torch import nn

from lung_nodule_mtl.constants import (
    ATTRIBUTE_CLASSES,
    ATTRIBUTE_NAMES,
    IGNORE_INDEX,
    ORDINAL_ATTRIBUTES,
    Keys,
    LossKeys,
    OutputKeys,
)

__all__ = ["TASKS", "LossKeys", "MultiTaskLoss", "UncertaintyWeightedLoss", "ranked_probability_score"]

_DS_PREFIX = f"{OutputKeys.MASK}_ds"  # LNMSNet's deep-supervision keys: mask_ds1, mask_ds2, ...

TASKS: tuple[str, ...] = (
    str(LossKeys.SEGMENTATION),
    str(LossKeys.MALIGNANCY),
    str(LossKeys.MALIGNANCY_SCORE),
    str(LossKeys.ATTRIBUTES),
    str(LossKeys.DIAMETER),
    str(LossKeys.DETECTION),
)
"""Tasks that get a (fixed or learned) weight; the size and spatial priors are regularisers with fixed weights."""

_SEG_LOSSES = {"dice_ce": DiceCELoss, "dice_focal": DiceFocalLoss}
_SCORE_MIN, _SCORE_MAX = 1.0, 5.0


def _bad(name: str, expected: str, got: object) -> ValueError:
    return ValueError(f"MultiTaskLoss: {name} must be {expected}, got {got!r}.")


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``values (B,)`` over ``valid (B,) bool``; 0 (not NaN) when nothing is valid. Also ``any(valid)``."""
    count = valid.sum()
    total = torch.where(valid, values, torch.zeros_like(values)).sum()
    return total / count.clamp_min(1), (count > 0).to(values.dtype)


def _foreground(logits: torch.Tensor) -> torch.Tensor:
    """Foreground probability ``(B, 1, ...)``: sigmoid for one channel, ``1 - p(background)`` for softmax classes."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return 1.0 - torch.softmax(logits, dim=1)[:, :1]


def ranked_probability_score(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Ranked probability score of ordinal predictions, per sample: ``Σ_k (F_k − 1[y ≤ k])² / (n − 1)`` over the
    first ``n − 1`` levels, ``F`` the cumulative softmax of ``logits`` ``(B, n)``, ``target`` ``(B,)`` 0-based
    levels. 0 for a certain right answer, 1 for a certain answer at the far end of the scale; the squared earth
    mover's distance of Hou, Yu, Samaras, "Squared Earth Mover's Distance-based Loss for Training Deep Neural
    Networks" (2016), normalised."""
    n = logits.shape[1]
    if n < 2:
        return logits.new_zeros(logits.shape[0])
    cdf = torch.cumsum(torch.softmax(logits.float(), dim=1), dim=1)[:, :-1]
    levels = torch.arange(n - 1, device=logits.device)
    truth = (target.unsqueeze(1) <= levels.unsqueeze(0)).to(cdf.dtype)
    return ((cdf - truth) ** 2).sum(dim=1) / (n - 1)


class MultiTaskLoss(nn.Module):
    """Multi-task loss with fixed task weights (LNMSNet 2026; seeds 2 and 5).

    Components (each a scalar tensor):

    * ``segmentation``: MONAI ``DiceCELoss`` or ``DiceFocalLoss`` of ``pred["mask"]`` against ``batch["label"]``
      ``(B, 1, H, W, D)``. Samples whose label holds a negative value (e.g. filled with ``IGNORE_INDEX``) have no
      mask and are left out. Deep-supervision outputs ``mask_ds1``, ``mask_ds2``, … (training mode) are added with
      MONAI's :class:`~monai.losses.DeepSupervisionLoss` level weights (``"exp"``: 1, 1/2, 1/4 …) normalised to sum 1;
      the label is resized to each output by nearest-neighbour interpolation.
    * ``malignancy``: BCE with logits of ``pred["malignancy"] (B, 1)`` against ``batch["malignancy"] (B,)`` in
      ``[0, 1]`` (a soft 0.5 for indeterminate nodules is a valid target); ``pos_weight`` optional.
    * ``malignancy_score``: L1 of ``pred["malignancy_score"] (B, 1)`` against the 1-5 rating (seed 5).
    * ``attributes`` (and ``attributes/<name>``): cross-entropy of each attribute's logits ``(B, n)`` against its
      0-based class ``(B,)`` int64; ``attributes`` is the mean over the attributes with at least one label.
    * ``diameter_mm``: L1 of log diameters, when the network has a ``diameter_mm`` head.
    * ``nodule``: BCE with logits of the detection head ``pred["nodule"] (B, 1)`` against ``batch["nodule"]``
      (1 a nodule at the window's centre, 0 a negative window from a whole scan), when the network has one.
    * ``size_prior`` and ``spatial_prior`` (seed 2), off by default — see ``size_prior_weight`` and
      ``spatial_prior_weight``.

    **Missing labels**: a label equal to ``IGNORE_INDEX`` (or NaN, or outside the task's range: malignancy outside
    ``[0, 1]``, score outside ``[1, 5]``, attribute class outside ``0..n-1``, diameter ``<= 0``) is masked out per
    sample; a label key absent from the batch, or an output absent from ``pred``, is a task with no labels. A task
    with no labels in the batch contributes exactly zero (not NaN) and is left out of the uncertainty terms.

    **Size prior** (seed 2): for each sample with an expected diameter ``d`` — the labelled ``batch["diameter_mm"]``
    when present, otherwise (``use_predicted_diameter``) the network's own ``diameter_mm`` output, detached — the
    predicted volume ``V = Σ p · voxel volume`` (``p`` the foreground probability) is tied to a sphere's
    ``V* = π d³ / 6``: ``max(0, |log V − log V*| − log size_tolerance)``, averaged over those samples.
    **Spatial regularisation**: patches are nodule-centred crops, so foreground probability farther than
    ``r = spatial_radius_factor · d / 2`` (or ``spatial_radius_mm`` when ``d`` is unknown) from the patch centre is
    penalised by ``p · (dist − r) / r``, averaged over the voxels beyond ``r``. Distances are in mm from
    ``spacing_mm``. Both act on the main mask only and are fixed-weight regularisers.

    Args:
        seg_loss: ``"dice_ce"`` (MONAI ``DiceCELoss``) or ``"dice_focal"`` (``DiceFocalLoss``).
        seg_loss_kwargs: arguments of the MONAI loss; default ``{"sigmoid": True}`` for a 1-channel mask
            (use ``{"softmax": True, "to_onehot_y": True}`` for ``out_channels >= 2``).
        pos_weight: positive-class weight of the malignancy BCE (``n_benign / n_malignant``), or ``None``.
        weights: fixed task weights ``{task: weight}`` for tasks in :data:`TASKS` (missing tasks: 1.0).
        deep_supervision_weight_mode: MONAI ``DeepSupervisionLoss`` ``weight_mode`` (``"exp"``, ``"same"``, ``"two"``).
        size_prior_weight: weight of the size prior (0 = off).
        spatial_prior_weight: weight of the spatial regularisation (0 = off).
        spacing_mm: voxel size of the training patches in mm, ``(H, W, D)`` order.
        size_tolerance: volume ratio tolerated without penalty by the size prior (``>= 1``).
        spatial_radius_factor: the spatial penalty starts at this multiple of the expected radius (``> 0``).
        spatial_radius_mm: radius used when a sample has no expected diameter (``None``: skip such samples).
        use_predicted_diameter: fall back on the network's ``diameter_mm`` output for the priors.
        attribute_class_weights: per attribute, one weight per class (0-based, as the logits) for its cross-entropy,
            e.g. inverse class frequencies (:func:`lung_nodule_mtl.data.datalist.attribute_class_weights`), so a
            head cannot win by always answering the majority rating; the weighted loss is normalised by the
            weights of the valid samples (as ``torch.nn.CrossEntropyLoss``). ``None``: unweighted.
        attribute_ordinal_weight: weight of an ordinal term added to the cross-entropy of each attribute of
            ``ordinal_attributes``: the ranked probability score (the squared earth mover's distance between the
            predicted and the true rating's cumulative distributions, Hou et al. 2016, divided by ``n - 1``, in
            ``[0, 1]``), so that a rating two levels off costs more than one level off, which the cross-entropy
            does not see. The heads keep their ``n`` logits (argmax and probabilities as before). 0: plain
            cross-entropy.
        ordinal_attributes: the attributes the ordinal term applies to (default: the six graded ones,
            :data:`~lung_nodule_mtl.constants.ORDINAL_ATTRIBUTES`; internal structure and calcification name kinds).

    Raises:
        ValueError: for an argument outside its domain (named in the message).
    """

    def __init__(
        self,
        seg_loss: str = "dice_ce",
        seg_loss_kwargs: Mapping[str, Any] | None = None,
        pos_weight: float | None = None,
        weights: Mapping[str, float] | None = None,
        deep_supervision_weight_mode: str = "exp",
        size_prior_weight: float = 0.0,
        spatial_prior_weight: float = 0.0,
        spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
        size_tolerance: float = 2.0,
        spatial_radius_factor: float = 1.5,
        spatial_radius_mm: float | None = None,
        use_predicted_diameter: bool = True,
        attribute_class_weights: Mapping[str, Sequence[float]] | None = None,
        attribute_ordinal_weight: float = 0.0,
        ordinal_attributes: Sequence[str] = ORDINAL_ATTRIBUTES,
    ) -> None:
        super().__init__()
        if seg_loss not in _SEG_LOSSES:
            raise _bad("seg_loss", f"one of {sorted(_SEG_LOSSES)}", seg_loss)
        kwargs = {"sigmoid": True} if seg_loss_kwargs is None else dict(seg_loss_kwargs)
        try:
            self.seg_loss = _SEG_LOSSES[seg_loss](**kwargs)
        except (TypeError, ValueError) as e:
            raise _bad(
                "seg_loss_kwargs", f"arguments of {_SEG_LOSSES[seg_loss].__name__} ({e})", seg_loss_kwargs
            ) from e
        if deep_supervision_weight_mode not in ("exp", "same", "two"):
            raise _bad("deep_supervision_weight_mode", "'exp', 'same' or 'two'", deep_supervision_weight_mode)
        self.ds_loss = DeepSupervisionLoss(self.seg_loss, weight_mode=deep_supervision_weight_mode)
        if pos_weight is not None and (not isinstance(pos_weight, (int, float)) or pos_weight <= 0):
            raise _bad("pos_weight", "None or a positive number", pos_weight)
        self.pos_weight = None if pos_weight is None else float(pos_weight)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(TASKS))
        if unknown:
            raise _bad("weights", f"a mapping with keys among {list(TASKS)}", weights)
        for k, v in weights.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
                raise _bad(f"weights[{k!r}]", "a non-negative number", v)
        self.weights: dict[str, float] = {t: float(weights.get(t, 1.0)) for t in TASKS}
        for name, value in (("size_prior_weight", size_prior_weight), ("spatial_prior_weight", spatial_prior_weight)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise _bad(name, "a non-negative number", value)
        if len(spacing_mm) != 3 or not all(isinstance(s, (int, float)) and s > 0 for s in spacing_mm):
            raise _bad("spacing_mm", "3 positive voxel sizes in mm", spacing_mm)
        if not isinstance(size_tolerance, (int, float)) or not size_tolerance >= 1:
            raise _bad("size_tolerance", "a volume ratio >= 1", size_tolerance)
        if not isinstance(spatial_radius_factor, (int, float)) or not spatial_radius_factor > 0:
            raise _bad("spatial_radius_factor", "a positive number", spatial_radius_factor)
        if spatial_radius_mm is not None and (
            not isinstance(spatial_radius_mm, (int, float)) or spatial_radius_mm <= 0
        ):
            raise _bad("spatial_radius_mm", "None or a positive radius in mm", spatial_radius_mm)
        self.size_prior_weight = float(size_prior_weight)
        self.spatial_prior_weight = float(spatial_prior_weight)
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.size_tolerance = float(size_tolerance)
        self.spatial_radius_factor = float(spatial_radius_factor)
        self.spatial_radius_mm = None if spatial_radius_mm is None else float(spatial_radius_mm)
        self.use_predicted_diameter = bool(use_predicted_diameter)
        self.attribute_class_weights: dict[str, torch.Tensor] = {}
        for name, w in (attribute_class_weights or {}).items():
            if name not in ATTRIBUTE_CLASSES:
                raise _bad("attribute_class_weights", f"a mapping with keys among {list(ATTRIBUTE_CLASSES)}", name)
            values = [float(v) for v in w]
            if len(values) != ATTRIBUTE_CLASSES[name] or not all(v >= 0 and math.isfinite(v) for v in values):
                raise _bad(
                    f"attribute_class_weights[{name!r}]", f"{ATTRIBUTE_CLASSES[name]} non-negative weights", list(w)
                )
            self.attribute_class_weights[name] = torch.tensor(values, dtype=torch.float32)
        if (
            not isinstance(attribute_ordinal_weight, (int, float))
            or isinstance(attribute_ordinal_weight, bool)
            or not attribute_ordinal_weight >= 0
        ):
            raise _bad("attribute_ordinal_weight", "a non-negative number", attribute_ordinal_weight)
        self.attribute_ordinal_weight = float(attribute_ordinal_weight)
        if isinstance(ordinal_attributes, str) or not set(ordinal_attributes) <= set(ATTRIBUTE_CLASSES):
            raise _bad("ordinal_attributes", f"a list of names among {list(ATTRIBUTE_CLASSES)}", ordinal_attributes)
        self.ordinal_attributes = frozenset(str(a) for a in ordinal_attributes)

    # ------------------------------------------------------------------ components
    def segmentation_loss(
        self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Dice + CE/focal over the samples that have a mask, with deep supervision; ``None`` if not applicable."""
        mask_key, label_key = str(OutputKeys.MASK), str(Keys.LABEL)
        if mask_key not in pred:
            return None
        logits = pred[mask_key]
        if label_key not in batch or batch[label_key] is None:
            return logits.sum() * 0.0, logits.new_zeros(())
        label = torch.as_tensor(batch[label_key], device=logits.device)
        if label.dim() == logits.dim() - 1:
            label = label.unsqueeze(1)
        if label.shape[0] != logits.shape[0] or label.shape[2:] != logits.shape[2:]:
            raise ValueError(
                f"MultiTaskLoss: batch[{label_key!r}] must be (B, 1, H, W, D) matching the mask logits "
                f"{list(logits.shape)}, got {list(label.shape)}."
            )
        label = label.float()
        valid = label.flatten(1).amin(dim=1) >= 0  # (B,) a sample with a negative (ignored) mask label is skipped
        ds_keys = sorted(
            (k for k in pred if k.startswith(_DS_PREFIX) and k[len(_DS_PREFIX) :].isdigit()),
            key=lambda k: int(k[len(_DS_PREFIX) :]),
        )
        outputs = [logits] + [pred[k] for k in ds_keys]
        if not bool(valid.any()):
            return torch.stack([o.sum() for o in outputs]).sum() * 0.0, logits.new_zeros(())
        if not bool(valid.all()):
            outputs = [o[valid] for o in outputs]
            label = label[valid]
        level_weights = self.ds_loss.get_weights(len(outputs))
        norm = sum(level_weights)
        loss = torch.stack(
            [w / norm * self.ds_loss.get_loss(o.float(), label) for w, o in zip(level_weights, outputs, strict=True)]
        ).sum()
        return loss, logits.new_ones(())

    def malignancy_loss(
        self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """BCE with logits over samples whose label is in ``[0, 1]``."""
        key = str(Keys.MALIGNANCY)
        if key not in pred:
            return None
        logit = pred[key].reshape(-1).float()
        y = self._label(batch, key, logit)
        valid = (y >= 0) & (y <= 1)
        target = torch.where(valid, y, torch.zeros_like(y))
        pw = None if self.pos_weight is None else logit.new_tensor([self.pos_weight])
        per = F.binary_cross_entropy_with_logits(logit, target, pos_weight=pw, reduction="none")
        return _masked_mean(per, valid)

    def detection_loss(
        self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """BCE with logits of the detection head over samples whose label is 0 or 1."""
        key = str(Keys.NODULE)
        if key not in pred:
            return None
        logit = pred[key].reshape(-1).float()
        y = self._label(batch, key, logit)
        valid = (y == 0) | (y == 1)
        per = F.binary_cross_entropy_with_logits(logit, torch.where(valid, y, torch.zeros_like(y)), reduction="none")
        return _masked_mean(per, valid)

    def score_loss(
        self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """L1 on the 1-5 malignancy rating over samples whose label is in ``[1, 5]``."""
        key = str(Keys.MALIGNANCY_SCORE)
        if key not in pred:
            return None
        out = pred[key].reshape(-1).float()
        y = self._label(batch, key, out)
        valid = (y >= _SCORE_MIN) & (y <= _SCORE_MAX)
        per = (out - torch.where(valid, y, out.detach())).abs()
        return _masked_mean(per, valid)

    def attribute_losses(self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Cross-entropy (plus the ordinal term, see ``attribute_ordinal_weight``) of each attribute present in
        ``pred``; ``{name: loss}`` and ``{name + "/valid": flag}``."""
        out: dict[str, torch.Tensor] = {}
        for name in ATTRIBUTE_NAMES:
            if name not in pred:
                continue
            logits = pred[name].float()
            n = ATTRIBUTE_CLASSES[name]
            y = self._label(batch, name, logits[:, 0], dtype=torch.long, fill=IGNORE_INDEX)
            valid = (y >= 0) & (y < n)
            target = torch.where(valid, y, torch.zeros_like(y))
            per = F.cross_entropy(logits, target, reduction="none")
            if self.attribute_ordinal_weight > 0 and name in self.ordinal_attributes:
                per = per + self.attribute_ordinal_weight * ranked_probability_score(logits, target)
            weight = self.attribute_class_weights.get(name)
            if weight is None:
                out[name], out[name + "/valid"] = _masked_mean(per, valid)
            else:
                w = torch.where(valid, weight.to(logits.device)[target], torch.zeros_like(per))
                out[name] = (w * per).sum() / w.sum().clamp_min(1e-12)
                out[name + "/valid"] = (valid.sum() > 0).to(per.dtype)
        return out

    def diameter_loss(
        self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """L1 of log diameters (scale-free) when the network predicts ``diameter_mm``."""
        key = str(Keys.DIAMETER)
        if key not in pred:
            return None
        d = pred[key].reshape(-1).float().clamp_min(1e-3)
        y = self._label(batch, key, d)
        valid = torch.isfinite(y) & (y > 0)
        per = (d.log() - torch.where(valid, y, d.detach()).log()).abs()
        return _masked_mean(per, valid)

    def expected_diameter(
        self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, Any], like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected diameter in mm per sample ``(B,)`` and its validity: the label, else the detached prediction."""
        key = str(Keys.DIAMETER)
        y = self._label(batch, key, like)
        valid = torch.isfinite(y) & (y > 0)
        if self.use_predicted_diameter and key in pred:
            d_pred = pred[key].reshape(-1).detach().float()
            y = torch.where(valid, y, d_pred)
            valid = torch.isfinite(y) & (y > 0)
        return torch.where(valid, y, torch.ones_like(y)), valid

    def size_priors(
        self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, Any]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Size prior and spatial regularisation (seed 2) for the enabled ones."""
        mask_key = str(OutputKeys.MASK)
        if mask_key not in pred or (self.size_prior_weight == 0 and self.spatial_prior_weight == 0):
            return {}
        p = _foreground(pred[mask_key].float())[:, 0]  # (B, H, W, D)
        d, has_d = self.expected_diameter(pred, batch, p.flatten(1)[:, 0])
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.size_prior_weight > 0:
            voxel_mm3 = math.prod(self.spacing_mm)
            v_pred = p.flatten(1).sum(dim=1) * voxel_mm3
            v_exp = math.pi / 6.0 * d**3
            per = F.relu(
                (torch.log(v_pred + voxel_mm3 * 1e-3) - torch.log(v_exp)).abs() - math.log(self.size_tolerance)
            )
            out[str(LossKeys.SIZE_PRIOR)] = _masked_mean(per, has_d)
        if self.spatial_prior_weight > 0:
            axes = [
                (torch.arange(n, device=p.device, dtype=p.dtype) - (n - 1) / 2.0) * s
                for n, s in zip(p.shape[1:], self.spacing_mm, strict=True)
            ]
            gh, gw, gd = torch.meshgrid(*axes, indexing="ij")
            dist = torch.sqrt(gh**2 + gw**2 + gd**2)[None]  # (1, H, W, D) mm from the patch centre
            radius = self.spatial_radius_factor * d / 2.0
            valid = has_d
            if self.spatial_radius_mm is not None:
                radius = torch.where(has_d, radius, torch.full_like(radius, self.spatial_radius_mm))
                valid = torch.ones_like(has_d)
            r = radius[:, None, None, None]
            excess = F.relu(dist - r) / r  # (B, H, W, D)
            outside = (excess > 0).to(p.dtype).flatten(1).sum(dim=1).clamp_min(1)
            per = (p * excess).flatten(1).sum(dim=1) / outside
            out[str(LossKeys.SPATIAL_PRIOR)] = _masked_mean(per, valid)
        return out

    @staticmethod
    def _label(
        batch: Mapping[str, Any],
        key: str,
        like: torch.Tensor,
        dtype: torch.dtype = torch.float32,
        fill: float = float(IGNORE_INDEX),
    ) -> torch.Tensor:
        """``batch[key]`` as a ``(B,)`` tensor on ``like``'s device; all-missing (``fill``) when absent or None."""
        value = batch.get(key)
        if value is None:
            return torch.full(like.shape[:1], fill, dtype=dtype, device=like.device)
        y = torch.as_tensor(value, device=like.device).reshape(-1).to(dtype)
        if y.shape[0] != like.shape[0]:
            raise ValueError(
                f"MultiTaskLoss: batch[{key!r}] must have one value per sample ({like.shape[0]}), got {y.shape[0]}."
            )
        return y

    # ------------------------------------------------------------------ combination
    def task_losses(
        self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, Any]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Unweighted task losses ``{task: scalar}`` and task validity ``{task: 0/1 scalar}`` (labels present)."""
        losses: dict[str, torch.Tensor] = {}
        valid: dict[str, torch.Tensor] = {}
        for task, fn in (
            (str(LossKeys.SEGMENTATION), self.segmentation_loss),
            (str(LossKeys.MALIGNANCY), self.malignancy_loss),
            (str(LossKeys.MALIGNANCY_SCORE), self.score_loss),
            (str(LossKeys.DIAMETER), self.diameter_loss),
            (str(LossKeys.DETECTION), self.detection_loss),
        ):
            result = fn(pred, batch)
            if result is not None:
                losses[task], valid[task] = result
        attrs = self.attribute_losses(pred, batch)
        if attrs:
            names = [k for k in attrs if not k.endswith("/valid")]
            flags = torch.stack([attrs[n + "/valid"] for n in names])
            values = torch.stack([attrs[n] for n in names])
            n_valid = flags.sum()
            task = str(LossKeys.ATTRIBUTES)
            losses[task] = (values * flags).sum() / n_valid.clamp_min(1)
            valid[task] = (n_valid > 0).to(values.dtype)
            for n in names:
                losses[f"{task}/{n}"] = attrs[n]
        return losses, valid

    def combine(self, losses: Mapping[str, torch.Tensor], valid: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Weighted total of the task losses (fixed weights here; overridden by :class:`UncertaintyWeightedLoss`)."""
        terms = [self.weights[t] * losses[t] for t in TASKS if t in losses]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def forward(self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Compute the loss.

        Args:
            pred: network outputs (``"mask"`` ``(B, C, H, W, D)`` logits, head outputs ``(B, n)``, optional
                ``"mask_ds<k>"``).
            batch: labels: ``"label"`` ``(B, 1, H, W, D)``, ``"malignancy"`` ``(B,)`` float, ``"malignancy_score"``
                ``(B,)`` float, attributes ``(B,)`` int64 0-based, optional ``"diameter_mm"`` ``(B,)`` in mm;
                ``IGNORE_INDEX`` where missing.

        Returns:
            ``{"loss": total, "segmentation": …, "malignancy": …, "malignancy_score": …, "attributes": …,
            "attributes/<name>": …, ["diameter_mm", "size_prior", "spatial_prior", "log_var/<task>"]}``, scalars;
            only ``"loss"`` carries the weights and the autograd graph, the components are detached (for logging;
            :meth:`task_losses` gives them with their graph).
        """
        if not pred:
            raise ValueError("MultiTaskLoss: pred is empty; expected the network's output dict.")
        device = next(iter(pred.values())).device
        losses, valid = self.task_losses(pred, batch)
        total = self.combine(losses, valid).to(device)
        priors = self.size_priors(pred, batch)
        for name, weight in (
            (str(LossKeys.SIZE_PRIOR), self.size_prior_weight),
            (str(LossKeys.SPATIAL_PRIOR), self.spatial_prior_weight),
        ):
            if name in priors:
                losses[name] = priors[name][0]
                total = total + weight * losses[name]
        result = {str(LossKeys.TOTAL): total}
        result.update({k: v.detach() for k, v in losses.items()})
        result.update(self.extra_logs())
        return result

    def extra_logs(self) -> dict[str, torch.Tensor]:
        """Extra values to log (none for fixed weights)."""
        return {}


class UncertaintyWeightedLoss(MultiTaskLoss):
    """:class:`MultiTaskLoss` with learned homoscedastic-uncertainty task weights (Kendall et al. 2018).

    ``total = Σ_t valid_t · (w_t · exp(-s_t) · L_t + s_t / 2)`` with one learnable ``s_t = log σ_t²`` per task of
    :data:`TASKS` (initialised to ``log_var_init``, so at 0 it starts equal to the fixed-weight loss up to a constant);
    ``valid_t`` is 0 for a task with no labels in the batch, so its ``s_t`` gets no gradient from that batch. This
    is Kendall et al.'s classification form ``L / σ² + log σ`` used for every task. The fixed ``weights`` still
    multiply the task losses; the size priors keep their fixed weights.

    The ``s_t`` are parameters of this module (``loss.log_vars``): include ``loss.parameters()`` in the optimiser
    and move the loss to the device (see the module docstring). They are logged as ``log_var/<task>``.

    Args:
        log_var_init: initial ``s_t`` for every task.
        **kwargs: as :class:`MultiTaskLoss`.
    """

    def __init__(self, log_var_init: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(log_var_init, (int, float)) or not math.isfinite(log_var_init):
            raise _bad("log_var_init", "a finite number", log_var_init)
        self.log_vars = nn.Parameter(torch.full((len(TASKS),), float(log_var_init)))

    def combine(self, losses: Mapping[str, torch.Tensor], valid: Mapping[str, torch.Tensor]) -> torch.Tensor:
        terms = []
        for i, t in enumerate(TASKS):
            if t in losses:
                s = self.log_vars[i]
                terms.append(valid[t] * (self.weights[t] * torch.exp(-s) * losses[t] + 0.5 * s))
        return torch.stack(terms).sum() if terms else self.log_vars.sum() * 0.0

    def extra_logs(self) -> dict[str, torch.Tensor]:
        return {f"log_var/{t}": self.log_vars[i].detach() for i, t in enumerate(TASKS)}
