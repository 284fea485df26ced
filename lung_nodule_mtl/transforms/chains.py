"""Transform chains from a datalist item to a network-ready sample: training, validation, inference.

Every chain is a :class:`monai.transforms.Compose` of the steps below; steps 1 and 4 are each a ``Compose`` of their
own (the bundle configs list the same structure, transform by transform, and share one ``load`` and one
``augmentation`` between chains; ``tests/bundle`` checks that config and function give the same samples):

1. ``LoadImaged`` (image, mask) → ``EnsureChannelFirstd`` → ``Orientationd("RAS")`` →
   ``Spacingd(spacing_mm)`` (image bilinear, mask nearest): isotropic voxels, so ``roi_size``
   voxels is ``roi_size * spacing_mm`` millimetres and augmentation treats the three axes alike.
2. :class:`~lung_nodule_mtl.transforms.crop.NoduleCenteredCropd` (validation, inference) or
   :class:`~lung_nodule_mtl.transforms.crop.RandNoduleCenteredCropd` (training, centre jittered by up to
   ``max_shift_mm``) around ``center_world_mm``: the image padded with air (-1000 HU), the mask with 0.
3. :class:`~lung_nodule_mtl.transforms.window.LungWindowd`: ``(n_windows, *roi_size)`` in ``[0, 1]``.
   From here on, 0 is the padding value of the image (air in every window).
4. Training only, MONAI augmentation (image and mask share every spatial draw):
   ``RandFlipd`` on each of the 3 axes; ``RandRotate90d`` **in the axial plane only** (axes 0, 1:
   R-L and A-P; rotations that bring the cranio-caudal axis in-plane would show the blur of thick
   original slices, up to 2.5 mm in LIDC, in directions where real scans never have it; flips on
   the z axis keep that blur along z and are kept); a small ``RandAffined`` (rotation, scaling;
   image bilinear, mask nearest, zero padding); then, on the image only, ``RandScaleIntensityd``,
   ``RandShiftIntensityd``, ``RandGaussianNoised``, and a clip back to ``[0, 1]`` so every channel
   stays in its window's range.
5. :class:`~lung_nodule_mtl.transforms.labels.NoduleLabelsd` (not in inference) → ``EnsureTyped``
   (float32 ``MetaTensor``: the crop and resampling stay invertible, see ``monai.transforms.Invertd``).

All parameters are arguments, their defaults the module's ``DEFAULT_*`` constants, so a bundle
config can pass them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    Orientationd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    SelectItemsd,
    Spacingd,
    Transform,
)

from lung_nodule_mtl.constants import AIR_HU, Keys
from lung_nodule_mtl.transforms.crop import MASK_PAD_VALUE, NoduleCenteredCropd, RandNoduleCenteredCropd
from lung_nodule_mtl.transforms.labels import LABEL_KEYS, IndeterminatePolicy, NoduleLabelsd
from lung_nodule_mtl.transforms.window import LungWindowd, WindowsLike

__all__ = [
    "AXIS_LABELS",
    "DEFAULT_AFFINE_PROB",
    "DEFAULT_FLIP_PROB",
    "DEFAULT_INTENSITY_SCALE_FACTOR",
    "DEFAULT_INTENSITY_SCALE_PROB",
    "DEFAULT_INTENSITY_SHIFT_OFFSET",
    "DEFAULT_INTENSITY_SHIFT_PROB",
    "DEFAULT_MAX_SHIFT_MM",
    "DEFAULT_NOISE_PROB",
    "DEFAULT_NOISE_STD",
    "DEFAULT_ROI_SIZE",
    "DEFAULT_ROT90_PROB",
    "DEFAULT_ROTATE_RANGE_RAD",
    "DEFAULT_SCALE_RANGE",
    "DEFAULT_SPACING_MM",
    "ORIENTATION",
    "TRAIN_KEYS",
    "get_inference_transforms",
    "get_scan_train_transforms",
    "get_train_transforms",
    "get_val_transforms",
]

ORIENTATION = "RAS"
"""Axis codes the volumes are reoriented to (the convention of ``center_world_mm``)."""
AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
"""How ``Orientation`` reads :data:`ORIENTATION`: RAS world space, as ``LoadImage``'s affines."""
DEFAULT_SPACING_MM: tuple[float, float, float] = (1.0, 1.0, 1.0)
"""Isotropic output voxel size, mm (LIDC in-plane is 0.5-0.9 mm, slices 0.6-2.5 mm)."""
DEFAULT_ROI_SIZE: tuple[int, int, int] = (64, 64, 64)
"""Crop size, voxels (at the default spacing: 64 mm, twice the largest LIDC nodule of 30 mm)."""
DEFAULT_MAX_SHIFT_MM = 4.0
"""Largest jitter of the training crop centre, mm per axis."""
DEFAULT_FLIP_PROB = 0.5
"""Probability of a flip, drawn separately for each of the 3 axes."""
DEFAULT_ROT90_PROB = 0.5
"""Probability of an axial-plane rotation by 90, 180 or 270 degrees."""
DEFAULT_AFFINE_PROB = 0.2
"""Probability of the small random rotation + scaling."""
DEFAULT_ROTATE_RANGE_RAD = math.radians(15.0)
"""Largest rotation about each axis, radians (15 degrees)."""
DEFAULT_SCALE_RANGE = 0.1
"""Largest relative scaling per axis (0.1: factors in ``[0.9, 1.1]``)."""
DEFAULT_INTENSITY_SCALE_PROB = 0.5
"""Probability of multiplying the windowed image by ``1 + f``, ``f`` in ``±intensity_scale_factor``."""
DEFAULT_INTENSITY_SCALE_FACTOR = 0.1
DEFAULT_INTENSITY_SHIFT_PROB = 0.5
"""Probability of adding an offset in ``±intensity_shift_offset`` (window units, ``[0, 1]`` scale)."""
DEFAULT_INTENSITY_SHIFT_OFFSET = 0.05
DEFAULT_NOISE_PROB = 0.2
"""Probability of adding Gaussian noise of standard deviation up to ``noise_std`` (window units)."""
DEFAULT_NOISE_STD = 0.01
TRAIN_KEYS: tuple[str, ...] = (str(Keys.IMAGE), str(Keys.LABEL), *LABEL_KEYS)
"""What a training batch needs (image, mask, every label): the keys both training chains keep when mixed."""


