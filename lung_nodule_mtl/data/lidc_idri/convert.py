"""Convert LIDC-IDRI as TCIA ships it (DICOM series + reading XML) into NIfTI, consensus masks and a datalist.

Input: ``LIDC_ROOT/<patient>/<study uid>/<series uid>/*.dcm`` with the reading file (``069.xml``, ...) beside the
slices (``LIDC_ROOT`` may also be one patient folder). Each CT reading file (root ``LidcReadMessage``) names its
series; chest radiograph readings are skipped. :func:`prepare_lidc` writes into ``OUT``:

* ``images/<scan>.nii.gz``: the CT in HU (int16; rescale slope and intercept applied, slices ordered by position),
  read by :func:`lung_nodule_mtl.io.ct.load_ct` and written on its grid and affine (sform and qform code 1,
  as :func:`~lung_nodule_mtl.io.ct.write_label_map`), so ``predict`` and these files agree voxel for voxel.
  ``<scan>`` is the patient folder's name (``<patient>_s2`` etc. for a patient's further CT series).
* ``labels/<scan>_<n>.nii.gz``: the consensus mask (0/1, uint8) of physical nodule ``n`` on the same grid.
* ``datalist.json``: one item per nodule (>= 3 mm, marked by at least ``min_readers`` readers, non-empty consensus)
  in the project's format (:mod:`lung_nodule_mtl.data.datalist`), split by patient into folds.
* ``nodules.csv``: every physical nodule (also those left out of the datalist, with the reason): readers, centre
  in RAS and LPS mm, sizes, aggregated and per-reader ratings (``5;5;5;4``, in reader order).
* ``annotations.csv``: every reader's nodule >= 3 mm: its cluster, ratings, ROI counts, voxels, centroid.
* ``nodules_small.csv`` and ``non_nodules.csv``: readers' marks of nodules < 3 mm and of non-nodules (one point
  each), kept out of the datalist.
* ``records/<scan>.json``: everything about one scan (written last; a re-run without ``overwrite`` reuses it when
  the options are the same) and ``prepare_lidc.json``: the summary, options, warnings and failures.

**Label convention** (the defaults, and their switches):

* Consensus mask at ``consensus=0.5``: a voxel is in when at least half of **the readers who marked this nodule**
  included it (``pylidc``'s convention; a nodule marked by 2 readers gets the union of the two, by 3 readers the
  voxels of at least 2). ``consensus=1.0`` gives the intersection.
* ``rating="median"``: ``malignancy_score`` is the median of the readers' malignancy ratings (``x.5`` for an even
  split), ``malignancy`` is :func:`~lung_nodule_mtl.constants.malignancy_label_from_score` of it (> 3.5
  malignant, < 2.5 benign, else -1 indeterminate, kept in the datalist as the project does). Each of the eight
  attributes is the **upper median** of the readers' ratings: the median, and for an even number of readers the
  higher of the two middle ratings, so it is always a rating some reader gave (internal structure and
  calcification are categories). ``rating="mean"``: the mean rating, attributes rounded half up.
* ``min_readers=1``: nodules marked by fewer readers are listed in ``nodules.csv`` but not in the datalist; every
  item carries ``n_readers``.
* ``diameter_mm``: the diameter of the sphere with the consensus mask's volume (what the loss's size prior
  assumes); ``nodules.csv`` also gives the largest in-plane diameter of the consensus mask and the median of the
  readers' largest outline diameters (``pylidc``'s ``Annotation.diameter``).
* ``center_world_mm``: the consensus mask's centroid, RAS mm (the table also gives LPS).

Data: LIDC-IDRI, The Cancer Imaging Archive, CC BY 3.0 (:data:`~lung_nodule_mtl.data.lidc_vois.LIDC_CITATION`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from lung_nodule_mtl.constants import (
    ATTRIBUTE_NAMES,
    Keys,
    malignancy_label_from_score,
    ras_to_lps,
)
from lung_nodule_mtl.data.datalist import build_datalist_or_fewer_folds, validate_item, write_datalist
from lung_nodule_mtl.data.lidc_idri.masks import (
    AnnotationMask,
    SliceLookup,
    annotation_mask,
    cluster_annotations,
    consensus_mask,
    max_axial_diameter_mm,
)
from lung_nodule_mtl.data.lidc_idri.reading import (
    RATING_NAMES,
    LidcReading,
    LidcXmlError,
    NotCtReadingError,
    ReaderNodule,
    parse_lidc_xml,
)
from lung_nodule_mtl.data.lidc_vois import LIDC_CITATION
from lung_nodule_mtl.io import (
    Case,
    CTVolume,
    InputError,
    equivalent_diameter_mm,
    load_ct,
    voxel_to_world,
    write_ct,
    write_label_map,
)
from lung_nodule_mtl.utils.io import atomic_write_csv, atomic_write_json, json_safe, reusable_record

__all__ = [
    "RECORD_VERSION",
    "LidcOptions",
    "LidcScanSource",
    "aggregate_rating",
    "convert_scan",
    "find_lidc_scans",
    "prepare_lidc",
]

logger = logging.getLogger(__name__)

RECORD_VERSION = 1
"""Version of ``records/<scan>.json``; a record of another version is redone."""

RatingMethod = Literal["median", "mean"]

IMAGES_DIR = "images"
LABELS_DIR = "labels"
RECORDS_DIR = "records"
_PATIENT_NAME = re.compile(r"^LIDC-IDRI-\d+$")


@dataclass(frozen=True)
class LidcOptions:
    """How readers' marks become labels (see the module docstring).

    Attributes:
        consensus: fraction of the nodule's readers that must include a voxel, in ``(0, 1]``.
        rating: ``"median"`` or ``"mean"`` of the readers' ratings.
        min_readers: nodules marked by fewer readers stay out of the datalist (``>= 1``).
        include_contour: count the outline pixels of inclusion outlines as nodule (LIDC drew them just outside).
        cluster_tol_mm: distance (mm) within which two readers' outlines are the same nodule; ``None``: the
            scan's slice spacing.
    """

    consensus: float = 0.5
    rating: RatingMethod = "median"
    min_readers: int = 1
    include_contour: bool = False
    cluster_tol_mm: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < float(self.consensus) <= 1.0:
            raise ValueError(f"consensus must be in (0, 1], got {self.consensus}.")
        if self.rating not in ("median", "mean"):
            raise ValueError(f"rating must be 'median' or 'mean', got {self.rating!r}.")
        if int(self.min_readers) < 1:
            raise ValueError(f"min_readers must be >= 1, got {self.min_readers}.")
        if self.cluster_tol_mm is not None and not float(self.cluster_tol_mm) > 0:
            raise ValueError(f"cluster_tol_mm must be > 0 mm, got {self.cluster_tol_mm}.")


@dataclass(frozen=True)
class LidcScanSource:
    """One CT series of a patient with its reading file.

    Attributes:
        scan_id: output name: the patient, or ``<patient>_s<n>`` for the patient's n-th CT series (n >= 2).
        patient_id: the patient folder's name.
        folder: the DICOM series folder.
        xml: the reading file.
        reading: the parsed reading.
    """

    scan_id: str
    patient_id: str
    folder: Path
    xml: Path
    reading: LidcReading


def aggregate_rating(values: Sequence[int | None], method: RatingMethod, integer: bool) -> float | int | None:
    """Combine readers' ratings of one nodule.

    Args:
        values: the readers' ratings; ``None`` (not rated) is left out.
        method: ``"median"`` or ``"mean"``.
        integer: give an integer rating: the upper median, or the mean rounded half up.

    Returns:
        The rating (an ``int`` when integral), or ``None`` when no reader rated it.
    """
    known = [int(v) for v in values if v is not None]
    if not known:
        return None
    if method == "median":
        value: float = statistics.median_high(known) if integer else statistics.median(known)
    elif method == "mean":
        mean = statistics.fmean(known)
        value = math.floor(mean + 0.5) if integer else mean
    else:
        raise ValueError(f"rating method must be 'median' or 'mean', got {method!r}.")
    return int(value) if float(value).is_integer() else round(float(value), 4)


# --------------------------------------------------------------------------------------------------------------
# Finding the scans
# --------------------------------------------------------------------------------------------------------------


def _series_ids(folder: Path) -> list[str]:
    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError:
        return []


def find_lidc_scans(patient_dir: str | os.PathLike[str]) -> tuple[list[LidcScanSource], list[str], list[str]]:
    """The CT series of one patient folder that have a reading file.

    Every ``*.xml`` under the folder is read; chest radiograph readings are skipped (noted). A CT reading's series
    is the DICOM folder holding the XML when it contains the reading's ``SeriesInstanceUid``, else the folder under
    the patient that does. Scans are named ``<patient>``, then ``<patient>_s2``, ... in the order of the XML paths.

    Args:
        patient_dir: the patient folder (``LIDC-IDRI-0001``).

    Returns:
        ``(scans, notes, errors)``: the usable scans; notes on skipped files; one line per reading file that could
        not be used (malformed, or its series is not in the folder) while others could.

    Raises:
        FileNotFoundError: the folder does not exist.
        LidcXmlError: no usable CT reading file at all (the first problem found, naming its file).
    """
    root = Path(patient_dir)
    if not root.is_dir():
        raise FileNotFoundError(2, "patient folder not found", str(root))
    patient = root.name
    # hidden files and folders under the patient folder are skipped; the path to it may hold any ("../data")
    xmls = sorted(
        p for p in root.rglob("*.xml") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts)
    )
    if not xmls:
        raise LidcXmlError(root, "no LIDC reading file (*.xml) in the patient folder")
    notes: list[str] = []
    problems: list[LidcXmlError] = []
    scans: list[LidcScanSource] = []
    seen: dict[str, Path] = {}
    folders: list[Path] | None = None
    n_ct = 0
    for xml in xmls:
        try:
            reading = parse_lidc_xml(xml)
        except NotCtReadingError as exc:
            notes.append(f"{exc}: skipped")
            continue
        except LidcXmlError as exc:
            problems.append(exc)
            continue
        uid = reading.series_uid
        if uid is not None and uid in seen:
            notes.append(f"{xml}: a second reading file for series {uid} (first: {seen[uid]}); skipped")
            continue
        n_ct += 1
        folder: Path | None = None
        if uid is None:
            folder = xml.parent if _series_ids(xml.parent) else None
            reading.warnings.append(f"{xml}: no SeriesInstanceUid in the header; the series beside it is used")
        elif uid in _series_ids(xml.parent):
            folder = xml.parent
        else:
            if folders is None:
                folders = sorted({p.parent for p in root.rglob("*") if p.is_file()})
            folder = next((f for f in folders if uid in _series_ids(f)), None)
        if folder is None:
            problems.append(LidcXmlError(xml, f"the DICOM series {uid} it annotates is not in {root}"))
            continue
        if uid is not None:
            seen[uid] = xml
        scan_id = patient if n_ct == 1 else f"{patient}_s{n_ct}"
        scans.append(LidcScanSource(scan_id, patient, folder, xml, reading))
    if not scans:
        if problems:
            raise problems[0]
        raise LidcXmlError(root, "no LIDC CT reading file (LidcReadMessage) in the patient folder")
    return scans, notes, [str(p) for p in problems]


def _patient_dirs(lidc_root: Path, patients: Sequence[str] | None) -> list[Path]:
    if not lidc_root.is_dir():
        raise FileNotFoundError(2, "LIDC-IDRI folder not found", str(lidc_root))
    if _PATIENT_NAME.match(lidc_root.name) and not any(_PATIENT_NAME.match(p.name) for p in lidc_root.iterdir()):
        dirs = [lidc_root]
    else:
        dirs = sorted(p for p in lidc_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if patients is not None:
        wanted = set(patients)
        missing = sorted(wanted - {d.name for d in dirs})
        if missing:
            raise FileNotFoundError(2, f"patient folder(s) not found: {', '.join(missing)}", str(lidc_root))
        dirs = [d for d in dirs if d.name in wanted]
    if not dirs:
        raise FileNotFoundError(2, "no patient folder in the LIDC-IDRI folder", str(lidc_root))
    return dirs


# --------------------------------------------------------------------------------------------------------------
# One scan
# --------------------------------------------------------------------------------------------------------------


def _ras(affine: NDArray[np.float64], ijk: Sequence[float] | NDArray[np.float64]) -> list[float]:
    return [float(v) for v in voxel_to_world(affine, np.asarray(ijk, dtype=np.float64))]


def _centre_columns(ras: Sequence[float]) -> dict[str, float]:
    """``center_ras_x`` ... ``center_lps_z`` table columns of a RAS point, mm, 4 decimals."""
    lps = ras_to_lps(ras)
    return {
        **{f"center_ras_{a}": round(float(v), 4) for a, v in zip("xyz", ras, strict=True)},
        **{f"center_lps_{a}": round(float(v), 4) for a, v in zip("xyz", lps, strict=True)},
    }


def _round(values: Sequence[float], digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]


def _ratings_text(values: Sequence[int | None]) -> str:
    return ";".join("" if v is None else str(int(v)) for v in values)


def _point_row(
    source: LidcScanSource,
    volume: CTVolume,
    lookup: SliceLookup,
    kind: str,
    reader: int,
    radiologist_id: str | None,
    mark_id: str,
    point: tuple[int, int],
    z_position: float,
    sop_uid: str | None,
    warnings: list[str],
) -> dict[str, Any] | None:
    k, how = lookup.slice_of(sop_uid, z_position)
    if k is None:
        warnings.append(f"{source.xml}: reader {reader} {kind} {mark_id!r} at z={z_position:g} matches no slice")
        return None
    ras = _ras(volume.affine, (point[0], point[1], k))
    return {
        "scan_id": source.scan_id,
        "patient_id": source.patient_id,
        "reader": reader,
        "radiologist_id": radiologist_id,
        "mark_id": mark_id,
        "voxel_i": point[0],
        "voxel_j": point[1],
        "voxel_k": k,
        "slice_matched_by": how,
        **_centre_columns(ras),
        "z_position": z_position,
    }


def _options_dict(options: LidcOptions) -> dict[str, Any]:
    return {**asdict(options), "record_version": RECORD_VERSION}


def convert_scan(source: LidcScanSource, out_dir: str | os.PathLike[str], options: LidcOptions) -> dict[str, Any]:
    """Convert one CT series with its reading: CT NIfTI, one consensus mask per nodule, the scan's record.

    Args:
        source: from :func:`find_lidc_scans`.
        out_dir: output root (``images/``, ``labels/`` and ``records/`` are written under it).
        options: the label convention.

    Returns:
        The record (also written to ``records/<scan>.json``): ``items`` (datalist items, paths relative to
        ``out_dir``), ``nodules``, ``annotations``, ``small_nodules``, ``non_nodules`` (table rows), ``geometry``,
        ``warnings``, ``options``, ``seconds``.

    Raises:
        InputError: the DICOM series cannot be read as CT in HU, or it is not the reading's series.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    warnings = list(source.reading.warnings)
    volume, lookup = _read_series(source, warnings)
    image_rel = f"{IMAGES_DIR}/{source.scan_id}.nii.gz"
    write_ct(volume, out / image_rel)
    masks = _reader_masks(source, lookup, volume.shape, options, warnings)
    tol = float(options.cluster_tol_mm) if options.cluster_tol_mm is not None else float(volume.spacing_mm[2])
    clusters = _physical_nodules(masks, volume.affine, tol, options.consensus)
    items: list[dict[str, Any]] = []
    nodule_rows: list[dict[str, Any]] = []
    annotation_rows: list[dict[str, Any]] = []
    for number, cluster in enumerate(clusters, start=1):
        nodule = _nodule_facts(source, volume, masks, cluster, str(number), options)
        _write_nodule_label(volume, nodule, out)
        nodule_rows.append(_nodule_row(source, volume, nodule, options))
        annotation_rows += _reader_rows(source, volume, masks, nodule)
        if not nodule.reason:
            items.append(_nodule_item(source, volume, nodule, image_rel))
    annotation_rows += _unplaced_annotation_rows(source, volume, masks, warnings)
    small_rows = _small_nodule_rows(source, volume, lookup, warnings)
    non_rows = _non_nodule_rows(source, volume, lookup, warnings)
    record = {
        **_scan_summary(source, volume, image_rel, tol),
        "items": items,
        "nodules": nodule_rows,
        "annotations": annotation_rows,
        "small_nodules": small_rows,
        "non_nodules": non_rows,
        "warnings": warnings,
        "options": _options_dict(options),
        "seconds": round(time.perf_counter() - start, 3),
    }
    atomic_write_json(json_safe(record), out / RECORDS_DIR / f"{source.scan_id}.json")
    return record


