"""The LIDC-IDRI reading XML, outline filling, clustering and consensus; the real LIDC-IDRI-0001 when present.

Synthetic cases need no data; ``real_data`` tests read ``../shared/data/lidc_idri`` (skipped without it), and the
``pylidc`` comparison also needs ``pylidc`` installed (it is not a dependency of the project).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import statistics
import sys
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from lung_nodule_mtl.constants import ATTRIBUTE_NAMES, Keys, lps_to_ras
from lung_nodule_mtl.data.datalist import load_datalist
from lung_nodule_mtl.data.lidc_idri import (
    AnnotationMask,
    LidcXmlError,
    NotCtReadingError,
    SliceLookup,
    aggregate_rating,
    annotation_mask,
    cluster_annotations,
    consensus_mask,
    parse_lidc_xml,
    polygon_interior,
    prepare_lidc,
)
from lung_nodule_mtl.data.lidc_idri.masks import max_axial_diameter_mm

NS = "http://www.nih.gov"
XML_RATINGS = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
)
"""The XML's rating elements, in the order of the project's ATTRIBUTE_NAMES followed by malignancy."""


def square(a: int, b: int) -> list[tuple[int, int]]:
    """The 8-connected outline of the square ``[a, b]^2`` (pixels ``(x, y)``), clockwise."""
    top = [(x, a) for x in range(a, b + 1)]
    right = [(b, y) for y in range(a + 1, b + 1)]
    bottom = [(x, b) for x in range(b - 1, a - 1, -1)]
    left = [(a, y) for y in range(b - 1, a, -1)]
    return top + right + bottom + left


def _edge_maps(points: list[tuple[int, int]]) -> str:
    return "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>" for x, y in points)


def _roi(z: float, sop: str, points: list[tuple[int, int]], inclusion: str = "TRUE") -> str:
    return (
        f"<roi><imageZposition>{z:.6f} </imageZposition><imageSOP_UID>{sop}</imageSOP_UID>"
        f"<inclusion>{inclusion}</inclusion>{_edge_maps(points)}</roi>"
    )


def _characteristics(values: dict[str, int]) -> str:
    return "<characteristics>" + "".join(f"<{k}>{v}</{k}>" for k, v in values.items()) + "</characteristics>"


def _message(sessions: list[str], series_uid: str = "1.2.3.4") -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<LidcReadMessage uid="1" xmlns="{NS}">'
        f"<ResponseHeader><SeriesInstanceUid>{series_uid}</SeriesInstanceUid>"
        f"<StudyInstanceUID>1.2.3</StudyInstanceUID></ResponseHeader>" + "".join(sessions) + "</LidcReadMessage>"
    )


def _session(radiologist: str, body: str) -> str:
    return (
        f"<readingSession><annotationVersion>3.12</annotationVersion>"
        f"<servicingRadiologistID>{radiologist}</servicingRadiologistID>{body}</readingSession>"
    )


RATINGS_1 = dict(zip(XML_RATINGS, (5, 1, 6, 3, 4, 2, 1, 5, 5), strict=True))
RATINGS_2 = dict(zip(XML_RATINGS, (4, 1, 3, 5, 3, 3, 2, 4, 4), strict=True))


def _two_reader_xml() -> str:
    nodule_1 = (
        "<unblindedReadNodule><noduleID>Nodule 001</noduleID>"
        + _characteristics(RATINGS_1)
        + _roi(-44.0, "1.2.3.4.4", square(10, 20))
        + _roi(-42.0, "1.2.3.4.5", square(10, 20))
        + _roi(-42.0, "1.2.3.4.5", square(14, 16), inclusion="FALSE")
        + _roi(-40.0, "9.9.9", square(10, 20))  # unknown SOP UID: matched by z
        + "</unblindedReadNodule>"
    )
    small = (
        "<unblindedReadNodule><noduleID>Nodule 002</noduleID>"
        + _roi(-36.0, "1.2.3.4.8", [(30, 30)])
        + "</unblindedReadNodule>"
    )
    non_nodule = (
        "<nonNodule><nonNoduleID>_Non-nodule 001</nonNoduleID><imageZposition>-46.0</imageZposition>"
        "<imageSOP_UID>1.2.3.4.3</imageSOP_UID><locus><xCoord>40</xCoord><yCoord>8</yCoord></locus></nonNodule>"
    )
    nodule_b = (
        "<unblindedReadNodule><noduleID>B</noduleID>"
        + _characteristics(RATINGS_2)
        + _roi(-44.0, "1.2.3.4.4", square(11, 21))
        + _roi(-42.0, "1.2.3.4.5", square(11, 21))
        + "</unblindedReadNodule>"
    )
    nodule_c = (
        "<unblindedReadNodule><noduleID>C</noduleID>"
        + _characteristics({**RATINGS_2, "malignancy": 2})
        + _roi(-38.0, "1.2.3.4.7", square(30, 36))
        + _roi(-36.0, "1.2.3.4.8", square(30, 36))
        + "</unblindedReadNodule>"
    )
    return _message([_session("111", nodule_1 + small + non_nodule), _session("222", nodule_b + nodule_c)])


@pytest.fixture
def two_reader_xml(tmp_path: Path) -> Path:
    path = tmp_path / "069.xml"
    path.write_text(_two_reader_xml(), encoding="utf-8")
    return path


def _lookup(n_slices: int = 10, z0: float = -50.0, dz: float = 2.0) -> SliceLookup:
    """Slices ``k`` at z = z0 + k dz with SOP UIDs ``1.2.3.4.<k + 1>``."""
    return SliceLookup({f"1.2.3.4.{k + 1}": k for k in range(n_slices)}, z0 + dz * np.arange(n_slices), dz / 2)


AFFINE = np.array([[-0.7, 0, 0, 16.8], [0, -0.7, 0, 20.0], [0, 0, 2.0, -50.0], [0, 0, 0, 1.0]])
SHAPE = (48, 48, 10)


# --------------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------------


def test_parse_two_readers(two_reader_xml: Path) -> None:
    reading = parse_lidc_xml(two_reader_xml)
    assert reading.series_uid == "1.2.3.4" and reading.study_uid == "1.2.3"
    assert reading.n_readers == 2 and reading.radiologist_ids == ["111", "222"]
    assert [(n.reader, n.nodule_id, n.small) for n in reading.nodules] == [
        (1, "Nodule 001", False),
        (1, "Nodule 002", True),
        (2, "B", False),
        (2, "C", False),
    ]
    first = reading.nodules[0]
    assert [r.inclusion for r in first.rois] == [True, True, False, True]
    assert first.rois[0].z_position == -44.0 and first.rois[0].sop_uid == "1.2.3.4.4"
    assert first.rois[0].points[:2].tolist() == [[10, 10], [11, 10]]  # (x, y) = (column, row)
    expected = dict(zip((*ATTRIBUTE_NAMES, "malignancy"), RATINGS_1.values(), strict=True))
    assert first.ratings == expected
    small = reading.small_nodules[0]
    assert not small.has_ratings and small.rois[0].points.tolist() == [[30, 30]]
    (mark,) = reading.non_nodules
    assert (mark.reader, mark.mark_id, mark.point, mark.z_position, mark.sop_uid) == (
        1,
        "_Non-nodule 001",
        (40, 8),
        -46.0,
        "1.2.3.4.3",
    )
    assert reading.warnings == []


def test_parse_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.xml"
    bad.write_text("<LidcReadMessage><readingSession>", encoding="utf-8")
    with pytest.raises(LidcXmlError, match=r"broken\.xml: not well-formed XML"):
        parse_lidc_xml(bad)

    no_z = tmp_path / "no_z.xml"
    roi = "<roi><imageSOP_UID>1</imageSOP_UID><inclusion>TRUE</inclusion>" + _edge_maps(square(1, 4)) + "</roi>"
    no_z.write_text(
        _message([_session("7", f"<unblindedReadNodule><noduleID>N9</noduleID>{roi}</unblindedReadNodule>")])
    )
    with pytest.raises(LidcXmlError, match=r"no_z\.xml: reader 1 nodule 'N9' roi imageZposition is missing"):
        parse_lidc_xml(no_z)

    bad_x = tmp_path / "bad_x.xml"
    bad_x.write_text(
        _message(
            [
                _session(
                    "7",
                    "<unblindedReadNodule><noduleID>N1</noduleID>"
                    + _roi(1.0, "1", square(1, 4)).replace("<xCoord>2</xCoord>", "<xCoord>two</xCoord>", 1)
                    + "</unblindedReadNodule>",
                )
            ]
        )
    )
    with pytest.raises(LidcXmlError, match=r"bad_x\.xml: reader 1 nodule 'N1' roi \(z=1\) edgeMap xCoord is not a"):
        parse_lidc_xml(bad_x)

    cxr = tmp_path / "cxr.xml"
    cxr.write_text(f'<IdriReadMessage xmlns="{NS}"></IdriReadMessage>')
    with pytest.raises(NotCtReadingError, match="chest radiograph"):
        parse_lidc_xml(cxr)

    empty = tmp_path / "empty.xml"
    empty.write_text(_message([]))
    with pytest.raises(LidcXmlError, match="no readingSession"):
        parse_lidc_xml(empty)
    with pytest.raises(FileNotFoundError):
        parse_lidc_xml(tmp_path / "missing.xml")


def test_rating_off_scale_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    body = (
        "<unblindedReadNodule><noduleID>N1</noduleID>"
        + _characteristics({**RATINGS_1, "calcification": 7, "malignancy": 0})
        + _roi(1.0, "1", square(1, 5))
        + "</unblindedReadNodule>"
    )
    path.write_text(_message([_session("7", body)]))
    reading = parse_lidc_xml(path)
    ratings = reading.nodules[0].ratings
    assert ratings["calcification"] is None and ratings["malignancy"] is None and ratings["subtlety"] == 5
    assert len(reading.warnings) == 2
    assert all(str(path) in w for w in reading.warnings)
    assert "calcification = 7 is off its 1..6 scale" in reading.warnings[0]


# --------------------------------------------------------------------------------------------------------------
# Outlines on the grid
# --------------------------------------------------------------------------------------------------------------


def test_polygon_interior_shapes() -> None:
    x0, y0, inside = polygon_interior(np.asarray(square(10, 20)))
    assert (x0, y0, inside.shape) == (10, 10, (11, 11))
    assert inside[1:-1, 1:-1].all() and inside[1:-1, 1:-1].sum() == 81  # outline pixels: set by the caller
    # an L shape: [0, 10] x [0, 4] plus [0, 4] x [4, 10]; pixel centres strictly inside
    ell = np.array([(0, 0), (10, 0), (10, 4), (4, 4), (4, 10), (0, 10)])
    _, _, inside = polygon_interior(ell)
    expected = np.zeros((11, 11), dtype=bool)
    expected[1:10, 1:4] = True
    expected[1:4, 1:10] = True
    assert np.array_equal(inside & expected, expected)
    assert not inside[5:, 5:].any()  # the notch
    _, _, line = polygon_interior(np.array([(3, 3), (7, 3)]))
    assert not line.any()


def test_annotation_mask_fill_hole_and_z_fallback(two_reader_xml: Path) -> None:
    reading = parse_lidc_xml(two_reader_xml)
    mask = annotation_mask(reading.nodules[0], _lookup(), SHAPE, where="x.xml")
    assert mask.n_rois_placed == 4 and mask.n_rois_by_z == 1 and mask.warnings == []
    vox = mask.voxel_indices()
    per_slice = {int(k): int((vox[:, 2] == k).sum()) for k in np.unique(vox[:, 2])}
    assert per_slice == {3: 81, 4: 72, 5: 81}  # 9x9 inside; slice 4 loses the 3x3 hole (inside + its outline)
    assert vox[:, :2].min() == 11 and vox[:, :2].max() == 19  # the outline pixels (10 and 20) are outside
    holed = {tuple(int(c) for c in v) for v in vox if v[2] == 4}
    assert (15, 15, 4) not in holed and (14, 14, 4) not in holed and (13, 13, 4) in holed

    with_contour = annotation_mask(reading.nodules[0], _lookup(), SHAPE, include_contour=True)
    assert with_contour.n_voxels == 121 * 3 - 9  # the outline pixels too; the hole's outline still carved

    far = SliceLookup({}, np.array([0.0, 5.0]), 2.5)  # no UID known, no slice near z = -44
    missing = annotation_mask(reading.nodules[0], far, SHAPE, where="x.xml")
    assert missing.n_rois_placed == 0 and missing.n_voxels == 0
    assert len(missing.warnings) == 4
    assert all(w.startswith("x.xml: reader 1 nodule 'Nodule 001': ROI at z=") for w in missing.warnings)


def _masks(reading: Any) -> list[AnnotationMask]:
    return [annotation_mask(n, _lookup(), SHAPE) for n in reading.large_nodules]


def test_cluster_and_consensus(two_reader_xml: Path) -> None:
    masks = _masks(parse_lidc_xml(two_reader_xml))
    clusters = cluster_annotations(masks, AFFINE, tol_mm=2.0)
    assert sorted(clusters) == [[0, 1], [2]]  # reader 1's nodule with reader 2's B; reader 2's C alone
    pair = [masks[i] for i in (0, 1)]
    _, union, counts = consensus_mask(pair, 0.5)  # 2 readers at 50 %: a voxel of either
    assert union.sum() == 98 + 98 + 81 and counts.max() == 2
    _, both, _ = consensus_mask(pair, 1.0)
    assert both.sum() == 64 + 55
    with pytest.raises(ValueError, match="consensus level"):
        consensus_mask(pair, 0.0)
    # one reader never gives two annotations to one nodule, however close they are
    same_reader = [masks[0], annotation_mask(parse_lidc_xml(two_reader_xml).nodules[0], _lookup(), SHAPE)]
    assert sorted(cluster_annotations(same_reader, AFFINE, tol_mm=5.0)) == [[0], [1]]
    # nearest pairs link first: C (reader 2) cannot join the cluster that already has reader 2's B
    assert sorted(cluster_annotations(masks, AFFINE, tol_mm=100.0)) == [[0, 1], [2]]


def test_max_axial_diameter() -> None:
    mask = np.zeros((20, 20, 2), dtype=bool)
    mask[2:12, 5:8, 0] = True  # 10 x 3 voxels
    d = max_axial_diameter_mm(mask, (0.5, 1.0))
    assert d == pytest.approx(float(np.hypot(9 * 0.5, 2 * 1.0)))
    assert max_axial_diameter_mm(np.zeros((3, 3, 3), dtype=bool), (1.0, 1.0)) == 0.0


@pytest.mark.parametrize(
    ("values", "method", "integer", "expected"),
    [
        ([5, 5, 5, 4], "median", False, 5),
        ([5, 4], "median", False, 4.5),
        ([3, 6], "median", True, 6),  # upper median: a rating a reader gave
        ([1, 3, 3, 5], "median", True, 3),
        ([3, 4], "mean", True, 4),  # 3.5 rounds half up
        ([1, 2, 2], "mean", False, 1.6667),
        ([None, 2, None], "median", True, 2),
        ([None], "median", False, None),
    ],
)
def test_aggregate_rating(values: list[int | None], method: str, integer: bool, expected: float | None) -> None:
    assert aggregate_rating(values, method, integer) == expected  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------------
# Real data: LIDC-IDRI-0001 (four readers, one nodule of about 23-26 mm, malignancy 5, 5, 5, 4)
# --------------------------------------------------------------------------------------------------------------

SERIES_0001 = "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"


@pytest.fixture(scope="module")
def lidc_0001(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``prepare_lidc`` run once on the real LIDC-IDRI-0001, with its outputs and the XML read independently."""
    root = shared_data / "lidc_idri"
    if not (root / "LIDC-IDRI-0001").is_dir():
        pytest.skip(f"LIDC-IDRI-0001 not found in {root}")
    out = tmp_path_factory.mktemp("lidc")
    start = time.perf_counter()
    summary = prepare_lidc(root, out)
    seconds = time.perf_counter() - start
    (xml,) = sorted((root / "LIDC-IDRI-0001").rglob("*.xml"))
    return {"root": root, "out": out, "summary": summary, "seconds": seconds, "xml": xml}


