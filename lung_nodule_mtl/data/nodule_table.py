"""Nodule centres from CSV tables: LUNA16 annotations and candidates, and the project's predictions.

Three kinds of table are read, told apart by their header line (column names are matched without
regard to case or surrounding spaces; columns not listed are ignored):

* **LUNA16 annotations** (``annotations.csv``, ``annotations_excluded.csv``):
  ``seriesuid, coordX, coordY, coordZ, diameter_mm``, centres in **LPS** world mm. A diameter of
  ``-1`` (the "unknown size" of ``annotations_excluded.csv``) is read as ``None``.
* **LUNA16 candidates / submissions** (``candidates.csv``, a challenge submission):
  ``seriesuid, coordX, coordY, coordZ`` with ``probability`` (the CAD score) and/or ``class``
  (``candidates.csv``'s 0/1 label), centres in **LPS** world mm.
* **lung-nodule-mtl predictions** (``summary.csv`` of ``lung-nodule-mtl predict``, or a minimal table):
  ``case_id, center_x_mm, center_y_mm, center_z_mm``, optionally ``nodule_id``, ``diameter_mm`` and
  ``detection_probability``, centres in **RAS** world mm (the project's convention,
  see :mod:`lung_nodule_mtl.constants`).

Every centre is returned in RAS world mm (LPS tables are converted with
:func:`~lung_nodule_mtl.constants.lps_to_ras`: ``x_ras = -x_lps``, ``y_ras = -y_lps``). The case id
of a LUNA16 row is its ``seriesuid``, which is also the stem of the scan's file
(``<seriesuid>.mhd``), as for the synthetic whole scans (``images/<seriesuid>.nii.gz``).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from lung_nodule_mtl.constants import lps_to_ras

__all__ = [
    "NODULE_TABLE_FORMATS",
    "NoduleRecord",
    "NoduleTableError",
    "read_nodule_table",
]

LUNA16_COORDS = ("coordX", "coordY", "coordZ")
OWN_COORDS = ("center_x_mm", "center_y_mm", "center_z_mm")
UNKNOWN_DIAMETER = -1.0
"""``diameter_mm`` value of LUNA16's ``annotations_excluded.csv`` for a finding without a size."""

NODULE_TABLE_FORMATS: dict[str, str] = {
    "luna16_annotations": "seriesuid,coordX,coordY,coordZ,diameter_mm (LUNA16 annotations, LPS mm)",
    "luna16_candidates": "seriesuid,coordX,coordY,coordZ[,probability][,class] (LUNA16 candidates or submission, "
    "LPS mm)",
    "predictions": "case_id,center_x_mm,center_y_mm,center_z_mm[,nodule_id][,diameter_mm][,detection_probability] "
    "(lung-nodule-mtl predict summary.csv, RAS mm)",
}
"""The accepted tables: a name and its columns (``[...]`` optional, others ignored)."""


class NoduleTableError(ValueError):
    """A nodule table that cannot be read: the message names the file, the line and the problem."""


@dataclass(frozen=True)
class NoduleRecord:
    """One nodule (an annotation) or one detection (a candidate) of a scan.

    Attributes:
        case_id: the scan's id: LUNA16's ``seriesuid`` or the project's ``case_id``.
        center_ras_mm: centre ``(x, y, z)`` in **RAS** world mm, whatever the table's convention.
        diameter_mm: diameter in mm; ``None`` when the table has none or gives LUNA16's ``-1``.
        probability: the detection score (``probability`` of a LUNA16 submission,
            ``detection_probability`` of a prediction table); ``None`` for annotations.
        row: 1-based line of the record in its file (the header is line 1), for messages.
        nodule_id: the prediction table's ``nodule_id``; ``None`` for LUNA16 tables.
        label: ``class`` of a LUNA16 candidates table (1 nodule, 0 not); ``None`` otherwise.
    """

    case_id: str
    center_ras_mm: tuple[float, float, float]
    diameter_mm: float | None = None
    probability: float | None = None
    row: int = 0
    nodule_id: str | None = None
    label: int | None = None


@dataclass(frozen=True)
class _Layout:
    """Where the fields of a table's rows are (column indices) and how to read them."""

    lps: bool
    case_col: int
    coord_cols: tuple[int, int, int]
    coord_names: tuple[str, str, str]
    case_name: str
    diameter_col: int | None
    probability_col: int | None
    probability_name: str
    nodule_id_col: int | None
    label_col: int | None


