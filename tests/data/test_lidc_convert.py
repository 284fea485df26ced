"""``prepare-lidc`` end to end on a tiny synthetic LIDC-IDRI patient: a DICOM series written with SimpleITK and a
hand-written reading XML with two readers, an exclusion outline, a small nodule and a non-nodule."""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from lung_nodule_mtl.cli.lidc import register
from lung_nodule_mtl.constants import Keys
from lung_nodule_mtl.data.datalist import load_datalist
from lung_nodule_mtl.data.lidc_idri import prepare_lidc
from lung_nodule_mtl.data.lidc_idri.convert import LidcXmlError, find_lidc_scans
from lung_nodule_mtl.data.lidc_vois import LIDC_CITATION

NS = "http://www.nih.gov"
SERIES = "1.2.3.4"
SHAPE = (48, 48, 10)
SPACING = (0.7, 0.7, 2.0)
ORIGIN_LPS = (-16.8, -20.0, -50.0)
AFFINE_RAS = np.array([[-0.7, 0, 0, 16.8], [0, -0.7, 0, 20.0], [0, 0, 2.0, -50.0], [0, 0, 0, 1.0]])
RATINGS_1 = {"subtlety": 5, "internalStructure": 1, "calcification": 6, "sphericity": 3, "margin": 4}
RATINGS_1 |= {"lobulation": 2, "spiculation": 1, "texture": 5, "malignancy": 5}
RATINGS_2 = {"subtlety": 4, "internalStructure": 1, "calcification": 3, "sphericity": 5, "margin": 3}
RATINGS_2 |= {"lobulation": 3, "spiculation": 2, "texture": 4, "malignancy": 4}


def _ct() -> np.ndarray:
    """``(i, j, k)`` int16 HU: air, a lung block, nodule tissue, and a marker ``100 + 10 k`` at voxel (0, 0, k)."""
    ct = np.full(SHAPE, -1000, dtype=np.int16)
    ct[4:44, 4:44, :] = -850
    ct[11:21, 11:21, 3:6] = 40
    ct[31:36, 31:36, 6:8] = 30
    ct[0, 0, :] = 100 + 10 * np.arange(SHAPE[2])
    return ct


def _write_dicom_series(folder: Path, hu: np.ndarray, names: Sequence[str], series: str = SERIES) -> None:
    """One DICOM file per slice ``k`` (GDCM stores ``HU + 1024`` and RescaleIntercept -1024), SOP UID ``SERIES.k+1``."""
    folder.mkdir(parents=True, exist_ok=True)
    volume = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(hu)))
    volume.SetSpacing(SPACING)
    volume.SetOrigin(ORIGIN_LPS)
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.KeepOriginalImageUIDOn()
    for k in range(hu.shape[2]):
        image = volume[:, :, k]
        position = "\\".join(f"{v:.10g}" for v in volume.TransformIndexToPhysicalPoint((0, 0, k)))
        tags = {
            "0008|0060": "CT",
            "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL",
            "0008|0018": f"{series}.{k + 1}",
            "0020|000d": "1.2.3.100",
            "0020|000e": series,
            "0020|0052": "1.2.3.200",
            "0020|0013": str(k + 1),
            "0020|0032": position,
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": f"{SPACING[2]:g}",
            "0028|1052": "-1024",
            "0028|1053": "1",
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / names[k]))
        writer.Execute(image)


def square(a: int, b: int) -> list[tuple[int, int]]:
    """The 8-connected outline of the square ``[a, b]^2`` (pixels ``(x, y)``)."""
    return (
        [(x, a) for x in range(a, b + 1)]
        + [(b, y) for y in range(a + 1, b + 1)]
        + [(x, b) for x in range(b - 1, a - 1, -1)]
        + [(a, y) for y in range(b - 1, a, -1)]
    )


