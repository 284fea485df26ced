"""Batch inference over a folder: outputs per case, bad input reported and skipped, resume, nodule tables, QC."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES
from lung_nodule_mtl.data.synthetic.phantom import PhantomNodule, chest_phantom
from lung_nodule_mtl.inference import ScanPredictor, predict_batch
from lung_nodule_mtl.inference.batch import SUMMARY_COLUMNS

NODULES = (PhantomNodule((-40.0, 10.0, 5.0), 12.0), PhantomNodule((35.0, -5.0, -20.0), 7.0))


@pytest.fixture
def make_predictor(threshold_net):
    """A factory of ScanPredictor around the stand-in network (see conftest.ThresholdNet)."""
    return lambda: ScanPredictor(threshold_net(), patch_size=(32, 32, 32), device="cpu", max_diameter_mm=40.0)


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def _good_scans(folder: Path) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    truths = {}
    image, affine, labels = chest_phantom(shape=(150, 120, 48), spacing_mm=(0.9, 0.9, 2.5), nodules=NODULES)
    _save(image, affine, folder / "chest_a.nii.gz")
    truths["chest_a"] = labels
    image, affine, labels = chest_phantom(
        shape=(128, 100, 60), spacing_mm=(1.0, 1.0, 2.0), nodules=NODULES[1:], lps=False
    )
    _save(image, affine, folder / "chest_b.nii")
    truths["chest_b"] = labels
    return truths


BAD_INPUTS = {
    "truncated": "truncated",
    "flat": "2D",
    "series": "4D",
    "bytes_uint8": "HU",
    "normalised": "HU",
    "nan_voxels": "NaN",
    "zero_spacing": "spacing",
    "empty": "empty",
}
"""Case id → a word the one-line error must contain."""


def _bad_scans(folder: Path) -> None:
    image, affine, _ = chest_phantom(shape=(128, 100, 40), spacing_mm=(1.0, 1.0, 2.5))
    full = _save(image, affine, folder / "full.nii.gz").read_bytes()
    (folder / "full.nii.gz").unlink()
    (folder / "truncated.nii.gz").write_bytes(full[: len(full) // 2])
    _save(image[:, :, 20].copy(), affine, folder / "flat.nii.gz")
    _save(np.stack([image] * 3, axis=-1), affine, folder / "series.nii.gz")
    scaled = ((image.astype(np.float32) + 1000.0) / 1040.0 * 255.0).clip(0, 255).astype(np.uint8)
    _save(scaled, affine, folder / "bytes_uint8.nii.gz")
    _save(((image.astype(np.float32) + 1000.0) / 1040.0).clip(0, 1), affine, folder / "normalised.nii.gz")
    with_nan = image.astype(np.float32)
    with_nan[60:62, 50, 20] = np.nan
    _save(with_nan, affine, folder / "nan_voxels.nii.gz")
    header = nib.Nifti1Image(image, affine).header.copy()
    header["srow_z"] = [0.0, 0.0, 0.0, float(affine[2, 3])]  # the sform's z axis has zero length
    header["qform_code"] = 0
    nib.save(nib.Nifti1Image(image, None, header=header), folder / "zero_spacing.nii.gz")
    (folder / "empty.nii.gz").write_bytes(b"")


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _report(out: Path, case_id: str) -> dict:
    return json.loads((out / f"{case_id}.json").read_text())


def test_batch_outputs_and_bad_inputs(tmp_path: Path, caplog: pytest.LogCaptureFixture, make_predictor) -> None:
    src, out = tmp_path / "in", tmp_path / "out" / "nested"
    truths = _good_scans(src)
    _bad_scans(src)
    before = _digest(src)
    result = predict_batch(src, out, make_predictor(), progress=False)

    assert sorted(result.done) == ["chest_a", "chest_b"] and not result.ok
    assert set(result.failed) == set(BAD_INPUTS)
    for case_id, word in BAD_INPUTS.items():
        reason = result.failed[case_id]
        assert "\n" not in reason and case_id in reason and word.lower() in reason.lower(), reason
        assert f"{case_id}: failed" in caplog.text
    assert _digest(src) == before  # the input is never modified
    names = sorted(p.name for p in out.iterdir())
    assert names == ["chest_a.json", "chest_a_nodules.nii.gz", "chest_b.json", "chest_b_nodules.nii.gz", "summary.csv"]

    for case_id, truth in truths.items():
        source = next(src.glob(f"{case_id}.nii*"))
        written = nib.load(out / f"{case_id}_nodules.nii.gz")
        assert written.shape == truth.shape and np.allclose(written.affine, nib.load(source).affine, atol=1e-5)
        labels = np.asarray(written.dataobj)
        report = _report(out, case_id)
        assert report["input"] == str(source) and report["label_map"] == f"{case_id}_nodules.nii.gz"
        assert report["n_nodules"] == len(report["nodules"]) == int(truth.max())
        for nodule in report["nodules"]:
            assert nodule["voxels_in_label_map"] == int((labels == nodule["label"]).sum()) > 0
            assert set(nodule["attributes"]) == set(ATTRIBUTE_CLASSES)
        assert report["model"]["package_version"] and report["settings"]["patch_size"] == [32, 32, 32]

    with (out / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and [r["case_id"] for r in rows] == ["chest_a", "chest_a", "chest_b"]
    assert list(rows[0])[: len(SUMMARY_COLUMNS)] == list(SUMMARY_COLUMNS)
    assert float(rows[0]["diameter_mm"]) == pytest.approx(12.0, rel=0.06)


def test_rerun_skips_complete_cases_and_resumes_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_predictor
) -> None:
    src = tmp_path / "in"
    _good_scans(src)
    reference = predict_batch(src, tmp_path / "ref", make_predictor(), progress=False)
    assert reference.ok

    out = tmp_path / "out"
    original = ScanPredictor.predict
    calls = {"n": 0}

    def killed_on_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as a kill: not caught by the batch
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ScanPredictor, "predict", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        predict_batch(src, out, make_predictor(), progress=False)
    monkeypatch.setattr(ScanPredictor, "predict", original)
    assert sorted(p.name for p in out.iterdir()) == ["chest_a.json", "chest_a_nodules.nii.gz"]  # no temp file left

    resumed = predict_batch(src, out, make_predictor(), progress=False)
    assert resumed.skipped == ["chest_a"] and resumed.done == ["chest_b"]
    for case_id in ("chest_a", "chest_b"):
        a, b = _report(out, case_id), _report(tmp_path / "ref", case_id)
        a.pop("timings_s"), b.pop("timings_s")
        assert a == b
        la = np.asarray(nib.load(out / f"{case_id}_nodules.nii.gz").dataobj)
        lb = np.asarray(nib.load(tmp_path / "ref" / f"{case_id}_nodules.nii.gz").dataobj)
        assert np.array_equal(la, lb)
    assert (out / "summary.csv").read_bytes() == (tmp_path / "ref" / "summary.csv").read_bytes()

    again = predict_batch(src, out, make_predictor(), progress=False, overwrite=True)
    assert sorted(again.done) == ["chest_a", "chest_b"] and not again.skipped


def test_a_corrupt_report_is_redone(tmp_path: Path, make_predictor) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    _good_scans(src)
    predict_batch(src, out, make_predictor(), progress=False)
    (out / "chest_b.json").write_text("{ half")
    result = predict_batch(src, out, make_predictor(), progress=False)
    assert result.skipped == ["chest_a"] and result.done == ["chest_b"]


def test_given_nodules_and_a_centre_outside_the_image(tmp_path: Path, make_predictor) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    truths = _good_scans(src)
    table = tmp_path / "annotations.csv"
    x, y, z = NODULES[0].center_ras_mm
    table.write_text(
        "seriesuid,coordX,coordY,coordZ,diameter_mm\n"
        f"chest_a,{-x},{-y},{z},12\n"  # LUNA16 tables are LPS
        "chest_b,0,0,900,8\n"  # outside chest_b
        "not_in_input,1,2,3,4\n"
    )
    result = predict_batch(src, out, make_predictor(), nodules_csv=table, progress=False)
    assert result.done == ["chest_a"] and "outside the image" in result.failed["chest_b"]
    assert "chest_b" in result.failed["chest_b"]
    assert not (out / "chest_b.json").exists() and not (out / "chest_b_nodules.nii.gz").exists()
    nodules = _report(out, "chest_a")["nodules"]
    assert len(nodules) == 1 and nodules[0]["source"] == "given"
    assert nodules[0]["center_world_mm_ras"] == pytest.approx([x, y, z])
    labels = np.asarray(nib.load(out / "chest_a_nodules.nii.gz").dataobj)
    inter = ((labels == 1) & (truths["chest_a"] == 1)).sum()
    assert 2 * inter / ((labels == 1).sum() + (truths["chest_a"] == 1).sum()) > 0.8


def test_qc_figures(tmp_path: Path, make_predictor) -> None:
    from PIL import Image

    src, out = tmp_path / "in", tmp_path / "out"
    _good_scans(src)
    (src / "chest_b.nii").unlink()
    predict_batch(src, out, make_predictor(), qc=True, progress=False)
    report = _report(out, "chest_a")
    assert report["qc_figures"] == ["qc/chest_a_nodule1.png", "qc/chest_a_nodule2.png"]
    for name in report["qc_figures"]:
        rgb = np.asarray(Image.open(out / name).convert("RGB"))
        red = (rgb[..., 0] > 200) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
        assert rgb.shape[1] > 2 * rgb.shape[0] and red.sum() > 20  # three panels, the outline drawn


def test_refuses_output_in_input_and_empty_input(tmp_path: Path, make_predictor) -> None:
    src = tmp_path / "in"
    _good_scans(src)
    with pytest.raises(ValueError, match="must not be the input folder"):
        predict_batch(src, src, make_predictor(), progress=False)
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("no scans here")
    with pytest.raises(ValueError):
        predict_batch(tmp_path / "nothing", tmp_path / "out", make_predictor(), progress=False)
    with pytest.raises(FileNotFoundError):
        predict_batch(tmp_path / "missing", tmp_path / "out", make_predictor(), progress=False)


def test_gzip_truncation_is_what_we_think(tmp_path: Path) -> None:
    """Guard for the fixture: the truncated file really is a broken gzip stream."""
    _bad_scans(tmp_path)
    with pytest.raises((EOFError, OSError)), gzip.open(tmp_path / "truncated.nii.gz") as f:
        f.read()


def test_summary_feeds_the_nodule_table_and_froc(tmp_path: Path, make_predictor) -> None:
    """predict's summary.csv is a nodule table (RAS) and a FROC submission against LUNA16-style (LPS) annotations."""
    from lung_nodule_mtl.data.nodule_table import read_nodule_table
    from lung_nodule_mtl.metrics.froc import evaluate_froc_files

    src, out = tmp_path / "in", tmp_path / "out"
    _good_scans(src)
    predict_batch(src, out, make_predictor(), progress=False)
    table = read_nodule_table(out / "summary.csv")
    assert {k: len(v) for k, v in table.items()} == {"chest_a": 2, "chest_b": 1}
    reports = {c: _report(out, c)["nodules"] for c in table}
    for case_id, records in table.items():
        for record, nodule in zip(records, reports[case_id], strict=True):
            assert list(record.center_ras_mm) == pytest.approx(nodule["center_world_mm_ras"])
            assert record.probability == pytest.approx(nodule["detection_probability"])

    lines = ["seriesuid,coordX,coordY,coordZ,diameter_mm"]
    truth = {"chest_a": NODULES, "chest_b": NODULES[1:]}
    for case_id, nodules in truth.items():
        lines += [
            f"{case_id},{-n.center_ras_mm[0]},{-n.center_ras_mm[1]},{n.center_ras_mm[2]},{n.diameter_mm}"
            for n in nodules
        ]
    annotations = tmp_path / "annotations.csv"
    annotations.write_text("\n".join(lines) + "\n")
    result = evaluate_froc_files(out, annotations, cases_from_predictions_dir=True)
    assert result["n_scans"] == 2 and result["n_annotations"] == 3 and result["n_detected"] == 3
    assert result["n_false_positives"] == 0 and result["cpm"] == pytest.approx(1.0)


