"""DICOM SEG out for DICOM in: read back with pydicom, segments, frames on their source slices, voxels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from lung_nodule_mtl.io import find_cases, load_ct
from lung_nodule_mtl.reports.dicom import ALGORITHM_NAME, write_dicom_seg


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
