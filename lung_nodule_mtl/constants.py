"""Names shared by the datalists, transforms, networks, losses, metrics and bundle configs.

Every dictionary key and output name the project uses is defined here once, as a ``StrEnum`` (the
role MONAI's ``CommonKeys`` plays), so configs and code spell them the same way.

Conventions that every module follows:

* Images are CT in Hounsfield units (HU) until a window transform scales them to ``[0, 1]``.
* ``center_world_mm`` is a nodule centre ``(x, y, z)`` in millimetres in the image's **RAS** world
  space, the convention of NIfTI affines as nibabel reads them and of MONAI ``MetaTensor.affine``.
  LUNA16 and LIDC-IDRI tables give centres in **LPS** (DICOM/ITK): ``x_ras = -x_lps``,
  ``y_ras = -y_lps``, ``z_ras = z_lps`` (see :func:`lps_to_ras`).
* LIDC-IDRI ratings keep LIDC's own 1-based scales in datalists (e.g. calcification 1-6).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from enum import IntEnum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10
    from enum import Enum

    class StrEnum(str, Enum):
        """Backport of :class:`enum.StrEnum` for Python 3.10."""

        def __str__(self) -> str:
            return str(self.value)


__all__ = [
    "ATTRIBUTE_CLASSES",
    "ATTRIBUTE_NAMES",
    "ATTRIBUTE_WORDS",
    "DEFAULT_WINDOWS",
    "IGNORE_INDEX",
    "ORDINAL_ATTRIBUTES",
    "Attribute",
    "DatalistSplit",
    "GrowthBatchKeys",
    "GrowthKeys",
    "GrowthLossKeys",
    "GrowthOutputKeys",
    "Keys",
    "LossKeys",
    "MalignancyLabel",
    "OutputKeys",
    "lps_to_ras",
    "malignancy_label_from_score",
    "ras_to_lps",
]


class Keys(StrEnum):
    """Keys of a datalist item and of the data dictionaries that flow through the transforms."""

    IMAGE = "image"
    """CT volume: a file path in a datalist, a ``(C, H, W, D)`` tensor after loading (HU, then windowed)."""
    LABEL = "label"
    """Nodule mask: a file path in a datalist, a ``(1, H, W, D)`` tensor of 0/1 after loading."""
    PATIENT_ID = "patient_id"
    """Patient identifier; every split and fold is made on it, never on nodules."""
    NODULE_ID = "nodule_id"
    """Identifier of the nodule within its patient (string)."""
    CASE_ID = "case_id"
    """Identifier of the item (unique within a datalist), used to name outputs."""
    CENTER_WORLD = "center_world_mm"
    """Nodule centre ``[x, y, z]`` in mm, RAS world coordinates of the image."""
    DIAMETER = "diameter_mm"
    """Nodule diameter in mm."""
    MALIGNANCY = "malignancy"
    """Binary malignancy: see :class:`MalignancyLabel`; absent or ``null`` when unknown."""
    MALIGNANCY_SCORE = "malignancy_score"
    """Malignancy rating 1-5 (LIDC scale); absent or ``null`` when unknown."""
    FOLD = "fold"
    """Cross-validation fold of the item's patient (0-based)."""
    NODULE = "nodule"
    """Detection label of a training window: 1 a nodule at its centre, 0 none (a hard or random negative from a
    whole scan); absent or ``null`` when not known (a window with a nodule off-centre, a nodule-centred VOI crop)."""


