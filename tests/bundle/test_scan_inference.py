"""Whole-scan inference with the bundle's weights: `lung-nodule-mtl predict` and `monai.bundle run scan_inferring`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from lung_nodule_mtl.cli.main import main
from lung_nodule_mtl.data.synthetic.phantom import PhantomNodule, chest_phantom

REPO = Path(__file__).resolve().parents[2]
NODULE = PhantomNodule((-40.0, 10.0, 5.0), 10.0)


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scans")
    image, affine, _ = chest_phantom(nodules=(NODULE,))
    nib.save(nib.Nifti1Image(image, affine), folder / "phantom.nii.gz")
    x, y, z = NODULE.center_ras_mm
    (folder.parent / "phantom_nodule.csv").write_text(
        f"case_id,center_x_mm,center_y_mm,center_z_mm\nphantom,{x},{y},{z}\n"
    )
    return folder


def _check_given(out: Path) -> dict:
    """The phantom's nodule, analysed at its given centre, is segmented at its size by the released weights."""
    report = json.loads((out / "phantom.json").read_text())
    [nodule] = report["nodules"]
    assert nodule["source"] == "given"
    assert nodule["diameter_mm"] == pytest.approx(NODULE.diameter_mm, rel=0.25)
    assert 0.0 <= nodule["malignancy_probability"] <= 1.0
    assert report["model"]["weights_sha256"] and report["model"]["bundle_version"]
    return report


def test_cli_predict_with_the_bundle_weights(scans: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["predict", "-i", str(scans), "-o", str(out), "--no-progress", "--device", "cpu"]) == 0
    report = json.loads((out / "phantom.json").read_text())
    assert 1 <= report["n_nodules"] <= 20 and report["nodules"][0]["source"] == "detected"
    assert report["settings"]["mirror_tta"] is True  # the bundle's default
    labels = nib.load(out / "phantom_nodules.nii.gz")
    assert labels.shape == nib.load(scans / "phantom.nii.gz").shape
    values = np.asarray(labels.dataobj)
    for nodule in report["nodules"]:  # a nodule of a few 1 mm voxels may vanish on the 2.5 mm input grid: 0 voxels
        assert nodule["voxels_in_label_map"] == int((values == nodule["label"]).sum())
    assert set(np.unique(values).tolist()) <= set(range(report["n_nodules"] + 1))

    given = tmp_path / "given"
    table = scans.parent / "phantom_nodule.csv"
    assert (
        main(["predict", "-i", str(scans), "-o", str(given), "--nodules", str(table), "--no-progress", "--no-tta"]) == 0
    )
    assert _check_given(given)["settings"]["mirror_tta"] is False  # --no-tta: the bundle's mirror_tta overridden

    bad = tmp_path / "with_bad"
    bad.mkdir()
    (bad / "phantom.nii.gz").symlink_to(scans / "phantom.nii.gz")
    (bad / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    assert main(["predict", "-i", str(bad), "-o", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "broken.nii.gz" in err and "phantom" not in err
    assert not (out / "broken.json").exists()


def test_cli_predict_usage_errors(scans: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if not torch.cuda.is_available():
        assert main(["predict", "-i", str(scans), "-o", str(tmp_path / "o"), "--device", "cuda"]) == 1
        assert "CUDA is not available" in capsys.readouterr().err
    assert main(["predict", "-i", str(scans), "-o", str(tmp_path / "o"), "--bundle", str(tmp_path)]) == 1
    assert "no MONAI bundle" in capsys.readouterr().err
    assert main(["predict", "-i", str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 1
    assert "missing" in capsys.readouterr().err


@pytest.mark.slow
def test_bundle_scan_inferring(scans: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle_out"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "scan_inferring",
        "--config_file", "['bundle/configs/inference.yaml','bundle/configs/scan_inference.yaml']",
        "--meta_file", "bundle/configs/metadata.json",
        "--logging_file", "bundle/configs/logging.conf",
        "--bundle_root", "bundle",
        "--input_path", str(scans), "--output_dir", str(out), "--progress", "false", "--qc", "true",
        "--nodules_csv", str(scans.parent / "phantom_nodule.csv"),
    ]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = _check_given(out)
    assert (out / report["qc_figures"][0]).is_file()
    assert (out / "summary.csv").is_file()


def test_the_operating_point_follows_the_shipped_candidate_classifier() -> None:
    """The classifier beside the released weights is fitted for them and brings its own threshold; without it (the
    head alone) the head's threshold applies, and --threshold overrides either."""
    from lung_nodule_mtl.inference.bundle import load_scan_predictor

    with_clf, parser = load_scan_predictor(None, {"device_name": "cpu"})
    assert with_clf.classifier is not None
    assert with_clf.detection_threshold == pytest.approx(parser["detection_threshold_classifier"])
    head, _ = load_scan_predictor(None, {"device_name": "cpu", "candidate_classifier": None})
    assert head.classifier is None
    assert head.detection_threshold == pytest.approx(parser["detection_threshold_head"])
    assert head.detection_threshold != with_clf.detection_threshold
    chosen, _ = load_scan_predictor(None, {"device_name": "cpu", "detection_threshold": 0.5})
    assert chosen.detection_threshold == 0.5 and chosen.classifier is not None
