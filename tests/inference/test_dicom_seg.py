"""DICOM SEG and SR out for DICOM in: read back with pydicom / highdicom (segments, frames on their source slices,
voxels; measurements, characteristics and segment references), and checked by ``dciodvfy`` where installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES
from lung_nodule_mtl.io import find_cases, load_ct
from lung_nodule_mtl.io.ct import InputError
from lung_nodule_mtl.reports.dicom import (
    ALGORITHM_NAME,
    LIDC_ATTRIBUTE_CODES,
    LIDC_SCHEME,
    attribute_value_code,
    dicom_headers,
    write_dicom_outputs,
    write_dicom_seg,
)


def test_seg_segments_frames_and_voxels_match_the_label_map(tmp_path: Path, ct_dicom: Path) -> None:
    volume = load_ct(find_cases(ct_dicom)[0])
    labels = np.zeros(volume.shape, np.uint8)
    labels[10:14, 12:15, 3:6] = 1
    labels[20:22, 5:8, 9] = 3  # label 3: segment 2 (segments are numbered in the order given)
    labels[1, 1, 1] = 2  # not listed: not written
    path = write_dicom_seg(volume.source_files, labels, [1, 3], tmp_path / "case_seg.dcm", model_version="0.5.0")
    assert path is not None and path.is_file()
    seg = pydicom.dcmread(path)
    sources = {pydicom.dcmread(f).SOPInstanceUID: k for k, f in enumerate(volume.source_files)}
    first = pydicom.dcmread(volume.source_files[0])
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == first.StudyInstanceUID
    assert seg.PatientID == first.PatientID and seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["nodule 1", "nodule 3"]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "27925004"  # SCT Nodule
    assert seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == ALGORITHM_NAME
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    seen = []
    for f, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        segment = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        k = sources[uid]
        expected = labels[:, :, k].T == {1: 1, 2: 3}[segment]
        np.testing.assert_array_equal(pixels[f].astype(bool), expected)
        position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(
            position, [float(v) for v in pydicom.dcmread(volume.source_files[k]).ImagePositionPatient]
        )
        seen.append((segment, k))
    assert sorted(seen) == [(1, 3), (1, 4), (1, 5), (2, 9)]  # frames only where a segment has voxels


def test_nothing_to_write_and_a_mismatched_map(tmp_path: Path, ct_dicom: Path) -> None:
    volume = load_ct(find_cases(ct_dicom)[0])
    assert write_dicom_seg(volume.source_files, np.zeros(volume.shape, np.uint8), [1], tmp_path / "x.dcm") is None
    assert not (tmp_path / "x.dcm").exists()
    with pytest.raises(ValueError, match="does not match the series"):
        write_dicom_seg(volume.source_files, np.ones((5, 5, 5), np.uint8), [1], tmp_path / "y.dcm")


# ---------------------------------------------------------------------------------------------- the TID 1500 SR
NODULES = [
    {
        "label": 1,
        "diameter_mm": 12.25,
        "volume_mm3": 962.5,
        "malignancy_probability": 0.71,
        "attributes": {
            "subtlety": 5,
            "internal_structure": 1,
            "calcification": 6,
            "sphericity": 4,
            "margin": 2,
            "lobulation": 1,
            "spiculation": 5,
            "texture": 3,
        },
    },
    {"label": 3, "diameter_mm": 4.5, "volume_mm3": 47.7, "malignancy_probability": None, "attributes": {}},
]


def _write_both(tmp_path: Path, ct_dicom: Path) -> tuple[list[str], np.ndarray, Path, Path]:
    volume = load_ct(find_cases(ct_dicom)[0])
    labels = np.zeros(volume.shape, np.uint8)
    labels[10:14, 12:15, 3:6] = 1
    labels[20:22, 5:8, 9] = 3
    seg_path, sr_path = tmp_path / "case_seg.dcm", tmp_path / "case_sr.dcm"
    written = write_dicom_outputs(volume.source_files, labels, NODULES, seg_path, sr_path, "0.5.0", {1: "left"})
    assert written == (seg_path, sr_path)
    return list(volume.source_files), labels, seg_path, sr_path


def test_sr_measurements_characteristics_and_segment_references(tmp_path: Path, ct_dicom: Path) -> None:
    import highdicom as hd

    sources, _, seg_path, sr_path = _write_both(tmp_path, ct_dicom)
    seg, sr = pydicom.dcmread(seg_path), hd.sr.srread(sr_path)
    first = pydicom.dcmread(sources[0])
    assert sr.Modality == "SR" and sr.StudyInstanceUID == first.StudyInstanceUID and sr.PatientID == first.PatientID
    assert sr.SeriesInstanceUID not in (first.SeriesInstanceUID, seg.SeriesInstanceUID)
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert seg.SOPInstanceUID in evidence
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == LIDC_SCHEME
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["nodule 1", "nodule 3"]
    for group, nodule, segment in zip(groups, NODULES, (1, 2), strict=True):
        ref = group.referenced_segment
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID and ref.referenced_segment_numbers == [segment]
        values = {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}
        expected = {"Diameter": (nodule["diameter_mm"], "mm"), "Volume": (nodule["volume_mm3"], "mm3")}
        if nodule["malignancy_probability"] is not None:
            expected["Probability of cancer"] = (nodule["malignancy_probability"], "1")
        for name, (value, unit) in expected.items():
            assert float(values[name][0]) == pytest.approx(value) and values[name][1] == unit
        assert set(values) == set(expected)
        evaluations = {e.name.meaning: e.value for e in group.get_qualitative_evaluations()}
        assert len(evaluations) == len(nodule["attributes"])
        for attribute, rating in nodule["attributes"].items():
            concept = LIDC_ATTRIBUTE_CODES[attribute]
            assert evaluations[concept[2]].value == attribute_value_code(attribute, rating)[0]
        assert group.finding_type.value == "27925004"  # SCT Nodule
    sites = groups[0].finding_sites
    assert sites[0].value.value == "39607008" and sites[0].laterality.meaning == "Left"
    assert groups[1].finding_sites[0].laterality is None
    assert groups[0].get_qualitative_evaluations()[6].value.meaning == "5 out of 5 (Marked spiculation)"
    items = groups[0][0].ContentSequence
    texts = {item.ConceptNameCodeSequence[0].CodeValue: item.TextValue for item in items if "TextValue" in item}
    assert texts["111001"] == ALGORITHM_NAME and texts["111003"] == "0.5.0"  # DCM Algorithm Name / Version


def test_attribute_codes_cover_every_rating() -> None:
    for attribute, n in ATTRIBUTE_CLASSES.items():
        codes = [attribute_value_code(attribute, r) for r in range(1, n + 1)]
        assert len({c[:2] for c in codes}) == n  # one code per rating, none shared within an attribute
    assert attribute_value_code("texture", 5)[2] == "solid pulmonary nodule"
    assert attribute_value_code("margin", 3) == ("003", LIDC_SCHEME, "3 out of 5")
    with pytest.raises(ValueError, match=r"outside 1\.\.4"):
        attribute_value_code("internal_structure", 5)
    with pytest.raises(ValueError, match="unknown characteristic"):
        attribute_value_code("malignancy", 3)


def test_nothing_written_without_a_voxel(tmp_path: Path, ct_dicom: Path) -> None:
    volume = load_ct(find_cases(ct_dicom)[0])
    empty = np.zeros(volume.shape, np.uint8)
    assert write_dicom_outputs(volume.source_files, empty, NODULES, tmp_path / "s.dcm", tmp_path / "r.dcm") is None
    assert list(tmp_path.iterdir()) == [tmp_path / "series"]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) is not installed")
def test_seg_and_sr_pass_dciodvfy(tmp_path: Path, ct_dicom: Path) -> None:
    _, _, seg_path, sr_path = _write_both(tmp_path, ct_dicom)
    for path, iod in ((seg_path, "Segmentation"), (sr_path, "Comprehensive3DSR")):
        run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
        lines = (run.stdout + run.stderr).splitlines()
        assert iod in lines, lines  # dciodvfy names the IOD it checked against
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"


def test_headers_missing_what_the_seg_needs_name_the_file_and_attribute(tmp_path: Path, ct_dicom: Path) -> None:
    volume = load_ct(find_cases(ct_dicom)[0])
    files = [Path(f) for f in volume.source_files]
    ds = pydicom.dcmread(files[2])
    del ds.FrameOfReferenceUID
    del ds.PatientName  # type 2: left empty in the outputs, not an error
    ds.save_as(files[2])
    labels = np.zeros(volume.shape, np.uint8)
    labels[10:14, 12:15, 3:6] = 1
    with pytest.raises(InputError, match=rf"{files[2].name}: DICOM attribute\(s\) FrameOfReferenceUID missing") as e:
        write_dicom_outputs(files, labels, NODULES[:1], tmp_path / "s.dcm", tmp_path / "r.dcm")
    assert e.value.path == files[2] and "--no-dicom" in str(e.value)
    assert not (tmp_path / "s.dcm").exists() and not (tmp_path / "r.dcm").exists()
    ds.FrameOfReferenceUID = pydicom.dcmread(files[0]).FrameOfReferenceUID
    ds.save_as(files[2])
    headers = dicom_headers(files)
    assert "PatientName" in headers[2] and headers[2].PatientName in (None, "")  # present (type 2), empty
    assert write_dicom_outputs(files, labels, NODULES[:1], tmp_path / "s.dcm", tmp_path / "r.dcm") is not None