def _xml_ratings(xml: Path) -> list[dict[str, int]]:
    """Each reader's ratings of its outlined (>= 3 mm) nodules, read with ElementTree alone."""
    ns = {"n": NS}
    found = []
    for session in ET.parse(xml).getroot().findall("n:readingSession", ns):
        for nodule in session.findall("n:unblindedReadNodule", ns):
            rois = nodule.findall("n:roi", ns)
            if all(len(r.findall("n:edgeMap", ns)) <= 1 for r in rois):
                continue
            char = nodule.find("n:characteristics", ns)
            found.append({name: int(char.find(f"n:{name}", ns).text) for name in XML_RATINGS})
    return found


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.real_data
def test_real_xml_parse(shared_data: Path) -> None:
    (xml,) = sorted((shared_data / "lidc_idri" / "LIDC-IDRI-0001").rglob("*.xml"))
    reading = parse_lidc_xml(xml)
    ns = {"n": NS}
    root = ET.parse(xml).getroot()
    assert reading.series_uid == SERIES_0001
    assert reading.n_readers == len(root.findall("n:readingSession", ns)) == 4
    assert len(reading.nodules) == len(root.findall(".//n:unblindedReadNodule", ns)) == 13
    assert len(reading.large_nodules) == 4 and len(reading.small_nodules) == 9
    assert len(reading.non_nodules) == len(root.findall(".//n:nonNodule", ns)) == 13
    assert [n.ratings["malignancy"] for n in reading.large_nodules] == [5, 5, 5, 4]
    assert [r["malignancy"] for r in _xml_ratings(xml)] == [5, 5, 5, 4]
    assert (
        sum(len(r.points) for n in reading.large_nodules for r in n.rois)
        == len([e for n in root.findall(".//n:unblindedReadNodule", ns) for e in n.findall(".//n:edgeMap", ns)]) - 9
    )
    assert reading.warnings == []