def test_dicom_folder_with_two_series(
    tmp_path: Path, make_predictor, ct, write_dicom_series, synthetic, caplog: pytest.LogCaptureFixture
) -> None:
    """A DICOM folder holding two series: the larger one is analysed and the report and the log say so."""
    src, out = tmp_path / "in", tmp_path / "out"
    folder = src / "patient_7"
    write_dicom_series(folder, ct, series_uid="1.2.3.4.5.100", names=[f"a{k:02d}.dcm" for k in range(ct.shape[2])])
    small = synthetic.make_ct((32, 32, 10))
    write_dicom_series(
        folder, small, series_uid="1.2.3.4.5.200", origin=(0, 0, 300), names=[f"b{k}.dcm" for k in range(10)]
    )
    result = predict_batch(src, out, make_predictor(), progress=False)
    assert result.done == ["patient_7"] and result.ok
    report = _report(out, "patient_7")
    assert report["input_kind"] == "dicom" and report["input_shape"] == list(ct.shape)
    assert any("1.2.3.4.5.100" in w and "skipped 1 other" in w for w in report["warnings"])
    assert "patient_7: " in caplog.text and "skipped 1 other" in caplog.text
    labels = nib.load(out / "patient_7_nodules.nii.gz")
    assert labels.shape == ct.shape


