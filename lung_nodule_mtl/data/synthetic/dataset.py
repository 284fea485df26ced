"""Cases (a patient with its volumes) in memory, and the synthetic data set written to disk."""

from __future__ import annotations

import csv
import json
import math
import numbers
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lung_nodule_mtl.constants import Keys, ras_to_lps
from lung_nodule_mtl.data.datalist import build_datalist_or_fewer_folds, write_datalist
from lung_nodule_mtl.data.synthetic import config as C
from lung_nodule_mtl.data.synthetic.anatomy import Patient, draw_patient
from lung_nodule_mtl.data.synthetic.config import MODES, SynthConfig, make_config
from lung_nodule_mtl.data.synthetic.geometry import AXIS_SIGNS, Grid
from lung_nodule_mtl.data.synthetic.nodules import Nodule, draw_nodule, label_nodule, place_nodules
from lung_nodule_mtl.data.synthetic.render import SyntheticVolume, render_volume
from lung_nodule_mtl.utils.io import atomic_write, atomic_write_nifti

__all__ = [
    "ANNOTATIONS_FILE",
    "CASE_PREFIX",
    "SOURCE",
    "SyntheticCase",
    "case_id",
    "crop_grid",
    "generate_case",
    "scan_grid",
    "synthesize_dataset",
    "volume_items",
]

CASE_PREFIX = "SYN"
"""Patient ids are ``SYN-0001``, ``SYN-0002``, ... (case index + 1, at least 4 digits)."""
SOURCE = "lung_nodule_mtl synthetic chest CT"
"""``metadata.source`` of the datalists this module writes (how a previous output is recognised)."""
IMAGES_DIR, LABELS_DIR = "images", "labels"
DATALIST_FILE = "datalist.json"
ANNOTATIONS_FILE = "annotations.csv"
GROWTH_TABLE = "growth.csv"
"""The per-pair table of ``growth`` mode (see :mod:`lung_nodule_mtl.data.synthetic.growth`)."""
ANNOTATION_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
FOV_MARGIN_MM = 12.0
"""A scan's field of view leaves at least this much air on each side of the body."""
FOV_CENTER_JITTER_MM = (5.0, 10.0)
"""Largest offset (x, y) of the reconstruction centre from the body centre."""
SCAN_Z_MARGIN_MM = 10.0
"""Scans start at most this far below the lung base and end at most this far above the apex."""
CROP_Z_MARGIN_MM = 2.0
CROP_EDGE_MARGIN_MM = 1.0
"""The crop offset never brings the nodule body closer than this to the crop's faces."""
"""Crops get enough slices for the nodule body plus this margin above and below it."""
MAX_PLACEMENT_TRIES = 6
_OWN_FILE = re.compile(rf"^\.?{CASE_PREFIX}-\d+(_\d+)?(_t[01])?\.nii\.gz")
"""Names of the files this module writes in images/ and labels/ (and of their temporary files)."""
"""A case draws fresh nodules this many times at most until one of them fits in the lungs."""


@dataclass
class SyntheticCase:
    """One synthetic patient in memory.

    Attributes:
        patient_id: e.g. ``"SYN-0001"``.
        mode: ``"crops"`` or ``"scans"``.
        patient: the anatomy model.
        nodules: the patient's placed and labelled nodules.
        volumes: the rendered volumes: one per nodule (crops) or one scan.
    """

    patient_id: str
    mode: str
    patient: Patient
    nodules: list[Nodule]
    volumes: list[SyntheticVolume]


def case_id(index: int) -> str:
    """Patient id of case ``index`` (0-based): ``SYN-0001`` for 0."""
    return f"{CASE_PREFIX}-{index + 1:04d}"


def _streams(seed: int, index: int) -> list[np.random.SeedSequence]:
    """Independent seed sequences (anatomy, nodules, geometry, images) of case ``index``.

    Case ``index`` uses ``SeedSequence(seed, spawn_key=(index,))``, the ``index``-th child of
    ``SeedSequence(seed)``, so it does not depend on how many cases are generated.
    """
    return np.random.SeedSequence(seed, spawn_key=(index,)).spawn(4)


