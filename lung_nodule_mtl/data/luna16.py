"""Converter of the LUNA16 challenge data (MetaImage scans + ``annotations.csv``) to NIfTI and a datalist.

LUNA16 ships 888 chest CT scans as ``subset0/ ... subset9/<seriesuid>.mhd`` (+ ``.raw``), in LPS world
coordinates (ITK), and tables of nodule centres in **LPS** mm (``annotations.csv``: 1186 nodules >= 3 mm in
601 scans; ``annotations_excluded.csv``: the other findings; ``candidates.csv``: CAD candidates).
:func:`prepare_luna16` turns a copy of it (any nesting of folders under the root) into::

    OUT/images/<seriesuid>.nii.gz    every scan found, HU, int16 as stored (float32 for float sources)
    OUT/labels/<seriesuid>.nii.gz    spherical nodule masks (0/1) of the annotated scans (labels=True, default)
    OUT/meta/<seriesuid>.json        geometry, HU range and the inputs' fingerprint; written last per scan
    OUT/datalist.json                one item per annotated nodule of a converted scan
    OUT/scans.csv                    one row per scan found or annotated: status, subset, fold, counts, error

**Geometry**: each NIfTI is on exactly the MetaImage's grid: voxel ``(i, j, k)`` of the NIfTI is ITK index
``(i, j, k)``, and the NIfTI affine (sform and qform, code 1) is ``diag(-1, -1, 1, 1) @`` the LPS affine built
from the header's spacing, direction (``TransformMatrix``) and origin (``Offset``), as MONAI's ``ITKReader`` and
:func:`lung_nodule_mtl.io.ct.load_ct` give it. The scans are read with :func:`~lung_nodule_mtl.io.ct.
load_ct`, so a truncated ``.raw`` or a volume that is not CT in HU fails that scan with a one-line reason.

**Labels**: LUNA16 has no nodule masks, only centres and diameters. With ``labels=True`` (the default, because
the project's training needs a ``label`` for its segmentation head) each annotated scan gets a mask of balls: the
voxels whose centre lies within ``diameter_mm / 2`` of a nodule centre (world mm, so anisotropic and rotated
grids are handled), and always the voxel nearest the centre. A ball is only a rough stand-in for a nodule's
shape (spiculated, lobulated, juxta-pleural and ground-glass nodules differ from it most): items say
``"label_source": "sphere"`` so that segmentation trained or measured on them can be reported apart. The label
file of a scan holds the balls of all its nodules, so a crop around one nodule may show a neighbour too. With
``labels=False`` items have no ``label`` and ``"label_source": null``.

**Datalist items** (see :mod:`lung_nodule_mtl.data.datalist`): ``image``/``label`` relative to the JSON,
``center_world_mm`` in RAS (``x_ras = -x_lps``, ``y_ras = -y_lps``), ``diameter_mm``, ``patient_id`` = ``seriesuid``
(LUNA16 gives no patient ids; LIDC-IDRI, its source, has 1018 scans of 1010 patients and LUNA16 keeps 888 of them,
so in practice each patient has one scan, and at most a handful could share a patient unnoticed),
``nodule_id`` = the nodule's 1-based rank among its scan's rows, ``case_id`` = ``<seriesuid>_<nodule_id>``,
``malignancy`` / ``malignancy_score`` ``null`` (LUNA16 has no malignancy), ``subset`` and ``annotation_row``
(its line in ``annotations.csv``). **Folds**: when every scan with items lies in a ``subsetK`` folder, the fold is
``K`` (LUNA16's official 10-fold split, ``fold_source: "luna16_subsets"``); otherwise patient-level folds from
:func:`~lung_nodule_mtl.data.datalist.patient_folds` (``fold_source: "patient_folds"``). There is no ``test``
list (LUNA16 is evaluated by cross-validation over its subsets); fold ``val_fold`` is ``validation``.

**Errors**: an annotated scan that is not in the folder is counted and listed (``status: missing``), not an
error. A scan that cannot be used (unreadable, not CT, a nodule centre outside its image, its ``seriesuid`` found
twice) fails with one line naming the file (and the ``annotations.csv`` line), leaves no output, and the others
go on; :attr:`Luna16Result.ok` is then false. Every file is written atomically and a scan's ``meta`` JSON last,
so a re-run skips the scans whose outputs are complete and were made from the same inputs (``overwrite=True``
redoes them); a run killed half-way finishes on the next run.

Data: LUNA16 (derived from LIDC-IDRI, The Cancer Imaging Archive, CC BY 3.0). Setio AAA et al., Medical Image
Analysis 42:1-13, 2017, doi:10.1016/j.media.2017.06.015; Armato SG III et al., Medical Physics 38:915-931, 2011.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lung_nodule_mtl.constants import DatalistSplit, Keys, ras_to_lps
from lung_nodule_mtl.data.datalist import patient_folds, validate_item, write_datalist
from lung_nodule_mtl.data.nodule_table import NoduleRecord, read_nodule_table
from lung_nodule_mtl.io import Case, InputError, ct_storage_dtype, load_ct, world_to_voxel, write_on_grid
from lung_nodule_mtl.utils.deprecation import renamed_keyword
from lung_nodule_mtl.utils.io import atomic_write_csv, atomic_write_json, atomic_write_nifti, json_safe, reusable_record

__all__ = [
    "LUNA16_CITATION",
    "LUNA16_FOLDS",
    "Luna16Result",
    "Luna16Scan",
    "find_luna16_scans",
    "prepare_luna16",
    "sphere_mask",
]

logger = logging.getLogger(__name__)

LUNA16_CITATION = (
    "LUNA16: Setio AAA et al., Validation, comparison, and combination of algorithms for automatic detection of "
    "pulmonary nodules in computed tomography images: the LUNA16 challenge. Medical Image Analysis 42:1-13, 2017. "
    "doi:10.1016/j.media.2017.06.015. Derived from LIDC-IDRI (The Cancer Imaging Archive, CC BY 3.0): Armato SG "
    "III et al., Medical Physics 38:915-931, 2011. doi:10.7937/K9/TCIA.2015.LO9QL9SX"
)

LUNA16_FOLDS = 10
"""Number of LUNA16's subsets (``subset0`` ... ``subset9``), its official cross-validation folds."""

