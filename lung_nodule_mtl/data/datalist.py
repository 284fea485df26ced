"""The project's one datalist format, and patient-level splits.

A datalist is a JSON file with the lists ``training``, ``validation`` and ``test`` (MONAI's
:func:`monai.data.load_decathlon_datalist` reads it). Each item describes one nodule::

    {
      "image": "images/SYN-0001_1.nii.gz",        # CT in HU; relative paths are relative to the JSON
      "label": "labels/SYN-0001_1.nii.gz",        # nodule mask (0/1)
      "case_id": "SYN-0001_1",                    # unique in the datalist
      "patient_id": "SYN-0001",
      "nodule_id": "1",
      "center_world_mm": [x, y, z],               # RAS world mm, the image affine's space
      "diameter_mm": 12.3,
      "malignancy": 1,                            # 1 malignant, 0 benign, -1 indeterminate; null if unknown
      "malignancy_score": 4,                      # LIDC rating 1-5; null if unknown
      "subtlety": 5, "internal_structure": 1, "calcification": 6, "sphericity": 4,
      "margin": 4, "lobulation": 2, "spiculation": 1, "texture": 5,   # LIDC scales; null if unknown
      "fold": 3                                   # cross-validation fold of the patient
    }

Splits are made **by patient**: all nodules of a patient land in the same fold and the same list.
The top-level ``"metadata"`` object records how the lists were made (seed, folds, source).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, DatalistSplit, Keys, MalignancyLabel
from lung_nodule_mtl.utils.io import atomic_write_json

__all__ = [
    "attribute_class_weights",
    "build_datalist",
    "build_datalist_or_fewer_folds",
    "build_test_datalist",
    "load_datalist",
    "patient_folds",
    "read_splits",
    "select_fold",
    "validate_item",
    "write_datalist",
]

_REQUIRED = (Keys.IMAGE, Keys.PATIENT_ID, Keys.CENTER_WORLD)


def validate_item(item: Mapping[str, Any], where: str = "datalist item") -> None:
    """Check one datalist item and raise a ``ValueError`` that says which field is wrong.

    Args:
        item: the item (see the module docstring for the fields).
        where: how to name the item in the error (e.g. the file and index).

    Raises:
        ValueError: a required field is missing or a value is off its scale.
    """
    for key in _REQUIRED:
        if item.get(key) in (None, ""):
            raise ValueError(f"{where}: missing required field {str(key)!r}.")
    centre = item[Keys.CENTER_WORLD]
    if not (isinstance(centre, Sequence) and len(centre) == 3 and all(math.isfinite(float(c)) for c in centre)):
        raise ValueError(f"{where}: {Keys.CENTER_WORLD!s} must be 3 finite numbers (RAS mm), got {centre!r}.")
    diameter = item.get(Keys.DIAMETER)
    if diameter is not None and not (math.isfinite(float(diameter)) and float(diameter) > 0):
        raise ValueError(f"{where}: {Keys.DIAMETER!s} must be a positive number of mm, got {diameter!r}.")
    malignancy = item.get(Keys.MALIGNANCY)
    if malignancy is not None and malignancy not in {int(m) for m in MalignancyLabel}:
        raise ValueError(f"{where}: {Keys.MALIGNANCY!s} must be 1, 0, -1 or null, got {malignancy!r}.")
    score = item.get(Keys.MALIGNANCY_SCORE)
    if score is not None and not 1 <= float(score) <= 5:
        raise ValueError(f"{where}: {Keys.MALIGNANCY_SCORE!s} must be in 1..5 or null, got {score!r}.")
    for name, levels in ATTRIBUTE_CLASSES.items():
        value = item.get(name)
        if value is not None and not (float(value) == int(value) and 1 <= int(value) <= levels):
            raise ValueError(f"{where}: {name!r} must be an integer in 1..{levels} or null, got {value!r}.")


def patient_folds(
    items: Sequence[Mapping[str, Any]],
    n_folds: int,
    seed: int = 0,
    stratify_key: str | None = Keys.MALIGNANCY,
) -> list[int]:
    """Assign every item a fold in ``0..n_folds-1`` so that each patient is in exactly one fold.

    Patients are shuffled with ``seed``, then taken stratum by stratum (a patient's stratum is
    the highest value of ``stratify_key`` among its nodules, e.g. "has a malignant nodule"), those
    with more nodules first, and each is given to the fold that so far has the fewest nodules of
    that stratum (then the fewest nodules overall). Folds thus get similar numbers of nodules and
    of each class, and the same seed always gives the same folds.

    Args:
        items: datalist items, each with ``patient_id``.
        n_folds: number of folds, ``>= 2`` and at most the number of patients.
        seed: seed of the shuffle; the same seed gives the same folds.
        stratify_key: item field to balance across folds, or ``None``.

    Returns:
        The fold of each item, in the order of ``items``.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}.")
    patients: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        pid = item.get(Keys.PATIENT_ID)
        if pid in (None, ""):
            raise ValueError(f"item {i} has no {Keys.PATIENT_ID!s}; folds are made by patient.")
        patients[str(pid)].append(i)
    if n_folds > len(patients):
        raise ValueError(f"n_folds={n_folds} is more than the {len(patients)} patients in the datalist.")

    def stratum(pid: str) -> float:
        if stratify_key is None:
            return 0.0
        values = [items[i].get(stratify_key) for i in patients[pid]]
        known = [float(v) for v in values if v is not None]
        return max(known) if known else -math.inf

    rng = random.Random(seed)
    order = sorted(patients)
    rng.shuffle(order)
    order.sort(key=lambda pid: (stratum(pid), -len(patients[pid])))  # stable: the shuffle breaks ties
    per_stratum: dict[float, list[int]] = defaultdict(lambda: [0] * n_folds)
    totals = [0] * n_folds
    fold_of_patient: dict[str, int] = {}
    for pid in order:
        counts = per_stratum[stratum(pid)]
        fold = min(range(n_folds), key=lambda k: (counts[k], totals[k], k))
        fold_of_patient[pid] = fold
        counts[fold] += len(patients[pid])
        totals[fold] += len(patients[pid])
    return [fold_of_patient[str(item[Keys.PATIENT_ID])] for item in items]


