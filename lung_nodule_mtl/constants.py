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
    "DEFAULT_WINDOWS",
    "IGNORE_INDEX",
    "Attribute",
    "DatalistSplit",
    "Keys",
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
    NODULE = "nodule"
    """Detection label of a training window: 1 a nodule at its centre, 0 none (a hard or random negative from a
    whole scan); absent or ``null`` when not known (a window with a nodule off-centre, a nodule-centred VOI crop)."""
    """Cross-validation fold of the item's patient (0-based)."""


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