@pytest.mark.real_data
def test_real_ct_geometry(lidc_0001: dict[str, Any]) -> None:
    out = lidc_0001["out"]
    assert lidc_0001["summary"]["failed"] == {} and lidc_0001["seconds"] < 30
    img = nib.load(out / "images" / "LIDC-IDRI-0001.nii.gz")
    ct = np.asarray(img.dataobj)
    assert ct.shape == (512, 512, 133) and ct.dtype == np.int16
    assert np.allclose(img.header.get_zooms(), (0.703125, 0.703125, 2.5))
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert np.allclose(np.diag(img.affine)[:3], (-0.703125, -0.703125, 2.5))  # L, P, S axes: LPS DICOM in RAS
    assert ct.min() == -2048 and 1000 <= ct.max() <= 4000  # HU: -2048 pads outside the reconstruction circle
    fov = ct[ct > -2048]
    assert -1030 <= np.percentile(fov, 1) <= -990  # air is -1000 HU: the rescale intercept was applied
    assert 0.3 < float(np.mean((fov > -1100) & (fov < -500))) < 0.8  # air and lung
    centre = np.rint(np.linalg.solve(img.affine, [*lps_to_ras([56.2, 86.3, -115.9]), 1.0])[:3]).astype(int)
    assert -100 < ct[tuple(centre)] < 200  # soft tissue at the nodule's centre
    # slices by position: z rises by 2.5 mm per slice, as the DICOM ImagePositionPatient says
    assert img.affine[2, 3] == pytest.approx(-340.0) and img.affine[2, 3] + 132 * 2.5 == pytest.approx(-10.0)
    label = nib.load(out / "labels" / "LIDC-IDRI-0001_1.nii.gz")
    assert label.shape == img.shape and np.allclose(label.affine, img.affine)
    assert set(np.unique(np.asarray(label.dataobj)).tolist()) == {0, 1}