def _roi(z: float, sop: str, points: list[tuple[int, int]], inclusion: str = "TRUE") -> str:
    edges = "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>" for x, y in points)
    return (
        f"<roi><imageZposition>{z:.6f} </imageZposition><imageSOP_UID>{sop}</imageSOP_UID>"
        f"<inclusion>{inclusion}</inclusion>{edges}</roi>"
    )


def _nodule(nodule_id: str, ratings: dict[str, int] | None, rois: str) -> str:
    chars = "".join(f"<{k}>{v}</{k}>" for k, v in (ratings or {}).items())
    chars = f"<characteristics>{chars}</characteristics>" if chars else ""
    return f"<unblindedReadNodule><noduleID>{nodule_id}</noduleID>{chars}{rois}</unblindedReadNodule>"


XML = (
    f'<?xml version="1.0" encoding="UTF-8"?>\n<LidcReadMessage uid="1" xmlns="{NS}"><ResponseHeader>'
    f"<SeriesInstanceUid>{SERIES}</SeriesInstanceUid><StudyInstanceUID>1.2.3.100</StudyInstanceUID></ResponseHeader>"
    # reader 1: a nodule on slices 3-5 with a hole on slice 4 and an unknown SOP UID on slice 5 (matched by z),
    # a nodule < 3 mm (one point) and a non-nodule
    "<readingSession><servicingRadiologistID>111</servicingRadiologistID>"
    + _nodule(
        "Nodule 001",
        RATINGS_1,
        _roi(-44.0, f"{SERIES}.4", square(10, 20))
        + _roi(-42.0, f"{SERIES}.5", square(10, 20))
        + _roi(-42.0, f"{SERIES}.5", square(14, 16), inclusion="FALSE")
        + _roi(-40.0, "9.9.9", square(10, 20)),
    )
    + _nodule("Nodule 002", None, _roi(-36.0, f"{SERIES}.8", [(30, 30)]))
    + "<nonNodule><nonNoduleID>_Non-nodule 001</nonNoduleID><imageZposition>-46.0</imageZposition>"
    f"<imageSOP_UID>{SERIES}.3</imageSOP_UID><locus><xCoord>40</xCoord><yCoord>8</yCoord></locus></nonNodule>"
    "</readingSession>"
    # reader 2: the same nodule (shifted by a pixel, slices 3-4) and a second nodule nobody else marked
    "<readingSession><servicingRadiologistID>222</servicingRadiologistID>"
    + _nodule("B", RATINGS_2, _roi(-44.0, f"{SERIES}.4", square(11, 21)) + _roi(-42.0, f"{SERIES}.5", square(11, 21)))
    + _nodule(
        "C",
        {**RATINGS_2, "malignancy": 2},
        _roi(-38.0, f"{SERIES}.7", square(30, 36)) + _roi(-36.0, f"{SERIES}.8", square(30, 36)),
    )
    + "</readingSession></LidcReadMessage>"
)


def _patient(root: Path, name: str = "LIDC-IDRI-9001", xml: str | None = XML, series_uid: str = SERIES) -> Path:
    """A TCIA-style patient folder; slice files are named in reverse order of their positions."""
    series = root / name / "1.2.3.100" / series_uid
    _write_dicom_series(series, _ct(), [f"{SHAPE[2] - k:06d}.dcm" for k in range(SHAPE[2])], series_uid)
    if xml is not None:
        (series / "069.xml").write_text(xml.replace(SERIES, series_uid), encoding="utf-8")
    return series


