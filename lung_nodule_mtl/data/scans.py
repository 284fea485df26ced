"""Whole-scan datalists for detection training: one item per scan, with all of its labelled nodules.

The converters write one datalist item per nodule (``prepare-lidc``, ``prepare-luna16``, ``synth --mode scans``);
whole-scan training (:mod:`lung_nodule_mtl.transforms.scan_windows`) needs one item per **scan**, whose label is the
map of every labelled nodule in it (a window away from one nodule must not hide another). :func:`scan_items` groups
the items by image; where a scan's nodules come with separate masks (``prepare-lidc`` writes one per nodule), their
union is written once to ``label_dir``. Host scans without labelled nodules (any CT, e.g. the TotalSegmentator
example) join as items with ``nodules: []``: they give negatives, and positives with pasted bank nodules.

Hard negatives from a table (:func:`read_negatives`): LUNA16's ``candidates_V2.csv`` (its ``class`` 0 rows) or the
false positives of a previous model (``lung-nodule-mtl mine-negatives``), joined to the scans by case id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset

from lung_nodule_mtl.constants import ATTRIBUTE_NAMES, Keys
from lung_nodule_mtl.data.datalist import read_splits
from lung_nodule_mtl.data.insertion import NoduleBank
from lung_nodule_mtl.transforms.scan_windows import NEGATIVES_KEY, NODULES_KEY

__all__ = [
    "host_items",
    "join_lists",
    "load_or_build_bank",
    "mixed_dataset",
    "read_negatives",
    "read_scan_splits",
    "resolve_scan_datalist",
    "scan_datalist_path",
    "scan_items",
]

logger = logging.getLogger(__name__)

_NODULE_KEYS = (
    str(Keys.CENTER_WORLD),
    str(Keys.DIAMETER),
    str(Keys.NODULE_ID),
    str(Keys.MALIGNANCY),
    str(Keys.MALIGNANCY_SCORE),
    *ATTRIBUTE_NAMES,
)


def _merged_label(paths: Sequence[str], out: Path) -> str:
    """The union of several masks on one grid, written once to ``out`` (re-used when it exists)."""
    if out.is_file():
        return str(out)
    import nibabel as nib

    from lung_nodule_mtl.utils.io import atomic_write_nifti

    def load(path: str) -> nib.Nifti1Image | nib.Nifti2Image:
        img = nib.load(path)
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise ValueError(f"{path}: a nodule mask must be NIfTI to be merged, got {type(img).__name__}.")
        return img

    first = load(paths[0])
    union = np.asarray(first.dataobj) > 0
    for p in paths[1:]:
        img = load(p)
        if img.shape != first.shape or not np.allclose(img.affine, first.affine, atol=1e-3):
            raise ValueError(f"{p}: mask grid differs from {paths[0]}'s; a scan's masks must share its grid.")
        union |= np.asarray(img.dataobj) > 0
    atomic_write_nifti(union.astype(np.uint8), first.affine, out, dtype=np.uint8)
    return str(out)


def scan_items(
    items: Iterable[Mapping[str, Any]], label_dir: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """Group per-nodule datalist items into per-scan items.

    Args:
        items: per-nodule items with absolute ``image`` / ``label`` paths and ``center_world_mm``.
        label_dir: where the union of a scan's separate nodule masks is written (required only when some scan has
            several mask files).

    Returns:
        One item per distinct ``image``, in first-seen order: ``image``, ``label`` (one mask with all the scan's
        nodules, absent when none had one), ``case_id`` (the series UID or the patient), ``patient_id``, ``fold``,
        ``nodules`` (each nodule's centre, diameter, id and labels), and ``negatives`` when items had them.

    Raises:
        ValueError: a scan whose masks are on different grids, or whose masks need merging without ``label_dir``.
    """
    scans: dict[str, dict[str, Any]] = {}
    masks: dict[str, list[str]] = {}
    for item in items:
        image = str(item[str(Keys.IMAGE)])
        scan = scans.get(image)
        if scan is None:
            case = item.get("seriesuid") or item.get(str(Keys.PATIENT_ID)) or Path(image).name.split(".")[0]
            scan = {
                str(Keys.IMAGE): image,
                str(Keys.CASE_ID): str(case),
                str(Keys.PATIENT_ID): item.get(str(Keys.PATIENT_ID)),
                str(Keys.FOLD): item.get(str(Keys.FOLD)),
                NODULES_KEY: [],
            }
            scans[image] = scan
            masks[image] = []
        if item.get(str(Keys.CENTER_WORLD)) is not None:
            scan[NODULES_KEY].append({k: item.get(k) for k in _NODULE_KEYS})
        label = item.get(str(Keys.LABEL))
        if label and str(label) not in masks[image]:
            masks[image].append(str(label))
        if item.get(NEGATIVES_KEY):
            scan.setdefault(NEGATIVES_KEY, []).extend(item[NEGATIVES_KEY])
    for image, scan in scans.items():
        paths = masks[image]
        if len(paths) == 1:
            scan[str(Keys.LABEL)] = paths[0]
        elif len(paths) > 1:
            if label_dir is None:
                raise ValueError(f"{image}: {len(paths)} separate nodule masks; give label_dir to merge them.")
            out = Path(label_dir) / f"{scan[str(Keys.CASE_ID)]}_nodules.nii.gz"
            scan[str(Keys.LABEL)] = _merged_label(paths, out)
    return list(scans.values())


def host_items(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Scan items for CT volumes without labelled nodules (NIfTI, or anything ``LoadImage`` reads).

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    out = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise FileNotFoundError(f"host scan not found: {str(path)!r}.")
        name = path.name.split(".")[0]
        out.append({str(Keys.IMAGE): str(path), str(Keys.CASE_ID): name, str(Keys.PATIENT_ID): name, NODULES_KEY: []})
    return out


def scan_datalist_path(scan_datalist: str | os.PathLike[str] | None, synthetic_dir: str | os.PathLike[str]) -> str:
    """The whole-scan datalist a run reads, writing nothing: ``scan_datalist`` when given (per-nodule items of whole
    scans, as ``prepare-lidc`` / ``prepare-luna16`` / ``synth --mode scans`` write; a folder means its
    ``datalist.json``), else that of the built-in synthetic whole scans in ``synthetic_dir``, which ``initialize``
    generates (:func:`~lung_nodule_mtl.data.default.ensure_synthetic_data` with ``mode="scans"``).

    Raises:
        FileNotFoundError: a given datalist that does not exist.
    """
    from lung_nodule_mtl.data.default import datalist_path

    if scan_datalist not in (None, ""):
        path = Path(scan_datalist)  # type: ignore[arg-type]
        if path.is_dir():
            path = path / "datalist.json"
        if not path.is_file():
            raise FileNotFoundError(f"scan datalist not found: {str(path)!r}.")
        return str(path)
    return datalist_path(None, None, synthetic_dir)


def resolve_scan_datalist(
    scan_datalist: str | os.PathLike[str] | None,
    synthetic_dir: str | os.PathLike[str],
    cases: int = 16,
    seed: int = 1,
) -> str:
    """:func:`scan_datalist_path`, the built-in synthetic whole scans generated on first use (for Python callers)."""
    from lung_nodule_mtl.data.default import ensure_synthetic_data

    return ensure_synthetic_data(scan_datalist_path(scan_datalist, synthetic_dir), synthetic_dir, cases, seed, "scans")


def read_negatives(path: str | os.PathLike[str]) -> dict[str, list[list[float]]]:
    """Hard-negative centres per case from a nodule table: ``{case_id: [[x, y, z] RAS mm, ...]}``.

    Any table :func:`~lung_nodule_mtl.data.nodule_table.read_nodule_table` reads: LUNA16's candidates (rows with
    ``class`` 1, the nodules, are skipped), the table ``lung-nodule-mtl mine-negatives`` writes, or a prediction table.

    Raises:
        FileNotFoundError, ValueError: as ``read_nodule_table``.
    """
    from lung_nodule_mtl.data.nodule_table import read_nodule_table

    out: dict[str, list[list[float]]] = {}
    for case, records in read_nodule_table(path).items():
        centres = [list(map(float, r.center_ras_mm)) for r in records if r.label != 1]
        if centres:
            out[case] = centres
    return out


def _add_negatives(items: list[dict[str, Any]], negatives: Mapping[str, Sequence[Sequence[float]]]) -> int:
    """Append each case's negatives to its scan items (matched by ``case_id``); the number of scans given some."""
    n = 0
    for item in items:
        extra = negatives.get(str(item[str(Keys.CASE_ID)]))
        if extra:
            item.setdefault(NEGATIVES_KEY, []).extend([list(map(float, c)) for c in extra])
            n += 1
    return n