@pytest.mark.real_data
def test_real_nodule(lidc_0001: dict[str, Any], shared_data: Path) -> None:
    out, xml = lidc_0001["out"], lidc_0001["xml"]
    (item,) = load_datalist(out / "datalist.json", "training")
    (row,) = _csv(out / "nodules.csv")
    # place: near LPS (56.2, 86.3, -115.9) mm, the LUNA16 centre of this nodule
    expected_ras = lps_to_ras([56.2, 86.3, -115.9])
    assert np.linalg.norm(np.asarray(item[Keys.CENTER_WORLD]) - expected_ras) < 1.0
    lps = [float(row[f"center_lps_{a}"]) for a in "xyz"]
    assert np.allclose(lps_to_ras(lps), item[Keys.CENTER_WORLD], atol=1e-3)
    # the centre lies inside the mask, and the mask is this nodule's
    mask_img = nib.load(item[Keys.LABEL])
    mask = np.asarray(mask_img.dataobj) > 0
    voxel = np.rint(np.linalg.solve(mask_img.affine, [*item[Keys.CENTER_WORLD], 1.0])[:3]).astype(int)
    assert mask[tuple(voxel)] and mask.sum() == int(row["consensus_voxels"])
    # size: 20-30 mm (LUNA16's 23.35 mm is also a volume-equivalent diameter); in-plane extent about 31-33 mm
    assert 20 < item[Keys.DIAMETER] < 30
    luna = [r for r in _csv(shared_data / "luna16" / "annotations.csv") if r["seriesuid"] == SERIES_0001]
    assert abs(item[Keys.DIAMETER] - float(luna[0]["diameter_mm"])) < 1.5
    assert 28 < float(row["max_axial_diameter_mm"]) < 35 and 28 < float(row["reader_max_diameter_mm"]) < 35
    # readers and ratings, exactly as in the XML
    xml_ratings = _xml_ratings(xml)
    assert item["n_readers"] == int(row["n_readers"]) == len(xml_ratings) == 4
    assert row["malignancy_ratings"] == "5;5;5;4" == ";".join(str(r["malignancy"]) for r in xml_ratings)
    assert item[Keys.MALIGNANCY_SCORE] == statistics.median(r["malignancy"] for r in xml_ratings) == 5
    assert item[Keys.MALIGNANCY] == 1
    for name, xml_name in zip(ATTRIBUTE_NAMES, XML_RATINGS, strict=False):
        values = [r[xml_name] for r in xml_ratings]
        assert row[f"{name}_ratings"] == ";".join(map(str, values))
        assert item[name] == statistics.median_high(values), name
    annotations = _csv(out / "annotations.csv")
    assert [int(a["malignancy"]) for a in annotations] == [5, 5, 5, 4]
    assert {a["nodule_id"] for a in annotations} == {"1"}