def _read_series(source: LidcScanSource, warnings: list[str]) -> tuple[CTVolume, SliceLookup]:
    """Read the DICOM series as CT, check it is the one the reading annotates, and match its slices."""
    volume = load_ct(Case(source.scan_id, source.folder, "dicom"))
    warnings += [f"{source.folder}: {w}" for w in volume.warnings]
    series_uid = volume.meta.get("series_uid")
    if source.reading.series_uid is not None and series_uid != source.reading.series_uid:
        raise InputError(
            source.folder,
            f"the series read ({series_uid}) is not the one {source.xml.name} annotates ({source.reading.series_uid})",
        )
    lookup = SliceLookup.from_dicom(source.folder, str(series_uid), volume.affine, volume.shape[2])
    warnings += lookup.warnings
    return volume, lookup


def _reader_masks(
    source: LidcScanSource,
    lookup: SliceLookup,
    shape: tuple[int, int, int],
    options: LidcOptions,
    warnings: list[str],
) -> list[AnnotationMask]:
    """Each reader's nodule >= 3 mm as voxels of the scan (in the reading's order)."""
    masks: list[AnnotationMask] = []
    for nodule in source.reading.large_nodules:
        m = annotation_mask(nodule, lookup, shape, include_contour=options.include_contour, where=str(source.xml))
        warnings += m.warnings
        masks.append(m)
    return masks