def read_scan_splits(
    path: str | os.PathLike[str],
    val_fold: int | None = None,
    label_dir: str | os.PathLike[str] | None = None,
    hosts: Sequence[str] = (),
    negatives: str | os.PathLike[str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """``{"training", "validation", "test"}`` lists of scan items from a per-nodule datalist of whole scans, the
    ``hosts`` (scans without labelled nodules) added to ``training``.

    Args:
        path: the per-nodule datalist of whole scans.
        val_fold: as :func:`~lung_nodule_mtl.data.datalist.read_splits`.
        label_dir: where merged label maps are written (:func:`scan_items`).
        hosts: CT volumes without labelled nodules.
        negatives: a table of hard negatives (:func:`read_negatives`), joined to the scans by case id (the datalist's
            ``seriesuid``, else ``patient_id``; a host's file name without extension).

    Raises:
        ValueError: a ``negatives`` table none of whose cases is a scan here (a wrong table or case ids).
    """
    splits = read_splits(path, val_fold)
    out = {name: scan_items(items, label_dir) for name, items in splits.items()}
    out["training"] = out.get("training", []) + host_items(hosts or [])
    if negatives not in (None, ""):
        table = read_negatives(negatives)  # type: ignore[arg-type]
        matched = sum(_add_negatives(items, table) for items in out.values())
        if table and not matched:
            example = next(iter(table))
            raise ValueError(
                f"{negatives}: none of its {len(table)} cases (e.g. {example!r}) is a scan of {str(path)!r} or a host; "
                "case ids are the datalist's seriesuid (else patient_id) and a host's file name."
            )
        logger.info("hard negatives of %s: %d of its %d cases are training scans here.", negatives, matched, len(table))
    return out


def join_lists(splits: Mapping[str, Sequence[Any]], names: Sequence[str]) -> list[Any]:
    """The items of ``splits[name]`` for each of ``names``, in order.

    Raises:
        ValueError: a name that is not a list of ``splits``.
    """
    unknown = [n for n in names if n not in splits]
    if isinstance(names, str) or unknown:
        raise ValueError(f"list names must be among {sorted(splits)}, got {names!r}.")
    return [item for name in names for item in splits[name]]


def load_or_build_bank(
    path: str | os.PathLike[str] | None,
    items: Iterable[Mapping[str, Any]],
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    workers: int = 0,
) -> NoduleBank:
    """The nodule bank at ``path`` when given, else one built from ``items`` (the training split's nodule crops:
    pasted nodules then never come from validation or test patients)."""
    if path not in (None, ""):
        bank = NoduleBank.load(path)  # type: ignore[arg-type]
        if tuple(bank.spacing_mm) != tuple(float(s) for s in spacing_mm):
            raise ValueError(f"{path}: bank spacing {bank.spacing_mm} mm differs from the training grid {spacing_mm}.")
        return bank
    items = list(items)
    logger.info("building the nodule bank from %d training nodules", len(items))
    return NoduleBank.from_items(items, spacing_mm, workers=workers)


def mixed_dataset(crops: Dataset, windows: Sequence[tuple[Dataset, int]] = ()) -> Dataset:
    """One epoch's data: every nodule-centred crop once, and for each ``(dataset, n)`` of ``windows`` ``n`` windows of
    that data set's items (each item gives a new random window each time it is drawn; the cached volumes are shared,
    not copied).

    Raises:
        ValueError: ``n < 0``, or windows asked of an empty data set.
    """
    parts: list[Dataset] = [crops] if len(crops) else []  # type: ignore[arg-type]
    for dataset, count in windows:
        n = int(count)
        if n < 0 or (n > 0 and len(dataset) == 0):  # type: ignore[arg-type]
            raise ValueError(f"window counts must be >= 0 and their data sets non-empty, got {n} of {len(dataset)}.")  # type: ignore[arg-type]
        if n:
            repeats = -(-n // len(dataset))  # type: ignore[arg-type]
            parts.append(Subset(ConcatDataset([dataset] * repeats), range(n)))
    if not parts:
        raise ValueError("mixed_dataset: nothing to train on (no crops and no windows).")
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)
