"""Real nodule growth pairs: a user's longitudinal CT scans → aligned baseline / follow-up crops and a growth datalist.

:func:`prepare_growth_pairs` (``lung-nodule-mtl prepare-growth``) turns a CSV of nodules seen at two times into
the files and the datalist that ``lung-nodule-mtl synth --mode growth`` writes for synthetic pairs, so the growth
training chain (:func:`lung_nodule_mtl.transforms.growth.get_growth_transforms`) and the growth evaluation read
either the same way.

**PAIRS.csv**: one row per nodule and pair of scans; header names are matched without regard to case or
surrounding spaces, other columns are ignored; relative paths are relative to the CSV's folder.

=========================================== ===================================================================
column                                      meaning
=========================================== ===================================================================
``patient_id``                              patient; folds and the test split are made by patient
``nodule_id``                               nodule within the patient; ``<patient_id>_<nodule_id>`` names the
                                            pair's files (characters other than ``A-Z a-z 0-9 . _ -`` become
                                            ``_``) and must be unique
``baseline_image``, ``followup_image``      the CT scans in HU: a NIfTI (``.nii``/``.nii.gz``) or MetaImage
                                            (``.mhd``/``.mha``) file, or a DICOM series folder: read by
                                            :func:`lung_nodule_mtl.io.ct.load_ct`, with its checks
``baseline_mask``, ``followup_mask``        the nodule's mask at each time, on the grid of its scan (same shape
                                            and affine), NIfTI or MetaImage: a 0/1 mask or a label map (see
                                            below)
``baseline_x``, ``baseline_y``,             the nodule's centre in the baseline scan, world mm
``baseline_z``
``followup_x``, ``followup_y``,             the nodule's centre in the follow-up scan, world mm (in that scan's
``followup_z``                              own world space: no prior registration of the scans is needed)
``interval_days``                           days from baseline to follow-up (> 0); or, instead:
``baseline_date``, ``followup_date``        ISO dates (``2021-03-14``; a time of day is ignored): the interval
                                            is the number of days between them. When ``interval_days`` is also
                                            given, the two must agree within a day.
``coordinate_system`` (optional)            ``RAS`` or ``LPS``: the space of the row's centres; empty: the
                                            default (``coordinate_system`` argument, ``--lps`` on the command
                                            line). **RAS** (the default): the world space of NIfTI affines as
                                            nibabel and MONAI read them, and of 3D Slicer's display; **LPS**:
                                            DICOM, ITK/SimpleITK and LUNA16 tables (``x_ras = -x_lps``,
                                            ``y_ras = -y_lps``, ``z_ras = z_lps``).
``baseline_label``, ``followup_label``      (optional) the value of this nodule in a label-map mask
=========================================== ===================================================================

**Masks.** With ``*_label`` given, the nodule is every voxel of that value. Otherwise it is the connected
component (26-connectivity) of the mask value found at the centre: the value of the voxel nearest to the centre,
or, where that is 0, of the nearest non-zero voxel within :data:`CENTRE_SEARCH_MM`; so a 0/1 mask of several
nodules, or a label map, gives the nodule at the centre. Masks must hold integers (a probability map is refused).
No masks? ``lung-nodule-mtl predict -i SCAN -o OUT --nodules centres.csv`` segments the nodules at given centres
(``case_id,center_x_mm,center_y_mm,center_z_mm`` in RAS mm, or LUNA16's ``seriesuid,coordX,coordY,coordZ`` in
LPS mm) and writes ``OUT/<case>_nodules.nii.gz`` on the scan's grid: give that file as the mask (the component at
the centre is taken, or name its ``label``, the nodule's row order in the case + 1); check the masks before
training on them.

**Per pair** (``<case>`` = ``<patient_id>_<nodule_id>``):

1. Both scans and masks are loaded; a centre must lie inside its scan (voxel coordinates within the image).
2. The baseline crop: a cube of ``crop_mm`` around the baseline centre, resampled (linear; mask nearest) onto an
   RAS-aligned grid of ``spacing_mm`` (the centre is voxel ``n // 2``, as
   :class:`~lung_nodule_mtl.transforms.crop.NoduleCentredCrop` crops, so the training chain's crop of
   ``crop_mm / spacing_mm`` voxels takes the whole file),
   or, with ``spacing_mm=None``, the baseline's own voxels (no interpolation). Outside the scan: air (-1000 HU)
   and mask 0.
3. The follow-up is aligned to it by a rigid transform (:class:`RegistrationSettings`): a SimpleITK
   ``Euler3DTransform`` about the baseline centre, initialised with the translation *follow-up centre - baseline
   centre* (the centres coincide), refined by a multi-resolution registration of the follow-up's neighbourhood to
   the baseline crop (Mattes mutual information on HU clipped to a window, all voxels of a sphere around the
   nodule inside the baseline scan: deterministic). A result that rotates or shifts more than the settings allow,
   or whose metric is not better than the centres' alignment, is rejected: the pair keeps the centre alignment,
   with a warning. ``register=False`` (``--no-register``) uses the centre alignment only (scans registered
   before).
4. The follow-up image (linear) and nodule mask (nearest) are resampled onto the baseline crop grid.
5. Written atomically: ``images/<case>_t0.nii.gz``, ``images/<case>_t1.nii.gz`` (int16 HU),
   ``labels/<case>_t0.nii.gz``, ``labels/<case>_t1.nii.gz`` (uint8 0/1, this nodule only), all with the crop's
   affine, then ``records/<case>.json`` (the item, the registration, the options and the inputs' sizes and
   times): a pair with a record and its four files is complete and a re-run reuses it unless ``overwrite`` or the
   row, an input file or an option changed.

A row that cannot be used (a missing or unreadable file, a centre outside its scan, a non-positive interval, no
mask at the centre, ...) is reported as one line ``PAIRS.csv line N (patient P, nodule K): reason``, leaves no
file, and the others go on; ``lung-nodule-mtl prepare-growth`` then exits with status 1.

**Outputs** in ``out_dir``: the files above; ``datalist.json`` (:mod:`lung_nodule_mtl.data.datalist`, split by
patient with :func:`~lung_nodule_mtl.data.datalist.build_datalist`; items with ``image``/``label`` = the
baseline's files, ``baseline``, ``baseline_mask``, ``followup``, ``followup_mask``, ``interval_days``,
``center_world_mm`` (RAS mm, baseline centre = the crop's voxel ``n // 2``), ``followup_center_world_mm`` (where
the follow-up centre lands on the baseline crop, RAS mm), ``followup_scan_center_world_mm`` (the follow-up
centre in its own scan, RAS mm), ``diameter_mm`` / ``followup_diameter_mm`` (volume-equivalent),
``baseline_mask_volume_mm3`` / ``followup_mask_volume_mm3`` (the written masks' voxels x voxel volume),
``registration`` (see :func:`prepare_growth_pairs`), ``source: "user pairs"``, ``fold``, ``patient_id``,
``case_id``, ``nodule_id`` and the dates if given); ``pairs_summary.csv`` (one row per CSV row, failed ones with
their reason: :data:`SUMMARY_COLUMNS`).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import logging
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray
from scipy import ndimage

from lung_nodule_mtl.constants import AIR_HU, DEFAULT_WINDOWS, DatalistSplit, Keys, lps_to_ras
from lung_nodule_mtl.data.datalist import build_datalist_or_fewer_folds, write_datalist
from lung_nodule_mtl.data.synthetic.growth import BASELINE_SUFFIX, FOLLOWUP_SUFFIX, GrowthKeys
from lung_nodule_mtl.io import CTVolume, InputError, equivalent_diameter_mm, find_cases, load_ct, read_volume
from lung_nodule_mtl.io.geometry import LPS_TO_RAS, itk_geometry
from lung_nodule_mtl.utils.io import atomic_path, atomic_write_csv, json_safe, nifti_image, reusable_record

__all__ = [
    "CENTRE_SEARCH_MM",
    "DEFAULT_CROP_MM",
    "DEFAULT_SPACING_MM",
    "INTERVAL_COLUMNS",
    "OPTIONAL_COLUMNS",
    "PAIRS_COLUMNS",
    "SOURCE",
    "SUMMARY_COLUMNS",
    "PairRowError",
    "PairSpec",
    "RegistrationSettings",
    "prepare_growth_pairs",
    "read_pairs_csv",
]

logger = logging.getLogger(__name__)

PAIRS_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "nodule_id",
    "baseline_image",
    "baseline_mask",
    "followup_image",
    "followup_mask",
    "baseline_x",
    "baseline_y",
    "baseline_z",
    "followup_x",
    "followup_y",
    "followup_z",
)
"""Required columns of PAIRS.csv (plus the interval: :data:`INTERVAL_COLUMNS`)."""
INTERVAL_COLUMNS: tuple[str, ...] = ("interval_days", "baseline_date", "followup_date")
"""``interval_days``, or both dates (ISO), or all three (they must then agree within a day)."""
OPTIONAL_COLUMNS: tuple[str, ...] = ("coordinate_system", "baseline_label", "followup_label")
"""Optional columns: the row's coordinate system (``RAS``/``LPS``) and the nodule's values in label-map masks."""

DEFAULT_CROP_MM = 48.0
"""Edge of the cube cropped around each nodule, mm (the bundle's 48-voxel patch at 1 mm)."""
DEFAULT_SPACING_MM = 1.0
"""Voxel size of the crops, mm (the training chain's spacing)."""
CENTRE_SEARCH_MM = 3.0
"""Where the mask is 0 at the centre voxel, its nearest non-zero voxel within this distance (mm) gives the value."""
DATE_TOLERANCE_DAYS = 1.0
"""``interval_days`` and the dates must agree within this many days when both are given."""
GRID_TOLERANCE_MM = 0.01
"""A mask's affine may differ from its scan's by this much (mm) in each entry."""
SOURCE = "user pairs"
"""``source`` of every item and of the datalist's metadata."""

IMAGES_DIR, LABELS_DIR, RECORDS_DIR = "images", "labels", "records"
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

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_LPS = LPS_TO_RAS[:3, :3]  # RAS <-> LPS for points and rotations (its own inverse)
CoordinateSystem = Literal["RAS", "LPS"]


class PairRowError(ValueError):
    """A PAIRS.csv row that cannot be used; ``str()`` is the one-line reason (the caller adds the row)."""


@dataclass(frozen=True)
class RegistrationSettings:
    """How the follow-up crop is registered to the baseline crop (rigid, SimpleITK); stored in each record.

    Attributes:
        window_hu: both images are clipped to this HU range before the metric (air .. dense soft tissue: bone
            and contrast would otherwise take most histogram bins).
        histogram_bins: bins of Mattes mutual information.
        shrink_factors: the multi-resolution pyramid, coarse to fine (voxels of the baseline crop).
        smoothing_sigmas_mm: Gaussian smoothing at each level, mm.
        iterations: most iterations per level of the regular-step gradient descent.
        learning_rate: its first (largest) step, mm (scales from physical shift: a step moves no voxel more
            than this).
        min_step: it stops when the step falls below this, mm.
        relaxation: step shrink factor when the gradient turns.
        metric_radius_fraction: the metric uses the baseline crop's voxels inside the baseline scan within this
            fraction of ``crop_mm / 2`` of the nodule centre (a sphere: local alignment around the nodule).
        margin_mm: the follow-up is read this far beyond the rotated crop's reach, so the moving image covers it.
        max_rotation_deg: a result that rotates more is rejected (centre alignment kept).
        max_shift_mm: a result that moves the baseline centre more than this from the given follow-up centre is
            rejected (at most ``margin_mm``).
        threads: ITK threads (``None``: ITK's default, all cores); the result depends on it only at round-off.
    """

    window_hu: tuple[float, float] = DEFAULT_WINDOWS["lung"]
    histogram_bins: int = 32
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_mm: tuple[float, ...] = (2.0, 1.0, 0.0)
    iterations: int = 200
    learning_rate: float = 1.0
    min_step: float = 0.001
    relaxation: float = 0.5
    metric_radius_fraction: float = 1.0
    margin_mm: float = 10.0
    max_rotation_deg: float = 15.0
    max_shift_mm: float = 10.0
    threads: int | None = None

    def __post_init__(self) -> None:
        lo, hi = self.window_hu
        if not lo < hi:
            raise ValueError(
                f"RegistrationSettings.window_hu must be (low, high) with low < high, got {self.window_hu}."
            )
        if len(self.shrink_factors) != len(self.smoothing_sigmas_mm) or not self.shrink_factors:
            raise ValueError(
                "RegistrationSettings: shrink_factors and smoothing_sigmas_mm must have the same (non-zero) length, "
                f"got {self.shrink_factors} and {self.smoothing_sigmas_mm}."
            )
        if any(int(f) < 1 for f in self.shrink_factors):
            raise ValueError(f"RegistrationSettings.shrink_factors must be >= 1, got {self.shrink_factors}.")
        for name in ("histogram_bins", "iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"RegistrationSettings.{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("learning_rate", "min_step", "relaxation", "metric_radius_fraction", "margin_mm"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"RegistrationSettings.{name} must be a finite number > 0, got {value!r}.")
        if not 0 < self.relaxation < 1:
            raise ValueError(f"RegistrationSettings.relaxation must be in (0, 1), got {self.relaxation}.")
        if not 0 < self.max_shift_mm <= self.margin_mm:
            raise ValueError(
                f"RegistrationSettings.max_shift_mm must be in (0, margin_mm={self.margin_mm}], "
                f"got {self.max_shift_mm}."
            )
        if not 0 < self.max_rotation_deg <= 90:
            raise ValueError(f"RegistrationSettings.max_rotation_deg must be in (0, 90], got {self.max_rotation_deg}.")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"RegistrationSettings.threads must be >= 1 or None, got {self.threads}.")


# --------------------------------------------------------------------------------------------------------------
# The CSV
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairSpec:
    """One usable row of PAIRS.csv, checked and resolved.

    Attributes:
        line: the row's line number in the CSV (the header is line 1).
        patient_id: the patient.
        nodule_id: the nodule within the patient.
        case_id: ``<patient_id>_<nodule_id>`` made safe for file names.
        baseline_image: the baseline scan (absolute path).
        baseline_mask: its nodule mask.
        followup_image: the follow-up scan.
        followup_mask: its nodule mask.
        baseline_centre: baseline nodule centre, RAS mm.
        followup_centre: follow-up nodule centre in the follow-up scan, RAS mm.
        interval_days: days from baseline to follow-up (> 0).
        baseline_label: the nodule's value in the baseline mask, or ``None`` (component at the centre).
        followup_label: the same for the follow-up mask.
        baseline_date: ISO date, or ``None``.
        followup_date: ISO date, or ``None``.
    """

    line: int
    patient_id: str
    nodule_id: str
    case_id: str
    baseline_image: Path
    baseline_mask: Path
    followup_image: Path
    followup_mask: Path
    baseline_centre: tuple[float, float, float]
    followup_centre: tuple[float, float, float]
    interval_days: float
    baseline_label: int | None = None
    followup_label: int | None = None
    baseline_date: str | None = None
    followup_date: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The row as JSON-friendly values (paths as strings)."""
        return {
            k: str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(self).items()
        }


@dataclass
class PairRow:
    """A row of PAIRS.csv as read: its :class:`PairSpec`, or why it cannot be used."""

    line: int
    where: str
    patient_id: str
    nodule_id: str
    spec: PairSpec | None = None
    error: str | None = None


def _number(row: Mapping[str, str], column: str) -> float:
    text = row.get(column, "").strip()
    if not text:
        raise PairRowError(f"{column} is empty")
    try:
        value = float(text)
    except ValueError:
        raise PairRowError(f"{column} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise PairRowError(f"{column} must be finite, got {text!r}")
    return value


def _label(row: Mapping[str, str], column: str) -> int | None:
    text = row.get(column, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value == int(value) and value >= 1):
        raise PairRowError(f"{column} must be a whole number >= 1 (the nodule's value in the mask), got {text!r}")
    return int(value)


def _date(row: Mapping[str, str], column: str) -> dt.date | None:
    text = row.get(column, "").strip()
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text).date()
    except ValueError:
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise PairRowError(f"{column} must be an ISO date (YYYY-MM-DD), got {text!r}") from None


def _interval(row: Mapping[str, str]) -> tuple[float, dt.date | None, dt.date | None]:
    d0, d1 = _date(row, "baseline_date"), _date(row, "followup_date")
    days_text = row.get("interval_days", "").strip()
    from_dates = None
    if d0 is not None and d1 is not None:
        from_dates = float((d1 - d0).days)
    elif (d0 is None) != (d1 is None) and not days_text:
        raise PairRowError("give both baseline_date and followup_date, or interval_days")
    if days_text:
        days = _number(row, "interval_days")
        if from_dates is not None and abs(days - from_dates) > DATE_TOLERANCE_DAYS:
            raise PairRowError(f"interval_days={days:g} disagrees with the dates ({d0} to {d1}: {from_dates:g} days)")
    elif from_dates is not None:
        days = from_dates
    else:
        raise PairRowError("no interval: interval_days, or baseline_date and followup_date, are empty")
    if not days > 0:
        raise PairRowError(f"the interval must be > 0 days (follow-up after baseline), got {days:g} days")
    return days, d0, d1


def _path(text: str, column: str, base: Path) -> Path:
    value = text.strip()
    if not value:
        raise PairRowError(f"{column} is empty")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _coordinate_system(row: Mapping[str, str], default: str) -> str:
    value = row.get("coordinate_system", "").strip().upper() or default
    if value not in ("RAS", "LPS"):
        raise PairRowError(f"coordinate_system must be RAS or LPS, got {row.get('coordinate_system')!r}")
    return value


def _parse_row(row: Mapping[str, str], line: int, base: Path, system: str) -> PairSpec:
    patient_id, nodule_id = row.get("patient_id", "").strip(), row.get("nodule_id", "").strip()
    for column, value in (("patient_id", patient_id), ("nodule_id", nodule_id)):
        if not value:
            raise PairRowError(f"{column} is empty")
    paths = {c: _path(row.get(c, ""), c, base) for c in PAIRS_COLUMNS[2:6]}
    system = _coordinate_system(row, system)
    centres = []
    for when in ("baseline", "followup"):
        xyz = [_number(row, f"{when}_{axis}") for axis in "xyz"]
        centres.append(tuple(lps_to_ras(xyz) if system == "LPS" else xyz))
    days, d0, d1 = _interval(row)
    return PairSpec(
        line=line,
        patient_id=patient_id,
        nodule_id=nodule_id,
        case_id=_SAFE_NAME.sub("_", f"{patient_id}_{nodule_id}"),
        baseline_image=paths["baseline_image"],
        baseline_mask=paths["baseline_mask"],
        followup_image=paths["followup_image"],
        followup_mask=paths["followup_mask"],
        baseline_centre=centres[0],  # type: ignore[arg-type]
        followup_centre=centres[1],  # type: ignore[arg-type]
        interval_days=int(days) if float(days).is_integer() else float(days),
        baseline_label=_label(row, "baseline_label"),
        followup_label=_label(row, "followup_label"),
        baseline_date=None if d0 is None else d0.isoformat(),
        followup_date=None if d1 is None else d1.isoformat(),
    )


def read_pairs_csv(path: str | os.PathLike[str], coordinate_system: CoordinateSystem = "RAS") -> list[PairRow]:
    """Read PAIRS.csv (columns: the module docstring) into rows, each with its :class:`PairSpec` or its error.

    Args:
        path: the CSV file.
        coordinate_system: ``"RAS"`` or ``"LPS"``: the space of the centres of rows without a
            ``coordinate_system`` value.

    Returns:
        One :class:`PairRow` per data row, in file order; a row whose ``case_id`` repeats an earlier one's is an
        error row.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a CSV with the required columns, or no data row, or a bad ``coordinate_system``.
    """
    system = str(coordinate_system).upper()
    if system not in ("RAS", "LPS"):
        raise ValueError(f"coordinate_system must be 'RAS' or 'LPS', got {coordinate_system!r}.")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(2, "pairs CSV not found", str(p))
    with open(p, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{p}: empty file: expected a header line with {', '.join(PAIRS_COLUMNS)}") from None
        except csv.Error as exc:
            raise ValueError(f"{p}: not a readable CSV: {exc}") from exc
        names = [h.strip().lower() for h in header]
        missing = [c for c in PAIRS_COLUMNS if c not in names]
        if missing:
            raise ValueError(
                f"{p}: missing column(s) {', '.join(missing)}; the header has {', '.join(n for n in names if n)}; "
                f"expected {', '.join(PAIRS_COLUMNS)} and interval_days or baseline_date + followup_date"
            )
        if "interval_days" not in names and not {"baseline_date", "followup_date"} <= set(names):
            raise ValueError(f"{p}: no interval column: expected interval_days, or baseline_date and followup_date")
        rows: list[PairRow] = []
        seen: dict[str, int] = {}
        try:
            for values in reader:
                if not any(v.strip() for v in values):
                    continue
                line = reader.line_num
                row = {name: value for name, value in zip(names, values, strict=False) if name}
                pid, nid = row.get("patient_id", "").strip(), row.get("nodule_id", "").strip()
                where = f"{p.name} line {line} (patient {pid or '?'}, nodule {nid or '?'})"
                entry = PairRow(line, where, pid, nid)
                try:
                    entry.spec = _parse_row(row, line, p.parent, system)
                    if entry.spec.case_id in seen:
                        raise PairRowError(
                            f"case {entry.spec.case_id!r} (patient_id + nodule_id) repeats line "
                            f"{seen[entry.spec.case_id]}"
                        )
                    seen[entry.spec.case_id] = line
                except PairRowError as exc:
                    entry.spec, entry.error = None, str(exc)
                rows.append(entry)
        except csv.Error as exc:
            raise ValueError(f"{p} line {reader.line_num}: not a readable CSV: {exc}") from exc
    if not rows:
        raise ValueError(f"{p}: no data rows under the header")
    return rows


# --------------------------------------------------------------------------------------------------------------
# Loading and geometry
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Grid:
    """A voxel grid: ``(H, W, D)`` and its voxel-to-RAS-mm affine."""

    shape: tuple[int, int, int]
    affine: NDArray[np.float64]

    @property
    def spacing(self) -> NDArray[np.float64]:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def voxel_volume(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def to_voxel(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        inv = np.linalg.inv(self.affine)
        return np.asarray(points, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]

    def contains(self, point: Sequence[float]) -> bool:
        v = self.to_voxel(np.asarray(point, dtype=np.float64))
        return bool(np.all(v >= -0.5) and np.all(v <= np.asarray(self.shape) - 0.5))

    def box(self, centre: Sequence[float], half_mm: float) -> tuple[slice, slice, slice]:
        """The voxel box (clipped to the grid) holding the cube of half-edge ``half_mm`` around ``centre``."""
        signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=np.float64)
        corners = self.to_voxel(np.asarray(centre, dtype=np.float64) + half_mm * signs)
        lo = np.clip(np.floor(corners.min(axis=0)).astype(int) - 1, 0, np.asarray(self.shape))
        hi = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 2, 0, np.asarray(self.shape))
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))  # type: ignore[return-value]

    def sub(self, box: tuple[slice, slice, slice]) -> _Grid:
        shift = np.eye(4)
        shift[:3, 3] = [s.start for s in box]
        return _Grid(tuple(s.stop - s.start for s in box), self.affine @ shift)  # type: ignore[arg-type]

    def sitk_reference(self) -> sitk.Image:
        ref = sitk.Image([int(n) for n in self.shape], sitk.sitkUInt8)
        _set_geometry(ref, self.affine)
        return ref


def _set_geometry(image: sitk.Image, affine: NDArray[np.float64]) -> None:
    """Give an ITK image the geometry of a voxel-to-RAS affine (ITK is LPS)."""
    spacing, origin, direction = itk_geometry(affine)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)


def _to_sitk(array: NDArray[Any], grid: _Grid) -> sitk.Image:
    """An ``(i, j, k)`` array on ``grid`` as an ITK image (ITK index ``(i, j, k)``)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    _set_geometry(image, grid.affine)
    return image


def _from_sitk(image: sitk.Image) -> NDArray[Any]:
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def _lps(point: Sequence[float]) -> list[float]:
    return [float(v) for v in _LPS @ np.asarray(point, dtype=np.float64)]


@dataclass
class _Scan:
    ct: CTVolume
    grid: _Grid


class _Loader:
    """Loads scans and masks, keeping the last few (rows of one patient often share scans)."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self.scans: OrderedDict[Path, _Scan] = OrderedDict()
        self.masks: OrderedDict[Path, tuple[NDArray[np.float32], _Grid]] = OrderedDict()

    def _remember(self, cache: OrderedDict[Path, Any], key: Path, value: Any) -> Any:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.keep:
            cache.popitem(last=False)
        return value

    def scan(self, path: Path, column: str) -> _Scan:
        if path in self.scans:
            self.scans.move_to_end(path)
            return self.scans[path]
        if not path.exists():
            raise PairRowError(f"{column}: {path}: file not found")
        try:
            cases = find_cases(path)
            if len(cases) != 1:
                raise PairRowError(
                    f"{column}: {path}: {len(cases)} scans found ({', '.join(c.case_id for c in cases[:4])}"
                    f"{', ...' if len(cases) > 4 else ''}): expected one NIfTI/MetaImage file or DICOM series folder"
                )
            ct = load_ct(cases[0])
        except InputError as exc:
            raise PairRowError(f"{column}: {exc}") from exc
        for warning in ct.warnings:
            logger.warning("%s: %s", path, warning)
        scan = _Scan(ct, _Grid(tuple(ct.shape), np.asarray(ct.affine, dtype=np.float64)))  # type: ignore[arg-type]
        return self._remember(self.scans, path, scan)

    def mask(self, path: Path, column: str, scan: _Scan) -> NDArray[np.float32]:
        # the readers of load_ct without its HU check (a mask is no CT): the same file kinds and errors
        if path not in self.masks:
            if not path.exists():
                raise PairRowError(f"{column}: {path}: file not found")
            try:
                cases = find_cases(path)
                if len(cases) != 1 or cases[0].kind == "dicom":
                    raise PairRowError(f"{column}: {path}: expected one NIfTI or MetaImage mask file")
                array, affine = read_volume(cases[0])
            except InputError as exc:
                raise PairRowError(f"{column}: {exc}") from exc
            grid = _Grid(tuple(int(n) for n in array.shape), affine)  # type: ignore[arg-type]
            self._remember(self.masks, path, (array, grid))
        else:
            self.masks.move_to_end(path)
        array, grid = self.masks[path]
        if grid.shape != scan.grid.shape or np.abs(grid.affine - scan.grid.affine).max() > GRID_TOLERANCE_MM:
            raise PairRowError(
                f"{column}: {path}: the mask's grid (shape {grid.shape}, spacing "
                f"{np.round(grid.spacing, 4).tolist()} mm, origin {np.round(grid.affine[:3, 3], 3).tolist()}) differs "
                f"from its scan's (shape {scan.grid.shape}, spacing {np.round(scan.grid.spacing, 4).tolist()} mm, "
                f"origin {np.round(scan.grid.affine[:3, 3], 3).tolist()}): expected a mask on the scan's grid"
            )
        return array


def _check_inside(scan: _Scan, centre: Sequence[float], column: str, path: Path) -> None:
    if not scan.grid.contains(centre):
        v = scan.grid.to_voxel(np.asarray(centre, dtype=np.float64))
        raise PairRowError(
            f"{column.split('_')[0]} centre {np.round(centre, 2).tolist()} (RAS mm) is outside {column} {path} "
            f"(voxel {np.round(v, 1).tolist()}, shape {scan.grid.shape}): wrong coordinate system (--lps for LPS "
            "centres) or scan?"
        )


def _select_nodule(
    mask: NDArray[np.float32], grid: _Grid, centre: Sequence[float], label: int | None, column: str, path: Path
) -> NDArray[np.bool_]:
    """The nodule's voxels in a mask sub-volume (see the module docstring)."""
    if not np.array_equal(mask, np.round(mask)) or (mask.size and float(mask.min()) < 0):
        raise PairRowError(
            f"{column}: {path}: non-integer or negative mask values (a probability map?): expected 0/1 or a label map"
        )
    if label is not None:
        selected = mask == label
        if not selected.any():
            raise PairRowError(f"{column}: {path}: no voxel of label {label} near the centre")
        return selected
    v = grid.to_voxel(np.asarray(centre, dtype=np.float64))
    seed = tuple(int(c) for c in np.clip(np.floor(v + 0.5), 0, np.asarray(grid.shape) - 1).astype(int))
    value = float(mask[seed])
    if value == 0:
        reach = np.ceil(CENTRE_SEARCH_MM / grid.spacing).astype(int) + 1
        lo = np.maximum(np.asarray(seed) - reach, 0)
        hi = np.minimum(np.asarray(seed) + reach + 1, np.asarray(grid.shape))
        near = np.argwhere(mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] != 0) + lo
        if near.size:
            points = near @ grid.affine[:3, :3].T + grid.affine[:3, 3]
            dist = np.linalg.norm(points - np.asarray(centre), axis=1)
            best = int(np.argmin(dist))
            if dist[best] <= CENTRE_SEARCH_MM:
                seed = tuple(int(c) for c in near[best])
                value = float(mask[seed])
        if value == 0:
            raise PairRowError(
                f"{column}: {path}: empty mask at the centre (no non-zero voxel within {CENTRE_SEARCH_MM:g} mm of "
                f"{np.round(centre, 2).tolist()} RAS mm)"
            )
    components, _ = ndimage.label(mask == value, structure=np.ones((3, 3, 3), dtype=bool))
    return components == components[seed]


def _crop_grid(scan: _Scan, centre: Sequence[float], crop_mm: float, spacing_mm: float | None) -> _Grid:
    """The baseline crop's grid: the centre at voxel ``n // 2`` (see the module docstring)."""
    c = np.asarray(centre, dtype=np.float64)
    if spacing_mm is None:
        spacing = scan.grid.spacing
        size = np.maximum(1, np.round(crop_mm / spacing)).astype(int)
        start = np.floor(scan.grid.to_voxel(c) + 0.5).astype(int) - size // 2
        shift = np.eye(4)
        shift[:3, 3] = start
        return _Grid(tuple(int(n) for n in size), scan.grid.affine @ shift)  # type: ignore[arg-type]
    n = max(1, round(crop_mm / spacing_mm))
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = c - spacing_mm * (n // 2)
    return _Grid((n, n, n), affine)


def _resample(
    image: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform,
    interpolator: int,
    default: float,
    pixel: int,
    threads: int | None,
) -> sitk.Image:
    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(reference)
    f.SetTransform(transform)
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(float(default))
    f.SetOutputPixelType(pixel)
    if threads is not None:
        f.SetNumberOfThreads(int(threads))
    return f.Execute(image)


# --------------------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------------------


def _registration_method(
    settings: RegistrationSettings, fixed_mask: sitk.Image, multi_resolution: bool
) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(settings.histogram_bins))
    reg.SetMetricSamplingStrategy(reg.NONE)  # every voxel under the mask: deterministic
    reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    if multi_resolution:
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=float(settings.learning_rate),
            minStep=float(settings.min_step),
            numberOfIterations=int(settings.iterations),
            relaxationFactor=float(settings.relaxation),
            gradientMagnitudeTolerance=1e-8,
        )
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([int(f) for f in settings.shrink_factors])
        reg.SetSmoothingSigmasPerLevel([float(s) for s in settings.smoothing_sigmas_mm])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    if settings.threads is not None:
        reg.SetNumberOfThreads(int(settings.threads))
    return reg