IMAGES_DIR = "images"
LABELS_DIR = "labels"
META_DIR = "meta"
DATALIST_FILE = "datalist.json"
SCANS_FILE = "scans.csv"
LABEL_SOURCE_SPHERE = "sphere"
"""``label_source`` of an item whose label is a ball drawn from the annotation's diameter."""

FOLD_SOURCE_SUBSETS = "luna16_subsets"
FOLD_SOURCE_PATIENTS = "patient_folds"

_META_VERSION = 1
_SUBSET = re.compile(r"^subset(\d+)$", re.IGNORECASE)
_MHD_SUFFIXES = (".mhd", ".mha")
_SCANS_COLUMNS = (
    "seriesuid",
    "status",
    "subset",
    "fold",
    "n_nodules",
    "n_excluded",
    "n_candidates",
    "image",
    "label",
    "source",
    "shape",
    "spacing_mm",
    "seconds",
    "error",
)


@dataclass(frozen=True)
class Luna16Scan:
    """One MetaImage scan found under the LUNA16 root.

    Attributes:
        seriesuid: the file name without ``.mhd``/``.mha`` (LUNA16's ``seriesuid``).
        path: the ``.mhd`` (or ``.mha``) file.
        subset: ``K`` when the file lies (at any depth) in a folder named ``subsetK``, else ``None``.
    """

    seriesuid: str
    path: Path
    subset: int | None


@dataclass
class Luna16Result:
    """What :func:`prepare_luna16` did.

    Attributes:
        summary: counts, paths and seconds (what the command prints); see :func:`prepare_luna16`.
        failed: ``{seriesuid: one-line reason}`` of the scans that could not be converted.
        missing: ``seriesuid`` of the annotated scans that are not under the root, sorted.
        datalist: path of the datalist JSON written.
    """

    summary: dict[str, Any]
    failed: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    datalist: Path | None = None

    @property
    def ok(self) -> bool:
        """Whether every scan found was converted (missing scans do not count as failures)."""
        return not self.failed


@dataclass(frozen=True)
class _Job:
    """The work on one scan (picklable, for worker processes)."""

    scan: Luna16Scan
    nodules: tuple[NoduleRecord, ...]
    annotations: Path
    out: Path
    labels: bool
    overwrite: bool


@dataclass
class _Outcome:
    """What happened to one scan."""

    seriesuid: str
    status: str  # converted | skipped | failed
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------------------------
# Finding the scans
# --------------------------------------------------------------------------------------------------------------


def _subset_of(parts: Sequence[str]) -> int | None:
    """``K`` of the deepest folder named ``subsetK`` among ``parts``, else ``None``."""
    for part in reversed(parts):
        m = _SUBSET.match(part)
        if m:
            return int(m.group(1))
    return None


