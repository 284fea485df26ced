"""Datalist label scalars → batch-ready label tensors, per :data:`~lung_nodule_mtl.constants.IGNORE_INDEX`'s encoding.

==========================  ==============  ===================================================
key                         tensor          value
==========================  ==============  ===================================================
``malignancy``              float32, ``()``  ``1.0`` malignant, ``0.0`` benign; indeterminate
                                            (``-1``) → ``IGNORE_INDEX`` (policy ``"ignore"``) or
                                            ``0.5`` (policy ``"soft"``); missing → ``IGNORE_INDEX``
``malignancy_score``        float32, ``()``  LIDC rating 1-5 as is; missing → ``IGNORE_INDEX``
``nodule``                  float32, ``()``  ``1.0`` a nodule at the window's centre, ``0.0`` none;
                                            missing → ``IGNORE_INDEX``
each :class:`Attribute`     int64, ``()``    0-based class (LIDC value - 1); missing → ``IGNORE_INDEX``
==========================  ==============  ===================================================

A label is *missing* when its key is absent from the item, ``None`` or NaN. Every label key is
always written, so items with and without labels collate into one batch (``(B,)`` tensors) with
MONAI's default ``list_data_collate``. Values off their scale raise ``ValueError``: the datalist is
wrong and silently ignoring it would hide that.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import torch
from monai.transforms import MapTransform, Transform

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, ATTRIBUTE_NAMES, IGNORE_INDEX, Keys, MalignancyLabel

__all__ = [
    "INDETERMINATE_POLICIES",
    "LABEL_KEYS",
    "SOFT_INDETERMINATE",
    "NoduleLabels",
    "NoduleLabelsd",
    "encode_attribute",
    "encode_malignancy",
    "encode_malignancy_score",
    "encode_nodule",
]

IndeterminatePolicy = Literal["ignore", "soft"]
INDETERMINATE_POLICIES: tuple[str, ...] = ("ignore", "soft")
"""``"ignore"``: indeterminate nodules get ``IGNORE_INDEX``; ``"soft"``: a soft target :data:`SOFT_INDETERMINATE`."""

SOFT_INDETERMINATE = 0.5
"""Malignancy target of an indeterminate nodule under the ``"soft"`` policy."""

LABEL_KEYS: tuple[str, ...] = (str(Keys.MALIGNANCY), str(Keys.MALIGNANCY_SCORE), *ATTRIBUTE_NAMES, str(Keys.NODULE))
"""Every label the transforms encode, in this order."""

_SCORE_RANGE = (1.0, 5.0)


def _number(value: Any, name: str) -> float | None:
    """``None``/NaN → ``None``; a number (Python, numpy or 1-element tensor) → float; else ``ValueError``."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be one number, got a tensor of shape {tuple(value.shape)}.")
        value = value.item()
    if isinstance(value, str | bytes):
        raise ValueError(f"{name} must be a number or None, got {value!r}.")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or None, got {value!r}.") from None
    return None if math.isnan(v) else v


def _check_policy(indeterminate: str) -> str:
    if indeterminate not in INDETERMINATE_POLICIES:
        raise ValueError(f"indeterminate must be one of {INDETERMINATE_POLICIES}, got {indeterminate!r}.")
    return indeterminate


def encode_malignancy(value: Any, indeterminate: IndeterminatePolicy = "ignore") -> torch.Tensor:
    """Encode a datalist ``malignancy`` (1, 0, -1 or missing) as a float32 scalar tensor.

    Args:
        value: ``1`` malignant, ``0`` benign, ``-1`` indeterminate, ``None``/NaN missing.
        indeterminate: ``"ignore"`` (→ ``IGNORE_INDEX``) or ``"soft"`` (→ ``0.5``) for ``-1``.

    Raises:
        ValueError: another value, or an unknown policy.
    """
    _check_policy(indeterminate)
    v = _number(value, str(Keys.MALIGNANCY))
    if v is None:
        out = float(IGNORE_INDEX)
    elif v in (MalignancyLabel.BENIGN, MalignancyLabel.MALIGNANT):
        out = v
    elif v == MalignancyLabel.INDETERMINATE:
        out = SOFT_INDETERMINATE if indeterminate == "soft" else float(IGNORE_INDEX)
    else:
        raise ValueError(f"{Keys.MALIGNANCY!s} must be 1, 0, -1 or None, got {value!r}.")
    return torch.tensor(out, dtype=torch.float32)