def _rigid_parts(tx: sitk.Euler3DTransform) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(R, t)`` of ``y = R (x - c) + c + t`` in RAS (``c`` the transform's centre), from ITK's LPS."""
    rotation = _LPS @ np.asarray(tx.GetMatrix(), dtype=np.float64).reshape(3, 3) @ _LPS
    return rotation, _LPS @ np.asarray(tx.GetTranslation(), dtype=np.float64)


def _rotation_deg(rotation: NDArray[np.float64]) -> float:
    return math.degrees(math.acos(float(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))


def _register(
    fixed: sitk.Image,
    fixed_mask: sitk.Image,
    moving: sitk.Image,
    baseline_centre: Sequence[float],
    followup_centre: Sequence[float],
    settings: RegistrationSettings,
    register: bool,
) -> tuple[sitk.Euler3DTransform, dict[str, Any], list[str]]:
    """The rigid transform (baseline crop world → follow-up world) and its report."""
    initial = sitk.Euler3DTransform()
    initial.SetCenter(_lps(baseline_centre))
    initial.SetTranslation(_lps(np.asarray(followup_centre) - np.asarray(baseline_centre)))
    lo, hi = settings.window_hu
    fixed_w = sitk.Clamp(sitk.Cast(fixed, sitk.sitkFloat32), sitk.sitkFloat32, float(lo), float(hi))
    moving_w = sitk.Clamp(sitk.Cast(moving, sitk.sitkFloat32), sitk.sitkFloat32, float(lo), float(hi))
    warnings: list[str] = []
    info: dict[str, Any] = {"method": "centres", "status": "centres only (requested)"}

    def metric(tx: sitk.Transform) -> float | None:
        evaluator = _registration_method(settings, fixed_mask, multi_resolution=False)
        evaluator.SetInitialTransform(tx)
        try:
            return float(evaluator.MetricEvaluate(fixed_w, moving_w))
        except RuntimeError:
            return None

    initial_metric = metric(initial)
    final, final_metric = initial, initial_metric
    if register:
        tx = sitk.Euler3DTransform(initial)
        reg = _registration_method(settings, fixed_mask, multi_resolution=True)
        reg.SetInitialTransform(tx, inPlace=True)
        reason = None
        try:
            reg.Execute(fixed_w, moving_w)
        except RuntimeError as exc:
            reason = f"SimpleITK failed: {' '.join(str(exc).split())[-200:]}"
        info = {"method": "rigid", "status": "registered"}
        if reason is None:
            rotation, _ = _rigid_parts(tx)
            moved = np.asarray(tx.TransformPoint(_lps(baseline_centre)))
            shift = float(np.linalg.norm(_LPS @ moved - np.asarray(followup_centre)))
            tx_metric = metric(tx)
            info.update(
                iterations=int(reg.GetOptimizerIteration()), stop_condition=reg.GetOptimizerStopConditionDescription()
            )
            if _rotation_deg(rotation) > settings.max_rotation_deg:
                reason = f"rotation {_rotation_deg(rotation):.1f} deg > {settings.max_rotation_deg:g}"
            elif shift > settings.max_shift_mm:
                reason = f"centre moved {shift:.1f} mm from the given follow-up centre > {settings.max_shift_mm:g}"
            elif tx_metric is None or (initial_metric is not None and tx_metric >= initial_metric):
                reason = f"metric {tx_metric} not better than the centres' alignment ({initial_metric})"
            else:
                final, final_metric = tx, tx_metric
        if final is initial:
            info.update(method="centres", status=f"centres only: registration rejected ({reason})")
            warnings.append(f"registration rejected ({reason}): the centres' alignment is used")
    rotation, translation = _rigid_parts(final)
    correction = np.asarray(baseline_centre) + translation - np.asarray(followup_centre)
    angle = _rotation_deg(rotation)
    axis = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], rotation[1, 0] - rotation[0, 1]])
    norm = float(np.linalg.norm(axis))
    info.update(
        {
            "metric": "mattes_mutual_information",
            "rotation_deg": round(angle, 4),
            "rotation_axis": [round(float(a), 5) for a in axis / norm] if norm > 1e-12 else None,
            "rotation_matrix": [[round(float(v), 7) for v in r] for r in rotation],
            "translation_mm": [round(float(v), 4) for v in translation],
            "center_mm": [round(float(v), 4) for v in baseline_centre],
            "centre_correction_mm": [round(float(v), 4) for v in correction],
            "initial_metric": None if initial_metric is None else round(initial_metric, 6),
            "final_metric": None if final_metric is None else round(final_metric, 6),
            "convention": "RAS mm: a baseline-crop point x shows the follow-up scan's point "
            "rotation_matrix @ (x - center_mm) + center_mm + translation_mm",
        }
    )
    return final, info, warnings


# --------------------------------------------------------------------------------------------------------------
# One pair
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _PairResult:
    grid: _Grid
    arrays: dict[str, NDArray[Any]]
    item: dict[str, Any]
    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _volume_mm3(mask: NDArray[Any], grid: _Grid) -> float:
    return float(np.count_nonzero(mask)) * grid.voxel_volume


def _diameter(volume_mm3: float) -> float | None:
    return round(equivalent_diameter_mm(volume_mm3), 3) if volume_mm3 > 0 else None


def _touches_edge(mask: NDArray[Any]) -> bool:
    return bool(
        mask[0].any()
        or mask[-1].any()
        or mask[:, 0].any()
        or mask[:, -1].any()
        or mask[..., 0].any()
        or mask[..., -1].any()
    )


def _process(
    spec: PairSpec,
    loader: _Loader,
    crop_mm: float,
    spacing_mm: float | None,
    register: bool,
    settings: RegistrationSettings,
) -> _PairResult:
    b_scan = loader.scan(spec.baseline_image, "baseline_image")
    _check_inside(b_scan, spec.baseline_centre, "baseline_image", spec.baseline_image)
    b_mask_full = loader.mask(spec.baseline_mask, "baseline_mask", b_scan)
    f_scan = loader.scan(spec.followup_image, "followup_image")
    _check_inside(f_scan, spec.followup_centre, "followup_image", spec.followup_image)
    f_mask_full = loader.mask(spec.followup_mask, "followup_mask", f_scan)
    threads = settings.threads

    # baseline: its neighbourhood on its own grid, then the crop grid
    grid = _crop_grid(b_scan, spec.baseline_centre, crop_mm, spacing_mm)
    reach = 0.5 * crop_mm * math.sqrt(3.0) + max(float(grid.spacing.max()), float(b_scan.grid.spacing.max()))
    b_box = b_scan.grid.box(spec.baseline_centre, reach)
    b_sub = b_scan.grid.sub(b_box)
    b_nodule = _select_nodule(
        b_mask_full[b_box], b_sub, spec.baseline_centre, spec.baseline_label, "baseline_mask", spec.baseline_mask
    )
    reference = grid.sitk_reference()
    identity = sitk.Transform(3, sitk.sitkIdentity)
    b_image = np.asarray(b_scan.ct.array[b_box], dtype=np.float32)
    fixed = _resample(_to_sitk(b_image, b_sub), reference, identity, sitk.sitkLinear, AIR_HU, sitk.sitkFloat32, threads)
    b_crop_mask = _from_sitk(
        _resample(_to_sitk(b_nodule.astype(np.uint8), b_sub), reference, identity, sitk.sitkNearestNeighbor, 0,
                  sitk.sitkUInt8, threads)
    )  # fmt: skip
    if not b_crop_mask.any():
        raise PairRowError(f"baseline_mask: {spec.baseline_mask}: the nodule has no voxel on the crop grid")

    # the metric's region: a sphere around the nodule, inside the baseline scan
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in grid.shape], indexing="ij"), axis=-1)
    world = idx @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    inside = b_scan.grid.to_voxel(world)
    in_scan = np.all((inside >= -0.5) & (inside <= np.asarray(b_scan.grid.shape) - 0.5), axis=-1)
    radius = settings.metric_radius_fraction * 0.5 * crop_mm
    region = in_scan & (np.linalg.norm(world - np.asarray(spec.baseline_centre), axis=-1) <= radius)
    fixed_mask = _to_sitk(region.astype(np.uint8), grid)

    # follow-up: its neighbourhood on its own grid (wide enough for the rotated crop), registered to the crop
    f_reach = 0.5 * crop_mm * math.sqrt(3.0) + settings.margin_mm + float(f_scan.grid.spacing.max())
    f_box = f_scan.grid.box(spec.followup_centre, f_reach)
    f_sub = f_scan.grid.sub(f_box)
    f_nodule = _select_nodule(
        f_mask_full[f_box], f_sub, spec.followup_centre, spec.followup_label, "followup_mask", spec.followup_mask
    )
    moving = _to_sitk(np.asarray(f_scan.ct.array[f_box], dtype=np.float32), f_sub)
    transform, registration, warnings = _register(
        fixed, fixed_mask, moving, spec.baseline_centre, spec.followup_centre, settings, register
    )
    f_crop = _from_sitk(_resample(moving, reference, transform, sitk.sitkLinear, AIR_HU, sitk.sitkFloat32, threads))
    f_crop_mask = _from_sitk(
        _resample(_to_sitk(f_nodule.astype(np.uint8), f_sub), reference, transform, sitk.sitkNearestNeighbor, 0,
                  sitk.sitkUInt8, threads)
    )  # fmt: skip
    if not f_crop_mask.any():
        raise PairRowError(
            f"followup_mask: {spec.followup_mask}: the nodule has no voxel on the baseline crop after alignment"
        )
    for name, m in (("baseline", b_crop_mask), ("follow-up", f_crop_mask)):
        if _touches_edge(m):
            warnings.append(f"the {name} nodule mask reaches the crop's edge: a larger crop_mm would hold all of it")

    rotation, translation = _rigid_parts(transform)
    c = np.asarray(spec.baseline_centre)
    followup_on_crop = rotation.T @ (np.asarray(spec.followup_centre) - c - translation) + c
    v0, v1 = _volume_mm3(b_crop_mask, grid), _volume_mm3(f_crop_mask, grid)
    native0 = _volume_mm3(b_nodule, b_sub)  # the nodule's voxels near the crop on the scan's own grid
    native1 = _volume_mm3(f_nodule, f_sub)
    base = spec.case_id
    paths = {
        GrowthKeys.BASELINE.value: f"{IMAGES_DIR}/{base}{BASELINE_SUFFIX}.nii.gz",
        GrowthKeys.BASELINE_MASK.value: f"{LABELS_DIR}/{base}{BASELINE_SUFFIX}.nii.gz",
        GrowthKeys.FOLLOWUP.value: f"{IMAGES_DIR}/{base}{FOLLOWUP_SUFFIX}.nii.gz",
        GrowthKeys.FOLLOWUP_MASK.value: f"{LABELS_DIR}/{base}{FOLLOWUP_SUFFIX}.nii.gz",
    }
    item: dict[str, Any] = {
        Keys.IMAGE.value: paths[GrowthKeys.BASELINE.value],
        Keys.LABEL.value: paths[GrowthKeys.BASELINE_MASK.value],
        **paths,
        Keys.CASE_ID.value: spec.case_id,
        Keys.PATIENT_ID.value: spec.patient_id,
        Keys.NODULE_ID.value: spec.nodule_id,
        Keys.CENTER_WORLD.value: [round(float(v), 4) for v in spec.baseline_centre],
        GrowthKeys.FOLLOWUP_CENTER_WORLD.value: [round(float(v), 4) for v in followup_on_crop],
        "followup_scan_center_world_mm": [round(float(v), 4) for v in spec.followup_centre],
        Keys.DIAMETER.value: _diameter(v0),
        GrowthKeys.FOLLOWUP_DIAMETER.value: _diameter(v1),
        GrowthKeys.INTERVAL_DAYS.value: spec.interval_days,
        GrowthKeys.BASELINE_MASK_VOLUME.value: round(v0, 3),
        GrowthKeys.FOLLOWUP_MASK_VOLUME.value: round(v1, 3),
        "registration": registration,
        "source": SOURCE,
    }
    for key in ("baseline_date", "followup_date"):
        if getattr(spec, key) is not None:
            item[key] = getattr(spec, key)
    ratio = v1 / v0 if v0 > 0 else None
    vdt = None
    if ratio is not None and ratio > 0 and ratio != 1.0:
        vdt = round(float(spec.interval_days) * math.log(2.0) / math.log(ratio), 2)
    summary = {
        "baseline_mask_volume_mm3": round(v0, 3),
        "followup_mask_volume_mm3": round(v1, 3),
        "baseline_native_volume_mm3": round(native0, 3),
        "followup_native_volume_mm3": round(native1, 3),
        "volume_ratio": None if ratio is None else round(ratio, 4),
        "vdt_days": vdt,
        "registration_status": registration["status"],
        "rotation_deg": registration["rotation_deg"],
        "translation_mm": round(float(np.linalg.norm(translation)), 4),
        "centre_correction_mm": round(float(np.linalg.norm(registration["centre_correction_mm"])), 4),
        "initial_metric": registration["initial_metric"],
        "final_metric": registration["final_metric"],
    }
    fixed_hu = _from_sitk(fixed)
    arrays = {
        paths[GrowthKeys.BASELINE.value]: np.clip(np.rint(fixed_hu), -32768, 32767).astype(np.int16),
        paths[GrowthKeys.FOLLOWUP.value]: np.clip(np.rint(f_crop), -32768, 32767).astype(np.int16),
        paths[GrowthKeys.BASELINE_MASK.value]: b_crop_mask.astype(np.uint8),
        paths[GrowthKeys.FOLLOWUP_MASK.value]: f_crop_mask.astype(np.uint8),
    }
    return _PairResult(grid, arrays, item, summary, warnings)


def _write(out: Path, result: _PairResult, record: dict[str, Any], record_path: Path) -> None:
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


# --------------------------------------------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------------------------------------------


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
    """Build aligned growth pairs and their datalist from a user's longitudinal scans (see the module docstring).

    Each item's ``registration`` holds ``method`` (``"rigid"`` or ``"centres"``), ``status``, ``rotation_deg``
    (angle), ``rotation_axis``, ``rotation_matrix`` and ``translation_mm`` (RAS) of the transform about
    ``center_mm`` (the baseline centre) that maps a baseline-crop point ``x`` to the follow-up scan's point
    ``R (x - c) + c + t``, ``centre_correction_mm`` (``c + t`` minus the given follow-up centre: how far the
    registration moved it), ``initial_metric`` / ``final_metric`` (Mattes mutual information, lower is better, at
    the centres' alignment and at the result), and for a registration its ``iterations`` and ``stop_condition``.

    Args:
        pairs_csv: PAIRS.csv (columns: the module docstring).
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
    loader = _Loader()
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
                result = _process(spec, loader, float(crop_mm), spacing_mm, register, settings)
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