@dataclass
class _Cluster:
    """One physical nodule: its readers' masks (indices, by reader) and their consensus voxels."""

    members: list[int]
    cmask: NDArray[np.bool_]
    vox: NDArray[np.int64]
    centre_ijk: NDArray[np.float64]


def _physical_nodules(
    masks: Sequence[AnnotationMask], affine: NDArray[np.float64], tol: float, consensus: float
) -> list[_Cluster]:
    """The readers' placed masks grouped into physical nodules with their consensus, ordered along the slices."""
    placed = [i for i, m in enumerate(masks) if m.n_rois_placed]
    clusters = [[placed[i] for i in c] for c in cluster_annotations([masks[i] for i in placed], affine, tol)]
    built = []
    for cluster in clusters:
        members = sorted(cluster, key=lambda i: masks[i].nodule.reader)
        offset, cmask, _ = consensus_mask([masks[i] for i in members], consensus)
        vox = np.argwhere(cmask) + np.asarray(offset)
        if len(vox):
            centre_ijk = vox.mean(axis=0)
        else:
            centre_ijk = np.concatenate([masks[i].points_ijk for i in members]).mean(axis=0)
        built.append(_Cluster(members, cmask, vox, centre_ijk))
    built.sort(key=lambda b: (float(b.centre_ijk[2]), float(b.centre_ijk[1]), float(b.centre_ijk[0])))
    return built


