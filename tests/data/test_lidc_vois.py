"""The LIDC-IDRI VOI adapter, on a VOI folder made in the test and on the real one when present."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lung_nodule_mtl.cli.main import EVALUATE_TEST_COMMAND, main
from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, Keys
from lung_nodule_mtl.data.datalist import load_datalist, read_splits
from lung_nodule_mtl.data.lidc_vois import _REQUIRED_COLUMNS, prepare_vois

AFFINE = np.array([[-0.7, 0, 0, 30.0], [0, -0.7, 0, 40.0], [0, 0, 2.5, -120.0], [0, 0, 0, 1.0]])  # L,P,S like LIDC
SHAPE = (24, 24, 8)
BUNDLE_CONFIGS = Path(__file__).resolve().parents[2] / "bundle" / "configs"


def _write_voi(root: Path, patient: str, nodule: int, centre_vox: tuple[int, int, int]) -> list[float]:
    """Write a VOI with a cubic nodule at ``centre_vox``; return the table centre in LPS mm."""
    image = np.full(SHAPE, -850, dtype=np.int16)
    mask = np.zeros(SHAPE, dtype=np.uint8)
    i, j, k = centre_vox
    mask[i - 3 : i + 4, j - 3 : j + 4, max(k - 1, 0) : k + 2] = 1
    image[mask > 0] = 30
    for sub, arr in (("image", image), ("nodule_mask", mask)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(arr, AFFINE), root / sub / f"{patient}_R_{nodule}.nii.gz")
    ras = AFFINE @ np.array([*centre_vox, 1.0])
    return [-ras[0], -ras[1], ras[2]]


def _row(patient: str, nodule: int, lps: list[float], malignancy: int, **overrides: str) -> dict[str, str]:
    row = {c: "1" for c in _REQUIRED_COLUMNS}
    row.update(
        patient_id=patient,
        nodule_id=str(nodule),
        coordX=str(lps[0]),
        coordY=str(lps[1]),
        coordZ=str(lps[2]),
        diameter_mm="6.5",
        Malignancy_value=str(malignancy),
        Calcification_value="6",
        Texture_value="5",
        seriesuid=f"1.2.3.{patient}",
    )
    row.update(overrides)
    return row


def _write_table(root: Path, rows: list[dict[str, str]]) -> None:
    fields = list(rows[0])
    with open(root / "nodules.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def voi_dir(tmp_path: Path) -> Path:
    root = tmp_path / "vois"
    rows = []
    for p, malignancy in enumerate([5, 1, 3, 4, 2, 3]):
        patient = f"LIDC-IDRI-{p:04d}"
        for n in (1, 2) if p % 2 == 0 else (1,):
            lps = _write_voi(root, patient, n, (12, 11, 4))
            rows.append(_row(patient, n, lps, malignancy))
    _write_table(root, rows)
    return root


def test_items(voi_dir: Path, tmp_path: Path) -> None:
    summary = prepare_vois(voi_dir, tmp_path / "out", n_folds=3)
    assert summary["nodules"] == 9 and summary["patients"] == 6
    assert (summary["malignant"], summary["benign"], summary["indeterminate"]) == (3, 3, 3)
    assert summary["centres_from_mask"] == 0
    items = load_datalist(summary["datalist"], "training") + load_datalist(summary["datalist"], "validation")
    first = next(i for i in items if i["case_id"] == "LIDC-IDRI-0000_R_1")
    assert first["malignancy"] == 1 and first["malignancy_score"] == 5
    assert first["calcification"] == 6 and first["texture"] == 5
    # LPS table centre became RAS: the voxel it maps to is the nodule centre
    voxel = np.linalg.solve(AFFINE, np.r_[first["center_world_mm"], 1.0])[:3]
    np.testing.assert_allclose(voxel, [12, 11, 4], atol=1e-3)
    assert Path(first["image"]).is_absolute() and Path(first["image"]).is_file()
    folds_of = {}
    for item in items:
        assert folds_of.setdefault(item["patient_id"], item["fold"]) == item["fold"]


def test_centre_outside_mask_falls_back(voi_dir: Path, tmp_path: Path) -> None:
    rows = list(csv.DictReader(open(voi_dir / "nodules.csv")))
    rows[0]["coordZ"] = str(float(rows[0]["coordZ"]) + 40.0)  # beyond the crop, like LIDC-IDRI-0332_R_1
    _write_table(voi_dir, rows)
    summary = prepare_vois(voi_dir, tmp_path / "out", n_folds=2)
    assert summary["centres_from_mask"] == 1
    data = json.loads(Path(summary["datalist"]).read_text())
    item = next(i for i in data["training"] + data["validation"] if i["case_id"] == "LIDC-IDRI-0000_R_1")
    assert item["center_source"] == "mask"
    voxel = np.rint(np.linalg.solve(AFFINE, np.r_[item["center_world_mm"], 1.0])[:3]).astype(int)
    mask = np.asarray(nib.load(item["label"]).dataobj)
    assert mask[tuple(voxel)] == 1


def test_missing_file_named(voi_dir: Path, tmp_path: Path) -> None:
    (voi_dir / "nodule_mask" / "LIDC-IDRI-0001_R_1.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"nodules.csv:4: file not found: .*LIDC-IDRI-0001_R_1"):
        prepare_vois(voi_dir, tmp_path / "out")
    assert not (tmp_path / "out" / "datalist.json").exists()


@pytest.mark.parametrize(
    "edit, error, message",
    [
        (
            lambda rows: [{k: v for k, v in r.items() if k != "Texture_value"} for r in rows],
            ValueError,
            "Texture_value",
        ),
        (lambda rows: [r | {"Malignancy_value": "7"} for r in rows], ValueError, "1-5 scale"),
        (lambda rows: [r | {"coordX": "abc"} for r in rows], ValueError, "coordX"),
        (lambda rows: [r | {"Spiculation_value": "2.5"} for r in rows], ValueError, "Spiculation_value"),
        (lambda rows: rows + rows[:1], ValueError, "more than once"),
    ],
)
def test_ill_table(voi_dir: Path, tmp_path: Path, edit, error, message: str) -> None:
    rows = list(csv.DictReader(open(voi_dir / "nodules.csv")))
    _write_table(voi_dir, edit(rows))
    with pytest.raises(error, match=message):
        prepare_vois(voi_dir, tmp_path / "out")


def test_missing_rating_is_null(voi_dir: Path, tmp_path: Path) -> None:
    rows = list(csv.DictReader(open(voi_dir / "nodules.csv")))
    rows[0]["Malignancy_value"] = ""
    rows[0]["Margin_value"] = ""
    _write_table(voi_dir, rows)
    data = json.loads(Path(prepare_vois(voi_dir, tmp_path / "out", n_folds=2)["datalist"]).read_text())
    item = next(i for i in data["training"] + data["validation"] if i["case_id"] == "LIDC-IDRI-0000_R_1")
    assert item["malignancy"] is None and item["malignancy_score"] is None and item["margin"] is None


def test_ill_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="VOI folder not found"):
        prepare_vois(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"nodules\.csv"):
        prepare_vois(tmp_path / "empty", tmp_path / "out")


@pytest.mark.real_data
def test_real_vois(shared_data: Path, tmp_path: Path) -> None:
    """All 818 real LIDC-IDRI nodules: centres inside their masks, LIDC convention, patient-level folds."""
    summary = prepare_vois(shared_data / "lidc_vois", tmp_path, n_folds=5)
    assert summary["nodules"] == 818 and summary["patients"] == 451
    assert summary["malignant"] + summary["benign"] + summary["indeterminate"] == 818
    data = json.loads(Path(summary["datalist"]).read_text())
    items = data["training"] + data["validation"]
    assert len(items) == 818 and data["test"] == []
    folds: dict[str, int] = {}
    sizes = [0] * 5
    for item in items:
        assert folds.setdefault(item["patient_id"], item["fold"]) == item["fold"]
        sizes[item["fold"]] += 1
        for name, levels in ATTRIBUTE_CLASSES.items():
            assert item[name] is None or 1 <= item[name] <= levels
        score = item[Keys.MALIGNANCY_SCORE]
        assert item[Keys.MALIGNANCY] == (1 if score >= 4 else 0 if score <= 2 else -1)
        mask_img = nib.load(item["label"])
        voxel = np.rint(np.linalg.solve(mask_img.affine, np.r_[item["center_world_mm"], 1.0])[:3]).astype(int)
        assert np.asarray(mask_img.dataobj)[tuple(voxel)] > 0, item["case_id"]
    assert max(sizes) - min(sizes) <= 10
    # the table's first nodule, LIDC-IDRI-0001, as the data README describes it (LPS 56.2, 86.3, -115.9)
    first = next(i for i in items if i["case_id"] == "LIDC-IDRI-0001_R_1")
    np.testing.assert_allclose(first["center_world_mm"], [-56.2084, -86.3434, -115.8676], atol=1e-3)
    assert first["malignancy_score"] == 5


def test_one_fold_is_an_evaluation_only_test_split(voi_dir: Path, tmp_path: Path) -> None:
    """``n_folds=1`` (an external test set): every nodule in 'test', no folds, the loaders read it."""
    summary = prepare_vois(voi_dir, tmp_path / "out", n_folds=1)
    assert summary["splits"] == {"training": 0, "validation": 0, "test": 9} and summary["n_folds"] == 1
    assert len(summary["notes"]) == 1 and "every item in 'test'" in summary["notes"][0]
    data = json.loads(Path(summary["datalist"]).read_text())
    assert data["training"] == [] and data["validation"] == [] and len(data["test"]) == 9
    assert all("fold" not in item for item in data["test"])
    meta = data["metadata"]
    assert (meta["n_folds"], meta["val_fold"], meta["test_fraction"]) == (1, None, 1.0)
    assert meta["source"] == "LIDC-IDRI VOIs"
    test = load_datalist(summary["datalist"], "test")
    rows = list(csv.DictReader(open(voi_dir / "nodules.csv")))
    assert sorted(i["case_id"] for i in test) == sorted(f"{r['patient_id']}_R_{r['nodule_id']}" for r in rows)
    assert all(Path(i["image"]).is_file() and Path(i["label"]).is_file() for i in test)
    for val_fold in (None, 0):  # as training/evaluating read it, with or without --val_fold
        splits = read_splits(summary["datalist"], val_fold)
        assert splits["training"] == [] and splits["validation"] == [] and len(splits["test"]) == 9


def test_evaluate_config_reads_the_test_split(voi_dir: Path, tmp_path: Path) -> None:
    """The documented ``evaluating --dataset_dir OUT --eval_split test`` scores the 'test' list of --folds 1."""
    from monai.bundle import ConfigParser

    summary = prepare_vois(voi_dir, tmp_path / "out", n_folds=1)
    expected = [(i["case_id"], i["image"]) for i in load_datalist(summary["datalist"], "test")]
    for split, n in (("test", 9), ("validation", 0)):  # evaluate.yaml's default split is 'validation': empty here
        parser = ConfigParser()
        parser.read_config([str(BUNDLE_CONFIGS / "train.yaml"), str(BUNDLE_CONFIGS / "evaluate.yaml")])
        parser.update({"dataset_dir": str(tmp_path / "out"), "eval_split": split, "bundle_root": str(tmp_path)})
        data = parser.get_parsed_content("validate#dataset#data")
        assert len(data) == n and [(i["case_id"], i["image"]) for i in data] == expected[:n]
    assert f"--dataset_dir {tmp_path / 'out'} --eval_split test" in EVALUATE_TEST_COMMAND.format(
        dataset_dir=tmp_path / "out"
    )


def test_cli_one_fold(voi_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ext"
    assert main(["prepare-vois", "--vois", str(voi_dir), "--out", str(out), "--folds", "1"]) == 0
    printed = capsys.readouterr().out
    assert '{"training": 0, "validation": 0, "test": 9}' in printed and "note: 1 fold asked for" in printed
    assert "evaluating" in printed and f"--dataset_dir {out} --eval_split test" in printed
    data = json.loads((out / "datalist.json").read_text())
    assert len(data["test"]) == 9 and not data["training"] and not data["validation"]


def test_fewer_folds_for_few_patients(voi_dir: Path, tmp_path: Path) -> None:
    summary = prepare_vois(voi_dir, tmp_path / "out", n_folds=10)  # 6 patients
    assert summary["n_folds"] == 6 and summary["notes"] == ["6 patients outside 'test': 6 folds instead of 10"]
    data = json.loads(Path(summary["datalist"]).read_text())
    assert sorted({i["fold"] for i in data["training"] + data["validation"]}) == list(range(6))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n_folds": 0}, "n_folds must be an integer >= 1"), ({"n_folds": 3, "val_fold": 3}, "val_fold must be in 0..2")],
)
def test_ill_folds(voi_dir: Path, tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        prepare_vois(voi_dir, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
