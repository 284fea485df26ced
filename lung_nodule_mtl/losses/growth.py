"""Loss of the nodule growth network: follow-up image similarity, follow-up mask, field smoothness, volume.

``loss(pred, batch)`` pairs the output dict of :class:`~lung_nodule_mtl.networks.NoduleGrowthNet` (keys
:class:`~lung_nodule_mtl.constants.GrowthOutputKeys`) with a batch holding the follow-up crop and mask (keys
:class:`~lung_nodule_mtl.constants.GrowthBatchKeys`, the names that
:func:`~lung_nodule_mtl.transforms.get_growth_transforms` and :class:`~lung_nodule_mtl.engines.GrowthPrepareBatch`
produce) and, like :class:`~lung_nodule_mtl.losses.MultiTaskLoss`, returns a dict of scalar tensors: the weighted
total under :attr:`~lung_nodule_mtl.constants.GrowthLossKeys.TOTAL` (``"loss"``, the one to back-propagate, e.g.
through :class:`~lung_nodule_mtl.engines.loss.TotalLoss`) and every term, detached, for logging.

References:
    MT-NoGNet (``docs/SEEDS.md``, system 4): follow-up image (PSNR, SSIM) and follow-up mask (Dice).
    Wang, Bovik, Sheikh, Simoncelli. "Image Quality Assessment: From Error Visibility to Structural Similarity."
    IEEE TIP 2004 (SSIM).
    Rueckert et al. "Nonrigid registration using free-form deformations." IEEE TMI 1999 (bending energy).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import BendingEnergyLoss, DiceLoss, DiffusionLoss
from monai.metrics.regression import compute_ssim_and_cs
from torch import nn

from lung_nodule_mtl.constants import GrowthBatchKeys, GrowthLossKeys, GrowthOutputKeys

__all__ = ["DEFAULT_GROWTH_WEIGHTS", "GROWTH_TERMS", "GrowthLoss", "GrowthLossKeys"]


GROWTH_TERMS: tuple[str, ...] = tuple(str(k) for k in GrowthLossKeys if k != GrowthLossKeys.TOTAL)
"""Terms that take a weight."""

DEFAULT_GROWTH_WEIGHTS: dict[str, float] = {
    str(GrowthLossKeys.IMAGE): 1.0,
    str(GrowthLossKeys.IMAGE_REGION): 1.0,
    str(GrowthLossKeys.DICE): 1.0,
    str(GrowthLossKeys.SMOOTHNESS): 1.0,
    str(GrowthLossKeys.VOLUME): 0.1,
    str(GrowthLossKeys.BASELINE_DICE): 1.0,
}
"""Default term weights (a starting point, not tuned)."""

_SMOOTHNESS = {"bending": BendingEnergyLoss, "diffusion": DiffusionLoss}


def _bad(name: str, expected: str, got: object) -> ValueError:
    return ValueError(f"GrowthLoss: {name} must be {expected}, got {got!r}.")


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values (N,)`` over ``valid (N,) bool``; 0 (not NaN) when nothing is valid."""
    total = torch.where(valid, values, torch.zeros_like(values)).sum()
    return total / valid.sum().clamp_min(1)