def _layout(header: list[str], where: str) -> _Layout:
    names = [h.strip() for h in header]
    index: dict[str, int] = {}
    for i, n in enumerate(names):
        key = n.lower()
        if key in index:
            raise NoduleTableError(f"{where} line 1: column {n!r} appears twice.")
        index[key] = i

    def col(name: str) -> int | None:
        return index.get(name.lower())

    def coords(xyz: tuple[str, str, str]) -> tuple[int, int, int] | None:
        cols = [col(c) for c in xyz]
        return (cols[0], cols[1], cols[2]) if None not in cols else None  # type: ignore[return-value]

    case_col, coord_cols = col("seriesuid"), coords(LUNA16_COORDS)
    if case_col is not None and coord_cols is not None:
        diameter_col, probability_col, label_col = col("diameter_mm"), col("probability"), col("class")
        if diameter_col is None and probability_col is None and label_col is None:
            raise NoduleTableError(
                f"{where} line 1: a LUNA16 table needs diameter_mm (annotations), probability or class "
                f"(candidates) besides seriesuid,coordX,coordY,coordZ; got columns {','.join(names)}."
            )
        return _Layout(
            lps=True,
            case_col=case_col,
            coord_cols=coord_cols,
            coord_names=LUNA16_COORDS,
            case_name="seriesuid",
            diameter_col=diameter_col,
            probability_col=probability_col,
            probability_name="probability",
            nodule_id_col=None,
            label_col=label_col,
        )
    case_col, coord_cols = col("case_id"), coords(OWN_COORDS)
    if case_col is not None and coord_cols is not None:
        return _Layout(
            lps=False,
            case_col=case_col,
            coord_cols=coord_cols,
            coord_names=OWN_COORDS,
            case_name="case_id",
            diameter_col=col("diameter_mm"),
            probability_col=col("detection_probability"),
            probability_name="detection_probability",
            nodule_id_col=col("nodule_id"),
            label_col=None,
        )
    accepted = "; ".join(NODULE_TABLE_FORMATS.values())
    raise NoduleTableError(f"{where} line 1: unknown header {','.join(names)!r}; accepted columns: {accepted}.")


def _number(text: str, column: str, where: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise NoduleTableError(f"{where}: {column} {text!r} is not a number.") from None
    if not math.isfinite(value):
        raise NoduleTableError(f"{where}: {column} {text!r} is not a finite number.")
    return value


def _optional(fields: list[str], col: int | None) -> str | None:
    if col is None:
        return None
    text = fields[col].strip()
    return text or None


def _record(fields: list[str], lay: _Layout, where: str, line: int) -> NoduleRecord:
    case_id = fields[lay.case_col].strip()
    if not case_id:
        raise NoduleTableError(f"{where}: {lay.case_name} is empty.")
    xyz = [_number(fields[c], name, where) for c, name in zip(lay.coord_cols, lay.coord_names, strict=True)]
    if lay.lps:
        xyz = lps_to_ras(xyz)
    diameter: float | None = None
    text = _optional(fields, lay.diameter_col)
    if text is not None:
        diameter = _number(text, "diameter_mm", where)
        if diameter == UNKNOWN_DIAMETER:
            diameter = None
        elif diameter < 0:
            raise NoduleTableError(f"{where}: diameter_mm {text!r} is negative (only -1, 'unknown', is allowed).")
    probability: float | None = None
    text = _optional(fields, lay.probability_col)
    if text is not None:
        probability = _number(text, lay.probability_name, where)
    label: int | None = None
    text = _optional(fields, lay.label_col)
    if text is not None:
        value = _number(text, "class", where)
        if value not in (0.0, 1.0):
            raise NoduleTableError(f"{where}: class {text!r} is not 0 or 1.")
        label = int(value)
    return NoduleRecord(
        case_id=case_id,
        center_ras_mm=(float(xyz[0]), float(xyz[1]), float(xyz[2])),
        diameter_mm=diameter,
        probability=probability,
        row=line,
        nodule_id=_optional(fields, lay.nodule_id_col),
        label=label,
    )


def read_nodule_table(path: str | os.PathLike[str]) -> dict[str, list[NoduleRecord]]:
    """Read a LUNA16 annotations / candidates table or a lung-nodule-mtl prediction table.

    The format is chosen from the header line (see :data:`NODULE_TABLE_FORMATS` and the module
    docstring); LPS centres are converted to RAS. A table with a header and no rows is valid and
    gives ``{}``; blank lines are skipped.

    Args:
        path: the CSV file (UTF-8, an optional byte-order mark, ``,`` separated, any line endings).

    Returns:
        ``{case_id: [NoduleRecord, ...]}``, cases and records in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        NoduleTableError: (a ``ValueError``) the file is a folder, empty, not UTF-8, has an unknown
            header, or a row with a wrong number of fields, an empty case id, a coordinate, diameter
            or score that is not a finite number, or a negative diameter other than ``-1``. The
            message is one line: ``"<path> line <n>: <problem>"``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"nodule table not found: {str(p)!r}.")
    if p.is_dir():
        raise NoduleTableError(f"{p} is a folder, not a CSV nodule table.")
    table: dict[str, list[NoduleRecord]] = {}
    try:
        with open(p, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            lay: _Layout | None = None
            n_fields = 0
            for fields in reader:
                if not any(x.strip() for x in fields):
                    continue
                line = reader.line_num
                if lay is None:
                    lay = _layout(fields, str(p))
                    n_fields = len(fields)
                    continue
                where = f"{p} line {line}"
                if len(fields) != n_fields:
                    raise NoduleTableError(f"{where}: expected {n_fields} fields as in the header, got {len(fields)}.")
                rec = _record(fields, lay, where, line)
                table.setdefault(rec.case_id, []).append(rec)
    except UnicodeDecodeError as e:
        raise NoduleTableError(f"{p}: not a UTF-8 text file ({e.reason} at byte {e.start}).") from None
    except csv.Error as e:
        raise NoduleTableError(f"{p}: not a readable CSV file ({e}).") from None
    if lay is None:
        raise NoduleTableError(
            f"{p} is empty: expected a header line, e.g. {NODULE_TABLE_FORMATS['luna16_annotations']}."
        )
    return table
