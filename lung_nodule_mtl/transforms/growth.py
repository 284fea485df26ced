"""Transform chains for nodule growth pairs: a baseline and a follow-up crop (and their masks) on one grid.

Both scans go through the same geometry (load → RAS → isotropic spacing → a crop centred on the baseline's
nodule centre) and the same random flips and 90° rotations, so the pair stays aligned; the images become the
network's HU windows in ``[0, 1]`` (the follow-up in the same units, as the growth network predicts it).
Items are the ``growth`` datalist's (``lung-nodule-mtl synth --mode growth``, keys
:class:`~lung_nodule_mtl.constants.GrowthKeys`): the baseline under ``image`` and ``label`` (as in every datalist of
the project), ``followup``, ``followup_mask``, ``interval_days`` and the baseline's ``center_world_mm``. The
follow-up becomes ``followup_image`` / ``followup_label`` in the output
(:class:`~lung_nodule_mtl.constants.GrowthBatchKeys`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.transforms import (
    Compose,
    CopyItemsd,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    Orientationd,
    RandFlipd,
    RandRotate90d,
    SelectItemsd,
    Spacingd,
    Transform,
)

from lung_nodule_mtl.constants import AIR_HU, GrowthBatchKeys, GrowthKeys, Keys
from lung_nodule_mtl.transforms.chains import (
    AXIS_LABELS,
    DEFAULT_FLIP_PROB,
    DEFAULT_ROI_SIZE,
    DEFAULT_ROT90_PROB,
    DEFAULT_SPACING_MM,
    ORIENTATION,
)
from lung_nodule_mtl.transforms.crop import MASK_PAD_VALUE, NoduleCenteredCropd
from lung_nodule_mtl.transforms.window import LungWindowd, WindowsLike

__all__ = ["FOLLOWUP_IMAGE_KEY", "FOLLOWUP_LABEL_KEY", "GROWTH_IMAGE_KEYS", "GROWTH_MASK_KEYS", "get_growth_transforms"]

FOLLOWUP_IMAGE_KEY = GrowthBatchKeys.FOLLOWUP_IMAGE.value
"""The follow-up crop in a batch (the datalist's ``followup``); an alias of
:attr:`~lung_nodule_mtl.constants.GrowthBatchKeys.FOLLOWUP_IMAGE`."""
FOLLOWUP_LABEL_KEY = GrowthBatchKeys.FOLLOWUP_LABEL.value
"""The follow-up mask in a batch (the datalist's ``followup_mask``); an alias of
:attr:`~lung_nodule_mtl.constants.GrowthBatchKeys.FOLLOWUP_LABEL`. Both are renamed before loading (see
:class:`~lung_nodule_mtl.constants.GrowthBatchKeys` for why)."""
GROWTH_IMAGE_KEYS = (GrowthBatchKeys.IMAGE.value, GrowthBatchKeys.FOLLOWUP_IMAGE.value)
"""The baseline under ``image`` (a growth item's ``image`` is its ``baseline`` file) and the follow-up."""
GROWTH_MASK_KEYS = (GrowthBatchKeys.LABEL.value, GrowthBatchKeys.FOLLOWUP_LABEL.value)
"""The baseline mask under ``label`` (= ``baseline_mask``) and the follow-up mask."""


def get_growth_transforms(
    roi_size: Sequence[int] | int = DEFAULT_ROI_SIZE,
    spacing_mm: Sequence[float] | float = DEFAULT_SPACING_MM,
    windows: WindowsLike | None = None,
    train: bool = True,
    flip_prob: float = DEFAULT_FLIP_PROB,
    rot90_prob: float = DEFAULT_ROT90_PROB,
    image_keys: Sequence[str] = GROWTH_IMAGE_KEYS,
    mask_keys: Sequence[str] = GROWTH_MASK_KEYS,
    center_key: str = Keys.CENTER_WORLD,
) -> Compose:
    """The chain for growth pairs (training with ``train=True``: joint random flips and 90° rotations).

    Returns:
        A ``Compose`` giving ``image`` (the baseline) and ``followup_image`` ``(n_windows, *roi_size)`` float32 in
        ``[0, 1]`` and the masks ``label`` / ``followup_label`` ``(1, *roi_size)`` float32 0/1; other keys
        kept: ``interval_days``, ``case_id``, ``patient_id``. Keys:
        :class:`~lung_nodule_mtl.constants.GrowthBatchKeys`.

    Raises:
        ValueError: a probability outside ``[0, 1]``.
    """
    for name, p in (("flip_prob", flip_prob), ("rot90_prob", rot90_prob)):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p!r}.")
    images, masks = list(image_keys), list(mask_keys)
    keys = images + masks
    followup = [GrowthKeys.FOLLOWUP.value, GrowthKeys.FOLLOWUP_MASK.value]  # the datalist's names, renamed
    spacing = (float(spacing_mm),) * 3 if isinstance(spacing_mm, int | float) else tuple(map(float, spacing_mm))
    transforms: list[Transform] = [
        CopyItemsd(keys=followup, names=[GrowthBatchKeys.FOLLOWUP_IMAGE.value, GrowthBatchKeys.FOLLOWUP_LABEL.value]),
        DeleteItemsd(keys=followup),
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        Orientationd(keys=keys, axcodes=ORIENTATION, labels=AXIS_LABELS),
        Spacingd(keys=keys, pixdim=spacing, mode=["bilinear"] * len(images) + ["nearest"] * len(masks)),
        NoduleCenteredCropd(
            keys, roi_size, center_key=center_key, pad_value=[AIR_HU] * len(images) + [MASK_PAD_VALUE] * len(masks)
        ),
        LungWindowd(keys=images, windows=windows),
    ]
    if train:
        transforms += [RandFlipd(keys=keys, prob=float(flip_prob), spatial_axis=axis) for axis in range(3)]
        transforms.append(RandRotate90d(keys=keys, prob=float(rot90_prob), max_k=3, spatial_axes=(0, 1)))
    transforms.append(EnsureTyped(keys=keys, dtype=torch.float32))
    # what the engines use; other item keys (null doubling times, ratings, ...) would not collate
    kept = [GrowthBatchKeys.INTERVAL.value, Keys.CASE_ID.value, Keys.PATIENT_ID.value]
    transforms.append(SelectItemsd(keys=[*keys, *kept], allow_missing_keys=True))
    return Compose(transforms)
