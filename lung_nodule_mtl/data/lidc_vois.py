"""Adapter for the LIDC-IDRI nodule crops ("VOIs") with their ``nodules.csv`` table.

The folder holds ``image/<patient>_R_<nodule>.nii.gz`` (CT crop around one nodule, int16 HU, native
anisotropic spacing, world geometry in the affine), ``nodule_mask/<same name>`` (the merged
radiologists' mask) and ``nodules.csv`` (one row per nodule, centres in **LPS** world mm as in
LUNA16, ratings by majority vote with their integer ``*_value`` columns).

:func:`prepare_vois` turns it into the project's datalist (see :mod:`lung_nodule_mtl.data.datalist`):
centres converted to RAS, LIDC's malignancy convention applied (rating >= 4 malignant, <= 2
benign, 3 indeterminate), the eight attributes on their LIDC scales, and patient-level folds. The
images are referenced where they are (absolute paths), never copied.

Every centre is checked against its mask: where the table's centre is not inside the nodule
mask (in the shipped data, one nodule's crop does not reach its table centre), the centre of the
mask is used instead and the item says so (``center_source: "mask"``), with a warning.

Data: LIDC-IDRI, The Cancer Imaging Archive, CC BY 3.0. Armato SG III et al., Medical Physics
38:915-931, 2011; doi:10.7937/K9/TCIA.2015.LO9QL9SX.
"""

from __future__ import annotations

import csv
import logging
import math
import numbers
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from lung_nodule_mtl.constants import Attribute, Keys, lps_to_ras, malignancy_label_from_score
from lung_nodule_mtl.data.datalist import build_datalist_or_fewer_folds, build_test_datalist, write_datalist

__all__ = ["LIDC_CITATION", "prepare_vois", "read_voi_table", "voi_item"]

logger = logging.getLogger(__name__)

LIDC_CITATION = (
    "LIDC-IDRI (The Cancer Imaging Archive, CC BY 3.0): Armato SG III et al., The Lung Image Database "
    "Consortium (LIDC) and Image Database Resource Initiative (IDRI): a completed reference database of lung "
    "nodules on CT scans. Medical Physics 38:915-931, 2011. doi:10.7937/K9/TCIA.2015.LO9QL9SX"
)

IMAGE_DIR = "image"
MASK_DIR = "nodule_mask"
TABLE = "nodules.csv"

_ATTRIBUTE_COLUMNS: dict[str, str] = {
    Attribute.SUBTLETY: "Subtlety_value",
    Attribute.INTERNAL_STRUCTURE: "InternalStructure_value",
    Attribute.CALCIFICATION: "Calcification_value",
    Attribute.SPHERICITY: "Sphericity_value",
    Attribute.MARGIN: "Margin_value",
    Attribute.LOBULATION: "Lobulation_value",
    Attribute.SPICULATION: "Spiculation_value",
    Attribute.TEXTURE: "Texture_value",
}
_REQUIRED_COLUMNS = (
    "patient_id",
    "nodule_id",
    "coordX",
    "coordY",
    "coordZ",
    "diameter_mm",
    "Malignancy_value",
    *_ATTRIBUTE_COLUMNS.values(),
)


def read_voi_table(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read ``nodules.csv`` and check that it has the columns the adapter needs.

    Raises:
        FileNotFoundError: the table does not exist.
        ValueError: a required column is missing, or the table has no rows.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"LIDC VOI table not found: {str(p)!r} (expected <vois>/{TABLE}).")
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{p}: missing column(s) {missing}; found {reader.fieldnames}.")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{p}: the table has no rows.")
    return rows


def _optional_int(value: str, column: str, where: str) -> int | None:
    if value is None or value.strip() in ("", "nan", "NaN", "None"):
        return None
    try:
        number = float(value)
    except ValueError as e:
        raise ValueError(f"{where}: column {column!r} should be a number, got {value!r}.") from e
    if number != int(number):
        raise ValueError(f"{where}: column {column!r} should be an integer rating, got {value!r}.")
    return int(number)