def find_luna16_scans(root: str | os.PathLike[str]) -> list[Luna16Scan]:
    """List the MetaImage scans (``*.mhd``, ``*.mha``) at any depth under ``root``.

    Hidden files and folders (names starting with ``.``, e.g. macOS's ``._<name>.mhd``) are skipped; folder
    symbolic links are followed (each real folder once).

    Args:
        root: the LUNA16 folder (``subset0/`` ... ``subset9/`` or any other nesting).

    Returns:
        The scans sorted by ``(seriesuid, path)``. A ``seriesuid`` found twice appears twice: the caller
        decides (:func:`prepare_luna16` fails that scan).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(2, "LUNA16 folder not found", str(base))
    scans: list[Luna16Scan] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        parts = folder.relative_to(base).parts
        for name in sorted(filenames):
            lower = name.lower()
            if name.startswith(".") or not lower.endswith(_MHD_SUFFIXES) or len(name) <= 4:
                continue
            if (folder / name).is_file():
                scans.append(Luna16Scan(name[:-4], folder / name, _subset_of(parts)))
    scans.sort(key=lambda s: (s.seriesuid, str(s.path)))
    return scans


# --------------------------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------------------------


@renamed_keyword("centres_ras_mm", "centers_ras_mm")
def sphere_mask(
    shape: Sequence[int],
    affine: ArrayLike,
    centers_ras_mm: Iterable[Sequence[float]],
    diameters_mm: Iterable[float],
) -> NDArray[np.uint8]:
    """Draw balls in world millimetres on a voxel grid.

    A voxel is in a ball when its centre lies within ``diameter / 2`` mm of the ball's centre (distances in world
    mm through ``affine``, so anisotropic spacing and rotated grids are handled); the voxel nearest each centre is
    always set, so a nodule smaller than a voxel still gets one. Balls that lie outside the grid are clipped.

    Args:
        shape: ``(H, W, D)`` of the grid.
        affine: ``(4, 4)`` voxel-to-RAS-mm affine of the grid.
        centers_ras_mm: ball centres ``(x, y, z)``, RAS mm (``centres_ras_mm``: deprecated spelling).
        diameters_mm: ball diameters, mm (one per centre, > 0).

    Returns:
        ``(H, W, D)`` uint8 array of 0/1.

    Raises:
        ValueError: a diameter is not a positive finite number, or the counts of centres and diameters differ.
    """
    dims = tuple(int(n) for n in shape)
    a = np.asarray(affine, dtype=np.float64)
    rotation, translation = a[:3, :3], a[:3, 3]
    inverse = np.linalg.inv(rotation)
    row_norms = np.linalg.norm(inverse, axis=1)  # index extent of a ball of radius 1 mm along each axis
    mask = np.zeros(dims, dtype=np.uint8)
    for centre, diameter in zip(centers_ras_mm, diameters_mm, strict=True):
        d = float(diameter)
        if not (math.isfinite(d) and d > 0):
            raise ValueError(f"a ball's diameter must be a positive number of mm, got {diameter!r}.")
        radius = d / 2.0
        c = np.asarray(centre, dtype=np.float64)
        ijk = inverse @ (c - translation)
        lo = np.maximum(np.floor(ijk - radius * row_norms).astype(int), 0)
        hi = np.minimum(np.ceil(ijk + radius * row_norms).astype(int), np.asarray(dims) - 1)
        if np.all(lo <= hi):
            ii, jj, kk = np.ogrid[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
            di, dj, dk = ii - ijk[0], jj - ijk[1], kk - ijk[2]
            d2 = sum((rotation[r, 0] * di + rotation[r, 1] * dj + rotation[r, 2] * dk) ** 2 for r in range(3))
            box = mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
            box[d2 <= radius * radius] = 1
        nearest = np.rint(ijk).astype(int)
        if np.all(nearest >= 0) and np.all(nearest < dims):
            mask[tuple(nearest)] = 1
    return mask


# --------------------------------------------------------------------------------------------------------------
# One scan
# --------------------------------------------------------------------------------------------------------------


def _paths(out: Path, uid: str) -> dict[str, Path]:
    return {
        "image": out / IMAGES_DIR / f"{uid}.nii.gz",
        "label": out / LABELS_DIR / f"{uid}.nii.gz",
        "meta": out / META_DIR / f"{uid}.json",
    }


def _source_sizes(path: Path) -> dict[str, int]:
    """Sizes of the header and its data file (``<uid>.raw`` / ``.zraw``): part of a scan's fingerprint."""
    uid = path.name[:-4]
    files = [path, path.with_name(f"{uid}.raw"), path.with_name(f"{uid}.zraw")]
    return {f.name: f.stat().st_size for f in files if f.is_file()}


def _fingerprint(job: _Job) -> dict[str, Any]:
    """What a scan's outputs depend on: a re-run reuses them only when this is unchanged."""
    return {
        "version": _META_VERSION,
        "source_sizes": _source_sizes(job.scan.path),
        "labels": job.labels,
        "nodules": [[*r.center_ras_mm, r.diameter_mm] for r in job.nodules],
    }