def _check_prob(value: float, name: str) -> float:
    if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}.")
    return float(value)


def _check_non_negative(value: float, name: str) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def _spacing(spacing_mm: Sequence[float] | float) -> tuple[float, ...]:
    values = (spacing_mm,) * 3 if isinstance(spacing_mm, int | float) else tuple(spacing_mm)
    if len(values) != 3 or not all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing_mm must be a number or 3 numbers > 0 (mm), got {spacing_mm!r}.")
    return tuple(float(v) for v in values)


def _load(keys: Sequence[str], spacing_mm: Sequence[float] | float, image_key: str) -> list[Transform]:
    """Load → channel first → RAS → isotropic spacing (image bilinear, any other key nearest)."""
    modes = ["bilinear" if k == image_key else "nearest" for k in keys]
    return [
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        Orientationd(keys=keys, axcodes=ORIENTATION, labels=AXIS_LABELS),
        Spacingd(keys=keys, pixdim=_spacing(spacing_mm), mode=modes),
    ]


def _pad_values(keys: Sequence[str], image_key: str) -> list[float]:
    return [AIR_HU if k == image_key else MASK_PAD_VALUE for k in keys]


def get_train_transforms(
    roi_size: Sequence[int] | int = DEFAULT_ROI_SIZE,
    spacing_mm: Sequence[float] | float = DEFAULT_SPACING_MM,
    windows: WindowsLike | None = None,
    max_shift_mm: Sequence[float] | float = DEFAULT_MAX_SHIFT_MM,
    flip_prob: float = DEFAULT_FLIP_PROB,
    rot90_prob: float = DEFAULT_ROT90_PROB,
    affine_prob: float = DEFAULT_AFFINE_PROB,
    rotate_range_rad: float = DEFAULT_ROTATE_RANGE_RAD,
    scale_range: float = DEFAULT_SCALE_RANGE,
    intensity_scale_prob: float = DEFAULT_INTENSITY_SCALE_PROB,
    intensity_scale_factor: float = DEFAULT_INTENSITY_SCALE_FACTOR,
    intensity_shift_prob: float = DEFAULT_INTENSITY_SHIFT_PROB,
    intensity_shift_offset: float = DEFAULT_INTENSITY_SHIFT_OFFSET,
    noise_prob: float = DEFAULT_NOISE_PROB,
    noise_std: float = DEFAULT_NOISE_STD,
    indeterminate: IndeterminatePolicy = "ignore",
    label_keys: Sequence[str] = LABEL_KEYS,
    image_key: str = Keys.IMAGE,
    mask_key: str = Keys.LABEL,
    center_key: str = Keys.CENTER_WORLD,
    select_keys: Sequence[str] | None = None,
) -> Compose:
    """Training chain: load, RAS, isotropic spacing, jittered crop, windows, augmentation, labels.

    Args:
        roi_size: crop size in voxels (int or 3 ints), at ``spacing_mm``.
        spacing_mm: output voxel size in mm (one number or 3).
        windows: HU windows stacked as channels (default
            :data:`~lung_nodule_mtl.constants.DEFAULT_WINDOWS`).
        max_shift_mm: largest jitter of the crop centre per RAS axis, mm.
        flip_prob: probability of a flip, drawn for each axis separately.
        rot90_prob: probability of an axial-plane 90/180/270-degree rotation.
        affine_prob: probability of the small rotation + scaling.
        rotate_range_rad: largest rotation about each axis, radians.
        scale_range: largest relative scaling per axis (factor in ``[1 - s, 1 + s]``).
        intensity_scale_prob: probability of scaling the windowed image by ``1 ± intensity_scale_factor``.
        intensity_scale_factor: see above (fraction).
        intensity_shift_prob: probability of adding an offset up to ``± intensity_shift_offset``.
        intensity_shift_offset: largest offset, in windowed units (``[0, 1]`` scale).
        noise_prob: probability of Gaussian noise.
        noise_std: largest standard deviation of the noise, windowed units.
        indeterminate: malignancy policy for indeterminate nodules, ``"ignore"`` or ``"soft"``.
        label_keys: labels to encode (see :class:`~lung_nodule_mtl.transforms.labels.NoduleLabelsd`).
        image_key: key of the CT (a path in the datalist).
        mask_key: key of the nodule mask (a path in the datalist).
        center_key: key of the RAS-mm nodule centre.
        select_keys: keep only these keys at the end (e.g. :data:`TRAIN_KEYS`, so batches mix with the whole-scan
            chain's), ``None`` keeps all.

    Returns:
        A ``Compose`` giving ``image`` ``(n_windows, *roi_size)`` float32 in ``[0, 1]``, ``label``
        ``(1, *roi_size)`` float32 0/1, and the label tensors.

    Raises:
        ValueError: a probability outside ``[0, 1]``, a negative range, or a bad size/spacing/window.
    """
    probs = _check_probs(
        flip_prob=flip_prob,
        rot90_prob=rot90_prob,
        affine_prob=affine_prob,
        intensity_scale_prob=intensity_scale_prob,
        intensity_shift_prob=intensity_shift_prob,
        noise_prob=noise_prob,
    )
    rotate = _check_non_negative(rotate_range_rad, "rotate_range_rad")
    scale = _check_non_negative(scale_range, "scale_range")
    keys = [image_key, mask_key]
    transforms: list[Transform] = [
        Compose(_load(keys, spacing_mm, image_key)),
        RandNoduleCenteredCropd(
            keys, roi_size, max_shift_mm=max_shift_mm, center_key=center_key, pad_value=_pad_values(keys, image_key)
        ),
        LungWindowd(keys=image_key, windows=windows),
        Compose(
            _augmentation(
                keys, image_key, probs, rotate, scale, intensity_scale_factor, intensity_shift_offset, noise_std
            )
        ),
        NoduleLabelsd(keys=label_keys, indeterminate=indeterminate),
        EnsureTyped(keys=keys, dtype=torch.float32),
    ]
    if select_keys:
        transforms.append(SelectItemsd(keys=list(select_keys)))
    return Compose(transforms)