@pytest.mark.real_data
def test_real_marks_match_luna16_excluded(lidc_0001: dict[str, Any], shared_data: Path) -> None:
    """Every small-nodule and non-nodule mark lies on a LUNA16 'excluded' finding (LPS mm): world geometry holds."""
    out = lidc_0001["out"]
    excluded = [r for r in _csv(shared_data / "luna16" / "annotations_excluded.csv") if r["seriesuid"] == SERIES_0001]
    table = np.asarray([[float(r[c]) for c in ("coordX", "coordY", "coordZ")] for r in excluded])
    small, non = _csv(out / "nodules_small.csv"), _csv(out / "non_nodules.csv")
    assert (len(small), len(non)) == (9, 13)
    for row in small + non:
        lps = np.asarray([float(row[f"center_lps_{a}"]) for a in "xyz"])
        assert np.linalg.norm(table - lps, axis=1).min() < 0.01, row["mark_id"]
        assert row["slice_matched_by"] == "sop"
    assert lidc_0001["summary"]["small_nodule_marks"] == 9 and lidc_0001["summary"]["non_nodule_marks"] == 13


@pytest.mark.real_data
def test_real_hu_match_the_voi_crop(lidc_0001: dict[str, Any], shared_data: Path) -> None:
    """The CT equals, voxel for voxel in world space, the independently made LIDC VOI crop of this nodule."""
    voi_image = shared_data / "lidc_vois" / "image" / "LIDC-IDRI-0001_R_1.nii.gz"
    if not voi_image.is_file():
        pytest.skip("no LIDC VOI of LIDC-IDRI-0001")
    voi = nib.load(voi_image)
    ct = nib.load(lidc_0001["out"] / "images" / "LIDC-IDRI-0001.nii.gz")
    idx = np.argwhere(np.ones(voi.shape, dtype=bool))
    world = np.c_[idx, np.ones(len(idx))] @ voi.affine.T
    ours = np.rint(world @ np.linalg.inv(ct.affine).T)[:, :3].astype(int)
    ct_values = np.asarray(ct.dataobj)[tuple(ours.T)].reshape(voi.shape)
    assert np.array_equal(ct_values, np.asarray(voi.dataobj))
    voi_mask = np.asarray(nib.load(shared_data / "lidc_vois" / "nodule_mask" / voi_image.name).dataobj) > 0
    label = np.asarray(nib.load(lidc_0001["out"] / "labels" / "LIDC-IDRI-0001_1.nii.gz").dataobj) > 0
    ours_mask = label[tuple(ours.T)].reshape(voi.shape)
    assert ours_mask.sum() == label.sum()  # the crop holds the whole consensus mask
    dice = 2 * (ours_mask & voi_mask).sum() / (ours_mask.sum() + voi_mask.sum())
    assert dice > 0.85  # the VOI masks were made with another (unpublished) merge of the readers