def _completed(job: _Job, paths: dict[str, Path], fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The meta of a previous conversion of this scan from the same inputs whose files all exist, else ``None``."""
    files = [paths["image"], paths["label"] if job.labels and job.nodules else None]
    return reusable_record(paths["meta"], "fingerprint", fingerprint, lambda _: files)


def _remove_outputs(paths: dict[str, Path]) -> None:
    for key in ("meta", "image", "label"):  # meta first: the scan is incomplete from then on
        paths[key].unlink(missing_ok=True)


def _fmt(values: Iterable[float], digits: int = 2) -> str:
    return "(" + ", ".join(f"{float(v):.{digits}f}" for v in values) + ")"


def _check_nodules(job: _Job, affine: NDArray[np.float64], shape: tuple[int, int, int]) -> list[str]:
    """One line per annotation of the scan that cannot be used: its centre outside the image, no diameter."""
    problems = []
    for rec in job.nodules:
        where = f"{job.annotations} line {rec.row}"
        ijk = np.asarray(world_to_voxel(affine, rec.center_ras_mm), dtype=np.float64)
        if not np.all((ijk >= -0.5) & (ijk <= np.asarray(shape) - 0.5)):
            problems.append(
                f"{where}: nodule centre {_fmt(ras_to_lps(rec.center_ras_mm))} mm (LPS) is outside the image "
                f"{job.scan.path} (voxel {_fmt(ijk, 1)} of a {'x'.join(map(str, shape))} grid)"
            )
        if job.labels and rec.diameter_mm is None:
            problems.append(f"{where}: nodule without a diameter (-1): no sphere label can be drawn ({job.scan.path})")
    return problems


def _convert(job: _Job) -> _Outcome:
    """Convert one scan (or find it complete); never raises: a failure is an outcome with a one-line reason."""
    start = time.perf_counter()
    uid = job.scan.seriesuid
    paths = _paths(job.out, uid)
    try:
        fingerprint = _fingerprint(job)
        if not job.overwrite:
            meta = _completed(job, paths, fingerprint)
            if meta is not None:
                return _Outcome(uid, "skipped", meta=meta, seconds=time.perf_counter() - start)
        paths["meta"].unlink(missing_ok=True)
        try:
            volume = load_ct(Case(uid, job.scan.path, "metaimage"))
        except InputError as e:
            raise _ScanError(str(e)) from None
        affine, shape = volume.affine, volume.shape
        problems = _check_nodules(job, affine, shape)
        if problems:
            more = f" (and {len(problems) - 1} more problem(s) in this scan)" if len(problems) > 1 else ""
            raise _ScanError(problems[0] + more)
        dtype = ct_storage_dtype(volume.array)
        write_on_grid(volume, volume.array, paths["image"], dtype)
        wrote_label = bool(job.labels and job.nodules)
        if wrote_label:
            diameters = [r.diameter_mm for r in job.nodules if r.diameter_mm is not None]  # all, checked above
            mask = sphere_mask(shape, affine, [r.center_ras_mm for r in job.nodules], diameters)
            atomic_write_nifti(mask, affine, paths["label"], dtype=np.uint8)
        else:
            paths["label"].unlink(missing_ok=True)
        seconds = time.perf_counter() - start
        meta = {
            "seriesuid": uid,
            "source": str(job.scan.path),
            "subset": job.scan.subset,
            "image": f"{IMAGES_DIR}/{uid}.nii.gz",
            "label": f"{LABELS_DIR}/{uid}.nii.gz" if wrote_label else None,
            "label_source": LABEL_SOURCE_SPHERE if wrote_label else None,
            "shape": list(shape),
            "spacing_mm": [round(float(s), 6) for s in volume.spacing_mm],
            "affine_ras": np.asarray(affine, dtype=np.float64).tolist(),
            "original_dtype": volume.meta["original_dtype"],
            "stored_dtype": np.dtype(dtype).name,
            "hu_min": volume.meta["hu_min"],
            "hu_max": volume.meta["hu_max"],
            "warnings": list(volume.warnings),
            "seconds": round(seconds, 2),
            "fingerprint": fingerprint,
        }
        atomic_write_json(json_safe(meta), paths["meta"])
        for w in volume.warnings:
            logger.warning("%s: %s", job.scan.path, w)
        return _Outcome(uid, "converted", meta=meta, seconds=seconds)
    except _ScanError as e:
        reason = str(e)
    except Exception as e:  # one scan's unexpected failure (disk full, ...) must not stop the other 887
        reason = f"{job.scan.path}: {type(e).__name__}: {' '.join(str(e).split())}"
    try:
        _remove_outputs(paths)
    except OSError as e:  # pragma: no cover - reported with the reason
        reason += f" (its old outputs could not be removed: {e})"
    return _Outcome(uid, "failed", error=reason, seconds=time.perf_counter() - start)


class _ScanError(Exception):
    """A scan that cannot be converted; the message is the one-line reason, naming the file."""


# --------------------------------------------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------------------------------------------


def _read_optional_table(path: str | os.PathLike[str] | None) -> dict[str, list[NoduleRecord]]:
    return read_nodule_table(path) if path is not None else {}


def _n_outside(meta: dict[str, Any], records: Sequence[NoduleRecord]) -> int:
    """How many of ``records`` have their centre outside the scan described by ``meta``."""
    if not records:
        return 0
    affine = np.asarray(meta["affine_ras"], dtype=np.float64)
    shape = np.asarray(meta["shape"], dtype=np.float64)
    centres = np.asarray([r.center_ras_mm for r in records], dtype=np.float64)
    ijk = (centres - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    return int(np.sum(~np.all((ijk >= -0.5) & (ijk <= shape - 0.5), axis=1)))


def _run(jobs: list[_Job], workers: int) -> Iterable[_Outcome]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_convert, jobs)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        yield from pool.map(_convert, jobs)


def _item(uid: str, k: int, rec: NoduleRecord, meta: dict[str, Any], subset: int | None) -> dict[str, Any]:
    label = meta.get("label")
    item: dict[str, Any] = {Keys.IMAGE.value: meta["image"]}
    if label:
        item[Keys.LABEL.value] = label
    item |= {
        "label_source": meta.get("label_source"),
        Keys.CASE_ID.value: f"{uid}_{k}",
        Keys.PATIENT_ID.value: uid,
        Keys.NODULE_ID.value: str(k),
        "seriesuid": uid,
        Keys.CENTER_WORLD.value: [float(c) + 0.0 for c in rec.center_ras_mm],  # + 0.0: no "-0.0" in the JSON
        Keys.DIAMETER.value: rec.diameter_mm,
        Keys.MALIGNANCY.value: None,
        Keys.MALIGNANCY_SCORE.value: None,
        "subset": subset,
        "annotation_row": rec.row,
    }
    return item


def _assign_folds(
    items: list[dict[str, Any]], subsets: dict[str, int | None], n_folds: int, seed: int, warnings: list[str]
) -> tuple[str, int, dict[str, int]]:
    """Set each item's fold; return the fold source, the number of folds and the fold of each patient.

    ``subsets`` maps every converted scan to its ``subsetK`` index (or ``None``).
    """
    uids = sorted({str(item[Keys.PATIENT_ID]) for item in items})
    known = [v for v in subsets.values() if v is not None]
    in_subsets = all(subsets.get(uid) is not None for uid in uids) if uids else bool(known)
    if in_subsets:
        fold_of = {uid: int(subsets[uid]) for uid in uids}  # type: ignore[arg-type]
        for item in items:
            item[Keys.FOLD.value] = fold_of[str(item[Keys.PATIENT_ID])]
        return FOLD_SOURCE_SUBSETS, max(LUNA16_FOLDS, max(known, default=0) + 1), fold_of
    if not uids:
        return FOLD_SOURCE_PATIENTS, n_folds, {}
    if known:
        warnings.append(
            "some scans with nodules are not in a subsetK folder: LUNA16's subsets are not used as folds, "
            "patient-level folds are made instead"
        )
    n = min(n_folds, len(uids))
    if n < n_folds:
        warnings.append(f"only {len(uids)} scan(s) with nodules: {n} fold(s) instead of {n_folds}")
    folds = patient_folds(items, n, seed=seed, stratify_key=None) if n >= 2 else [0] * len(items)
    fold_of = {}
    for item, fold in zip(items, folds, strict=True):
        item[Keys.FOLD.value] = int(fold)
        fold_of[str(item[Keys.PATIENT_ID])] = int(fold)
    return FOLD_SOURCE_PATIENTS, n, fold_of


def prepare_luna16(
    luna_root: str | os.PathLike[str],
    annotations: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    excluded: str | os.PathLike[str] | None = None,
    candidates: str | os.PathLike[str] | None = None,
    labels: bool = True,
    n_folds: int = LUNA16_FOLDS,
    val_fold: int = 0,
    seed: int = 0,
    overwrite: bool = False,
    workers: int = 1,
) -> Luna16Result:
    """Convert LUNA16 scans to NIfTI and write the project's datalist of its annotated nodules.

    See the module docstring for the outputs, the geometry, the sphere labels and the folds.

    Args:
        luna_root: folder holding ``<seriesuid>.mhd`` + ``.raw`` at any depth (LUNA16: ``subset0/`` ...
            ``subset9/``); it may be empty (every annotated scan is then missing).
        annotations: LUNA16's ``annotations.csv`` (``seriesuid,coordX,coordY,coordZ,diameter_mm``, LPS mm).
        out_dir: output folder (created); ``images/``, ``labels/``, ``meta/``, ``datalist.json``, ``scans.csv``.
        excluded: optional ``annotations_excluded.csv``: its findings are counted per scan in ``scans.csv`` and
            its path recorded in the datalist's metadata (for ``evaluate-froc --excluded``).
        candidates: optional ``candidates.csv`` (or ``candidates_V2.csv``): counted per scan, path recorded.
        labels: write the sphere masks in ``labels/`` and give items a ``label`` (default).
        n_folds: number of patient-level folds when the scans are not all in ``subsetK`` folders (at most the
            number of annotated scans found).
        val_fold: the fold whose items form the ``validation`` list.
        seed: seed of the patient-level folds.
        overwrite: redo scans whose outputs are complete.
        workers: scans converted in parallel (processes); 1 converts in this process.

    Returns:
        A :class:`Luna16Result`. Its ``summary`` has ``scans_found``, ``scans_converted``, ``scans_skipped``
        (complete from an earlier run), ``scans_failed``, ``scans_with_nodules``, ``scans_without_nodules``,
        ``nodules`` (datalist items), ``annotations`` (rows of the table), ``missing_scans`` and
        ``nodules_in_missing_scans``, ``excluded`` / ``candidates`` counts (and those outside their scan),
        ``fold_source``, ``n_folds``, ``splits``, ``label_source``, ``warnings``, the output paths and ``seconds``.

    Raises:
        FileNotFoundError: ``luna_root`` is not a folder, or a table does not exist.
        ValueError: a table cannot be read (:class:`~lung_nodule_mtl.data.nodule_table.NoduleTableError`), or
            ``workers`` / ``n_folds`` / ``val_fold`` is out of range.
    """
    start = time.perf_counter()
    root = Path(luna_root)
    _check_arguments(root, workers, n_folds, val_fold)
    tables = _read_tables(annotations, excluded, candidates)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []
    by_uid = _scans_by_uid(root)
    outcomes, jobs = _plan(by_uid, tables, out, labels, overwrite)
    logger.info(
        "LUNA16: %d scan(s) under %s, %d annotated scan(s) in %s",
        len(by_uid),
        root,
        len(tables.annotations),
        tables.annotations_path,
    )
    outcomes.update(_convert_all(jobs, workers))
    subsets = {uid: scans[0].subset for uid, scans in by_uid.items()}
    missing = sorted(uid for uid in tables.annotations if uid not in by_uid)
    done = {uid: o for uid, o in outcomes.items() if o.status in ("converted", "skipped")}
    items = _nodule_items(done, subsets, tables)
    fold_source, folds_used, fold_of = _assign_folds(
        items, {uid: subsets[uid] for uid in done}, n_folds, seed, warnings
    )
    if items and val_fold not in {item[Keys.FOLD.value] for item in items}:
        warnings.append(f"no nodule is in fold {val_fold}: the validation list is empty")
    datalist = _datalist(items, root, tables, fold_source, folds_used, val_fold, seed, labels)
    datalist_path = write_datalist(json_safe(datalist), out / DATALIST_FILE)
    rows, excl_outside, cand_outside = _scan_rows(by_uid, outcomes, subsets, fold_source, fold_of, tables)
    scans_path = atomic_write_csv(rows, out / SCANS_FILE, first_fields=_SCANS_COLUMNS)
    warnings += _coverage_warnings(excl_outside, cand_outside, root, bool(by_uid))
    for w in warnings:
        logger.warning("LUNA16: %s", w)

    failed = {uid: str(o.error) for uid, o in sorted(outcomes.items()) if o.status == "failed"}
    summary: dict[str, Any] = {
        **_scan_counts(by_uid, outcomes, failed, done, items, tables, missing),
        **_table_counts(tables, excl_outside, cand_outside),
        "fold_source": fold_source,
        "n_folds": folds_used,
        "splits": {k: len(v) for k, v in datalist.items() if isinstance(v, list)},
        "label_source": LABEL_SOURCE_SPHERE if labels else None,
        "datalist": str(datalist_path),
        "scans_table": str(scans_path),
        "warnings": warnings,
        "seconds": round(time.perf_counter() - start, 2),
    }
    return Luna16Result(summary=summary, failed=failed, missing=missing, datalist=datalist_path)


def _check_arguments(root: Path, workers: int, n_folds: int, val_fold: int) -> None:
    """Raise for an out-of-range option or a LUNA16 folder that does not exist."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}.")
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}.")
    if val_fold < 0:
        raise ValueError(f"val_fold must be >= 0, got {val_fold}.")
    if not root.is_dir():
        raise FileNotFoundError(2, "LUNA16 folder not found", str(root))