def _augmentation(
    keys: Sequence[str],
    image_key: str,
    probs: dict[str, float],
    rotate: float,
    scale: float,
    intensity_scale_factor: float,
    intensity_shift_offset: float,
    noise_std: float,
) -> list[Transform]:
    """The training augmentation on windowed images (step 4 of the module docstring)."""
    return [
        *[RandFlipd(keys=keys, prob=probs["flip_prob"], spatial_axis=axis) for axis in range(3)],
        RandRotate90d(keys=keys, prob=probs["rot90_prob"], max_k=3, spatial_axes=(0, 1)),
        RandAffined(
            keys=keys,
            prob=probs["affine_prob"],
            rotate_range=(rotate, rotate, rotate),
            scale_range=(scale, scale, scale),
            mode=("bilinear", "nearest"),
            padding_mode="zeros",  # = WINDOWED_PAD_VALUE: air in every window, background in the mask
        ),
        RandScaleIntensityd(
            keys=image_key,
            factors=_check_non_negative(intensity_scale_factor, "intensity_scale_factor"),
            prob=probs["intensity_scale_prob"],
        ),
        RandShiftIntensityd(
            keys=image_key,
            offsets=_check_non_negative(intensity_shift_offset, "intensity_shift_offset"),
            prob=probs["intensity_shift_prob"],
        ),
        RandGaussianNoised(
            keys=image_key,
            prob=probs["noise_prob"],
            mean=0.0,
            std=_check_non_negative(noise_std, "noise_std"),
            sample_std=True,
        ),
        ScaleIntensityRanged(keys=image_key, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),  # clip to [0, 1]
    ]


