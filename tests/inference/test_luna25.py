"""The LUNA25 / grand-challenge interface: nodule-locations.json + images/chest-ct/<scan>.mha in, likelihoods out."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lung_nodule_mtl.cli.main import main
from lung_nodule_mtl.constants import lps_to_ras
from lung_nodule_mtl.data.synthetic.phantom import PhantomNodule, chest_phantom
from lung_nodule_mtl.inference import Case, InputError, ScanPredictor, load_ct
from lung_nodule_mtl.inference.luna25 import (
    FALLBACK_PROBABILITY,
    OUTPUT_FILE,
    point_probability,
    read_points,
    run_luna25,
)

NODULES = (PhantomNodule((-40.0, 10.0, 5.0), 12.0), PhantomNodule((35.0, -5.0, -20.0), 7.0))
OFF_NODULE_RAS = (-33.0, 0.0, 30.0)
"""In lung parenchyma, more than snap_mm from any tissue: no mask there."""
POINTS = [
    {"name": "nodule_a", "point": [40.0, -10.0, 5.0]},  # NODULES[0] in LPS
    {"name": "off_nodule", "point": [33.0, 0.0, 30.0]},
    {"name": "nodule_b", "point": [-35.0, 5.0, -20.0]},  # NODULES[1] in LPS
]


def _write_mha(path: Path, image: np.ndarray, affine_ras: np.ndarray) -> Path:
    """Write an ``(i, j, k)`` array with its voxel-to-RAS affine as MetaImage (ITK's LPS geometry)."""
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine_ras[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    itk = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(image)))
    itk.SetSpacing(spacing.tolist())
    itk.SetOrigin(lps_to_ras(affine_ras[:3, 3]))
    itk.SetDirection((lps / spacing).ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(itk, str(path))
    return path


def _points_doc(points: list[dict]) -> dict:
    return {
        "name": "Points of interest",
        "type": "Multiple points",
        "points": points,
        "version": {"major": 1, "minor": 0},
    }


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A grand-challenge input folder: the phantom as images/chest-ct/<uuid>.mha and three points."""
    root = tmp_path_factory.mktemp("luna25_input")
    image, affine, _ = chest_phantom(shape=(150, 120, 48), spacing_mm=(0.9, 0.9, 2.5), nodules=NODULES, lps=True)
    _write_mha(root / "images" / "chest-ct" / "1.2.840.113654.2.55.12345.mha", image, affine)
    (root / "nodule-locations.json").write_text(json.dumps(_points_doc(POINTS)))
    return root


def _copy(case_dir: Path, dest: Path) -> Path:
    shutil.copytree(case_dir, dest)
    return dest


@pytest.fixture
def predictor(threshold_net) -> ScanPredictor:
    return ScanPredictor(threshold_net(), patch_size=(32, 32, 32), device="cpu", max_diameter_mm=40.0)


def _expected(case_dir: Path, predictor: ScanPredictor) -> list:
    [mha] = (case_dir / "images" / "chest-ct").iterdir()
    image = load_ct(Case("scan", mha, "metaimage")).image
    return predictor.predict(image, centers_ras=[lps_to_ras(p["point"]) for p in POINTS]).nodules


def test_points_scored_in_order_with_the_predictor_probabilities(case_dir: Path, predictor, tmp_path: Path) -> None:
    path = run_luna25(case_dir, tmp_path / "out", predictor)
    assert path == tmp_path / "out" / "lung-nodule-malginancy-likelihoods.json"
    assert sorted(p.name for p in path.parent.iterdir()) == ["lung-nodule-malginancy-likelihoods.json"]
    doc = json.loads(path.read_text())
    assert doc["name"] == "Points of interest" and doc["type"] == "Multiple points"
    assert doc["version"] == {"major": 1, "minor": 0}
    assert [p["name"] for p in doc["points"]] == [p["name"] for p in POINTS]
    assert [p["point"] for p in doc["points"]] == [p["point"] for p in POINTS]
    probs = [p["probability"] for p in doc["points"]]
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in probs)

    nodules = _expected(case_dir, predictor)
    assert [n.source for n in nodules] == ["given"] * 3
    # the stand-in network: no fusion, so its own probability, a mask at both nodules and none off them
    assert probs == [n.malignancy_probability for n in nodules]
    assert nodules[0].diameter_mm is not None and nodules[2].diameter_mm is not None
    assert nodules[1].diameter_mm is None
    assert probs[0] > probs[2]  # the stand-in scores the bigger nodule (12 mm vs 7 mm) higher
    # the LPS points landed on the nodules: the reported RAS centres are the phantom's
    assert nodules[0].center_world_mm_ras == pytest.approx(list(NODULES[0].center_ras_mm))
    assert nodules[2].center_world_mm_ras == pytest.approx(list(NODULES[1].center_ras_mm))


def test_clinical_information_read_but_changes_nothing(case_dir: Path, predictor, tmp_path: Path, caplog) -> None:
    plain = run_luna25(case_dir, tmp_path / "plain", predictor).read_text()
    with_clinical = _copy(case_dir, tmp_path / "in")
    (with_clinical / "clinical-information-lung-ct.json").write_text(json.dumps({"age": 63, "gender": "Female"}))
    with caplog.at_level(logging.INFO, logger="lung_nodule_mtl"):
        assert run_luna25(with_clinical, tmp_path / "a", predictor).read_text() == plain
    assert "clinical-information-lung-ct.json present" in caplog.text
    (with_clinical / "clinical-information-lung-ct.json").write_text("{not json")  # not an error either
    assert run_luna25(with_clinical, tmp_path / "b", predictor).read_text() == plain


def test_fields_kept_and_defaults(case_dir: Path, predictor, tmp_path: Path) -> None:
    case = _copy(case_dir, tmp_path / "in")
    points = [{"name": "n1", "point": [40, -10, 5], "extra": "kept"}]
    (case / "nodule-locations.json").write_text(json.dumps({"points": points, "version": {"major": 2, "minor": 3}}))
    doc = json.loads(run_luna25(case, tmp_path / "out", predictor).read_text())
    assert doc["name"] == "Points of interest" and doc["type"] == "Multiple points"
    assert doc["version"] == {"major": 2, "minor": 3}
    [point] = doc["points"]
    assert point["point"] == [40, -10, 5] and point["extra"] == "kept" and 0.0 <= point["probability"] <= 1.0


def test_no_mask_with_a_fusion_gives_the_network_probability(case_dir: Path, threshold_net, tmp_path: Path) -> None:
    from lung_nodule_mtl.inference.fusion import MalignancyFusion
    from lung_nodule_mtl.metrics.calibration import LogisticModel

    model = LogisticModel(coef=[0.0, 1.0], intercept=-math.log(10.0), features=["malignancy_logit", "log_diameter_mm"])
    fusion = MalignancyFusion(model).save(tmp_path / "malignancy_fusion.json")
    predictor = ScanPredictor(
        threshold_net(), patch_size=(32, 32, 32), device="cpu", max_diameter_mm=40.0, malignancy_fusion=fusion
    )
    nodules = _expected(case_dir, predictor)
    # no mask off the nodules, so no size to fuse with: the pipeline reports the network's own probability
    assert nodules[1].diameter_mm is None and nodules[1].malignancy_probability_network is not None
    assert nodules[1].malignancy_probability == nodules[1].malignancy_probability_network
    doc = json.loads(run_luna25(case_dir, tmp_path / "out", predictor).read_text())
    probs = [p["probability"] for p in doc["points"]]
    assert probs[1] == nodules[1].malignancy_probability_network
    assert probs[0] == nodules[0].malignancy_probability and probs[2] == nodules[2].malignancy_probability
    d = nodules[0].diameter_mm
    assert probs[0] == pytest.approx(d / (d + 10.0), abs=1e-4)  # the fused one: sigmoid(log(d / 10)), d rounded


def test_probability_rule(case_dir: Path, predictor) -> None:
    nodule = _expected(case_dir, predictor)[0]
    assert point_probability(nodule) == (nodule.malignancy_probability, "malignancy_probability")
    network_only = dataclasses.replace(nodule, malignancy_probability=None, malignancy_probability_network=0.25)
    assert point_probability(network_only) == (0.25, "network")
    none = dataclasses.replace(nodule, malignancy_probability=None, malignancy_probability_network=None)
    assert point_probability(none) == (FALLBACK_PROBABILITY, "fallback")
    assert point_probability(dataclasses.replace(nodule, malignancy_probability=1.0000001))[0] == 1.0


def test_fallback_logged_when_the_network_has_no_malignancy(case_dir: Path, threshold_net, tmp_path, caplog) -> None:
    class NoMalignancy(threshold_net):  # type: ignore[misc,valid-type]
        def forward(self, x):
            out = super().forward(x)
            return {k: v for k, v in out.items() if "malignancy" not in k}

    predictor = ScanPredictor(NoMalignancy(), patch_size=(32, 32, 32), device="cpu", max_diameter_mm=40.0)
    with caplog.at_level(logging.WARNING, logger="lung_nodule_mtl"):
        doc = json.loads(run_luna25(case_dir, tmp_path / "out", predictor).read_text())
    assert [p["probability"] for p in doc["points"]] == [FALLBACK_PROBABILITY] * 3
    assert "point 'nodule_a'" in caplog.text and "0.5 written" in caplog.text


def _fails(case: Path, predictor, out: Path, *match: str) -> str:
    with pytest.raises(InputError) as info:
        run_luna25(case, out, predictor)
    message = str(info.value)
    assert "\n" not in message
    for m in match:
        assert m in message
    assert not (out / OUTPUT_FILE).exists()
    return message


def test_bad_inputs_name_the_file(case_dir: Path, predictor, tmp_path: Path) -> None:
    out = tmp_path / "out"
    case = _copy(case_dir, tmp_path / "no_points")
    (case / "nodule-locations.json").unlink()
    _fails(case, predictor, out, "nodule-locations.json", "not found")

    case = _copy(case_dir, tmp_path / "empty_points")
    (case / "nodule-locations.json").write_text(json.dumps(_points_doc([])))
    _fails(case, predictor, out, "nodule-locations.json", "empty points list")

    case = _copy(case_dir, tmp_path / "bad_point")
    (case / "nodule-locations.json").write_text(json.dumps(_points_doc([{"name": "x", "point": [1, 2]}])))
    _fails(case, predictor, out, "nodule-locations.json", "point 1 ('x')")

    case = _copy(case_dir, tmp_path / "wrong_type")
    (case / "nodule-locations.json").write_text(json.dumps({**_points_doc(POINTS), "type": "Point"}))
    _fails(case, predictor, out, "nodule-locations.json", "'Point'")

    case = _copy(case_dir, tmp_path / "outside")
    far = [*POINTS, {"name": "far_away", "point": [0.0, 0.0, 500.0]}]
    (case / "nodule-locations.json").write_text(json.dumps(_points_doc(far)))
    _fails(case, predictor, out, "nodule-locations.json", "'far_away'", "outside the image", ".mha")

    case = _copy(case_dir, tmp_path / "no_image")
    [mha] = (case / "images" / "chest-ct").iterdir()
    mha.unlink()
    _fails(case, predictor, out, str(Path("images") / "chest-ct"), "no CT image")

    case = _copy(case_dir, tmp_path / "two_images")
    [mha] = (case / "images" / "chest-ct").iterdir()
    shutil.copy(mha, mha.with_name("second.mha"))
    _fails(case, predictor, out, "chest-ct", "exactly one CT image, found 2")

    case = _copy(case_dir, tmp_path / "tiff")
    [mha] = (case / "images" / "chest-ct").iterdir()
    mha.rename(mha.with_suffix(".tif"))
    _fails(case, predictor, out, ".tif", "spatial metadata", ".mha")

    case = _copy(case_dir, tmp_path / "no_image_dir")
    shutil.rmtree(case / "images")
    _fails(case, predictor, out, "chest-ct", "not found")


def test_nifti_image_gives_the_same_answer(case_dir: Path, predictor, tmp_path: Path) -> None:
    """The same scan as .nii.gz (RAS affine, read by nibabel) scores the LPS points as the .mha does."""
    import nibabel as nib

    case = _copy(case_dir, tmp_path / "nifti")
    [mha] = (case / "images" / "chest-ct").iterdir()
    mha.unlink()
    image, affine, _ = chest_phantom(shape=(150, 120, 48), spacing_mm=(0.9, 0.9, 2.5), nodules=NODULES, lps=True)
    nib.save(nib.Nifti1Image(image, affine), case / "images" / "chest-ct" / "scan.nii.gz")
    from_mha = json.loads(run_luna25(case_dir, tmp_path / "a", predictor).read_text())
    from_nifti = json.loads(run_luna25(case, tmp_path / "b", predictor).read_text())
    assert from_nifti == from_mha


def test_read_points_keeps_the_document(case_dir: Path) -> None:
    doc, lps = read_points(case_dir / "nodule-locations.json")
    assert doc == _points_doc(POINTS) and lps == [p["point"] for p in POINTS]


def test_cli_builds_the_bundle_predictor(case_dir: Path, predictor, tmp_path, monkeypatch, capsys) -> None:
    """``lung-nodule-mtl luna25`` passes its options to the bundle's predictor and writes the file; bad input: 1."""
    import lung_nodule_mtl.inference as inference

    seen = {}

    def fake_loader(bundle, overrides):
        seen.update(bundle=bundle, overrides=dict(overrides))
        return predictor, None

    monkeypatch.setattr(inference, "load_scan_predictor", fake_loader)
    out = tmp_path / "out"
    args = ["luna25", "-i", str(case_dir), "-o", str(out), "--device", "cpu", "--checkpoint", "w.pt"]
    assert main(args) == 0
    assert seen["overrides"] == {"device_name": "cpu", "use_lung_mask": False, "ckpt_file": "w.pt"}
    assert str(out / OUTPUT_FILE) in capsys.readouterr().out
    assert json.loads((out / OUTPUT_FILE).read_text()) == json.loads(
        run_luna25(case_dir, tmp_path / "lib", predictor).read_text()
    )

    bad = _copy(case_dir, tmp_path / "bad")
    (bad / "nodule-locations.json").write_text(json.dumps(_points_doc([{"name": "far", "point": [0, 0, 900]}])))
    assert main(["luna25", "-i", str(bad), "-o", str(tmp_path / "o2"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lung-nodule-mtl luna25: error: ")
    assert "nodule-locations.json" in err[0] and "'far'" in err[0]
    assert not (tmp_path / "o2" / OUTPUT_FILE).exists()


@pytest.mark.slow
def test_cli_with_the_bundle_weights(tmp_path: Path, capsys) -> None:
    """The real command with the released weights on a small phantom (CPU): a nodule and an off-nodule point."""
    root = tmp_path / "input"
    nodule = PhantomNodule((-40.0, 10.0, 5.0), 10.0)
    image, affine, _ = chest_phantom(shape=(128, 100, 40), spacing_mm=(1.0, 1.0, 2.5), nodules=(nodule,))
    _write_mha(root / "images" / "chest-ct" / "scan.mha", image, affine)
    points = [{"name": "nodule", "point": [40.0, -10.0, 5.0]}, {"name": "lung", "point": [33.0, 0.0, 30.0]}]
    (root / "nodule-locations.json").write_text(json.dumps(_points_doc(points)))
    (root / "clinical-information-lung-ct.json").write_text(json.dumps({"age": 70}))
    start = time.perf_counter()
    assert main(["luna25", "-i", str(root), "-o", str(tmp_path / "output"), "--device", "cpu"]) == 0
    assert time.perf_counter() - start < 40.0
    doc = json.loads((tmp_path / "output" / OUTPUT_FILE).read_text())
    assert [p["name"] for p in doc["points"]] == ["nodule", "lung"]
    assert [p["point"] for p in doc["points"]] == [p["point"] for p in points]
    assert all(0.0 <= p["probability"] <= 1.0 for p in doc["points"])