@dataclass
class _NoduleFacts:
    """What the tables and the datalist say of one physical nodule (``reason``: why it stays out of the datalist)."""

    nodule_id: str
    case_id: str
    cluster: _Cluster
    readers: list[ReaderNodule]
    ratings: dict[str, list[int | None]]
    score: float | int | None
    attributes: dict[str, float | int | None]
    centre_ras: list[float]
    n_vox: int
    eq_diameter: float | None
    reader_diameters: list[float | None]
    reason: str
    label_rel: str


def _voxel_mm3(volume: CTVolume) -> float:
    """The scan's voxel volume, mm^3."""
    return float(abs(np.linalg.det(volume.affine[:3, :3])))


def _nodule_facts(
    source: LidcScanSource,
    volume: CTVolume,
    masks: Sequence[AnnotationMask],
    cluster: _Cluster,
    nodule_id: str,
    options: LidcOptions,
) -> _NoduleFacts:
    """Ratings, centre, size and datalist eligibility of physical nodule ``nodule_id``."""
    readers = [masks[i].nodule for i in cluster.members]
    ratings = {name: [r.ratings[name] for r in readers] for name in RATING_NAMES}
    n_vox = len(cluster.vox)
    reason = ""
    if len(readers) < options.min_readers:
        reason = f"marked by {len(readers)} reader(s), fewer than min_readers={options.min_readers}"
    elif not n_vox:
        reason = f"empty consensus mask at level {options.consensus:g}"
    case_id = f"{source.scan_id}_{nodule_id}"
    return _NoduleFacts(
        nodule_id=nodule_id,
        case_id=case_id,
        cluster=cluster,
        readers=readers,
        ratings=ratings,
        score=aggregate_rating(ratings["malignancy"], options.rating, integer=False),
        attributes={name: aggregate_rating(ratings[name], options.rating, integer=True) for name in ATTRIBUTE_NAMES},
        centre_ras=_ras(volume.affine, cluster.centre_ijk),
        n_vox=n_vox,
        eq_diameter=equivalent_diameter_mm(n_vox * _voxel_mm3(volume)) if n_vox else None,
        reader_diameters=[_outline_diameter_mm(masks[i], volume.spacing_mm[:2]) for i in cluster.members],
        reason=reason,
        label_rel=f"{LABELS_DIR}/{case_id}.nii.gz" if n_vox else "",
    )