def test_html_report_per_scan(tmp_path: Path, make_predictor) -> None:
    """predict --report: one self-contained page per scan with every nodule, its side, views and the limits; a re-run
    asking for the page redoes a case that lacks it."""
    import base64
    import io
    import re

    from PIL import Image

    from lung_nodule_mtl.reports.html import LIMITS

    src, out = tmp_path / "in", tmp_path / "out"
    _good_scans(src)
    (src / "chest_b.nii").unlink()
    predict_batch(src, out, make_predictor(), progress=False)
    assert not (out / "chest_a_report.html").exists()
    predict_batch(src, out, make_predictor(), progress=False, html_report=True)  # complete, but no page: redone
    page = (out / "chest_a_report.html").read_text(encoding="utf-8")
    report = _report(out, "chest_a")
    assert page.count("<h2>Nodule ") == len(report["nodules"]) == 2
    assert LIMITS.split(",")[0] in page and "not for diagnosis" in page
    assert not re.search(r"(src|href)=['\"](?!data:)", page) and "<script" not in page  # nothing fetched
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 2
    for b64 in images:
        rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
        red = (rgb[..., 0] > 200) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
        assert rgb.shape[1] > 2 * rgb.shape[0] and red.sum() > 20  # three panels with the outline
    for n in report["nodules"]:
        expected = "right lung" if n["center_world_mm_ras"][0] > 0 else "left lung"  # the phantom's lungs straddle x=0
        assert expected in page.split(f"<h2>Nodule {n['label']}</h2>")[1].split("</table>")[0]