@pytest.fixture
def lidc_root(tmp_path: Path) -> Path:
    root = tmp_path / "LIDC-IDRI"
    _patient(root)
    return root


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_prepare_synthetic_patient(lidc_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = prepare_lidc(lidc_root, out)
    assert summary["failed"] == {} and summary["scans"] == 1 and summary["reader_nodules"] == 3
    assert summary["nodules"] == 2 and summary["nodules_by_readers"] == {1: 1, 2: 1}
    assert (summary["items"], summary["malignant"], summary["benign"]) == (2, 1, 1)
    assert (summary["small_nodule_marks"], summary["non_nodule_marks"]) == (1, 1)

    # the CT: HU (intercept applied), slices by position though the files are named the other way round
    img = nib.load(out / "images" / "LIDC-IDRI-9001.nii.gz")
    ct = np.asarray(img.dataobj)
    assert ct.dtype == np.int16 and ct.shape == SHAPE and np.allclose(img.affine, AFFINE_RAS)
    assert ct[0, 0, :].tolist() == [100 + 10 * k for k in range(SHAPE[2])]
    assert np.array_equal(ct, _ct())

    items = load_datalist(out / "datalist.json", "training")
    first, second = items
    assert [i[Keys.CASE_ID] for i in items] == ["LIDC-IDRI-9001_1", "LIDC-IDRI-9001_2"]
    assert first[Keys.IMAGE] == second[Keys.IMAGE] == str((out / "images" / "LIDC-IDRI-9001.nii.gz").resolve())

    # nodule 1: readers 1 and 2, consensus 50 % of 2 readers = their union: 98 + 98 + 81 voxels
    label = nib.load(first[Keys.LABEL])
    mask = np.asarray(label.dataobj)
    assert label.shape == SHAPE and np.allclose(label.affine, AFFINE_RAS) and mask.dtype == np.uint8
    assert mask.sum() == 277 and [int(mask[:, :, k].sum()) for k in (3, 4, 5)] == [98, 98, 81]
    assert mask[15, 15, 4] == 1  # reader 1's hole is inside reader 2's outline: in the union
    i_mean = (2 * 98 * 15.5 + 81 * 15.0) / 277
    k_mean = (98 * 3 + 98 * 4 + 81 * 5) / 277
    expected = (AFFINE_RAS @ [i_mean, i_mean, k_mean, 1.0])[:3]
    assert np.allclose(first[Keys.CENTER_WORLD], expected, atol=1e-3)
    assert first[Keys.DIAMETER] == pytest.approx((6 * 277 * 0.98 / math.pi) ** (1 / 3), abs=1e-3)
    assert (first[Keys.MALIGNANCY_SCORE], first[Keys.MALIGNANCY], first["n_readers"]) == (4.5, 1, 2)
    upper_medians = {"subtlety": 5, "internal_structure": 1, "calcification": 6, "sphericity": 5, "margin": 4}
    upper_medians |= {"lobulation": 3, "spiculation": 2, "texture": 5}
    assert {k: first[k] for k in upper_medians} == upper_medians

    # nodule 2: one reader, 5 x 5 inside its outline on two slices; malignancy 2: benign
    assert np.asarray(nib.load(second[Keys.LABEL]).dataobj).sum() == 50
    assert (second[Keys.MALIGNANCY_SCORE], second[Keys.MALIGNANCY], second["n_readers"]) == (2, 0, 1)

    rows = _csv(out / "nodules.csv")
    assert [r["malignancy_ratings"] for r in rows] == ["5;4", "2"]
    assert [r["readers"] for r in rows] == ["1;2", "2"] and rows[0]["n_readers_scan"] == "2"
    lps = [float(rows[0][f"center_lps_{a}"]) for a in "xyz"]
    assert np.allclose(lps, [-expected[0], -expected[1], expected[2]], atol=1e-3)
    annotations = _csv(out / "annotations.csv")
    assert [(a["nodule_id"], a["reader"], a["reader_nodule_id"], a["voxels"]) for a in annotations] == [
        ("1", "1", "Nodule 001", "234"),  # 81 + (81 - 9) + 81
        ("1", "2", "B", "162"),
        ("2", "2", "C", "50"),
    ]
    assert annotations[0]["n_rois_by_z"] == "1" and annotations[0]["n_exclusion_rois"] == "1"

    (small,) = _csv(out / "nodules_small.csv")
    assert (small["voxel_i"], small["voxel_j"], small["voxel_k"], small["slice_matched_by"]) == ("30", "30", "7", "sop")
    assert [float(small[f"center_lps_{a}"]) for a in "xyz"] == pytest.approx([4.2, 1.0, -36.0])
    (non,) = _csv(out / "non_nodules.csv")
    assert [float(non[f"center_ras_{a}"]) for a in "xyz"] == pytest.approx([-11.2, 14.4, -46.0])
    report = json.loads((out / "prepare_lidc.json").read_text())
    assert report["warnings"] == [] and report["options"]["consensus"] == 0.5


def test_label_convention_switches(lidc_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = prepare_lidc(lidc_root, out, consensus=1.0, rating="mean", min_readers=2)
    assert summary["items"] == 1 and summary["nodules"] == 2
    (item,) = load_datalist(out / "datalist.json", "training")
    assert np.asarray(nib.load(item[Keys.LABEL]).dataobj).sum() == 64 + 55  # intersection (hole carved)
    assert item[Keys.MALIGNANCY_SCORE] == 4.5
    means = {"subtlety": 5, "internal_structure": 1, "calcification": 5, "sphericity": 4, "margin": 4}
    means |= {"lobulation": 3, "spiculation": 2, "texture": 5}  # means rounded half up
    assert {k: item[k] for k in means} == means
    rows = _csv(out / "nodules.csv")
    assert [r["in_datalist"] for r in rows] == ["True", "False"]
    assert "fewer than min_readers=2" in rows[1]["excluded_reason"]
    assert rows[1]["label"] == "labels/LIDC-IDRI-9001_2.nii.gz"  # the mask is still written
    metadata = json.loads((out / "datalist.json").read_text())["metadata"]
    assert metadata["label_convention"]["rating"] == "mean" and metadata["citation"] == LIDC_CITATION


def test_rerun_reuses_and_overwrite_redoes(lidc_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_lidc(lidc_root, out)
    stamp = (out / "images" / "LIDC-IDRI-9001.nii.gz").stat().st_mtime_ns
    again = prepare_lidc(lidc_root, out)
    assert again["scans_reused"] == 1 and again["items"] == 2
    assert (out / "images" / "LIDC-IDRI-9001.nii.gz").stat().st_mtime_ns == stamp
    other = prepare_lidc(lidc_root, out, consensus=0.75)  # other options: converted again
    assert other["scans_reused"] == 0
    forced = prepare_lidc(lidc_root, out, consensus=0.75, overwrite=True)
    assert forced["scans_reused"] == 0 and forced["items"] == 2


def test_bad_patients_are_reported_and_others_go_on(lidc_root: Path, tmp_path: Path) -> None:
    _patient(lidc_root, "LIDC-IDRI-9002", xml=None)  # no reading file
    _patient(lidc_root, "LIDC-IDRI-9003", xml="<LidcReadMessage><readingSession>")  # broken XML
    dup = _patient(lidc_root, "LIDC-IDRI-9004")  # a slice twice
    shutil.copy(dup / "000003.dcm", dup / "copy_of_000003.dcm")
    summary = prepare_lidc(lidc_root, tmp_path / "out", n_folds=2)
    failed = summary["failed"]
    assert sorted(failed) == ["LIDC-IDRI-9002", "LIDC-IDRI-9003", "LIDC-IDRI-9004"]
    assert "no LIDC reading file" in failed["LIDC-IDRI-9002"]
    assert "069.xml: not well-formed XML" in failed["LIDC-IDRI-9003"]
    assert str(dup) in failed["LIDC-IDRI-9004"] and "same position" in failed["LIDC-IDRI-9004"]
    assert summary["items"] == 2 and summary["patients"] == 1


def test_patient_with_several_ct_series(lidc_root: Path, tmp_path: Path) -> None:
    _patient(lidc_root, series_uid="1.2.3.5")  # a second CT series of the same patient, with its reading
    orphan = lidc_root / "LIDC-IDRI-9001" / "notes" / "158.xml"  # a reading whose series is not there
    orphan.parent.mkdir()
    orphan.write_text(XML.replace(SERIES, "1.2.3.6"), encoding="utf-8")
    summary = prepare_lidc(lidc_root, tmp_path / "out")
    assert summary["scans"] == 2 and summary["items"] == 4
    assert [row["scan_id"] for row in _csv(tmp_path / "out" / "nodules.csv")] == ["LIDC-IDRI-9001"] * 2 + [
        "LIDC-IDRI-9001_s2"
    ] * 2
    assert (tmp_path / "out" / "labels" / "LIDC-IDRI-9001_s2_1.nii.gz").is_file()
    (reason,) = summary["failed"].values()
    assert reason == f"{orphan}: the DICOM series 1.2.3.6 it annotates is not in {lidc_root / 'LIDC-IDRI-9001'}"


def test_missing_slice_is_a_warning_naming_the_files(lidc_root: Path, tmp_path: Path) -> None:
    series = next(lidc_root.rglob("069.xml")).parent
    (series / f"{SHAPE[2] - 5:06d}.dcm").unlink()  # slice k = 5 (z = -40 mm), where reader 1's last outline is
    summary = prepare_lidc(lidc_root, tmp_path / "out")
    assert summary["failed"] == {} and summary["n_warnings"] >= 3
    warnings = json.loads((tmp_path / "out" / "prepare_lidc.json").read_text())["warnings"]
    text = "\n".join(warnings)
    assert "uneven slice spacing" in text
    # ITK spreads the 9 slices evenly over the 18 mm: the first file off that grid is named
    assert re.search(
        rf"{re.escape(str(series))}/\d+\.dcm: slice \d lies [+-]\d\.\d\d slices off the regular grid", text
    )
    assert f"{series / '069.xml'}: reader 1 nodule 'Nodule 001': ROI at z=-40 (SOP 9.9.9) matches no slice" in text


def test_cli(lidc_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _patient(lidc_root, "LIDC-IDRI-9002", xml=None)
    parser = argparse.ArgumentParser(prog="lung-nodule-mtl")
    register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    args = parser.parse_args(
        [
            *("prepare-lidc", "--lidc-root", str(lidc_root), "--out", str(out), "--consensus", "0.5"),
            *("--rating", "median", "--min-readers", "1", "--folds", "5", "--seed", "0", "--overwrite"),
        ]
    )
    assert args.func(args) == 1  # one bad patient: reported, the other converted, non-zero exit
    captured = capsys.readouterr()
    assert "LIDC-IDRI-9001: 2 nodule(s), 2 in the datalist" in captured.out
    assert "LIDC-IDRI converted into" in captured.out and LIDC_CITATION in captured.out
    error_lines = [line for line in captured.err.splitlines() if "LIDC-IDRI-9002" in line]
    assert len(error_lines) == 1 and "no LIDC reading file" in error_lines[0]
    assert (out / "datalist.json").is_file()

    args = parser.parse_args(["prepare-lidc", "--lidc-root", str(lidc_root), "--out", str(out)])
    args.patients = ["LIDC-IDRI-9001"]
    assert args.func(args) == 0
    with pytest.raises(ValueError, match="consensus"):
        prepare_lidc(lidc_root, out, consensus=1.5)
    with pytest.raises(FileNotFoundError):
        prepare_lidc(tmp_path / "nowhere", out)


def test_a_root_given_through_dot_dot_is_read_and_hidden_folders_under_it_are_not(
    lidc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "../shared/data/lidc_idri", as the README writes it: the ".." above the patient folder hides nothing
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    relative = Path("..") / lidc_root.name
    summary = prepare_lidc(relative, tmp_path / "out")
    assert summary["failed"] == {} and summary["scans"] == 1 and summary["nodules"] == 2
    # a reading file inside a hidden folder under the patient (e.g. an editor's backup) is not read
    series = _patient(tmp_path / "hidden_root", xml=None)
    (series / ".backup").mkdir()
    (series / ".backup" / "069.xml").write_text(XML, encoding="utf-8")
    with pytest.raises(LidcXmlError, match="no LIDC reading file"):
        find_lidc_scans(series.parents[1])