def _write_nodule_label(volume: CTVolume, nodule: _NoduleFacts, out: Path) -> None:
    """The nodule's consensus mask (0/1) on the scan's grid, if it has a voxel."""
    if nodule.n_vox:
        full = np.zeros(volume.shape, dtype=np.uint8)
        full[tuple(nodule.cluster.vox.T)] = 1
        write_label_map(volume, full, out / nodule.label_rel)
        del full


def _nodule_row(source: LidcScanSource, volume: CTVolume, nodule: _NoduleFacts, options: LidcOptions) -> dict[str, Any]:
    """The nodule's row of ``nodules.csv``."""
    centre_ijk, n_vox, readers = nodule.cluster.centre_ijk, nodule.n_vox, nodule.readers
    known_diameters = [d for d in nodule.reader_diameters if d is not None]
    return {
        "case_id": nodule.case_id,
        "scan_id": source.scan_id,
        "patient_id": source.patient_id,
        "nodule_id": nodule.nodule_id,
        "seriesuid": volume.meta.get("series_uid"),
        "n_readers": len(readers),
        "n_readers_scan": source.reading.n_readers,
        "readers": ";".join(str(r.reader) for r in readers),
        "reader_nodule_ids": ";".join(r.nodule_id for r in readers),
        "in_datalist": not nodule.reason,
        "excluded_reason": nodule.reason,
        "label": nodule.label_rel,
        **_centre_columns(nodule.centre_ras),
        "center_voxel_i": round(float(centre_ijk[0]), 3),
        "center_voxel_j": round(float(centre_ijk[1]), 3),
        "center_voxel_k": round(float(centre_ijk[2]), 3),
        "consensus_level": options.consensus,
        "consensus_voxels": n_vox,
        "volume_mm3": round(n_vox * _voxel_mm3(volume), 3),
        "diameter_mm": None if nodule.eq_diameter is None else round(nodule.eq_diameter, 4),
        "max_axial_diameter_mm": (
            round(max_axial_diameter_mm(nodule.cluster.cmask, volume.spacing_mm[:2]), 4) if n_vox else None
        ),
        "reader_max_diameter_mm": round(statistics.median(known_diameters), 4) if known_diameters else None,
        "rating_method": options.rating,
        "malignancy_score": nodule.score,
        "malignancy": malignancy_label_from_score(nodule.score),
        **nodule.attributes,
        **{f"{name}_ratings": _ratings_text(nodule.ratings[name]) for name in RATING_NAMES},
    }