def _check_probs(**values: float) -> dict[str, float]:
    return {name: _check_prob(value, name) for name, value in values.items()}


def get_scan_train_transforms(
    roi_size: Sequence[int] | int = DEFAULT_ROI_SIZE,
    spacing_mm: Sequence[float] | float = DEFAULT_SPACING_MM,
    windows: WindowsLike | None = None,
    bank: Any = None,
    fractions: Mapping[str, float] | None = None,
    insert_prob: float = 0.5,
    max_shift_mm: float = DEFAULT_MAX_SHIFT_MM,
    anywhere_shift_mm: float = 16.0,
    negative_clearance_mm: float = 8.0,
    dense_insert_fraction: float = 0.5,
    flip_prob: float = DEFAULT_FLIP_PROB,
    rot90_prob: float = DEFAULT_ROT90_PROB,
    affine_prob: float = DEFAULT_AFFINE_PROB,
    rotate_range_rad: float = DEFAULT_ROTATE_RANGE_RAD,
    scale_range: float = DEFAULT_SCALE_RANGE,
    intensity_scale_prob: float = DEFAULT_INTENSITY_SCALE_PROB,
    intensity_scale_factor: float = DEFAULT_INTENSITY_SCALE_FACTOR,
    intensity_shift_prob: float = DEFAULT_INTENSITY_SHIFT_PROB,
    intensity_shift_offset: float = DEFAULT_INTENSITY_SHIFT_OFFSET,
    noise_prob: float = DEFAULT_NOISE_PROB,
    noise_std: float = DEFAULT_NOISE_STD,
    indeterminate: IndeterminatePolicy = "ignore",
    select_keys: Sequence[str] | None = None,
    image_key: str = Keys.IMAGE,
    mask_key: str = Keys.LABEL,
) -> Compose:
    """Whole-scan training chain: load, RAS, isotropic spacing, lung mask and window places (cached), one window of
    a kind drawn per call (nodule-centred, nodule anywhere, hard or random negative; real nodules pasted from
    ``bank``, see :mod:`~lung_nodule_mtl.transforms.scan_windows`), windows, the same augmentation as
    :func:`get_train_transforms`, labels (``nodule`` included).

    Items are scan items (:func:`lung_nodule_mtl.data.scans.scan_items`): ``image``, optional ``label`` (all the
    scan's nodules), ``nodules``, optional ``negatives``.

    Args:
        roi_size: window size, voxels.
        spacing_mm: voxel size of the grid, mm.
        windows: HU windows stacked as channels.
        bank: a :class:`~lung_nodule_mtl.data.insertion.NoduleBank` (or its path) of real nodules to paste, or
            ``None``.
        fractions, insert_prob, max_shift_mm, anywhere_shift_mm, negative_clearance_mm, dense_insert_fraction:
            see :class:`~lung_nodule_mtl.transforms.scan_windows.RandScanWindowsd`.
        flip_prob, rot90_prob, affine_prob, rotate_range_rad, scale_range, intensity_scale_prob,
        intensity_scale_factor, intensity_shift_prob, intensity_shift_offset, noise_prob, noise_std: augmentation,
            as :func:`get_train_transforms`.
        indeterminate: malignancy policy for indeterminate nodules.
        select_keys: keep only these keys at the end (so batches mix with another chain's), ``None`` keeps all.
        image_key: key of the CT.
        mask_key: key of the label map.

    Returns:
        A ``Compose`` giving ``image`` ``(n_windows, *roi_size)`` in ``[0, 1]``, ``label`` ``(1, *roi_size)``,
        the label tensors and ``window_kind``.
    """
    from lung_nodule_mtl.transforms.scan_windows import RandScanWindowsd, ScanSamplingPointsd

    probs = _check_probs(
        flip_prob=flip_prob,
        rot90_prob=rot90_prob,
        affine_prob=affine_prob,
        intensity_scale_prob=intensity_scale_prob,
        intensity_shift_prob=intensity_shift_prob,
        noise_prob=noise_prob,
    )
    keys = [image_key, mask_key]
    spacing = _spacing(spacing_mm)
    transforms: list[Transform] = [
        Compose(
            [
                LoadImaged(keys=keys, image_only=True, allow_missing_keys=True),
                EnsureChannelFirstd(keys=keys, allow_missing_keys=True),
                Orientationd(keys=keys, axcodes=ORIENTATION, labels=AXIS_LABELS, allow_missing_keys=True),
                Spacingd(keys=keys, pixdim=spacing, mode=["bilinear", "nearest"], allow_missing_keys=True),
            ]
        ),
        ScanSamplingPointsd(keys=keys, spacing_mm=spacing),
        RandScanWindowsd(
            keys=keys,
            roi_size=roi_size,
            bank=bank,
            fractions=fractions,
            insert_prob=insert_prob,
            max_shift_mm=max_shift_mm,
            anywhere_shift_mm=anywhere_shift_mm,
            negative_clearance_mm=negative_clearance_mm,
            dense_insert_fraction=dense_insert_fraction,
            spacing_mm=spacing,
        ),
        LungWindowd(keys=image_key, windows=windows),
        Compose(
            _augmentation(
                keys,
                image_key,
                probs,
                _check_non_negative(rotate_range_rad, "rotate_range_rad"),
                _check_non_negative(scale_range, "scale_range"),
                intensity_scale_factor,
                intensity_shift_offset,
                noise_std,
            )
        ),
        NoduleLabelsd(keys=LABEL_KEYS, indeterminate=indeterminate),
        EnsureTyped(keys=keys, dtype=torch.float32),
    ]
    if select_keys:
        transforms.append(SelectItemsd(keys=list(select_keys)))
    return Compose(transforms)