def test_dicom_in_gives_a_dicom_seg_and_sr_of_the_reported_nodules(
    tmp_path: Path, make_predictor, write_dicom_series
) -> None:
    import highdicom as hd
    import pydicom

    image, _, _ = chest_phantom(shape=(150, 120, 48), spacing_mm=(0.9, 0.9, 2.5), nodules=NODULES)
    src = tmp_path / "in"
    write_dicom_series(src / "patient_1", image, spacing=(0.9, 0.9, 2.5), origin=(-67.0, -54.0, -60.0))
    out = tmp_path / "out"
    predict_batch(src, out, make_predictor(), progress=False)
    report = _report(out, "patient_1")
    nodules = [n for n in report["nodules"] if n["voxels_in_label_map"] > 0]
    assert len(nodules) == 2 and report["dicom_seg"] == "patient_1_seg.dcm"
    seg = pydicom.dcmread(out / "patient_1_seg.dcm")
    assert seg.Modality == "SEG"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [f"nodule {n['label']}" for n in nodules]
    labels = np.asarray(nib.load(out / "patient_1_nodules.nii.gz").dataobj)
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), -1).astype(bool).sum()
    assert frames == int((labels > 0).sum())  # every labelled voxel is in the SEG, once
    # the SR: one measurement group per nodule of the JSON report, its values, its segment
    assert report["dicom_sr"] == "patient_1_sr.dcm"
    groups = hd.sr.srread(out / "patient_1_sr.dcm").content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [f"nodule {n['label']}" for n in nodules]
    for segment, (group, n) in enumerate(zip(groups, nodules, strict=True), start=1):
        assert group.referenced_segment.referenced_segment_numbers == [segment]
        values = {m.name.meaning: float(m.value) for m in group.get_measurements()}
        assert values["Diameter"] == pytest.approx(n["diameter_mm"], rel=1e-6)
        assert values["Volume"] == pytest.approx(n["volume_mm3"], rel=1e-6)
        assert values["Probability of cancer"] == pytest.approx(n["malignancy_probability"], rel=1e-6)
        assert len(group.get_qualitative_evaluations()) == len(n["attributes"]) == 8
        side = "Right" if n["center_world_mm_ras"][0] > 0 else "Left"  # the phantom's lungs straddle x=0
        assert group.finding_sites[0].laterality.meaning == side
    other = tmp_path / "out_no_dicom"
    predict_batch(src, other, make_predictor(), progress=False, dicom=False)
    assert not (other / "patient_1_seg.dcm").exists() and "dicom_seg" not in _report(other, "patient_1")
    assert not (other / "patient_1_sr.dcm").exists() and "dicom_sr" not in _report(other, "patient_1")
    # a series the SEG cannot be made of: the case fails with the file and the attribute, nothing of it is written
    for f in sorted((src / "patient_1").iterdir())[:1]:
        ds = pydicom.dcmread(f)
        del ds.SliceThickness
        ds.save_as(f)
    bad = tmp_path / "out_bad"
    result = predict_batch(src, bad, make_predictor(), progress=False)
    assert list(result.failed) == ["patient_1"] and "SliceThickness missing" in result.failed["patient_1"]
    assert f.name in result.failed["patient_1"] and not any(bad.glob("patient_1*"))
    assert predict_batch(src, bad, make_predictor(), progress=False, dicom=False).ok  # --no-dicom: the rest works