# --------------------------------------------------------------------------------------------------------------
# pylidc (optional): its annotation database against our reading of the XML
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def pylidc(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``pylidc`` 0.2.3, imported with the shims it needs on NumPy 2 / recent setuptools (skipped if absent).

    Only its annotation database is used (no DICOM), so ``pydicom`` (which makes MONAI's ``LoadImage`` register its
    pydicom readers) need not be installed.
    """
    if importlib.util.find_spec("pylidc") is None:
        pytest.skip("pylidc is not installed (optional: pip install pylidc)")
    monkeypatch.setattr(np, "int", int, raising=False)  # pylidc uses the removed alias np.int
    if importlib.util.find_spec("pkg_resources") is None:  # pylidc locates its SQLite file with pkg_resources
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: os.path.join(  # type: ignore[attr-defined]
            os.path.dirname(importlib.util.find_spec(package).origin),
            name,  # type: ignore[union-attr,arg-type]
        )
        monkeypatch.setitem(sys.modules, "pkg_resources", shim)
    if importlib.util.find_spec("pydicom") is None:  # only its DICOM loading needs pydicom; the database does not
        monkeypatch.setitem(sys.modules, "pydicom", types.ModuleType("pydicom"))
    try:
        import pylidc as pl
    except Exception as exc:  # an incompatible pylidc or dependency: nothing to compare with
        pytest.skip(f"pylidc cannot be imported: {type(exc).__name__}: {exc}")
    return pl


@pytest.mark.real_data
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_real_matches_pylidc(lidc_0001: dict[str, Any], pylidc: Any) -> None:
    from pylidc.utils import consensus

    scan = pylidc.query(pylidc.Scan).filter(pylidc.Scan.patient_id == "LIDC-IDRI-0001").first()
    assert scan.series_instance_uid == SERIES_0001
    out = lidc_0001["out"]
    annotations = _csv(out / "annotations.csv")
    nodules = _csv(out / "nodules.csv")
    assert len(scan.annotations) == len(annotations) == 4
    clusters = scan.cluster_annotations(verbose=False)
    assert sorted(len(c) for c in clusters) == sorted(int(r["n_readers"]) for r in nodules) == [4]

    ours = {a["reader_nodule_id"]: a for a in annotations}
    label_img = nib.load(out / "labels" / "LIDC-IDRI-0001_1.nii.gz")
    z_ours = label_img.affine[2, 3] + label_img.affine[2, 2] * np.arange(label_img.shape[2])
    k_of = {round(float(z), 3): k for k, z in enumerate(z_ours)}
    pl_names = ("subtlety", "internalStructure", "calcification", "sphericity", "margin", "lobulation")
    pl_names += ("spiculation", "texture", "malignancy")
    for ann in scan.annotations:
        row = ours[ann._nodule_id]
        for ours_name, pl_name in zip((*ATTRIBUTE_NAMES, "malignancy"), pl_names, strict=True):
            assert int(row[ours_name]) == int(getattr(ann, pl_name)), (ann._nodule_id, ours_name)
        # centroid of the outline points: pylidc (row, col, k) = ours (j, i, k), k through the slice z
        row_c, col_c, _ = ann.centroid
        assert float(row["outline_center_j"]) == pytest.approx(row_c, abs=1e-3)
        assert float(row["outline_center_i"]) == pytest.approx(col_c, abs=1e-3)
        zs = [c.image_z_position for c in ann.contours for _ in range(len(c.to_matrix(include_k=False)))]
        assert float(row["outline_center_k"]) == pytest.approx(np.mean([k_of[round(z, 3)] for z in zs]), abs=1e-3)
        assert float(row["max_diameter_mm"]) == pytest.approx(ann.diameter, abs=1e-3)
        assert int(row["voxels"]) == int(ann.boolean_mask().sum())

    # the consensus mask at 50 %, voxel for voxel
    cmask, cbbox, _ = consensus(clusters[0], clevel=0.5)
    idx = np.argwhere(cmask)
    rows, cols = idx[:, 0] + cbbox[0].start, idx[:, 1] + cbbox[1].start
    ks = [k_of[round(float(scan.slice_zvals[k]), 3)] for k in idx[:, 2] + cbbox[2].start]
    theirs = np.zeros(label_img.shape, dtype=bool)
    theirs[cols, rows, ks] = True
    label = np.asarray(label_img.dataobj) > 0
    assert np.array_equal(theirs, label)
    assert json.loads((out / "records" / "LIDC-IDRI-0001.json").read_text())["nodules"][0]["consensus_voxels"] == len(
        idx
    )