class OutputKeys(StrEnum):
    """Keys of the dictionary a multi-task network returns (and of the predictions written out).

    The head outputs use the same names as the labels they predict (``Keys.MALIGNANCY``,
    ``Keys.MALIGNANCY_SCORE`` and each :class:`Attribute`), so a loss or metric pairs
    ``pred[name]`` with ``batch[name]``.
    """

    MASK = "mask"
    """Segmentation logits ``(B, out_channels, H, W, D)``."""
    MALIGNANCY = "malignancy"
    """Malignancy logit ``(B, 1)``."""
    MALIGNANCY_SCORE = "malignancy_score"
    """Regressed malignancy rating ``(B, 1)`` on the 1-5 scale."""
    DIAMETER = "diameter_mm"
    """Regressed nodule diameter ``(B, 1)`` in mm (an optional head)."""
    NODULE = "nodule"
    """Detection logit ``(B, 1)``: is there a nodule at the centre of the crop (the false-positive reduction
    head; optional, not in the defaults)."""
    MASK_DEEP_SUPERVISION_PREFIX = "mask_ds"
    """Prefix of the deep-supervision mask logits ``mask_ds1``, ``mask_ds2``, ... (training mode only)."""


class LossKeys(StrEnum):
    """Keys of the dict a :class:`~lung_nodule_mtl.losses.MultiTaskLoss` returns."""

    TOTAL = "loss"
    """The weighted total to back-propagate (scalar)."""
    SEGMENTATION = "segmentation"
    """Dice + CE (or focal) on the mask, with deep supervision when the network returns it."""
    MALIGNANCY = "malignancy"
    """BCE with logits on the malignancy label."""
    MALIGNANCY_SCORE = "malignancy_score"
    """L1 on the 1-5 malignancy rating."""
    ATTRIBUTES = "attributes"
    """Mean cross-entropy over the attributes that have labels in the batch (each also as ``attributes/<name>``)."""
    DIAMETER = "diameter_mm"
    """L1 on the log diameter, when the network has a ``diameter_mm`` head."""
    DETECTION = "nodule"
    """BCE with logits of the detection head (a nodule at the window's centre or not), when the network has one."""
    SIZE_PRIOR = "size_prior"
    """Size prior (seed 2), only when ``size_prior_weight > 0``."""
    SPATIAL_PRIOR = "spatial_prior"
    """Spatial regularisation (seed 2), only when ``spatial_prior_weight > 0``."""


# ----------------------------------------------------------------------------------------- nodule growth
class GrowthKeys(StrEnum):
    """Keys a ``growth`` datalist item adds to a ``crops`` item (which describes the baseline).

    Written by the synthetic growth generator (:mod:`lung_nodule_mtl.data.synthetic.growth`) and the growth-pair
    converter (:mod:`lung_nodule_mtl.data.growth_pairs`). The transforms rename the follow-up's two files in the
    batch: see :class:`GrowthBatchKeys`.
    """

    BASELINE = "baseline"
    """Baseline CT crop (HU), the same file as ``image``."""
    BASELINE_MASK = "baseline_mask"
    """Baseline nodule mask (0/1), the same file as ``label``."""
    FOLLOWUP = "followup"
    """Follow-up CT crop (HU) on the baseline's grid (up to the registration noise)."""
    FOLLOWUP_MASK = "followup_mask"
    """Follow-up nodule mask (0/1) on the baseline's grid."""
    INTERVAL_DAYS = "interval_days"
    """Days between the scans (integer)."""
    VDT_DAYS = "vdt_days"
    """Volume-doubling time (days): ``V1 = V0 * 2 ** (interval / vdt)``; negative when shrinking, null when stable."""
    GROWTH_MODEL = "growth_model"
    """One of ``GROWTH_MODELS``."""
    BASELINE_VOLUME = "baseline_volume_mm3"
    """Model volume of the nodule body at baseline (mm^3, ``pi / 6 * diameter_mm ** 3``)."""
    FOLLOWUP_VOLUME = "followup_volume_mm3"
    """Model volume of the nodule body at follow-up (mm^3)."""
    BASELINE_MASK_VOLUME = "baseline_mask_volume_mm3"
    """Volume (mm^3) of the baseline mask's voxels around the nodule."""
    FOLLOWUP_MASK_VOLUME = "followup_mask_volume_mm3"
    """Volume (mm^3) of the follow-up mask's voxels around the nodule."""
    FOLLOWUP_DIAMETER = "followup_diameter_mm"
    """Volume-equivalent diameter at follow-up (mm); ``diameter_mm`` is the baseline's."""
    FOLLOWUP_NODULE_TYPE = "followup_nodule_type"
    """Type at follow-up (a ground-glass nodule may have become part-solid); ``nodule_type`` is the baseline's."""
    FOLLOWUP_CENTER_WORLD = "followup_center_world_mm"
    """Where the nodule centre appears in the follow-up crop (RAS mm): ``c - R^T t``."""
    REGISTRATION_TRANSLATION = "registration_translation_mm"
    """``t`` of the registration noise (RAS mm)."""
    REGISTRATION_ROTATION = "registration_rotation_deg"
    """Angle of ``R`` of the registration noise (degrees)."""
    SIZE_CAPPED = "size_capped"
    """Whether the follow-up diameter was clipped to its bounds (``vdt_days`` is then the effective VDT)."""


