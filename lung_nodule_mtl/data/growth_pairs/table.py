"""PAIRS.csv, the table of growth pairs: its columns, read and checked row by row into :class:`PairSpec`.

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
                                            :mod:`~lung_nodule_mtl.data.growth_pairs.loader`)
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
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from lung_nodule_mtl.constants import lps_to_ras
from lung_nodule_mtl.utils.deprecation import RenamedAttribute

__all__ = [
    "DATE_TOLERANCE_DAYS",
    "INTERVAL_COLUMNS",
    "OPTIONAL_COLUMNS",
    "PAIRS_COLUMNS",
    "CoordinateSystem",
    "PairRow",
    "PairRowError",
    "PairSpec",
    "read_pairs_csv",
]

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

DATE_TOLERANCE_DAYS = 1.0
"""``interval_days`` and the dates must agree within this many days when both are given."""

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")

CoordinateSystem = Literal["RAS", "LPS"]


class PairRowError(ValueError):
    """A PAIRS.csv row that cannot be used; ``str()`` is the one-line reason (the caller adds the row)."""


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
        baseline_center: baseline nodule centre, RAS mm (``baseline_centre``: deprecated spelling).
        followup_center: follow-up nodule centre in the follow-up scan, RAS mm (``followup_centre``: deprecated).
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
    baseline_center: tuple[float, float, float]
    followup_center: tuple[float, float, float]
    interval_days: float
    baseline_label: int | None = None
    followup_label: int | None = None
    baseline_date: str | None = None
    followup_date: str | None = None

    baseline_centre = RenamedAttribute("baseline_center")  # deprecated alias
    followup_centre = RenamedAttribute("followup_center")  # deprecated alias

    def as_json(self) -> dict[str, Any]:
        """The row as JSON-friendly values (paths as strings), under the keys of the records on disk.

        The centres keep their record keys ``baseline_centre`` / ``followup_centre`` (the fields' names before
        they were spelled ``center``), so the records of earlier runs still match and are reused.
        """
        return {
            _RECORD_KEYS.get(k, k): str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(self).items()
        }


_RECORD_KEYS = {"baseline_center": "baseline_centre", "followup_center": "followup_centre"}
"""On-disk names (pair records' ``key.row``) of :class:`PairSpec` fields renamed since: the files keep theirs."""


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
        baseline_center=centres[0],  # type: ignore[arg-type]
        followup_center=centres[1],  # type: ignore[arg-type]
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
