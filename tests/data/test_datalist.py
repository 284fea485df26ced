"""Datalist format, validation and patient-level folds."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from lung_nodule_mtl.constants import Keys
from lung_nodule_mtl.data.datalist import (
    build_datalist,
    build_datalist_or_fewer_folds,
    build_test_datalist,
    load_datalist,
    patient_folds,
    select_fold,
    validate_item,
    write_datalist,
)


def make_items(n_patients: int = 20, seed: int = 0) -> list[dict]:
    """Patients with 1-3 nodules each; malignancy cycles through 1, 0, -1 and missing."""
    items = []
    labels = [1, 0, -1, None]
    for p in range(n_patients):
        for n in range(1 + (p * 7 + seed) % 3):
            items.append(
                {
                    "image": f"img/P{p:03d}_{n}.nii.gz",
                    "label": f"lbl/P{p:03d}_{n}.nii.gz",
                    "case_id": f"P{p:03d}_{n}",
                    "patient_id": f"P{p:03d}",
                    "center_world_mm": [1.0 * p, -2.0, 3.5],
                    "diameter_mm": 5.0 + n,
                    "malignancy": labels[(p + n) % 4],
                    "malignancy_score": None,
                    "spiculation": 1 + (p % 5),
                }
            )
    return items


@pytest.mark.parametrize("n_folds", [2, 3, 5])
def test_no_patient_in_two_folds(n_folds: int) -> None:
    items = make_items()
    folds = patient_folds(items, n_folds, seed=1)
    seen: dict[str, set[int]] = defaultdict(set)
    for item, fold in zip(items, folds, strict=True):
        seen[item["patient_id"]].add(fold)
    assert all(len(f) == 1 for f in seen.values())
    assert set(folds) == set(range(n_folds))


def test_folds_balanced_and_deterministic() -> None:
    items = make_items(40)
    folds = patient_folds(items, 4, seed=3)
    assert folds == patient_folds(items, 4, seed=3)
    assert folds != patient_folds(items, 4, seed=4)
    sizes = [folds.count(k) for k in range(4)]
    assert max(sizes) - min(sizes) <= 3  # at most one patient's worth of nodules apart
    malignant = [sum(1 for i, f in zip(items, folds, strict=True) if f == k and i["malignancy"] == 1) for k in range(4)]
    assert max(malignant) - min(malignant) <= 3


def test_build_datalist_splits_by_patient(tmp_path) -> None:
    items = make_items(30)
    dl = build_datalist(items, n_folds=5, val_fold=2, test_fraction=0.2, seed=0)
    patients = {split: {i["patient_id"] for i in dl[split]} for split in ("training", "validation", "test")}
    assert len(patients["test"]) == 6
    assert not patients["training"] & patients["validation"]
    assert not patients["test"] & (patients["training"] | patients["validation"])
    assert sum(len(dl[s]) for s in ("training", "validation", "test")) == len(items)
    assert {i["fold"] for i in dl["validation"]} == {2}
    assert 2 not in {i["fold"] for i in dl["training"]}

    other = select_fold(dl, 4)
    assert {i["fold"] for i in other["validation"]} == {4}
    assert len(other["training"]) + len(other["validation"]) == len(dl["training"]) + len(dl["validation"])
    assert other["test"] == dl["test"]


def test_write_and_load_with_monai(tmp_path) -> None:
    dl = build_datalist(make_items(10), n_folds=2)
    path = write_datalist(dl, tmp_path / "sub" / "datalist.json")
    assert json.loads(path.read_text())["metadata"]["n_folds"] == 2
    training = load_datalist(path, "training")
    assert len(training) == len(dl["training"])
    # load_decathlon_datalist makes image/label paths absolute, relative to the JSON's folder
    assert training[0]["image"] == str(tmp_path / "sub" / dl["training"][0]["image"])
    assert load_datalist(path, "test") == []
    assert not list(tmp_path.glob("sub/.*tmp*"))  # no temporary file left behind


@pytest.mark.parametrize(
    "change, message",
    [
        ({"patient_id": None}, "patient_id"),
        ({"image": ""}, "image"),
        ({"center_world_mm": [1.0, 2.0]}, "center_world_mm"),
        ({"center_world_mm": [1.0, float("nan"), 2.0]}, "center_world_mm"),
        ({"diameter_mm": -3.0}, "diameter_mm"),
        ({"malignancy": 2}, "malignancy"),
        ({"malignancy_score": 6}, "malignancy_score"),
        ({"calcification": 7}, "calcification"),
        ({"texture": 2.5}, "texture"),
    ],
)
def test_ill_item(change: dict, message: str) -> None:
    item = make_items(1)[0] | change
    with pytest.raises(ValueError, match=message):
        validate_item(item)


def test_ill_arg() -> None:
    items = make_items(4)
    with pytest.raises(ValueError, match="n_folds"):
        patient_folds(items, 1)
    with pytest.raises(ValueError, match="more than the 4 patients"):
        patient_folds(items, 5)
    with pytest.raises(ValueError, match="val_fold"):
        build_datalist(items, n_folds=2, val_fold=2)
    with pytest.raises(ValueError, match="test_fraction"):
        build_datalist(items, n_folds=2, test_fraction=1.0)
    with pytest.raises(ValueError, match="patient_id"):
        patient_folds([{**items[0], Keys.PATIENT_ID.value: ""}], 2)


def test_load_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        load_datalist(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json"):
        load_datalist(bad)
    nolist = tmp_path / "nolist.json"
    nolist.write_text(json.dumps({"training": []}))
    with pytest.raises(ValueError, match="no 'validation' list"):
        load_datalist(nolist, "validation")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"training": [{**make_items(1)[0], "malignancy": 7}]}))
    with pytest.raises(ValueError, match=r"wrong.json \[training\]\[0\]"):
        load_datalist(wrong)


@pytest.mark.parametrize(("n_patients", "folds", "reduced"), [(20, 5, False), (5, 4, True), (3, 2, True), (1, 1, True)])
def test_fewer_folds_for_few_patients(n_patients: int, folds: int, reduced: bool) -> None:
    items = make_items(n_patients)
    datalist, notes = build_datalist_or_fewer_folds(items, n_folds=5, test_fraction=0.2, seed=1)
    assert datalist["metadata"]["n_folds"] == folds and bool(notes) == reduced
    splits = [datalist[k] for k in ("training", "validation", "test")]
    assert sum(len(s) for s in splits) == len(items)
    patients = [{i["patient_id"] for i in s} for s in splits]
    assert not (patients[0] & patients[1]) and not (patients[0] & patients[2]) and not (patients[1] & patients[2])
    if folds == 1:
        assert datalist["validation"] == [] and datalist["test"] == [] and "too few" in notes[0]
        assert {i["fold"] for i in datalist["training"]} == {0}


def test_test_only_datalist(tmp_path) -> None:
    items = [{**item, "fold": 3} for item in make_items(4)]  # folds of an earlier split are dropped
    datalist = build_test_datalist(items, seed=2, metadata={"source": "external"})
    assert datalist["training"] == [] and datalist["validation"] == [] and len(datalist["test"]) == len(items)
    assert all("fold" not in item for item in datalist["test"])
    assert [i["case_id"] for i in datalist["test"]] == [i["case_id"] for i in items]
    meta = datalist["metadata"]
    assert (meta["n_folds"], meta["val_fold"], meta["test_fraction"], meta["seed"], meta["source"]) == (
        1, None, 1.0, 2, "external"
    )  # fmt: skip
    path = write_datalist(datalist, tmp_path / "datalist.json")
    assert select_fold(json.loads(path.read_text()), 0)["validation"] == []  # a val_fold does not fail
    with pytest.raises(ValueError, match="center_world_mm"):
        build_test_datalist([{k: v for k, v in items[0].items() if k != Keys.CENTER_WORLD}])