class GrowthBatchKeys(StrEnum):
    """Keys of a growth training batch: the baseline under the usual ``image`` / ``label``, the follow-up apart.

    These are the names :func:`~lung_nodule_mtl.transforms.get_growth_transforms` gives a ``growth`` datalist item
    (:class:`GrowthKeys`): the baseline keeps ``image`` / ``label``, the follow-up's ``followup`` /
    ``followup_mask`` become ``followup_image`` / ``followup_label``. They are renamed before loading because
    MONAI's ``Spacingd`` takes every key that starts with ``"<key>_"`` for a meta dict of ``<key>``
    (``followup_mask`` starts with ``followup_``, ``followup_mask_volume_mm3`` with ``followup_mask_``).
    :class:`~lung_nodule_mtl.engines.GrowthPrepareBatch` puts ``label`` and the follow-up in the targets under
    these names, the defaults of :class:`~lung_nodule_mtl.losses.GrowthLoss` (which takes other names as
    arguments).
    """

    IMAGE = "image"
    """Baseline crop ``(N, C, D, H, W)``, windowed (``Keys.IMAGE``)."""
    LABEL = "label"
    """Baseline mask ``(N, 1, D, H, W)`` of 0/1 (``Keys.LABEL``)."""
    FOLLOWUP_IMAGE = "followup_image"
    """Follow-up crop on the baseline crop's grid ``(N, C, D, H, W)``, same windows (the item's ``followup``)."""
    FOLLOWUP_LABEL = "followup_label"
    """Follow-up mask on the baseline crop's grid ``(N, 1, D, H, W)`` of 0/1 (the item's ``followup_mask``)."""
    INTERVAL = "interval_days"
    """Days from the baseline to the follow-up scan ``(N,)`` (``GrowthKeys.INTERVAL_DAYS``)."""


class GrowthOutputKeys(StrEnum):
    """Keys of the dict :class:`~lung_nodule_mtl.networks.NoduleGrowthNet` returns (shapes for a ``(N, C, D, H, W)``
    input)."""

    IMAGE = "image"
    """Predicted follow-up crop ``(N, C, D, H, W)`` in the input's windowed units (``warped_image + residual``)."""
    MASK = "mask"
    """Follow-up mask logits ``(N, 1, D, H, W)``."""
    DDF = "ddf"
    """Dense displacement field ``(N, 3, D, H, W)`` in voxels, channel ``i`` along spatial axis ``i``."""
    WARPED_IMAGE = "warped_image"
    """Baseline crop warped by the DDF ``(N, C, D, H, W)``."""
    WARPED_MASK = "warped_mask"
    """Baseline mask (a probability in ``[0, 1]``) warped by the DDF ``(N, 1, D, H, W)``."""
    RESIDUAL = "residual"
    """Texture change added to the warped crop ``(N, C, D, H, W)`` (windowed units, already gated)."""
    BASELINE_MASK = "baseline_mask"
    """Baseline mask logits ``(N, 1, D, H, W)`` from the shape decoder (warped when no mask is given)."""