def _slice_spacing(rng: np.random.Generator, slice_mm: tuple[float, float]) -> float:
    choices = [s for s in C.STANDARD_SLICE_MM if slice_mm[0] <= s <= slice_mm[1]]
    if choices:
        return float(choices[int(rng.integers(len(choices)))])
    return float(rng.uniform(*slice_mm))


def crop_grid(
    nodule: Nodule,
    spacing: tuple[float, float, float],
    config: SynthConfig,
    rng: np.random.Generator,
) -> Grid:
    """A crop grid around a nodule: the nodule's centre is a voxel centre near the crop centre.

    The crop is ``crop_size_xy`` voxels in-plane and ``crop_size_z`` slices (default: the same
    physical extent, at least enough for the nodule); the centre voxel is shifted from the middle
    voxel ``n // 2`` by a random whole number of voxels, at most ``crop_offset_mm`` and never so much
    that the nodule body leaves the crop.
    """
    sx, sy, sz = spacing
    nz = config.crop_size_z or max(4, round(config.crop_size_xy * sx / sz))
    if config.crop_size_z is None:
        nz = max(nz, math.ceil((2.0 * (nodule.radius_max + CROP_Z_MARGIN_MM)) / sz))
    shape = (config.crop_size_xy, config.crop_size_xy, int(nz))
    idx = []
    for n, s in zip(shape, spacing, strict=True):
        slack = min(n // 2, n - 1 - n // 2) * s - nodule.radius_max - CROP_EDGE_MARGIN_MM
        limit = int(max(0.0, min(config.crop_offset_mm, slack)) // s)
        idx.append(n // 2 + int(rng.integers(-limit, limit + 1)))
    origin = np.asarray(nodule.center) - AXIS_SIGNS * np.asarray(spacing) * np.asarray(idx)
    return Grid(shape, (float(sx), float(sy), float(sz)), tuple(float(o) for o in origin))  # type: ignore[arg-type]


def scan_grid(patient: Patient, config: SynthConfig, rng: np.random.Generator) -> Grid:
    """A whole-chest grid: ``scan_shape`` voxels, field of view around the body, z range on the lungs."""
    nx, ny, nz = config.scan_shape
    sz = _slice_spacing(rng, config.slice_mm)
    jx, jy = rng.uniform(-1.0, 1.0, 2) * np.asarray(FOV_CENTER_JITTER_MM)
    if config.scan_spacing_xy_mm is not None:
        sxy = float(rng.uniform(*config.scan_spacing_xy_mm))
    else:
        half_w, half_d = patient.body_half_extent()
        need = 2.0 * max(half_w + abs(jx), half_d + abs(jy)) + 2.0 * FOV_MARGIN_MM
        sxy = max(float(rng.uniform(*config.scan_fov_mm)), need) / max(nx, ny)
    length = nz * sz
    lo, hi = patient.z_base - SCAN_Z_MARGIN_MM, patient.z_apex + SCAN_Z_MARGIN_MM - length
    z0 = float(rng.uniform(min(lo, hi), max(lo, hi)))
    origin = (patient.x0 + jx + 0.5 * (nx - 1) * sxy, patient.y0 + jy + 0.5 * (ny - 1) * sxy, z0)
    return Grid((nx, ny, nz), (sxy, sxy, sz), origin)


def _draw_and_place(
    patient: Patient,
    rng: np.random.Generator,
    config: SynthConfig,
    count: tuple[int, int],
    separation: float,
    z_range: tuple[float, float] | None = None,
    grid: Grid | None = None,
) -> list[Nodule]:
    n = int(rng.integers(count[0], count[1] + 1))
    placed: list[Nodule] = []
    for _ in range(MAX_PLACEMENT_TRIES):
        nodules = [draw_nodule(rng, config) for _ in range(n)]
        placed = place_nodules(patient, nodules, rng, z_range=z_range, grid=grid, separation=separation)
        if placed:
            break
    if not placed:
        where = (
            f"the scan grid (shape {grid.shape}, spacing {tuple(round(s, 3) for s in grid.spacing)} mm)"
            if grid
            else "the lungs"
        )
        raise ValueError(
            f"could not place any nodule inside {where} after {MAX_PLACEMENT_TRIES} draws; "
            f"use a larger scan_shape / field of view or smaller diameter_mm (got {config.diameter_mm})."
        )
    for nod in placed:
        label_nodule(nod, rng)
    return placed


def generate_case(
    index: int,
    seed: int = 0,
    mode: str = "crops",
    config: SynthConfig | None = None,
    **options: Any,
) -> SyntheticCase:
    """Generate case ``index`` of a data set in memory (deterministic for ``(seed, index, options)``).

    Args:
        index: 0-based case index (the patient ``SYN-<index + 1>``).
        seed: data-set seed.
        mode: ``"crops"`` (one crop per nodule) or ``"scans"`` (one whole scan); ``"growth"`` pairs
            come from :func:`~lung_nodule_mtl.data.synthetic.growth.generate_growth_case`.
        config: generator options; keyword ``options`` override its fields (see :class:`SynthConfig`).

    Returns:
        The case with its volumes (HU images, masks, tissue maps, grids) and labelled nodules.
    """
    _check_int("index", index, 0)
    _check_int("seed", seed, 0)
    if mode == "growth":
        raise ValueError(
            "mode 'growth' makes baseline/follow-up pairs: use "
            "lung_nodule_mtl.data.synthetic.generate_growth_case(index, seed, config) instead of generate_case."
        )
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}.")
    cfg = make_config(config, **options)
    anat_ss, nod_ss, geo_ss, img_ss = _streams(seed, index)
    patient = draw_patient(np.random.default_rng(anat_ss), cfg.noise_hu)
    if not cfg.table:
        patient.table_gap = -1.0
    nod_rng, geo_rng = np.random.default_rng(nod_ss), np.random.default_rng(geo_ss)
    pid = case_id(index)
    if mode == "crops":
        sxy = float(geo_rng.uniform(*cfg.spacing_xy_mm))
        spacing = (sxy, sxy, _slice_spacing(geo_rng, cfg.slice_mm))
        separation = C.NODULE_SEPARATION_MM + C.CROP_SEPARATION_MM
        nodules = _draw_and_place(patient, nod_rng, cfg, cfg.nodules_per_crop_patient, separation)
        volumes = []
        for nod, img_seq in zip(nodules, img_ss.spawn(len(nodules)), strict=True):
            grid = crop_grid(nod, spacing, cfg, geo_rng)
            rng = np.random.default_rng(img_seq)
            volumes.append(render_volume(patient, grid, nodules, rng, name=f"{pid}_{nod.nodule_id}", described=[nod]))
    else:
        grid = scan_grid(patient, cfg, geo_rng)
        z = grid.axes_mm()[2]
        z_range = (max(float(z[0]), patient.z_base), min(float(z[-1]), patient.z_apex))
        nodules = _draw_and_place(
            patient, nod_rng, cfg, cfg.nodules_per_scan, C.NODULE_SEPARATION_MM, z_range=z_range, grid=grid
        )
        volumes = [render_volume(patient, grid, nodules, np.random.default_rng(img_ss), name=pid, described=nodules)]
    return SyntheticCase(pid, mode, patient, nodules, volumes)


def volume_items(volume: SyntheticVolume, patient_id: str, mode: str) -> list[dict[str, Any]]:
    """Datalist items (one per described nodule) of a volume, with paths relative to the data set folder."""
    items = []
    for nod in volume.nodules:
        rec = nod.record()
        item: dict[str, Any] = {
            Keys.IMAGE.value: f"{IMAGES_DIR}/{volume.name}.nii.gz",
            Keys.LABEL.value: f"{LABELS_DIR}/{volume.name}.nii.gz",
            Keys.CASE_ID.value: f"{patient_id}_{nod.nodule_id}",
            Keys.PATIENT_ID.value: patient_id,
            **rec,
            "spacing_mm": [round(float(s), 4) for s in volume.spacing],
        }
        if mode == "scans":
            item["seriesuid"] = volume.name
        items.append(item)
    return items


# --------------------------------------------------------------------------------------------- dataset
def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _previous_output(out: Path) -> bool:
    """Whether ``out`` holds a previous (possibly interrupted) synthetic data set.

    That is a ``datalist.json`` whose ``metadata.source`` is :data:`SOURCE`, or a folder with nothing but
    ``images/`` and ``labels/`` of ``SYN-*`` NIfTI files (and this module's datalist and annotations).
    """
    try:
        with open(out / DATALIST_FILE, encoding="utf-8") as f:
            old = json.load(f)
        if isinstance(old, dict) and isinstance(old.get("metadata"), dict) and old["metadata"].get("source") == SOURCE:
            return True
    except (OSError, json.JSONDecodeError):
        pass
    for entry in out.iterdir():
        if entry.name in (IMAGES_DIR, LABELS_DIR) and entry.is_dir():
            if not all(_OWN_FILE.match(f.name) for f in entry.iterdir()):
                return False
        elif not entry.name.lstrip(".").startswith((DATALIST_FILE, ANNOTATIONS_FILE, GROWTH_TABLE)):
            return False
    return True


def _check_out_dir(out: Path, overwrite: bool) -> bool:
    """Check that ``out`` may be written; return whether it holds a previous synthetic data set."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a folder, got the file {str(out)!r}.")
    if not out.exists() or not any(out.iterdir()):
        return False
    previous = _previous_output(out)
    if not previous and not overwrite:
        raise ValueError(
            f"out_dir {str(out)!r} is not empty and holds no previous synthetic data set "
            f"({DATALIST_FILE} with metadata.source {SOURCE!r}); choose a new or empty folder, or pass overwrite=True."
        )
    return previous


def _remove_stale(out: Path, written: set[str], mode: str) -> int:
    """Delete the ``SYN-*`` NIfTI files of a previous synthetic data set in ``out`` that this run did not write."""
    removed = 0
    for sub in (IMAGES_DIR, LABELS_DIR):
        folder = out / sub
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.is_file() and _OWN_FILE.match(f.name) and f"{sub}/{f.name}" not in written:
                f.unlink()
                removed += 1
    if mode != "scans" and (out / ANNOTATIONS_FILE).is_file():
        (out / ANNOTATIONS_FILE).unlink()
    if mode != "growth" and (out / GROWTH_TABLE).is_file():
        (out / GROWTH_TABLE).unlink()
    return removed


def _write_annotations(path: Path, rows: list[list[Any]]) -> Path:
    with atomic_write(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(ANNOTATION_COLUMNS)
        writer.writerows(rows)
    return path


def synthesize_dataset(
    out_dir: str | os.PathLike[str],
    cases: int,
    seed: int = 0,
    mode: str = "crops",
    n_folds: int = 5,
    test_fraction: float = 0.2,
    val_fold: int = 0,
    overwrite: bool = False,
    config: SynthConfig | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Write a synthetic chest CT data set: NIfTI images and masks, ``datalist.json`` (and LUNA16 CSV).

    Layout: ``out_dir/images/<case>.nii.gz`` (int16 HU), ``out_dir/labels/<case>.nii.gz`` (uint8
    0/1 nodule mask, same affine), ``out_dir/datalist.json`` (one item per nodule, paths relative to
    ``out_dir``, split by patient with :func:`~lung_nodule_mtl.data.datalist.build_datalist_or_fewer_folds`); in
    ``scans`` mode also ``out_dir/annotations.csv`` in LUNA16's format (``seriesuid, coordX, coordY,
    coordZ, diameter_mm``, centres in **LPS** world mm). In ``crops`` mode a case is ``<patient>_<n>``
    (one crop per nodule), in ``scans`` mode ``<patient>`` (the seriesuid). In ``growth`` mode each
    nodule gives a baseline/follow-up pair ``<patient>_<n>_t0`` / ``<patient>_<n>_t1`` on one grid, one
    datalist item per pair with the growth truth, and ``out_dir/growth.csv`` (see
    :mod:`lung_nodule_mtl.data.synthetic.growth`). Every file is written atomically.

    Small sets get fewer folds, as the converters do (the one rule,
    :func:`~lung_nodule_mtl.data.datalist.build_datalist_or_fewer_folds`), and the summary's ``notes`` say so:
    with fewer non-test patients than ``n_folds``, one fold per non-test patient (e.g. 4 cases, test fraction
    0.2: 1 test patient, 3 folds); with fewer than two patients outside ``test`` (e.g. ``cases=1``), no folds
    and no test split: every item in ``training`` with ``fold`` 0, ``validation`` and ``test`` empty. That
    datalist is what the loaders (:func:`~lung_nodule_mtl.data.datalist.read_splits`, training with or without
    ``val_fold`` 0) accept; ``predict`` needs no datalist (``lung-nodule-mtl predict -i <out_dir>/images``).

    Args:
        out_dir: output folder: new, empty, or a previous (even interrupted) synthetic data set, whose
            ``SYN-*`` files this run does not rewrite are deleted; any other non-empty folder needs
            ``overwrite=True`` (then nothing in it is deleted).
        cases: number of patients (``>= 1``).
        seed: data-set seed (``>= 0``); case ``k`` depends only on ``(seed, k, options)``.
        mode: ``"crops"``, ``"scans"`` or ``"growth"``.
        n_folds: patient-level cross-validation folds (``>= 2``; fewer, with a note, when there are fewer
            non-test patients).
        test_fraction: fraction of patients held out as ``test`` (``0 <= f < 1``).
        val_fold: the fold listed as ``validation`` (the last fold made, when fewer are made than that).
        overwrite: write into a non-empty folder that is not a previous synthetic data set.
        config: generator options; keyword ``options`` override its fields (see :class:`SynthConfig`).

    Returns:
        A JSON-friendly summary: the datalist path, mode, numbers of patients, nodules and files,
        counts by nodule type, shape and location, malignancy label counts, per-split counts, the folds
        made (``n_folds``), ``notes`` (what was reduced for a small set; empty otherwise), the diameter
        range (mm), the annotations path (scans), the growth models, interval range and table path
        (growth) and the seconds taken.

    Raises:
        ValueError: an argument or generator option is invalid, or ``out_dir`` is not usable.
    """
    start = time.perf_counter()
    cases = _check_int("cases", cases, 1)
    seed = _check_int("seed", seed, 0)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}.")
    n_folds = _check_int("n_folds", n_folds, 2)
    if not isinstance(test_fraction, numbers.Real) or not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be a number in [0, 1), got {test_fraction!r}.")
    val_fold = _check_int("val_fold", val_fold, 0)
    if val_fold >= n_folds:
        raise ValueError(f"val_fold must be in 0..{n_folds - 1}, got {val_fold}.")
    cfg = make_config(config, **options)
    out = Path(out_dir)
    previous = _check_out_dir(out, bool(overwrite))

    items: list[dict[str, Any]] = []
    rows: list[list[Any]] = []
    written: set[str] = set()
    growth_module = None
    if mode == "growth":
        from lung_nodule_mtl.data.synthetic import growth as growth_module  # imports this module
    for index in range(cases):
        if growth_module is not None:
            for pair in growth_module.generate_growth_case(index, seed, cfg).pairs:
                written.update(growth_module.write_pair(pair, out))
                items.append(growth_module.pair_item(pair))
            continue
        case = generate_case(index, seed, mode, cfg)
        for vol in case.volumes:
            image_rel, label_rel = f"{IMAGES_DIR}/{vol.name}.nii.gz", f"{LABELS_DIR}/{vol.name}.nii.gz"
            atomic_write_nifti(vol.image, vol.affine, out / image_rel, dtype=np.int16)
            atomic_write_nifti(vol.mask, vol.affine, out / label_rel, dtype=np.uint8)
            written.update((image_rel, label_rel))
            items.extend(volume_items(vol, case.patient_id, mode))
            for nod in vol.nodules:
                lps = ras_to_lps(nod.center)
                rows.append([vol.name, *(f"{c:.4f}" for c in lps), f"{nod.diameter_mm:.3f}"])
    metadata = {
        "source": SOURCE,
        "mode": mode,
        "cases": cases,
        "generator_seed": seed,
        "label": "nodule body (for part-solid nodules ground glass and solid component); spicules not included",
        "diameter_mm": "diameter of the sphere of the nodule body's volume",
        "options": cfg.to_dict(),
    }
    if growth_module is not None:
        metadata["label"] = "baseline_mask / followup_mask: " + metadata["label"]
        metadata["diameter_mm"] += " at baseline (followup_diameter_mm at follow-up)"
        metadata["growth"] = {
            "model": "V1 = V0 * 2 ** (interval_days / vdt_days); vdt_days < 0: shrinking; null: stable (V1 = V0)",
            "volumes": "*_volume_mm3: model volume of the nodule body; *_mask_volume_mm3: label voxels around it",
            "registration": "the follow-up crop shows at x the anatomy at c + R (x - c) + t (c the baseline "
            "centre, t registration_translation_mm, R a rotation by registration_rotation_deg)",
            "files": "<case>_t0 baseline, <case>_t1 follow-up, both on the baseline crop grid",
        }
    datalist, notes = build_datalist_or_fewer_folds(
        items, n_folds=n_folds, val_fold=val_fold, test_fraction=float(test_fraction), seed=seed, metadata=metadata
    )
    path = write_datalist(datalist, out / DATALIST_FILE)
    annotations = _write_annotations(out / ANNOTATIONS_FILE, rows) if mode == "scans" else None
    table = growth_module.write_growth_table(out / GROWTH_TABLE, datalist) if growth_module is not None else None
    if previous:
        _remove_stale(out, written, mode)

    labels = Counter(item[Keys.MALIGNANCY.value] for item in items)
    diameters = [float(item[Keys.DIAMETER.value]) for item in items]
    summary: dict[str, Any] = {
        "datalist": str(path),
        "mode": mode,
        "patients": cases,
        "nodules": len(items),
        "files": len(written),
        "nodule_types": dict(sorted(Counter(item["nodule_type"] for item in items).items())),
        "shapes": dict(sorted(Counter(item["shape"] for item in items).items())),
        "locations": dict(sorted(Counter(item["location"] for item in items).items())),
        "malignant": labels.get(1, 0),
        "benign": labels.get(0, 0),
        "indeterminate": labels.get(-1, 0),
        "splits": {k: len(v) for k, v in datalist.items() if isinstance(v, list)},
        "n_folds": datalist["metadata"]["n_folds"],
        "notes": notes,
        "diameter_mm": [round(min(diameters), 2), round(max(diameters), 2)],
        "seed": seed,
    }
    if annotations is not None:
        summary["annotations"] = str(annotations)
    if table is not None:
        summary["growth_models"] = dict(sorted(Counter(item["growth_model"] for item in items).items()))
        days = [int(item["interval_days"]) for item in items]
        summary["interval_days"] = [min(days), max(days)]
        summary["growth_table"] = str(table)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary
