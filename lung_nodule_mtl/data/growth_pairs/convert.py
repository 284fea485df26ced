"""The growth-pairs data set: :func:`prepare_growth_pairs` runs each PAIRS.csv row, writes the pairs and the datalist.

Step 5 and the outputs of the package docstring (:mod:`lung_nodule_mtl.data.growth_pairs`): each pair's four
files and its record, written atomically and reused by a re-run; ``datalist.json`` and ``pairs_summary.csv``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import nibabel as nib

from lung_nodule_mtl.constants import DatalistSplit, Keys
from lung_nodule_mtl.data.datalist import build_datalist_or_fewer_folds, write_datalist
from lung_nodule_mtl.data.growth_pairs.crops import SOURCE, PairResult, process_pair
from lung_nodule_mtl.data.growth_pairs.loader import Loader
from lung_nodule_mtl.data.growth_pairs.registration import RegistrationSettings
from lung_nodule_mtl.data.growth_pairs.table import (
    PAIRS_COLUMNS,
    CoordinateSystem,
    PairRowError,
    PairSpec,
    read_pairs_csv,
)
from lung_nodule_mtl.data.synthetic.growth import GrowthKeys
from lung_nodule_mtl.utils.io import atomic_path, atomic_write_csv, json_safe, nifti_image, reusable_record

__all__ = ["DEFAULT_CROP_MM", "DEFAULT_SPACING_MM", "SUMMARY_COLUMNS", "prepare_growth_pairs"]

logger = logging.getLogger(__name__)

DEFAULT_CROP_MM = 48.0
"""Edge of the cube cropped around each nodule, mm (the bundle's 48-voxel patch at 1 mm)."""
DEFAULT_SPACING_MM = 1.0
"""Voxel size of the crops, mm (the training chain's spacing)."""

RECORDS_DIR = "records"
DATALIST_FILE, SUMMARY_FILE = "datalist.json", "pairs_summary.csv"
RECORD_VERSION = 1

SUMMARY_COLUMNS: tuple[str, ...] = (
    "line",
    "case_id",
    "patient_id",
    "nodule_id",
    "status",
    "reason",
    "split",
    "fold",
    "interval_days",
    "baseline_mask_volume_mm3",
    "followup_mask_volume_mm3",
    "baseline_native_volume_mm3",
    "followup_native_volume_mm3",
    "volume_ratio",
    "vdt_days",
    "registration_status",
    "rotation_deg",
    "translation_mm",
    "centre_correction_mm",
    "initial_metric",
    "final_metric",
    "warnings",
)
"""Columns of ``pairs_summary.csv``: ``status`` is ``written``, ``reused`` or ``failed`` (``reason`` then says
why); volumes in mm^3 (``*_mask_*``: the written crops; ``*_native_*``: the selected nodule on its own scan's
grid, within reach of the crop: a large difference means resampling or the crop's edge cut the mask);
``vdt_days`` the volume-doubling time of the written masks (negative: shrinking, empty: unchanged);
``translation_mm`` and ``centre_correction_mm`` lengths (see :func:`prepare_growth_pairs`)."""


def _write(out: Path, result: PairResult, record: dict[str, Any], record_path: Path) -> None:
    """The four files and the record, each under a temporary name, renamed only when all are written (record last)."""
    record_path.unlink(missing_ok=True)  # an interrupted rewrite must not look complete
    with contextlib.ExitStack() as stack:
        record_tmp = stack.enter_context(atomic_path(record_path))
        for rel, array in result.arrays.items():
            nib.save(nifti_image(array, result.grid.affine), stack.enter_context(atomic_path(out / rel)))
        with open(record_tmp, "w", encoding="utf-8") as f:
            json.dump(json_safe(record), f, indent=2)
            f.write("\n")


def _fingerprint(spec: PairSpec) -> dict[str, Any]:
    """Sizes and modification times of a pair's inputs (a changed file makes a re-run redo the pair)."""
    out: dict[str, list[int] | None] = {}
    for column in PAIRS_COLUMNS[2:6]:
        p = Path(getattr(spec, column))
        try:
            st = p.stat()
            out[column] = [st.st_size, st.st_mtime_ns]
        except OSError:
            out[column] = None
    return out


_PAIR_FILES = (GrowthKeys.BASELINE, GrowthKeys.BASELINE_MASK, GrowthKeys.FOLLOWUP, GrowthKeys.FOLLOWUP_MASK)


def _reusable(record_path: Path, out: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The pair's record from an earlier run, if made from the same row, inputs and options with its four files."""
    return reusable_record(record_path, "key", key, lambda r: [r["item"][k] or "missing" for k in _PAIR_FILES], out)


def prepare_growth_pairs(
    pairs_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    crop_mm: float = DEFAULT_CROP_MM,
    spacing_mm: float | None = DEFAULT_SPACING_MM,
    n_folds: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
    register: bool = True,
    overwrite: bool = False,
    coordinate_system: CoordinateSystem = "RAS",
    settings: RegistrationSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build aligned growth pairs and their datalist from a user's longitudinal scans (see the package docstring).

    Each item's ``registration`` holds ``method`` (``"rigid"`` or ``"centres"``), ``status``, ``rotation_deg``
    (angle), ``rotation_axis``, ``rotation_matrix`` and ``translation_mm`` (RAS) of the transform about
    ``center_mm`` (the baseline centre) that maps a baseline-crop point ``x`` to the follow-up scan's point
    ``R (x - c) + c + t``, ``centre_correction_mm`` (``c + t`` minus the given follow-up centre: how far the
    registration moved it), ``initial_metric`` / ``final_metric`` (Mattes mutual information, lower is better, at
    the centres' alignment and at the result), and for a registration its ``iterations`` and ``stop_condition``.

    Args:
        pairs_csv: PAIRS.csv (columns: :mod:`~lung_nodule_mtl.data.growth_pairs.table`).
        out_dir: output folder (created).
        crop_mm: edge of the cube cropped around each nodule, mm.
        spacing_mm: voxel size of the crops, mm (an RAS-aligned isotropic grid), or ``None`` to keep the baseline
            scan's voxels.
        n_folds: patient-level cross-validation folds (fewer when there are too few patients).
        test_fraction: fraction of patients held out as ``test``.
        seed: seed of the test draw and the folds.
        register: refine the centres' alignment by rigid registration (``False``: centres only).
        overwrite: redo pairs that are complete from an earlier run.
        coordinate_system: ``"RAS"`` or ``"LPS"``: the centres' space for rows without a ``coordinate_system``.
        settings: registration settings (default :class:`RegistrationSettings`).
        progress: called with one line per pair (default: the module's logger).

    Returns:
        The summary: ``datalist``, ``pairs_summary`` (paths), ``rows``, ``written``, ``reused``, ``failed``
        (``{"PAIRS.csv line N (patient P, nodule K)": reason}``), ``patients``, ``splits``, ``notes``,
        ``warnings`` (``{case: [warning, ...]}``) and ``seconds``.

    Raises:
        FileNotFoundError: no PAIRS.csv.
        ValueError: a bad argument, or a CSV without the required columns or rows.
    """
    start_time = time.perf_counter()
    if not (math.isfinite(float(crop_mm)) and float(crop_mm) > 0):
        raise ValueError(f"crop_mm must be a finite number > 0 (mm), got {crop_mm!r}.")
    if spacing_mm is not None and not (math.isfinite(float(spacing_mm)) and 0 < float(spacing_mm) <= float(crop_mm)):
        raise ValueError(
            f"spacing_mm must be in (0, crop_mm={crop_mm}] mm or None (the baseline's), got {spacing_mm!r}."
        )
    if int(n_folds) < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}.")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}.")
    settings = settings or RegistrationSettings()
    rows = read_pairs_csv(pairs_csv, coordinate_system)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda line: logger.info("%s", line))
    options = {
        "crop_mm": float(crop_mm),
        "spacing_mm": None if spacing_mm is None else float(spacing_mm),
        "register": bool(register),
        "registration": asdict(settings),
        "record_version": RECORD_VERSION,
    }
    loader = Loader()
    failed: dict[str, str] = {}
    warnings: dict[str, list[str]] = {}
    items: list[dict[str, Any]] = []
    summary_rows: list[dict[str, Any]] = []
    written = reused = 0
    for n, row in enumerate(rows, start=1):
        head = f"[{n}/{len(rows)}] {row.where}"
        summary_row: dict[str, Any] = {"line": row.line, "patient_id": row.patient_id, "nodule_id": row.nodule_id}
        summary_rows.append(summary_row)
        spec = row.spec
        if spec is None:
            failed[row.where] = str(row.error)
            summary_row.update(status="failed", reason=row.error)
            say(f"{head}: FAILED: {row.error}")
            continue
        summary_row["case_id"] = spec.case_id
        record_path = out / RECORDS_DIR / f"{spec.case_id}.json"
        key = {"row": spec.as_json(), "inputs": _fingerprint(spec), "options": options}
        record = None if overwrite else _reusable(record_path, out, key)
        if record is not None:
            reused += 1
            status = "reused"
        else:
            try:
                result = process_pair(spec, loader, float(crop_mm), spacing_mm, register, settings)
                record = {"key": key, "item": result.item, "summary": result.summary, "warnings": result.warnings}
                _write(out, result, record, record_path)
            except (PairRowError, ValueError, OSError, RuntimeError) as exc:
                reason = " ".join(str(exc).split())
                failed[row.where] = reason
                summary_row.update(status="failed", reason=reason)
                say(f"{head}: FAILED: {reason}")
                continue
            written += 1
            status = "written"
        items.append(record["item"])
        if record["warnings"]:
            warnings[spec.case_id] = list(record["warnings"])
        summary_row.update(status=status, interval_days=spec.interval_days, **record["summary"])
        summary_row["warnings"] = "; ".join(record["warnings"])
        s = record["summary"]
        say(
            f"{head}: {status} {spec.case_id}: {s['baseline_mask_volume_mm3']:.0f} -> "
            f"{s['followup_mask_volume_mm3']:.0f} mm3 in {spec.interval_days} days; {s['registration_status']}, "
            f"rotation {s['rotation_deg']:.2f} deg, "
            f"centre correction {s['centre_correction_mm']:.2f} mm"
        )

    notes: list[str] = []
    metadata = {
        "source": SOURCE,
        "pairs_csv": str(Path(pairs_csv).resolve()),
        "crop_mm": float(crop_mm),
        "spacing_mm": options["spacing_mm"],
        "register": bool(register),
        "registration_settings": asdict(settings),
        "default_coordinate_system": str(coordinate_system).upper(),
    }
    datalist_path = None
    splits: dict[str, int] = {}
    if items:
        datalist, reduced = build_datalist_or_fewer_folds(
            items, int(n_folds), test_fraction=float(test_fraction), seed=int(seed), metadata=metadata
        )
        notes += reduced
        datalist_path = write_datalist(json_safe(datalist), out / DATALIST_FILE)
        splits = {s.value: len(datalist[s.value]) for s in DatalistSplit}
        where = {
            item[Keys.CASE_ID]: (s.value, item.get(Keys.FOLD)) for s in DatalistSplit for item in datalist[s.value]
        }
        for summary_row in summary_rows:
            if summary_row.get("case_id") in where and summary_row.get("status") != "failed":
                summary_row["split"], summary_row["fold"] = where[summary_row["case_id"]]
    else:
        notes.append("no usable pair: no datalist written")
    summary_path = atomic_write_csv(
        [{k: ("" if v is None else v) for k, v in row.items()} for row in summary_rows],
        out / SUMMARY_FILE,
        first_fields=SUMMARY_COLUMNS,
    )
    return {
        "datalist": None if datalist_path is None else str(datalist_path),
        "pairs_summary": str(summary_path),
        "rows": len(rows),
        "written": written,
        "reused": reused,
        "failed": failed,
        "patients": len({item[Keys.PATIENT_ID] for item in items}),
        "splits": splits,
        "notes": notes,
        "warnings": warnings,
        "seconds": round(time.perf_counter() - start_time, 2),
    }