class GrowthLossKeys(StrEnum):
    """Keys of the dict a :class:`~lung_nodule_mtl.losses.GrowthLoss` returns."""

    TOTAL = "loss"
    """The weighted total to back-propagate (scalar)."""
    IMAGE = "image"
    """L1 + (1 − SSIM) of the predicted follow-up crop over the whole crop (also ``image/l1``, ``image/ssim``)."""
    IMAGE_REGION = "image_region"
    """L1 + (1 − SSIM) weighted by the dilated follow-up mask (also ``image_region/l1``, ``image_region/ssim``)."""
    DICE = "dice"
    """Dice loss of the follow-up mask logits against the follow-up label."""
    SMOOTHNESS = "smoothness"
    """Bending energy (or diffusion) of the displacement field in voxels."""
    VOLUME = "volume"
    """``|Σ sigmoid(mask) − Σ warped_mask| / (Σ warped_mask + eps)``: the mask volume change comes from the field."""
    BASELINE_DICE = "baseline_dice"
    """Dice loss of the baseline mask head against the baseline label, when the batch has one."""


class Attribute(StrEnum):
    """The eight LIDC-IDRI radiologist characteristics besides malignancy, as datalist keys."""

    SUBTLETY = "subtlety"
    INTERNAL_STRUCTURE = "internal_structure"
    CALCIFICATION = "calcification"
    SPHERICITY = "sphericity"
    MARGIN = "margin"
    LOBULATION = "lobulation"
    SPICULATION = "spiculation"
    TEXTURE = "texture"


ATTRIBUTE_CLASSES: dict[str, int] = {
    Attribute.SUBTLETY: 5,  # 1 extremely subtle ... 5 obvious
    Attribute.INTERNAL_STRUCTURE: 4,  # 1 soft tissue, 2 fluid, 3 fat, 4 air
    Attribute.CALCIFICATION: 6,  # 1 popcorn, 2 laminated, 3 solid, 4 non-central, 5 central, 6 absent
    Attribute.SPHERICITY: 5,  # 1 linear ... 3 ovoid ... 5 round
    Attribute.MARGIN: 5,  # 1 poorly defined ... 5 sharp
    Attribute.LOBULATION: 5,  # 1 none ... 5 marked
    Attribute.SPICULATION: 5,  # 1 none ... 5 marked
    Attribute.TEXTURE: 5,  # 1 non-solid (ground glass) ... 3 part solid ... 5 solid
}
"""Number of levels of each attribute on LIDC's 1-based scale (values run ``1..n``)."""

ATTRIBUTE_NAMES: tuple[str, ...] = tuple(str(a) for a in Attribute)

ATTRIBUTE_WORDS: dict[str, tuple[str, ...]] = {
    Attribute.SUBTLETY: ("extremely subtle", "moderately subtle", "fairly subtle", "moderately obvious", "obvious"),
    Attribute.INTERNAL_STRUCTURE: ("soft tissue", "fluid", "fat", "air"),
    Attribute.CALCIFICATION: ("popcorn", "laminated", "solid", "non-central", "central", "absent"),
    Attribute.SPHERICITY: ("linear", "ovoid/linear", "ovoid", "ovoid/round", "round"),
    Attribute.MARGIN: ("poorly defined", "near poorly defined", "medium margin", "near sharp", "sharp"),
    Attribute.LOBULATION: (
        "no lobulation",
        "nearly no lobulation",
        "medium lobulation",
        "near marked lobulation",
        "marked lobulation",
    ),
    Attribute.SPICULATION: (
        "no spiculation",
        "nearly no spiculation",
        "medium spiculation",
        "near marked spiculation",
        "marked spiculation",
    ),
    Attribute.TEXTURE: ("non-solid (ground glass)", "non-solid/mixed", "part solid/mixed", "solid/mixed", "solid"),
}
"""Each attribute's ratings ``1..n`` in the readers' words (the LIDC-IDRI reading instructions): ``words[r - 1]``."""