def _reader_rows(
    source: LidcScanSource, volume: CTVolume, masks: Sequence[AnnotationMask], nodule: _NoduleFacts
) -> list[dict[str, Any]]:
    """The ``annotations.csv`` rows of the readers' marks of the nodule."""
    voxel_mm3 = _voxel_mm3(volume)
    return [
        _annotation_row(source, volume, masks[i], nodule.nodule_id, voxel_mm3, d)
        for i, d in zip(nodule.cluster.members, nodule.reader_diameters, strict=True)
    ]


def _nodule_item(source: LidcScanSource, volume: CTVolume, nodule: _NoduleFacts, image_rel: str) -> dict[str, Any]:
    """The nodule's datalist item (checked)."""
    item: dict[str, Any] = {
        Keys.IMAGE.value: image_rel,
        Keys.LABEL.value: nodule.label_rel,
        Keys.CASE_ID.value: nodule.case_id,
        Keys.PATIENT_ID.value: source.patient_id,
        Keys.NODULE_ID.value: nodule.nodule_id,
        Keys.CENTER_WORLD.value: _round(nodule.centre_ras),
        Keys.DIAMETER.value: round(float(nodule.eq_diameter or 0.0), 4),
        Keys.MALIGNANCY.value: malignancy_label_from_score(nodule.score),
        Keys.MALIGNANCY_SCORE.value: nodule.score,
        **nodule.attributes,
        "n_readers": len(nodule.readers),
        "seriesuid": volume.meta.get("series_uid"),
    }
    validate_item(item, where=f"{source.xml}: nodule {nodule.nodule_id}")
    return item


def _unplaced_annotation_rows(
    source: LidcScanSource, volume: CTVolume, masks: Sequence[AnnotationMask], warnings: list[str]
) -> list[dict[str, Any]]:
    """The ``annotations.csv`` rows of readers' nodules none of whose outlines matched a slice, with a warning."""
    rows = []
    voxel_mm3 = _voxel_mm3(volume)
    for m in masks:
        if not m.n_rois_placed:
            rows.append(_annotation_row(source, volume, m, "", voxel_mm3, None))
            warnings.append(f"{source.xml}: reader {m.nodule.reader} nodule {m.nodule.nodule_id!r}: no ROI placed")
    return rows


def _small_nodule_rows(
    source: LidcScanSource, volume: CTVolume, lookup: SliceLookup, warnings: list[str]
) -> list[dict[str, Any]]:
    """The ``nodules_small.csv`` rows: the readers' nodules < 3 mm (one point each) with their ratings."""
    small_rows = []
    for nodule in source.reading.small_nodules:
        roi = nodule.rois[0]
        if len(nodule.rois) > 1:
            warnings.append(
                f"{source.xml}: reader {nodule.reader} small nodule {nodule.nodule_id!r} has {len(nodule.rois)} "
                "point ROIs; the first is used"
            )
        small_row = _point_row(
            source, volume, lookup, "small nodule", nodule.reader, nodule.radiologist_id, nodule.nodule_id,
            (int(roi.points[0, 0]), int(roi.points[0, 1])), roi.z_position, roi.sop_uid, warnings,
        )  # fmt: skip
        if small_row is not None:
            small_row.update({name: nodule.ratings[name] for name in RATING_NAMES})
            small_rows.append(small_row)
    return small_rows


def _non_nodule_rows(
    source: LidcScanSource, volume: CTVolume, lookup: SliceLookup, warnings: list[str]
) -> list[dict[str, Any]]:
    """The ``non_nodules.csv`` rows: the readers' non-nodule marks."""
    non_rows = []
    for mark in source.reading.non_nodules:
        non_row = _point_row(
            source, volume, lookup, "non-nodule", mark.reader, mark.radiologist_id, mark.mark_id, mark.point,
            mark.z_position, mark.sop_uid, warnings,
        )  # fmt: skip
        if non_row is not None:
            non_rows.append(non_row)
    return non_rows


def _scan_summary(source: LidcScanSource, volume: CTVolume, image_rel: str, tol: float) -> dict[str, Any]:
    """The record's description of the scan: sources, geometry, readers."""
    reading = source.reading
    return {
        "scan_id": source.scan_id,
        "patient_id": source.patient_id,
        "xml": str(source.xml),
        "dicom_folder": str(source.folder),
        "seriesuid": volume.meta.get("series_uid"),
        "image": image_rel,
        "geometry": {
            "shape": list(volume.shape),
            "spacing_mm": _round(volume.spacing_mm, 6),
            "affine_ras": np.round(volume.affine, 6).tolist(),
            "hu_min": volume.meta.get("hu_min"),
            "hu_max": volume.meta.get("hu_max"),
        },
        "n_readers": reading.n_readers,
        "radiologist_ids": reading.radiologist_ids,
        "n_reader_nodules": len(reading.large_nodules),
        "cluster_tol_mm": tol,
    }