@dataclass
class _Tables:
    """The annotations and the optional excluded-findings and candidates tables (by seriesuid) with their paths."""

    annotations_path: Path
    annotations: dict[str, list[NoduleRecord]]
    excluded_path: str | os.PathLike[str] | None
    excluded: dict[str, list[NoduleRecord]]
    candidates_path: str | os.PathLike[str] | None
    candidates: dict[str, list[NoduleRecord]]


def _read_tables(
    annotations: str | os.PathLike[str],
    excluded: str | os.PathLike[str] | None,
    candidates: str | os.PathLike[str] | None,
) -> _Tables:
    """Read the annotations table and, where given, the excluded-findings and candidates tables."""
    ann_path = Path(annotations)
    table = read_nodule_table(ann_path)
    return _Tables(
        ann_path, table, excluded, _read_optional_table(excluded), candidates, _read_optional_table(candidates)
    )


def _scans_by_uid(root: Path) -> dict[str, list[Luna16Scan]]:
    """The scans found under ``root``, by seriesuid (a list: a seriesuid may be found more than once)."""
    by_uid: dict[str, list[Luna16Scan]] = defaultdict(list)
    for scan in find_luna16_scans(root):
        by_uid[scan.seriesuid].append(scan)
    return by_uid


def _plan(
    by_uid: dict[str, list[Luna16Scan]], tables: _Tables, out: Path, labels: bool, overwrite: bool
) -> tuple[dict[str, _Outcome], list[_Job]]:
    """One job per scan found; a seriesuid found more than once fails at once (its old outputs removed)."""
    outcomes: dict[str, _Outcome] = {}
    jobs: list[_Job] = []
    for uid, scans in by_uid.items():
        if len(scans) > 1:
            where = ", ".join(str(s.path) for s in scans)
            reason = f"{scans[0].path}: seriesuid {uid} found {len(scans)} times ({where}); keep one copy"
            outcomes[uid] = _Outcome(uid, "failed", error=reason)
            _remove_outputs(_paths(out, uid))
            continue
        nodules = tuple(tables.annotations.get(uid, ()))
        jobs.append(_Job(scans[0], nodules, tables.annotations_path, out, labels, overwrite))
    return outcomes, jobs