def encode_malignancy_score(value: Any) -> torch.Tensor:
    """Encode a LIDC malignancy rating (1-5, may be a fractional median) as a float32 scalar tensor.

    Missing (``None``/NaN) → ``IGNORE_INDEX``.

    Raises:
        ValueError: a rating outside ``[1, 5]``.
    """
    v = _number(value, str(Keys.MALIGNANCY_SCORE))
    if v is None:
        return torch.tensor(float(IGNORE_INDEX), dtype=torch.float32)
    if not _SCORE_RANGE[0] <= v <= _SCORE_RANGE[1]:
        raise ValueError(f"{Keys.MALIGNANCY_SCORE!s} must be in [1, 5] (LIDC rating) or None, got {value!r}.")
    return torch.tensor(v, dtype=torch.float32)


def encode_nodule(value: Any) -> torch.Tensor:
    """Encode a window's detection label (1 a nodule at its centre, 0 none) as a float32 scalar tensor.

    Missing (``None``/NaN) → ``IGNORE_INDEX``.

    Raises:
        ValueError: any other value.
    """
    v = _number(value, str(Keys.NODULE))
    if v is None:
        return torch.tensor(float(IGNORE_INDEX), dtype=torch.float32)
    if v not in (0.0, 1.0):
        raise ValueError(f"{Keys.NODULE!s} must be 1, 0 or None, got {value!r}.")
    return torch.tensor(v, dtype=torch.float32)


def encode_attribute(name: str, value: Any) -> torch.Tensor:
    """Encode a LIDC attribute rating (1-based) as an int64 0-based class index (scalar tensor).

    Args:
        name: the attribute (a key of :data:`~lung_nodule_mtl.constants.ATTRIBUTE_CLASSES`).
        value: integer rating ``1..n`` on LIDC's scale, ``None``/NaN when missing (→ ``IGNORE_INDEX``).

    Raises:
        ValueError: unknown attribute, or a rating that is not an integer in ``1..n``.
    """
    if name not in ATTRIBUTE_CLASSES:
        raise ValueError(f"name must be one of {list(ATTRIBUTE_NAMES)}, got {name!r}.")
    levels = ATTRIBUTE_CLASSES[name]
    v = _number(value, name)
    if v is None:
        return torch.tensor(IGNORE_INDEX, dtype=torch.int64)
    if v != int(v) or not 1 <= v <= levels:
        raise ValueError(f"{name} must be an integer in 1..{levels} (LIDC scale) or None, got {value!r}.")
    return torch.tensor(int(v) - 1, dtype=torch.int64)


def _check_label_keys(keys: Sequence[str]) -> tuple[str, ...]:
    keys = tuple(str(k) for k in keys)
    unknown = [k for k in keys if k not in LABEL_KEYS]
    if unknown or not keys:
        raise ValueError(f"keys must be a non-empty subset of {list(LABEL_KEYS)}, got {list(keys)!r}.")
    return keys


class NoduleLabels(Transform):
    """Encode one item's label scalars into tensors (see the module docstring for the encoding).

    Args:
        keys: labels to encode (default all of :data:`LABEL_KEYS`).
        indeterminate: ``"ignore"`` or ``"soft"``, for ``malignancy == -1``.
    """

    def __init__(self, keys: Sequence[str] = LABEL_KEYS, indeterminate: IndeterminatePolicy = "ignore") -> None:
        self.keys = _check_label_keys(keys)
        self.indeterminate = _check_policy(indeterminate)

    def __call__(self, labels: Mapping[Hashable, Any]) -> dict[str, torch.Tensor]:
        """Map ``{label: scalar or None}`` (absent keys are missing labels) to ``{label: 0-d tensor}``."""
        out: dict[str, torch.Tensor] = {}
        for key in self.keys:
            value = labels.get(key)
            if key == Keys.MALIGNANCY:
                out[key] = encode_malignancy(value, self.indeterminate)  # type: ignore[arg-type]
            elif key == Keys.MALIGNANCY_SCORE:
                out[key] = encode_malignancy_score(value)
            elif key == Keys.NODULE:
                out[key] = encode_nodule(value)
            else:
                out[key] = encode_attribute(key, value)
        return out


class NoduleLabelsd(MapTransform):
    """Dictionary version of :class:`NoduleLabels`: replace the label scalars of a data dict with tensors.

    Unlike other dict transforms there is no ``allow_missing_keys``: an absent label key is by
    design a missing label and gets ``IGNORE_INDEX``, so every output has every key. Other keys
    of the dictionary pass through untouched.

    Args:
        keys: labels to encode (default all of :data:`LABEL_KEYS`).
        indeterminate: ``"ignore"`` or ``"soft"``, for ``malignancy == -1``.
    """

    def __init__(self, keys: Sequence[str] = LABEL_KEYS, indeterminate: IndeterminatePolicy = "ignore") -> None:
        self.encoder = NoduleLabels(keys, indeterminate)
        super().__init__(self.encoder.keys, allow_missing_keys=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with every label key a 0-d tensor."""
        d = dict(data)
        d.update(self.encoder(d))
        return d