def get_val_transforms(
    roi_size: Sequence[int] | int = DEFAULT_ROI_SIZE,
    spacing_mm: Sequence[float] | float = DEFAULT_SPACING_MM,
    windows: WindowsLike | None = None,
    indeterminate: IndeterminatePolicy = "ignore",
    label_keys: Sequence[str] = LABEL_KEYS,
    image_key: str = Keys.IMAGE,
    mask_key: str = Keys.LABEL,
    center_key: str = Keys.CENTER_WORLD,
) -> Compose:
    """Validation chain: the training chain without jitter and augmentation (deterministic).

    Args:
        roi_size: crop size in voxels, at ``spacing_mm``.
        spacing_mm: output voxel size in mm.
        windows: HU windows stacked as channels.
        indeterminate: malignancy policy for indeterminate nodules, ``"ignore"`` or ``"soft"``.
        label_keys: labels to encode.
        image_key: key of the CT.
        mask_key: key of the nodule mask.
        center_key: key of the RAS-mm nodule centre.

    Returns:
        A ``Compose`` giving ``image`` ``(n_windows, *roi_size)`` in ``[0, 1]``, ``label``
        ``(1, *roi_size)`` 0/1, and the label tensors; invertible back to the scan's grid.
    """
    keys = [image_key, mask_key]
    return Compose(
        [
            Compose(_load(keys, spacing_mm, image_key)),
            NoduleCenteredCropd(keys, roi_size, center_key=center_key, pad_value=_pad_values(keys, image_key)),
            LungWindowd(keys=image_key, windows=windows),
            NoduleLabelsd(keys=label_keys, indeterminate=indeterminate),
            EnsureTyped(keys=keys, dtype=torch.float32),
        ]
    )


def get_inference_transforms(
    roi_size: Sequence[int] | int = DEFAULT_ROI_SIZE,
    spacing_mm: Sequence[float] | float = DEFAULT_SPACING_MM,
    windows: WindowsLike | None = None,
    image_key: str = Keys.IMAGE,
    center_key: str = Keys.CENTER_WORLD,
) -> Compose:
    """Inference chain: the image only (no mask, no labels), cropped around the given centre.

    Args:
        roi_size: crop size in voxels, at ``spacing_mm``.
        spacing_mm: output voxel size in mm.
        windows: HU windows stacked as channels.
        image_key: key of the CT.
        center_key: key of the RAS-mm nodule centre.

    Returns:
        A ``Compose`` giving ``image`` ``(n_windows, *roi_size)`` in ``[0, 1]``, whose recorded
        operations let ``monai.transforms.Invertd`` put a prediction back on the scan's grid.
    """
    keys = [image_key]
    return Compose(
        [
            Compose(_load(keys, spacing_mm, image_key)),
            NoduleCenteredCropd(keys, roi_size, center_key=center_key, pad_value=AIR_HU),
            LungWindowd(keys=image_key, windows=windows),
            EnsureTyped(keys=keys, dtype=torch.float32),
        ]
    )