def _convert_all(jobs: list[_Job], workers: int) -> dict[str, _Outcome]:
    """Run the jobs (in ``workers`` processes), logging each scan's outcome as it comes."""
    outcomes: dict[str, _Outcome] = {}
    for n, outcome in enumerate(_run(jobs, workers), start=1):
        outcomes[outcome.seriesuid] = outcome
        if outcome.status == "failed":
            logger.error("[%d/%d] %s", n, len(jobs), outcome.error)
        else:
            logger.info("[%d/%d] %s: %s (%.1f s)", n, len(jobs), outcome.seriesuid, outcome.status, outcome.seconds)
    return outcomes


def _nodule_items(done: dict[str, _Outcome], subsets: dict[str, int | None], tables: _Tables) -> list[dict[str, Any]]:
    """The datalist items (checked) of the annotated nodules of the converted scans, by seriesuid and row."""
    items: list[dict[str, Any]] = []
    for uid in sorted(done):
        for k, rec in enumerate(tables.annotations.get(uid, ()), start=1):
            item = _item(uid, k, rec, done[uid].meta, subsets[uid])
            validate_item(item, where=f"{tables.annotations_path} line {rec.row}")
            items.append(item)
    return items


def _datalist(
    items: list[dict[str, Any]],
    root: Path,
    tables: _Tables,
    fold_source: str,
    folds_used: int,
    val_fold: int,
    seed: int,
    labels: bool,
) -> dict[str, Any]:
    """The datalist: its metadata, the items of ``val_fold`` for validation, the others for training, no test."""
    return {
        "metadata": {
            "format": "lung_nodule_mtl datalist v1",
            "center_world_mm": "RAS world coordinates, mm",
            "source": "LUNA16",
            "n_folds": folds_used,
            "val_fold": val_fold,
            "test_fraction": 0.0,
            "seed": seed,
            "fold_source": fold_source,
            "label_source": LABEL_SOURCE_SPHERE if labels else None,
            "patient_id": "seriesuid (LUNA16 gives no patient ids; in practice one scan per patient)",
            "luna_root": str(root.resolve()),
            "annotations": str(tables.annotations_path.resolve()),
            "excluded": str(Path(tables.excluded_path).resolve()) if tables.excluded_path is not None else None,
            "candidates": str(Path(tables.candidates_path).resolve()) if tables.candidates_path is not None else None,
            "citation": LUNA16_CITATION,
        },
        DatalistSplit.TRAINING.value: [item for item in items if item[Keys.FOLD.value] != val_fold],
        DatalistSplit.VALIDATION.value: [item for item in items if item[Keys.FOLD.value] == val_fold],
        DatalistSplit.TEST.value: [],
    }