class GrowthLoss(nn.Module):
    """Loss of :class:`~lung_nodule_mtl.networks.NoduleGrowthNet` (seed 4, MT-NoGNet).

    Terms (each a scalar; see :class:`~lung_nodule_mtl.constants.GrowthLossKeys`):

    * ``image``: ``L1 + (1 − SSIM)`` of ``pred["image"]`` against ``batch["followup_image"]`` over the whole crop
      (SSIM: Gaussian window, MONAI's :func:`~monai.metrics.regression.compute_ssim_and_cs`, the computation of
      :class:`~monai.losses.SSIMLoss`, averaged over the valid positions and the channels).
    * ``image_region``: the same, weighted by the nodule region: ``batch["followup_label"]`` dilated by
      ``region_margin`` voxels (max-pooling). The SSIM map (valid convolution) is weighted by the region cropped by
      half a window on each side. Samples without foreground (or with a negative, ignored, label) are left out.
    * ``dice``: MONAI :class:`~monai.losses.DiceLoss` (sigmoid) of ``pred["mask"]`` against the follow-up label,
      over samples with a label (a negative value, e.g. ``IGNORE_INDEX``, marks a sample without one).
    * ``smoothness``: MONAI :class:`~monai.losses.BendingEnergyLoss` (``"bending"``) or
      :class:`~monai.losses.DiffusionLoss` (``"diffusion"``) of ``pred["ddf"]`` (voxels).
    * ``volume``: per sample ``|Σ sigmoid(mask) − Σ warped_mask| / (Σ warped_mask + volume_eps)`` (voxel counts),
      averaged over the batch: the refinement head should not change the volume the deformation predicts.
    * ``baseline_dice``: Dice of ``pred["baseline_mask"]`` against the baseline ``batch["label"]``, only when both
      are present.

    A term whose label is absent from the batch (or whose output is absent from ``pred``) contributes exactly zero
    and is left out of the returned dict; ``batch["followup_image"]`` is required. Batch key names are arguments
    (defaults :class:`~lung_nodule_mtl.constants.GrowthBatchKeys`, the names of a batch of
    :func:`~lung_nodule_mtl.transforms.get_growth_transforms` and the targets of
    :class:`~lung_nodule_mtl.engines.GrowthPrepareBatch`; the datalist item's ``followup`` / ``followup_mask``
    are renamed by the transforms).

    Args:
        weights: ``{term: weight}`` overriding :data:`DEFAULT_GROWTH_WEIGHTS` (keys among :data:`GROWTH_TERMS`).
        smoothness: ``"bending"`` (second derivatives; allows uniform expansion) or ``"diffusion"`` (first).
        ssim_win_size: SSIM window in voxels (odd; at most the crop size).
        ssim_kernel_sigma: standard deviation of the Gaussian SSIM window in voxels.
        data_range: intensity range of the crops (1 for windowed ``[0, 1]`` channels).
        region_margin: dilation of the follow-up mask, in voxels, that makes the nodule region.
        volume_eps: added to the warped-mask volume (voxels) in the volume term's denominator.
        dice_kwargs: extra arguments of MONAI ``DiceLoss`` (``sigmoid=True`` is always set).
        followup_image_key: batch key of the follow-up crop.
        followup_label_key: batch key of the follow-up mask.
        baseline_label_key: batch key of the baseline mask.

    Raises:
        ValueError: for an argument outside its domain (named in the message).
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        smoothness: str = "bending",
        ssim_win_size: int = 7,
        ssim_kernel_sigma: float = 1.0,
        data_range: float = 1.0,
        region_margin: int = 3,
        volume_eps: float = 1.0,
        dice_kwargs: Mapping[str, Any] | None = None,
        followup_image_key: str = GrowthBatchKeys.FOLLOWUP_IMAGE,
        followup_label_key: str = GrowthBatchKeys.FOLLOWUP_LABEL,
        baseline_label_key: str = GrowthBatchKeys.LABEL,
    ) -> None:
        super().__init__()
        weights = dict(weights or {})
        if sorted(set(weights) - set(GROWTH_TERMS)):
            raise _bad("weights", f"a mapping with keys among {list(GROWTH_TERMS)}", weights)
        for k, v in weights.items():
            if not _is_number(v) or v < 0:
                raise _bad(f"weights[{k!r}]", "a non-negative number", v)
        self.weights: dict[str, float] = {t: float(weights.get(t, DEFAULT_GROWTH_WEIGHTS[t])) for t in GROWTH_TERMS}
        if smoothness not in _SMOOTHNESS:
            raise _bad("smoothness", f"one of {sorted(_SMOOTHNESS)}", smoothness)
        self.smoothness_loss = _SMOOTHNESS[smoothness]()
        if isinstance(ssim_win_size, bool) or not isinstance(ssim_win_size, int) or ssim_win_size < 1:
            raise _bad("ssim_win_size", "a positive odd integer", ssim_win_size)
        if ssim_win_size % 2 == 0:
            raise _bad("ssim_win_size", "a positive odd integer", ssim_win_size)
        for name, value in (
            ("ssim_kernel_sigma", ssim_kernel_sigma),
            ("data_range", data_range),
            ("volume_eps", volume_eps),
        ):
            if not _is_number(value) or value <= 0:
                raise _bad(name, "a positive number", value)
        if isinstance(region_margin, bool) or not isinstance(region_margin, int) or region_margin < 0:
            raise _bad("region_margin", "a non-negative number of voxels", region_margin)
        self.ssim_win_size = ssim_win_size
        self.ssim_kernel_sigma = float(ssim_kernel_sigma)
        self.data_range = float(data_range)
        self.region_margin = region_margin
        self.volume_eps = float(volume_eps)
        for arg, batch_key in (
            ("followup_image_key", followup_image_key),
            ("followup_label_key", followup_label_key),
            ("baseline_label_key", baseline_label_key),
        ):
            if not isinstance(batch_key, str) or not batch_key:
                raise _bad(arg, "a non-empty batch key", batch_key)
        self.followup_image_key = str(followup_image_key)
        self.followup_label_key = str(followup_label_key)
        self.baseline_label_key = str(baseline_label_key)
        kwargs = {**dict(dice_kwargs or {}), "sigmoid": True}
        try:
            self.dice_loss = DiceLoss(**kwargs)
        except (TypeError, ValueError) as e:
            raise _bad("dice_kwargs", f"arguments of monai.losses.DiceLoss ({e})", dice_kwargs) from e

    # ------------------------------------------------------------------ helpers
    def ssim_map(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """SSIM map ``(N, C, D - w + 1, H - w + 1, W - w + 1)`` (valid positions of the ``w``-voxel window)."""
        w = self.ssim_win_size
        if min(pred.shape[2:]) < w:
            raise ValueError(
                f"GrowthLoss: the crop {list(pred.shape[2:])} is smaller than ssim_win_size={w}; lower ssim_win_size."
            )
        ssim, _ = compute_ssim_and_cs(
            pred.float(),
            target.float(),
            spatial_dims=3,
            kernel_size=(w, w, w),
            kernel_sigma=(self.ssim_kernel_sigma,) * 3,
            data_range=self.data_range,
        )
        return ssim

    def region(self, label: torch.Tensor) -> torch.Tensor:
        """Nodule region ``(N, 1, D, H, W)`` in ``{0, 1}``: the label dilated by ``region_margin`` voxels."""
        fg = (label > 0.5).float()
        m = self.region_margin
        return F.max_pool3d(fg, kernel_size=2 * m + 1, stride=1, padding=m) if m > 0 else fg

    @staticmethod
    def _tensor(batch: Mapping[str, Any], key: str, like: torch.Tensor) -> torch.Tensor | None:
        value = batch.get(key)
        if value is None:
            return None
        t = torch.as_tensor(value, device=like.device).float()
        if t.dim() == like.dim() - 1:
            t = t.unsqueeze(1)
        if t.shape[0] != like.shape[0] or t.shape[2:] != like.shape[2:]:
            raise ValueError(
                f"GrowthLoss: batch[{key!r}] must be (N, C, D, H, W) matching the prediction {list(like.shape)}, "
                f"got {list(t.shape)}."
            )
        return t

    # ------------------------------------------------------------------ terms
    def image_terms(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole-crop ``(L1, 1 − SSIM)``, each a scalar."""
        l1 = (pred.float() - target.float()).abs().mean()
        return l1, 1.0 - self.ssim_map(pred, target).mean()

    def region_terms(
        self, pred: torch.Tensor, target: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Region-weighted ``(L1, 1 − SSIM)`` over the samples with a non-empty region (0 when there are none)."""
        valid_label = label.flatten(1).amin(dim=1) >= 0
        region = self.region(label)  # (N, 1, ...)
        c = pred.shape[1]
        err = (pred.float() - target.float()).abs() * region
        vol = region.flatten(1).sum(1)
        l1 = err.flatten(1).sum(1) / (vol * c).clamp_min(1.0)
        h = self.ssim_win_size // 2
        ssim = self.ssim_map(pred, target)
        r = region[:, :, h : region.shape[2] - h, h : region.shape[3] - h, h : region.shape[4] - h]
        vol_c = r.flatten(1).sum(1)
        ssim_mean = (ssim * r).flatten(1).sum(1) / (vol_c * c).clamp_min(1.0)
        return _masked_mean(l1, valid_label & (vol > 0)), _masked_mean(1.0 - ssim_mean, valid_label & (vol_c > 0))

    def dice(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Dice loss over samples whose label is not negative (ignored); 0 when there are none."""
        valid = label.flatten(1).amin(dim=1) >= 0
        if not bool(valid.any()):
            return logits.sum() * 0.0
        if not bool(valid.all()):
            logits, label = logits[valid], label[valid]
        loss: torch.Tensor = self.dice_loss(logits.float(), (label > 0.5).float())
        return loss

    def smoothness(self, ddf: torch.Tensor) -> torch.Tensor:
        """Bending energy or diffusion of ``ddf (N, 3, D, H, W)`` (voxels), MONAI's implementation."""
        with warnings.catch_warnings():  # MONAI 1.6 indexes with lists of slices, which torch >= 2.9 warns about
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
            loss: torch.Tensor = self.smoothness_loss(ddf.float())
        return loss

    def volume(self, logits: torch.Tensor, warped_mask: torch.Tensor) -> torch.Tensor:
        """Mean relative volume difference between the predicted and the warped mask."""
        v_pred = torch.sigmoid(logits.float()).flatten(1).sum(1)
        v_warp = warped_mask.float().flatten(1).sum(1)
        return ((v_pred - v_warp).abs() / (v_warp + self.volume_eps)).mean()

    def terms(self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Every applicable term, with its autograd graph (unweighted), plus the ``/l1`` and ``/ssim`` parts."""
        k_img, k_mask = str(GrowthOutputKeys.IMAGE), str(GrowthOutputKeys.MASK)
        if k_img not in pred:
            raise ValueError(f"GrowthLoss: pred must hold {k_img!r} (the network's output dict), got {sorted(pred)}.")
        image = pred[k_img]
        target = self._tensor(batch, self.followup_image_key, image)
        if target is None:
            raise ValueError(
                f"GrowthLoss: batch must hold {self.followup_image_key!r}, the follow-up crop "
                f"(N, C, D, H, W); got keys {sorted(batch)}."
            )
        if target.shape[1] != image.shape[1]:
            raise ValueError(
                f"GrowthLoss: batch[{self.followup_image_key!r}] must have {image.shape[1]} channels "
                f"like pred[{k_img!r}], got {target.shape[1]}."
            )
        out: dict[str, torch.Tensor] = {}
        l1, dssim = self.image_terms(image, target)
        out[f"{GrowthLossKeys.IMAGE}/l1"], out[f"{GrowthLossKeys.IMAGE}/ssim"] = l1, dssim
        out[str(GrowthLossKeys.IMAGE)] = l1 + dssim

        like = image[:, :1]
        label = self._tensor(batch, self.followup_label_key, like)
        if label is not None:
            l1_r, dssim_r = self.region_terms(image, target, label)
            out[f"{GrowthLossKeys.IMAGE_REGION}/l1"], out[f"{GrowthLossKeys.IMAGE_REGION}/ssim"] = l1_r, dssim_r
            out[str(GrowthLossKeys.IMAGE_REGION)] = l1_r + dssim_r
            if k_mask in pred:
                out[str(GrowthLossKeys.DICE)] = self.dice(pred[k_mask], label)
        k_ddf = str(GrowthOutputKeys.DDF)
        if k_ddf in pred:
            out[str(GrowthLossKeys.SMOOTHNESS)] = self.smoothness(pred[k_ddf])
        k_warped = str(GrowthOutputKeys.WARPED_MASK)
        if k_mask in pred and k_warped in pred:
            out[str(GrowthLossKeys.VOLUME)] = self.volume(pred[k_mask], pred[k_warped])
        k_base = str(GrowthOutputKeys.BASELINE_MASK)
        base_label = self._tensor(batch, self.baseline_label_key, like) if k_base in pred else None
        if base_label is not None:
            out[str(GrowthLossKeys.BASELINE_DICE)] = self.dice(pred[k_base], base_label)
        return out

    def forward(self, pred: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Weighted total and terms.

        Args:
            pred: output of :class:`~lung_nodule_mtl.networks.NoduleGrowthNet`.
            batch: ``followup_image`` ``(N, C, D, H, W)`` (required), ``followup_label`` ``(N, 1, D, H, W)`` of
                0/1 (negative: no label for that sample), optionally the baseline ``label`` (names: the key
                arguments).

        Returns:
            ``{"loss": total, <term>: value, "<term>/l1": …, "<term>/ssim": …}``, scalars; only ``"loss"`` carries the
            weights and the autograd graph, the terms are detached (for logging; :meth:`terms` gives them with it).
        """
        terms = self.terms(pred, batch)
        total = torch.stack([self.weights[t] * terms[t] for t in GROWTH_TERMS if t in terms]).sum()
        result = {str(GrowthLossKeys.TOTAL): total}
        result.update({k: v.detach() for k, v in terms.items()})
        return result