def _outline_diameter_mm(mask: AnnotationMask, spacing_ij: Sequence[float]) -> float | None:
    """Largest distance between two outline points of one ROI (mm), as ``pylidc``'s ``Annotation.diameter``."""
    best: float | None = None
    scale = np.asarray(spacing_ij[:2], dtype=np.float64)
    for roi in mask.nodule.rois:
        if len(roi.points) < 2:
            continue
        xy = roi.points * scale
        d = float(np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)).max())
        best = d if best is None else max(best, d)
    return best


def _annotation_row(
    source: LidcScanSource,
    volume: CTVolume,
    mask: AnnotationMask,
    nodule_id: str,
    voxel_mm3: float,
    diameter: float | None,
) -> dict[str, Any]:
    nodule: ReaderNodule = mask.nodule
    n_vox = mask.n_voxels
    centroid = mask.voxel_indices().mean(axis=0) if n_vox else None
    ras = _ras(volume.affine, centroid) if centroid is not None else [None, None, None]
    pts = mask.points_ijk
    outline_centre = pts.mean(axis=0) if len(pts) else [None, None, None]
    return {
        "scan_id": source.scan_id,
        "patient_id": source.patient_id,
        "nodule_id": nodule_id,
        "reader": nodule.reader,
        "radiologist_id": nodule.radiologist_id,
        "reader_nodule_id": nodule.nodule_id,
        "n_rois": len(nodule.rois),
        "n_rois_placed": mask.n_rois_placed,
        "n_rois_by_z": mask.n_rois_by_z,
        "n_exclusion_rois": sum(not r.inclusion for r in nodule.rois),
        "n_outline_points": len(pts),
        "voxels": n_vox,
        "volume_mm3": round(n_vox * voxel_mm3, 3),
        "max_diameter_mm": None if diameter is None else round(diameter, 4),
        "center_ras_x": None if ras[0] is None else round(ras[0], 4),
        "center_ras_y": None if ras[1] is None else round(ras[1], 4),
        "center_ras_z": None if ras[2] is None else round(ras[2], 4),
        "outline_center_i": None if outline_centre[0] is None else round(float(outline_centre[0]), 4),
        "outline_center_j": None if outline_centre[1] is None else round(float(outline_centre[1]), 4),
        "outline_center_k": None if outline_centre[2] is None else round(float(outline_centre[2]), 4),
        **{name: nodule.ratings[name] for name in RATING_NAMES},
    }


# --------------------------------------------------------------------------------------------------------------
# The whole collection
# --------------------------------------------------------------------------------------------------------------


def _reusable(record_path: Path, out: Path, options: LidcOptions) -> dict[str, Any] | None:
    """The scan's record from an earlier run, if it was made with these options and its files are all there."""
    return reusable_record(
        record_path,
        "options",
        _options_dict(options),
        lambda r: [r.get("image"), *(row.get("label") for row in r.get("nodules", []))],
        out,
    )


def _remove_stale_labels(out: Path, scan_id: str) -> None:
    pattern = re.compile(rf"^{re.escape(scan_id)}_\d+\.nii\.gz$")
    folder = out / LABELS_DIR
    if folder.is_dir():
        for p in folder.iterdir():
            if pattern.match(p.name):
                p.unlink()