def _scan_rows(
    by_uid: dict[str, list[Luna16Scan]],
    outcomes: dict[str, _Outcome],
    subsets: dict[str, int | None],
    fold_source: str,
    fold_of: dict[str, int],
    tables: _Tables,
) -> tuple[list[dict[str, Any]], int, int]:
    """The rows of ``scans.csv`` (every scan found or annotated), and the findings and candidates outside a scan."""
    rows: list[dict[str, Any]] = []
    excl_outside = cand_outside = 0
    for uid in sorted(set(by_uid) | set(tables.annotations)):
        scan_outcome = outcomes.get(uid)
        meta = scan_outcome.meta if scan_outcome is not None else {}
        if meta:
            excl_outside += _n_outside(meta, tables.excluded.get(uid, ()))
            cand_outside += _n_outside(meta, tables.candidates.get(uid, ()))
        fold = fold_of.get(uid, subsets.get(uid) if fold_source == FOLD_SOURCE_SUBSETS else None)
        rows.append(
            {
                "seriesuid": uid,
                "status": scan_outcome.status if scan_outcome is not None else "missing",
                "subset": subsets.get(uid),
                "fold": fold,
                "n_nodules": len(tables.annotations.get(uid, ())),
                "n_excluded": len(tables.excluded.get(uid, ())) if tables.excluded_path is not None else None,
                "n_candidates": len(tables.candidates.get(uid, ())) if tables.candidates_path is not None else None,
                "image": meta.get("image"),
                "label": meta.get("label"),
                "source": str(by_uid[uid][0].path) if uid in by_uid else None,
                "shape": "x".join(map(str, meta["shape"])) if meta else None,
                "spacing_mm": " ".join(f"{s:g}" for s in meta["spacing_mm"]) if meta else None,
                "seconds": round(scan_outcome.seconds, 2) if scan_outcome is not None else None,
                "error": scan_outcome.error if scan_outcome is not None else None,
            }
        )
    return rows, excl_outside, cand_outside