def _float(value: str, column: str, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: column {column!r} should be a number, got {value!r}.") from e
    if not math.isfinite(number):
        raise ValueError(f"{where}: column {column!r} is not finite ({value!r}).")
    return number


def voi_item(row: dict[str, str], vois_dir: Path, where: str) -> dict[str, Any]:
    """Build one datalist item from a ``nodules.csv`` row, checking the centre against the mask.

    Args:
        row: the table row.
        vois_dir: the VOI folder (holding ``image/`` and ``nodule_mask/``).
        where: how to name the row in errors (file and line).

    Returns:
        The item; ``center_world_mm`` is RAS mm and lies inside the nodule mask.

    Raises:
        FileNotFoundError: the row's image or mask file is missing.
        ValueError: a value is malformed, the mask is empty, or its grid differs from the image's.
    """
    patient, nodule = row["patient_id"].strip(), row["nodule_id"].strip()
    name = f"{patient}_R_{nodule}.nii.gz"
    image, mask = vois_dir / IMAGE_DIR / name, vois_dir / MASK_DIR / name
    for f in (image, mask):
        if not f.is_file():
            raise FileNotFoundError(f"{where}: file not found: {str(f)!r}.")
    img_header = nib.load(image)
    mask_img = nib.load(mask)
    if not isinstance(img_header, nib.Nifti1Image) or not isinstance(mask_img, nib.Nifti1Image):
        raise ValueError(f"{where}: {name} must be NIfTI-1 image and mask files.")
    if img_header.shape != mask_img.shape or not np.allclose(img_header.affine, mask_img.affine, atol=1e-3):
        raise ValueError(
            f"{where}: mask {str(mask)!r} is not on its image's grid "
            f"(shape {mask_img.shape} vs {img_header.shape}, affines differ: "
            f"{not np.allclose(img_header.affine, mask_img.affine, atol=1e-3)})."
        )
    mask_array = np.asarray(mask_img.dataobj) > 0
    if not mask_array.any():
        raise ValueError(f"{where}: the nodule mask {str(mask)!r} is empty.")

    centre_ras = np.asarray(
        lps_to_ras([_float(row[c], c, where) for c in ("coordX", "coordY", "coordZ")]), dtype=np.float64
    )
    centre_source = "table"
    voxel = np.rint(np.linalg.solve(mask_img.affine, np.r_[centre_ras, 1.0])[:3]).astype(int)
    inside = bool(np.all(voxel >= 0) and np.all(voxel < mask_array.shape) and mask_array[tuple(voxel)])
    if not inside:
        coords = np.argwhere(mask_array)
        centroid = coords.mean(axis=0)
        nearest = coords[np.argmin(((coords - centroid) ** 2).sum(axis=1))]  # the mask voxel nearest its centroid
        centre_ras = (mask_img.affine @ np.r_[nearest.astype(np.float64), 1.0])[:3]
        centre_source = "mask"
        logger.warning(
            "%s: table centre (voxel %s) is not inside the nodule mask of %s; using the mask's centre.",
            where,
            voxel.tolist(),
            name,
        )

    score = _optional_int(row["Malignancy_value"], "Malignancy_value", where)
    item: dict[str, Any] = {
        Keys.IMAGE.value: str(image.resolve()),
        Keys.LABEL.value: str(mask.resolve()),
        Keys.CASE_ID.value: f"{patient}_R_{nodule}",
        Keys.PATIENT_ID.value: patient,
        Keys.NODULE_ID.value: nodule,
        Keys.CENTER_WORLD.value: [round(float(c), 4) for c in centre_ras],
        "center_source": centre_source,
        Keys.DIAMETER.value: round(_float(row["diameter_mm"], "diameter_mm", where), 4),
        Keys.MALIGNANCY.value: malignancy_label_from_score(score),
        Keys.MALIGNANCY_SCORE.value: score,
    }
    for attribute, column in _ATTRIBUTE_COLUMNS.items():
        item[str(attribute)] = _optional_int(row[column], column, where)
    if row.get("seriesuid"):
        item["seriesuid"] = row["seriesuid"].strip()
    return item


def prepare_vois(
    vois_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    n_folds: int = 5,
    val_fold: int = 0,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``out_dir/datalist.json`` for the LIDC VOIs, split into patient-level folds (or all ``test``).

    Args:
        vois_dir: folder with ``nodules.csv``, ``image/`` and ``nodule_mask/``.
        out_dir: where the datalist is written (atomically); images stay where they are.
        n_folds: number of patient-level cross-validation folds (fewer, with a note, when there are fewer
            patients: :func:`~lung_nodule_mtl.data.datalist.build_datalist_or_fewer_folds`). ``1``: an
            evaluation-only datalist for an external test set, every item in ``test``, no ``fold``, empty
            ``training``/``validation`` (:func:`~lung_nodule_mtl.data.datalist.build_test_datalist`;
            ``val_fold`` and ``test_fraction`` do not apply); the bundle's ``evaluating`` scores it with
            ``--dataset_dir <out_dir> --eval_split test``.
        val_fold: fold used as the ``validation`` list.
        test_fraction: fraction of patients held out as ``test`` (default none: the project's own
            test patients are not in this folder).
        seed: seed of the patient shuffle.

    Returns:
        A summary: counts of nodules and patients, malignancy labels, centres taken from the mask,
        per-split counts, the folds made, notes (what was reduced, if anything), the datalist path and the
        seconds taken.
    """
    start = time.perf_counter()
    if isinstance(n_folds, bool) or not isinstance(n_folds, numbers.Integral) or n_folds < 1:
        raise ValueError(f"n_folds must be an integer >= 1 (1: every item in 'test'), got {n_folds!r}.")
    if n_folds > 1 and not 0 <= val_fold < n_folds:
        raise ValueError(f"val_fold must be in 0..{n_folds - 1}, got {val_fold}.")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}.")
    vois = Path(vois_dir)
    if not vois.is_dir():
        raise FileNotFoundError(f"LIDC VOI folder not found: {str(vois)!r}.")
    table = vois / TABLE
    rows = read_voi_table(table)
    items = [voi_item(row, vois, where=f"{table}:{line}") for line, row in enumerate(rows, start=2)]
    case_ids = Counter(item[Keys.CASE_ID] for item in items)
    duplicated = sorted(c for c, n in case_ids.items() if n > 1)
    if duplicated:
        raise ValueError(f"{table}: nodules listed more than once: {duplicated[:5]}.")
    metadata = {"source": "LIDC-IDRI VOIs", "vois_dir": str(vois.resolve()), "citation": LIDC_CITATION}
    notes: list[str] = []
    if n_folds == 1:
        datalist = build_test_datalist(items, seed=seed, metadata=metadata)
        notes.append("1 fold asked for: every item in 'test' (evaluation only: no training/validation, no folds)")
    else:
        datalist, notes = build_datalist_or_fewer_folds(items, n_folds, val_fold, test_fraction, seed, metadata)
    path = write_datalist(datalist, Path(out_dir) / "datalist.json")
    labels = Counter(item[Keys.MALIGNANCY] for item in items)
    return {
        "datalist": str(path),
        "nodules": len(items),
        "patients": len({item[Keys.PATIENT_ID] for item in items}),
        "malignant": labels.get(1, 0),
        "benign": labels.get(0, 0),
        "indeterminate": labels.get(-1, 0),
        "centres_from_mask": sum(item["center_source"] == "mask" for item in items),
        "splits": {k: len(v) for k, v in datalist.items() if isinstance(v, list)},
        "n_folds": datalist["metadata"]["n_folds"],
        "notes": notes,
        "seconds": round(time.perf_counter() - start, 2),
    }