def prepare_lidc(
    lidc_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    consensus: float = 0.5,
    rating: RatingMethod = "median",
    min_readers: int = 1,
    n_folds: int = 5,
    val_fold: int = 0,
    test_fraction: float = 0.0,
    seed: int = 0,
    overwrite: bool = False,
    include_contour: bool = False,
    cluster_tol_mm: float | None = None,
    patients: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Convert LIDC-IDRI patient folders into CT NIfTI, consensus nodule masks, tables and a datalist.

    See the module docstring for the outputs and the label convention. A patient whose folder cannot be used (no
    reading file, a malformed one, unreadable DICOM) is reported in ``failed`` and the others go on.

    Args:
        lidc_root: folder of patient folders (``LIDC-IDRI-0001/...``), or one patient folder.
        out_dir: output folder (created).
        consensus: consensus level in ``(0, 1]`` (fraction of the nodule's readers).
        rating: ``"median"`` or ``"mean"`` of the readers' ratings.
        min_readers: nodules marked by fewer readers stay out of the datalist.
        n_folds: patient-level cross-validation folds (fewer when there are fewer patients with nodules).
        val_fold: the fold used as ``validation``.
        test_fraction: fraction of patients held out as ``test``.
        seed: seed of the folds.
        overwrite: redo scans already converted with the same options (otherwise their records are reused).
        include_contour: count the outline pixels as nodule (default: LIDC's outlines lie just outside).
        cluster_tol_mm: outline distance (mm) linking readers' annotations; default the slice spacing.
        patients: only these patient folders (names).
        progress: called with one line per scan (and per failure).

    Returns:
        The summary (also written to ``prepare_lidc.json``): counts of patients, scans, nodules (by number of
        readers), datalist items by malignancy label, small nodules and non-nodules, ``failed`` ({patient: reason}),
        warnings, splits, paths and seconds.
    """
    start = time.perf_counter()
    options = LidcOptions(float(consensus), rating, int(min_readers), bool(include_contour), cluster_tol_mm)
    root, out = Path(lidc_root), Path(out_dir)
    dirs = _patient_dirs(root, patients)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda line: logger.info("%s", line))
    failed: dict[str, str] = {}
    notes: list[str] = []
    records: list[dict[str, Any]] = []
    reused = 0
    for n, patient_dir in enumerate(dirs, start=1):
        patient = patient_dir.name
        try:
            scans, found_notes, errors = find_lidc_scans(patient_dir)
        except (LidcXmlError, OSError) as exc:
            failed[patient] = str(exc)
            say(f"[{n}/{len(dirs)}] {patient}: FAILED: {exc}")
            continue
        notes += found_notes
        for k, error in enumerate(errors, start=1):
            key = patient if k == 1 and patient not in failed else f"{patient} ({k})"
            failed[key] = error
            say(f"[{n}/{len(dirs)}] {patient}: FAILED: {error}")
        for source in scans:
            record_path = out / RECORDS_DIR / f"{source.scan_id}.json"
            record = None if overwrite else _reusable(record_path, out, options)
            if record is not None:
                reused += 1
                records.append(record)
                say(f"[{n}/{len(dirs)}] {source.scan_id}: already converted ({len(record['items'])} item(s))")
                continue
            try:
                _remove_stale_labels(out, source.scan_id)
                record = convert_scan(source, out, options)
            except (InputError, LidcXmlError, ValueError, OSError, RuntimeError) as exc:
                key = source.scan_id
                failed[key] = " ".join(str(exc).split())
                say(f"[{n}/{len(dirs)}] {key}: FAILED: {failed[key]}")
                continue
            records.append(record)
            say(
                f"[{n}/{len(dirs)}] {source.scan_id}: {len(record['nodules'])} nodule(s), {len(record['items'])} in "
                f"the datalist, {len(record['small_nodules'])} small, {len(record['non_nodules'])} non-nodule(s), "
                f"{len(record['warnings'])} warning(s), {record['seconds']:.1f} s"
            )

    items = [item for r in records for item in r["items"]]
    nodules = [row for r in records for row in r["nodules"]]
    first_nodule = ["case_id", "scan_id", "patient_id", "nodule_id", "n_readers", "in_datalist"]
    atomic_write_csv(nodules, out / "nodules.csv", first_fields=first_nodule)
    atomic_write_csv([row for r in records for row in r["annotations"]], out / "annotations.csv",
                     first_fields=["scan_id", "patient_id", "nodule_id", "reader"])  # fmt: skip
    atomic_write_csv([row for r in records for row in r["small_nodules"]], out / "nodules_small.csv",
                     first_fields=["scan_id", "patient_id", "reader", "mark_id"])  # fmt: skip
    atomic_write_csv([row for r in records for row in r["non_nodules"]], out / "non_nodules.csv",
                     first_fields=["scan_id", "patient_id", "reader", "mark_id"])  # fmt: skip
    metadata = {
        "source": "LIDC-IDRI (DICOM + reading XML)",
        "lidc_root": str(root.resolve()),
        "label_convention": _options_dict(options),
        "citation": LIDC_CITATION,
    }
    datalist, reduced = build_datalist_or_fewer_folds(items, n_folds, val_fold, test_fraction, seed, metadata)
    notes += reduced
    datalist_path = write_datalist(datalist, out / "datalist.json")
    labels = Counter(item[Keys.MALIGNANCY] for item in items)
    warnings = [w for r in records for w in r["warnings"]]
    summary: dict[str, Any] = {
        "datalist": str(datalist_path),
        "patients": len({r["patient_id"] for r in records}),
        "scans": len(records),
        "scans_reused": reused,
        "failed": failed,
        "reader_nodules": sum(r["n_reader_nodules"] for r in records),
        "nodules": len(nodules),
        "nodules_by_readers": dict(sorted(Counter(row["n_readers"] for row in nodules).items())),
        "items": len(items),
        "malignant": labels.get(1, 0),
        "benign": labels.get(0, 0),
        "indeterminate": labels.get(-1, 0),
        "unrated": labels.get(None, 0),
        "small_nodule_marks": sum(len(r["small_nodules"]) for r in records),
        "non_nodule_marks": sum(len(r["non_nodules"]) for r in records),
        "splits": {k: len(v) for k, v in datalist.items() if isinstance(v, list)},
        "options": _options_dict(options),
        "notes": notes,
        "n_warnings": len(warnings),
        "seconds": round(time.perf_counter() - start, 2),
    }
    atomic_write_json(json_safe({**summary, "warnings": warnings}), out / "prepare_lidc.json")
    return summary
