"""Transforms from a datalist item to a network-ready sample: windows, nodule crops, labels, chains.

* :mod:`~lung_nodule_mtl.io.geometry`: RAS world mm ↔ voxel through a 4x4 affine.
* :mod:`~lung_nodule_mtl.transforms.window`: HU windows → ``[0, 1]`` channels.
* :mod:`~lung_nodule_mtl.transforms.crop`: fixed-size crops around a world-mm nodule centre (invertible).
* :mod:`~lung_nodule_mtl.transforms.labels`: datalist scalars → label tensors (``IGNORE_INDEX`` when missing).
* :mod:`~lung_nodule_mtl.transforms.scan_windows`: training windows from whole scans (nodules, pasted real nodules,
  hard and random negatives from inside the lungs).
* :mod:`~lung_nodule_mtl.transforms.chains`: the training, validation and inference ``Compose`` chains.
* :mod:`~lung_nodule_mtl.transforms.batch_augment`: the training augmentation as batched tensor operations on the
  training device.
"""

from lung_nodule_mtl.io.geometry import voxel_to_world, world_to_voxel
from lung_nodule_mtl.transforms.batch_augment import BatchAugmentation
from lung_nodule_mtl.transforms.chains import (
    DEFAULT_AFFINE_PROB,
    DEFAULT_FLIP_PROB,
    DEFAULT_INTENSITY_SCALE_FACTOR,
    DEFAULT_INTENSITY_SCALE_PROB,
    DEFAULT_INTENSITY_SHIFT_OFFSET,
    DEFAULT_INTENSITY_SHIFT_PROB,
    DEFAULT_MAX_SHIFT_MM,
    DEFAULT_NOISE_PROB,
    DEFAULT_NOISE_STD,
    DEFAULT_ROI_SIZE,
    DEFAULT_ROT90_PROB,
    DEFAULT_ROTATE_RANGE_RAD,
    DEFAULT_SCALE_RANGE,
    DEFAULT_SPACING_MM,
    ORIENTATION,
    TRAIN_KEYS,
    get_inference_transforms,
    get_scan_train_transforms,
    get_train_transforms,
    get_val_transforms,
)
from lung_nodule_mtl.transforms.crop import (
    MASK_PAD_VALUE,
    NoduleCenteredCrop,
    NoduleCenteredCropd,
    NoduleCentredCrop,  # deprecated alias
    NoduleCentredCropd,  # deprecated alias
    RandNoduleCenteredCrop,
    RandNoduleCenteredCropd,
    RandNoduleCentredCrop,  # deprecated alias
    RandNoduleCentredCropd,  # deprecated alias
    nodule_roi,
)
from lung_nodule_mtl.transforms.growth import get_growth_transforms
from lung_nodule_mtl.transforms.labels import (
    INDETERMINATE_POLICIES,
    LABEL_KEYS,
    SOFT_INDETERMINATE,
    NoduleLabels,
    NoduleLabelsd,
    encode_attribute,
    encode_malignancy,
    encode_malignancy_score,
    encode_nodule,
)
from lung_nodule_mtl.transforms.scan_windows import RandScanWindowsd, ScanSamplingPointsd
from lung_nodule_mtl.transforms.window import WINDOWED_PAD_VALUE, LungWindow, LungWindowd, normalise_windows

__all__ = [
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
    "INDETERMINATE_POLICIES",
    "LABEL_KEYS",
    "MASK_PAD_VALUE",
    "ORIENTATION",
    "SOFT_INDETERMINATE",
    "TRAIN_KEYS",
    "WINDOWED_PAD_VALUE",
    "BatchAugmentation",
    "LungWindow",
    "LungWindowd",
    "NoduleCenteredCrop",
    "NoduleCenteredCropd",
    "NoduleCentredCrop",
    "NoduleCentredCropd",
    "NoduleLabels",
    "NoduleLabelsd",
    "RandNoduleCenteredCrop",
    "RandNoduleCenteredCropd",
    "RandNoduleCentredCrop",
    "RandNoduleCentredCropd",
    "RandScanWindowsd",
    "ScanSamplingPointsd",
    "encode_attribute",
    "encode_malignancy",
    "encode_malignancy_score",
    "encode_nodule",
    "get_growth_transforms",
    "get_inference_transforms",
    "get_scan_train_transforms",
    "get_train_transforms",
    "get_val_transforms",
    "nodule_roi",
    "normalise_windows",
    "voxel_to_world",
    "world_to_voxel",
]