def _coverage_warnings(excl_outside: int, cand_outside: int, root: Path, found: bool) -> list[str]:
    """Warnings of excluded findings or candidates outside their scan, and of no scan found."""
    warnings = []
    if excl_outside:
        warnings.append(f"{excl_outside} excluded finding(s) lie outside their scan")
    if cand_outside:
        warnings.append(f"{cand_outside} candidate(s) lie outside their scan")
    if not found:
        warnings.append(f"no .mhd/.mha scan found under {root}")
    return warnings


def _scan_counts(
    by_uid: dict[str, list[Luna16Scan]],
    outcomes: dict[str, _Outcome],
    failed: dict[str, str],
    done: dict[str, _Outcome],
    items: list[dict[str, Any]],
    tables: _Tables,
    missing: list[str],
) -> dict[str, int]:
    """The summary's counts of scans, nodules and annotations."""
    table = tables.annotations
    status = Counter(o.status for o in outcomes.values())
    with_nodules = sum(1 for uid in done if table.get(uid))
    return {
        "scans_found": len(by_uid),
        "scans_converted": status.get("converted", 0),
        "scans_skipped": status.get("skipped", 0),
        "scans_failed": len(failed),
        "scans_with_nodules": with_nodules,
        "scans_without_nodules": len(done) - with_nodules,
        "nodules": len(items),
        "annotations": sum(len(v) for v in table.values()),
        "annotated_scans": len(table),
        "missing_scans": len(missing),
        "nodules_in_missing_scans": sum(len(table[uid]) for uid in missing),
    }


def _table_counts(tables: _Tables, excl_outside: int, cand_outside: int) -> dict[str, int | None]:
    """The summary's counts of excluded findings and candidates (``None`` where the table was not given)."""
    excluded, candidates = tables.excluded_path is not None, tables.candidates_path is not None
    return {
        "excluded": sum(len(v) for v in tables.excluded.values()) if excluded else None,
        "excluded_outside_scan": excl_outside if excluded else None,
        "candidates": sum(len(v) for v in tables.candidates.values()) if candidates else None,
        "candidates_outside_scan": cand_outside if candidates else None,
    }
