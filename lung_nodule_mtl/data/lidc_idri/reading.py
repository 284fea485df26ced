"""Parse a LIDC-IDRI CT reading file (the XML that TCIA ships beside each CT series).

The file (root ``LidcReadMessage``, namespace ``http://www.nih.gov``) holds a ``ResponseHeader`` (the series and
study UIDs) and one ``readingSession`` per radiologist, each with

* ``unblindedReadNodule``: a nodule, with ``noduleID``, the nine ``characteristics`` ratings (absent for nodules
  < 3 mm) and one ``roi`` per slice: ``imageZposition``, ``imageSOP_UID``, ``inclusion`` (``TRUE`` for the
  nodule's outline, ``FALSE`` for a hole carved out of it) and the outline's pixels as ``edgeMap``
  ``xCoord``/``yCoord`` (0-based column and row). A nodule < 3 mm is marked by a single point (one ``edgeMap``);
* ``nonNodule``: a lesion >= 3 mm that is not a nodule, marked by one ``locus`` point.

:func:`parse_lidc_xml` reads one file into a :class:`LidcReading`. Readers are numbered 1, 2, ... in the order of
their sessions in the file (``servicingRadiologistID`` is kept, but it is not unique in every file). Chest
radiograph readings (root ``IdriReadMessage``) raise :class:`NotCtReadingError`. A malformed file raises
:class:`LidcXmlError` naming the file and the element; things that only lose one mark or rating (a rating off its
scale, an ROI without points) are warnings on the reading.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, Attribute

__all__ = [
    "LIDC_NAMESPACE",
    "RATING_NAMES",
    "RATING_SCALES",
    "LidcReading",
    "LidcXmlError",
    "NonNoduleMark",
    "NotCtReadingError",
    "ReaderNodule",
    "Roi",
    "parse_lidc_xml",
]

LIDC_NAMESPACE = "http://www.nih.gov"

_XML_RATINGS: dict[str, str] = {
    "subtlety": Attribute.SUBTLETY,
    "internalStructure": Attribute.INTERNAL_STRUCTURE,
    "calcification": Attribute.CALCIFICATION,
    "sphericity": Attribute.SPHERICITY,
    "margin": Attribute.MARGIN,
    "lobulation": Attribute.LOBULATION,
    "spiculation": Attribute.SPICULATION,
    "texture": Attribute.TEXTURE,
    "malignancy": "malignancy",
}
"""XML ``characteristics`` element -> rating name used here (the project's attribute keys, and ``malignancy``)."""

RATING_NAMES: tuple[str, ...] = tuple(str(v) for v in _XML_RATINGS.values())
"""The nine ratings of a nodule: the eight attributes (:class:`~lung_nodule_mtl.constants.Attribute`) and
``malignancy``."""

RATING_SCALES: dict[str, int] = {**{str(k): v for k, v in ATTRIBUTE_CLASSES.items()}, "malignancy": 5}
"""Highest value of each rating (every scale starts at 1)."""


class LidcXmlError(ValueError):
    """A LIDC reading file that cannot be used; ``str()`` is ``"<file>: <reason>"``."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{self.path}: {self.reason}")


class NotCtReadingError(LidcXmlError):
    """The XML is not a CT reading (e.g. a chest radiograph reading, root ``IdriReadMessage``)."""


@dataclass(frozen=True)
class Roi:
    """One outline of a nodule on one slice.

    Attributes:
        z_position: ``imageZposition`` (mm, the slice's DICOM z, LPS).
        sop_uid: ``imageSOP_UID`` of the slice, or ``None`` when absent.
        inclusion: ``True`` for the nodule's outline, ``False`` for a hole (exclusion) inside it.
        points: ``(N, 2)`` int array of the outline's pixels ``(x, y)`` = (column, row), 0-based.
    """

    z_position: float
    sop_uid: str | None
    inclusion: bool
    points: NDArray[np.int64]


@dataclass
class ReaderNodule:
    """One reader's nodule (``unblindedReadNodule``).

    Attributes:
        reader: the reader's number in the file (1-based, order of the reading sessions).
        radiologist_id: ``servicingRadiologistID`` of the session (anonymised; not unique in every file).
        nodule_id: ``noduleID`` (the reader's own label, e.g. ``"Nodule 001"``).
        rois: its outlines, one or more per slice.
        ratings: the nine ratings (:data:`RATING_NAMES`), ``None`` where absent or off the scale.
        small: ``True`` for a nodule < 3 mm: every ROI is a single point (no outline).
    """

    reader: int
    radiologist_id: str | None
    nodule_id: str
    rois: list[Roi]
    ratings: dict[str, int | None]
    small: bool

    @property
    def has_ratings(self) -> bool:
        """Whether any of the nine ratings is given."""
        return any(v is not None for v in self.ratings.values())


@dataclass(frozen=True)
class NonNoduleMark:
    """A reader's non-nodule (``nonNodule``): one point on one slice.

    Attributes:
        reader: the reader's number in the file.
        radiologist_id: ``servicingRadiologistID`` of the session.
        mark_id: ``nonNoduleID``.
        z_position: ``imageZposition`` (mm).
        sop_uid: ``imageSOP_UID``, or ``None``.
        point: ``(x, y)`` pixel (column, row), 0-based.
    """

    reader: int
    radiologist_id: str | None
    mark_id: str
    z_position: float
    sop_uid: str | None
    point: tuple[int, int]


@dataclass
class LidcReading:
    """The content of one CT reading file.

    Attributes:
        path: the XML file.
        series_uid: ``SeriesInstanceUid`` of the CT series the file annotates (``None`` if absent).
        study_uid: ``StudyInstanceUID`` (``None`` if absent).
        n_readers: number of reading sessions (readers) in the file.
        radiologist_ids: ``servicingRadiologistID`` of each reader (index ``reader - 1``).
        nodules: every reader's nodules, >= 3 mm and small.
        non_nodules: every reader's non-nodule marks.
        warnings: problems that lost a mark or a rating, each naming the file and the element.
    """

    path: Path
    series_uid: str | None
    study_uid: str | None
    n_readers: int
    radiologist_ids: list[str | None]
    nodules: list[ReaderNodule] = field(default_factory=list)
    non_nodules: list[NonNoduleMark] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def large_nodules(self) -> list[ReaderNodule]:
        """The readers' nodules >= 3 mm (outlined)."""
        return [n for n in self.nodules if not n.small]

    @property
    def small_nodules(self) -> list[ReaderNodule]:
        """The readers' nodules < 3 mm (a point each)."""
        return [n for n in self.nodules if n.small]


def _local(tag: str) -> str:
    """The tag without its ``{namespace}``."""
    return tag.rsplit("}", 1)[-1]


def _children(elem: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in elem if _local(c.tag) == name]


def _child_text(elem: ET.Element, name: str) -> str | None:
    """Text of the first child called ``name`` (any namespace, case-insensitive), stripped; ``None`` if absent."""
    lower = name.lower()
    for child in elem:
        if _local(child.tag).lower() == lower:
            text = (child.text or "").strip()
            return text or None
    return None


def _int(text: str | None, what: str, path: Path) -> int:
    value = _float(text, what, path)
    if value != int(value):
        raise LidcXmlError(path, f"{what} is not an integer: {text!r}")
    return int(value)


def _float(text: str | None, what: str, path: Path) -> float:
    if text is None:
        raise LidcXmlError(path, f"{what} is missing")
    try:
        value = float(text)
    except ValueError as exc:
        raise LidcXmlError(path, f"{what} is not a number: {text!r}") from exc
    if not math.isfinite(value):
        raise LidcXmlError(path, f"{what} is not finite: {text!r}")
    return value


def _point(elem: ET.Element, what: str, path: Path) -> tuple[int, int]:
    x = _int(_child_text(elem, "xCoord"), f"{what} xCoord", path)
    y = _int(_child_text(elem, "yCoord"), f"{what} yCoord", path)
    if x < 0 or y < 0:
        raise LidcXmlError(path, f"{what} has a negative pixel coordinate ({x}, {y})")
    return x, y


def _ratings(elem: ET.Element | None, what: str, path: Path, warnings: list[str]) -> dict[str, int | None]:
    ratings: dict[str, int | None] = dict.fromkeys(RATING_NAMES)
    if elem is None:
        return ratings
    for child in elem:
        name = _XML_RATINGS.get(_local(child.tag))
        if name is None:
            continue
        text = (child.text or "").strip()
        if not text:
            continue
        value = _int(text, f"{what} {_local(child.tag)}", path)
        if not 1 <= value <= RATING_SCALES[name]:
            warnings.append(
                f"{path}: {what}: {_local(child.tag)} = {value} is off its 1..{RATING_SCALES[name]} scale; ignored"
            )
            continue
        ratings[name] = value
    return ratings


def _roi(elem: ET.Element, what: str, path: Path, warnings: list[str]) -> Roi | None:
    z = _float(_child_text(elem, "imageZposition"), f"{what} imageZposition", path)
    sop = _child_text(elem, "imageSOP_UID")
    inclusion_text = _child_text(elem, "inclusion")
    if inclusion_text is None:
        warnings.append(f"{path}: {what} (z={z:g}) has no inclusion flag; taken as TRUE")
        inclusion = True
    elif inclusion_text.upper() in ("TRUE", "FALSE"):
        inclusion = inclusion_text.upper() == "TRUE"
    else:
        raise LidcXmlError(path, f"{what} (z={z:g}): inclusion must be TRUE or FALSE, got {inclusion_text!r}")
    points = [_point(e, f"{what} (z={z:g}) edgeMap", path) for e in _children(elem, "edgeMap")]
    if not points:
        warnings.append(f"{path}: {what} (z={z:g}) has no edgeMap point; ignored")
        return None
    return Roi(z, sop, inclusion, np.asarray(points, dtype=np.int64).reshape(-1, 2))


def parse_lidc_xml(path: str | os.PathLike[str]) -> LidcReading:
    """Read one LIDC-IDRI CT reading file.

    Args:
        path: the ``.xml`` file.

    Returns:
        The reading: readers' nodules (>= 3 mm with outlines and ratings, and < 3 mm points) and non-nodules.

    Raises:
        FileNotFoundError: the file does not exist.
        NotCtReadingError: a chest radiograph reading (``IdriReadMessage``) or another XML document.
        LidcXmlError: not well-formed XML, or a required element or value is missing or malformed (the message
            names the file, the reader and the nodule).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(2, "LIDC reading file not found", str(p))
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as exc:
        raise LidcXmlError(p, f"not well-formed XML: {exc}") from exc
    kind = _local(root.tag)
    if kind != "LidcReadMessage":
        what = "a chest radiograph reading" if kind == "IdriReadMessage" else f"root element {kind!r}"
        raise NotCtReadingError(p, f"not a LIDC CT reading ({what}; expected LidcReadMessage)")
    headers = _children(root, "ResponseHeader")
    header = headers[0] if headers else None
    series_uid = _child_text(header, "SeriesInstanceUid") if header is not None else None
    study_uid = _child_text(header, "StudyInstanceUID") if header is not None else None
    sessions = _children(root, "readingSession")
    if not sessions:
        raise LidcXmlError(p, "no readingSession element (no reader's marks)")
    warnings: list[str] = []
    reading = LidcReading(p, series_uid, study_uid, len(sessions), [], warnings=warnings)
    for reader, session in enumerate(sessions, start=1):
        rid = _child_text(session, "servicingRadiologistID")
        reading.radiologist_ids.append(rid)
        blinded = _children(session, "blindedReadNodule")
        if blinded:
            warnings.append(f"{p}: reader {reader}: {len(blinded)} blindedReadNodule element(s) ignored")
        for n, elem in enumerate(_children(session, "unblindedReadNodule"), start=1):
            nodule_id = _child_text(elem, "noduleID")
            if nodule_id is None:
                nodule_id = f"reader{reader}_nodule{n}"
                warnings.append(f"{p}: reader {reader}: unblindedReadNodule #{n} has no noduleID; named {nodule_id}")
            what = f"reader {reader} nodule {nodule_id!r}"
            characteristics = _children(elem, "characteristics")
            ratings = _ratings(characteristics[0] if characteristics else None, what, p, warnings)
            rois = [r for e in _children(elem, "roi") if (r := _roi(e, f"{what} roi", p, warnings)) is not None]
            if not rois:
                warnings.append(f"{p}: {what} has no usable roi; ignored")
                continue
            small = all(len(r.points) == 1 for r in rois)
            reading.nodules.append(ReaderNodule(reader, rid, nodule_id, rois, ratings, small))
        for n, elem in enumerate(_children(session, "nonNodule"), start=1):
            mark_id = _child_text(elem, "nonNoduleID") or f"reader{reader}_nonnodule{n}"
            what = f"reader {reader} nonNodule {mark_id!r}"
            z = _float(_child_text(elem, "imageZposition"), f"{what} imageZposition", p)
            loci = _children(elem, "locus")
            if not loci:
                warnings.append(f"{p}: {what} has no locus; ignored")
                continue
            point = _point(loci[0], f"{what} locus", p)
            reading.non_nodules.append(NonNoduleMark(reader, rid, mark_id, z, _child_text(elem, "imageSOP_UID"), point))
    return reading