ORDINAL_ATTRIBUTES: tuple[str, ...] = (
    str(Attribute.SUBTLETY),
    str(Attribute.SPHERICITY),
    str(Attribute.MARGIN),
    str(Attribute.LOBULATION),
    str(Attribute.SPICULATION),
    str(Attribute.TEXTURE),
)
"""The attributes whose ratings are ordered (a scale from one end to the other); internal structure and
calcification name kinds, not degrees."""

CALCIFICATION_ABSENT = 6
"""LIDC calcification rating meaning "no calcification"; any lower value is a calcified pattern."""


class DatalistSplit(StrEnum):
    """Top-level lists of a datalist JSON (read by :func:`monai.data.load_decathlon_datalist`)."""

    TRAINING = "training"
    VALIDATION = "validation"
    TEST = "test"


class MalignancyLabel(IntEnum):
    """Values of :attr:`Keys.MALIGNANCY` in a datalist (LIDC convention on the 1-5 rating)."""

    BENIGN = 0
    """Rating 1 or 2."""
    MALIGNANT = 1
    """Rating 4 or 5."""
    INDETERMINATE = -1
    """Rating 3: kept apart; training may use or drop it, evaluation reports it separately."""


IGNORE_INDEX = -100
"""Value of a missing label in a batch tensor (as ``torch.nn.CrossEntropyLoss``'s ``ignore_index``).

In a batch (after the label transform), labels are tensors: ``malignancy`` float ``(B,)`` in
``{0, 1}`` (or a soft ``0.5`` for indeterminate nodules if training chooses to use them),
``malignancy_score`` float ``(B,)`` on 1-5, each attribute int64 ``(B,)`` as a **0-based** class index
(LIDC value - 1); any of them is ``IGNORE_INDEX`` where the label is missing or dropped."""

DEFAULT_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-1000.0, 400.0),
    "mediastinal": (-160.0, 240.0),
    "wide": (-1400.0, 200.0),
}
"""Documented default intensity windows ``(low, high)`` in HU; configs override them."""

AIR_HU = -1000.0
"""Hounsfield value of air, used to pad CT outside the scanned volume."""


def malignancy_label_from_score(score: float | int | None) -> int | None:
    """Map a LIDC malignancy rating to :class:`MalignancyLabel` (``None`` stays ``None``).

    Args:
        score: rating on LIDC's 1-5 scale (a median of readers may be fractional), or ``None``.

    Returns:
        ``1`` for a rating ``>= 4`` (malignant, ``> 3.5`` for medians), ``0`` for ``<= 2``
        (benign, ``< 2.5``), ``-1`` for an indeterminate rating around 3, ``None`` if unknown.

    Raises:
        ValueError: if ``score`` is outside ``[1, 5]``.
    """
    if score is None:
        return None
    s = float(score)
    if not 1.0 <= s <= 5.0:
        raise ValueError(f"malignancy score must be on LIDC's 1-5 scale, got {score!r}.")
    if s > 3.5:
        return int(MalignancyLabel.MALIGNANT)
    if s < 2.5:
        return int(MalignancyLabel.BENIGN)
    return int(MalignancyLabel.INDETERMINATE)


def lps_to_ras(xyz: Sequence[float]) -> list[float]:
    """Convert a world point from LPS (DICOM, ITK, LUNA16 tables) to RAS (NIfTI, MONAI), in mm."""
    if len(xyz) != 3:
        raise ValueError(f"expected a 3D point (x, y, z) in mm, got {list(xyz)!r}.")
    return [-float(xyz[0]), -float(xyz[1]), float(xyz[2])]


def ras_to_lps(xyz: Sequence[float]) -> list[float]:
    """Convert a world point from RAS to LPS, in mm (the same flip as :func:`lps_to_ras`)."""
    return lps_to_ras(xyz)