def _metadata(
    n_folds: int, val_fold: int | None, test_fraction: float, seed: int, extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "format": "lung_nodule_mtl datalist v1",
        "center_world_mm": "RAS world coordinates, mm",
        "n_folds": n_folds,
        "val_fold": val_fold,
        "test_fraction": test_fraction,
        "seed": seed,
        **(dict(extra) if extra else {}),
    }


def build_datalist(
    items: Iterable[Mapping[str, Any]],
    n_folds: int = 5,
    val_fold: int = 0,
    test_fraction: float = 0.0,
    seed: int = 0,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Split nodule items by patient into ``training`` / ``validation`` / ``test`` lists.

    A fraction of the patients (``test_fraction``) is held out as ``test``; the others are dealt
    into ``n_folds`` folds (:func:`patient_folds`), each item keeping its ``fold``; fold ``val_fold``
    is ``validation`` and the rest ``training``. :func:`select_fold` re-splits for another fold.

    Args:
        items: nodule items (validated with :func:`validate_item`).
        n_folds: number of cross-validation folds (``>= 2``).
        val_fold: the fold used as ``validation``.
        test_fraction: fraction of patients held out as ``test`` (``0 <= f < 1``).
        seed: seed for the test draw and the folds.
        metadata: extra provenance to record under ``"metadata"``.

    Returns:
        The datalist dictionary, ready for :func:`write_datalist`.
    """
    items_: list[dict[str, Any]] = [dict(item) for item in items]
    for i, item in enumerate(items_):
        validate_item(item, where=f"item {i} ({item.get(Keys.CASE_ID, item.get(Keys.IMAGE))})")
    if not 0 <= val_fold < n_folds:
        raise ValueError(f"val_fold must be in 0..{n_folds - 1}, got {val_fold}.")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}.")
    patients = sorted({str(item[Keys.PATIENT_ID]) for item in items_})
    rng = random.Random(seed)
    n_test = round(test_fraction * len(patients))
    test_patients = set(rng.sample(patients, n_test)) if n_test else set()
    test = [item for item in items_ if str(item[Keys.PATIENT_ID]) in test_patients]
    rest = [item for item in items_ if str(item[Keys.PATIENT_ID]) not in test_patients]
    for item, fold in zip(rest, patient_folds(rest, n_folds, seed=seed), strict=True):
        item[Keys.FOLD] = fold
    datalist: dict[str, Any] = {
        "metadata": _metadata(n_folds, val_fold, test_fraction, seed, metadata),
        DatalistSplit.TRAINING.value: [],
        DatalistSplit.VALIDATION.value: [],
        DatalistSplit.TEST.value: test,
    }
    return select_fold(datalist | {DatalistSplit.TRAINING.value: rest}, val_fold)


def build_datalist_or_fewer_folds(
    items: Iterable[Mapping[str, Any]],
    n_folds: int = 5,
    val_fold: int = 0,
    test_fraction: float = 0.0,
    seed: int = 0,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """:func:`build_datalist` for data sets that may be too small for it (a converter run on a few patients).

    With fewer patients outside ``test`` than ``n_folds``, as many folds as patients; with fewer than two, every
    item in ``training`` (fold 0) and no ``validation`` or ``test``.

    Returns:
        ``(datalist, notes)``: the notes say what was reduced (empty when nothing was).
    """
    items_ = [dict(item) for item in items]
    patients = {str(item[Keys.PATIENT_ID]) for item in items_}
    n_test = round(test_fraction * len(patients))
    folds = min(n_folds, len(patients) - n_test)
    if folds >= 2:
        notes = (
            []
            if folds == n_folds
            else [f"{len(patients) - n_test} patients outside 'test': {folds} folds instead of {n_folds}"]
        )
        datalist = build_datalist(
            items_, folds, min(val_fold, folds - 1), test_fraction=test_fraction, seed=seed, metadata=metadata
        )
        return datalist, notes
    listed = [{**item, Keys.FOLD.value: 0} for item in items_]
    for i, item in enumerate(listed):
        validate_item(item, where=f"item {i} ({item.get(Keys.CASE_ID, item.get(Keys.IMAGE))})")
    datalist = {
        "metadata": _metadata(1, None, 0.0, seed, metadata),
        DatalistSplit.TRAINING.value: listed,
        DatalistSplit.VALIDATION.value: [],
        DatalistSplit.TEST.value: [],
    }
    return datalist, [
        f"{len(patients)} patient(s): too few for folds and a test split; every item in 'training' (fold 0), "
        "no 'validation' or 'test'"
    ]


def build_test_datalist(
    items: Iterable[Mapping[str, Any]], seed: int = 0, metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """An evaluation-only datalist (an external test set): every item in ``test``, none in ``training``/``validation``.

    The items get no ``fold`` (as the ``test`` items of :func:`build_datalist`); ``metadata`` records
    ``n_folds`` 1, ``val_fold`` null and ``test_fraction`` 1.0. :func:`load_datalist`/:func:`read_splits` read it
    like any other datalist (``training`` and ``validation`` empty, also with a ``val_fold``); the bundle's
    ``evaluating`` scores it with ``--eval_split test``.

    Args:
        items: nodule items (validated with :func:`validate_item`).
        seed: recorded in the metadata (nothing is drawn).
        metadata: extra provenance to record under ``"metadata"``.
    """
    listed = [{k: v for k, v in dict(item).items() if k != Keys.FOLD} for item in items]
    for i, item in enumerate(listed):
        validate_item(item, where=f"item {i} ({item.get(Keys.CASE_ID, item.get(Keys.IMAGE))})")
    extra = {"split": "evaluation only: every item in 'test'", **(metadata or {})}
    return {
        "metadata": _metadata(1, None, 1.0, seed, extra),
        DatalistSplit.TRAINING.value: [],
        DatalistSplit.VALIDATION.value: [],
        DatalistSplit.TEST.value: listed,
    }


def attribute_class_weights(
    items: Sequence[Mapping[str, Any]], power: float = 0.5, attributes: Sequence[str] | None = None
) -> dict[str, list[float]] | None:
    """Per-attribute class weights from the ratings of ``items`` (the training split): ``(count + 1) ** -power``.

    ``power`` 0 gives ``None`` (no weighting), 0.5 the inverse square root of the class frequency, 1 the inverse
    frequency; each attribute's weights are scaled to a mean of 1 over the classes seen, unseen classes get the
    largest weight (they never occur in the loss anyway). For
    :class:`~lung_nodule_mtl.losses.MultiTaskLoss`'s ``attribute_class_weights``; ratings are 1-based (LIDC),
    the weights 0-based (as the logits).
    """
    from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES

    if not power:
        return None
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}.")
    out: dict[str, list[float]] = {}
    for name in attributes or list(ATTRIBUTE_CLASSES):
        n = ATTRIBUTE_CLASSES[name]
        counts = [0] * n
        for item in items:
            rating = item.get(name)
            if rating is not None and 1 <= int(rating) <= n:
                counts[int(rating) - 1] += 1
        seen = [c > 0 for c in counts]
        if not any(seen):
            continue
        raw = [(c + 1.0) ** -float(power) for c in counts]
        mean_seen = sum(w for w, ok in zip(raw, seen, strict=True) if ok) / sum(seen)
        scaled = [w / mean_seen for w in raw]
        top = max(w for w, ok in zip(scaled, seen, strict=True) if ok)
        out[name] = [round(w if ok else top, 6) for w, ok in zip(scaled, seen, strict=True)]
    return out


def select_fold(datalist: Mapping[str, Any], val_fold: int) -> dict[str, Any]:
    """Return a copy of ``datalist`` whose ``validation`` list is fold ``val_fold``.

    ``training`` and ``validation`` are pooled and re-split on each item's ``fold``; ``test`` is
    left as it is.
    """
    pooled = list(datalist.get(DatalistSplit.TRAINING, [])) + list(datalist.get(DatalistSplit.VALIDATION, []))
    missing = [i for i, item in enumerate(pooled) if Keys.FOLD not in item]
    if missing:
        raise ValueError(f"{len(missing)} items have no {Keys.FOLD!s}; build the datalist with build_datalist().")
    folds = {int(item[Keys.FOLD]) for item in pooled}
    if pooled and val_fold not in folds:
        raise ValueError(f"val_fold={val_fold} is not one of the datalist's folds {sorted(folds)}.")
    out = dict(datalist)
    out[DatalistSplit.TRAINING.value] = [item for item in pooled if int(item[Keys.FOLD]) != val_fold]
    out[DatalistSplit.VALIDATION.value] = [item for item in pooled if int(item[Keys.FOLD]) == val_fold]
    if isinstance(out.get("metadata"), Mapping):
        out["metadata"] = {**out["metadata"], "val_fold": val_fold}
    return out


def write_datalist(datalist: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a datalist JSON atomically (temporary file, then rename) and return its path."""
    return atomic_write_json(dict(datalist), path)


EXTRA_PATH_KEYS = ("baseline", "baseline_mask", "followup", "followup_mask")
"""Other file keys made absolute like ``image``/``label`` (a growth pair's, see ``synth --mode growth``)."""


def load_datalist(path: str | os.PathLike[str], split: str = DatalistSplit.TRAINING) -> list[dict[str, Any]]:
    """Read one list of a datalist, with ``image``/``label`` (and :data:`EXTRA_PATH_KEYS`) paths made absolute.

    A thin wrapper of :func:`monai.data.load_decathlon_datalist` that validates every item and
    says which file and item is wrong.

    Args:
        path: the datalist JSON.
        split: ``"training"``, ``"validation"`` or ``"test"``.
    """
    from monai.data import load_decathlon_datalist

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"datalist not found: {str(p)!r}.")
    try:
        with open(p, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e}).") from e
    if split not in raw:
        raise ValueError(f"{p}: has no {split!r} list (lists present: {sorted(k for k in raw if k != 'metadata')}).")
    if not raw[split]:
        return []
    items = load_decathlon_datalist(str(p), is_segmentation=True, data_list_key=split, base_dir=str(p.parent))
    for i, item in enumerate(items):
        validate_item(item, where=f"{p} [{split}][{i}]")
        for key in EXTRA_PATH_KEYS:  # MONAI makes only image/label absolute
            if isinstance(item.get(key), str) and not os.path.isabs(item[key]):
                item[key] = os.path.normpath(os.path.join(p.parent, item[key]))
    return items


def read_splits(path: str | os.PathLike[str], val_fold: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """All three lists of a datalist (paths absolute, items validated), optionally re-split on a fold.

    Args:
        path: the datalist JSON.
        val_fold: when given, ``training``/``validation`` are re-split so that fold ``val_fold`` is
            validation (:func:`select_fold`); ``None`` keeps the lists as written.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}`` (a list missing from the file is empty).
    """
    p = Path(path)
    with open(p, encoding="utf-8") as f:
        present = set(json.load(f))
    splits = {s.value: (load_datalist(p, s) if s.value in present else []) for s in DatalistSplit}
    if val_fold is not None:
        splits = {k: v for k, v in select_fold(splits, int(val_fold)).items() if k in splits}
    return splits
