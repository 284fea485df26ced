"""benchmarks/measured_features.py on a tiny datalist of synthetic VOIs: the reference masks measured, the tables
written per fold, the out-of-fold figures of the fusion's own report."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pytest


@pytest.fixture
def bench(load_benchmark) -> Iterator[ModuleType]:
    with load_benchmark("measured_features") as module:
        yield module


def _datalist(root: Path, n: int = 60) -> Path:
    """Spheres in lung: the malignant ones large and soft-tissue dense, the benign small, half of them calcified
    (rated calcification 3, else 6)."""
    rng = np.random.default_rng(0)
    z, y, x = np.indices((24, 24, 24)) - 11.5
    items = []
    for i in range(n):
        malignant = i % 2 == 0
        radius = rng.uniform(5.5, 9.0) if malignant else rng.uniform(2.5, 6.0)
        calcified = not malignant and i % 4 == 1
        mask = (z**2 + y**2 + x**2) <= radius**2
        hu = np.where(mask, 600.0 if calcified else 30.0, -850.0) + rng.normal(0, 20, mask.shape)
        affine = np.diag([0.8, 0.8, 1.0, 1.0])
        image, label = root / f"img{i}.nii.gz", root / f"lab{i}.nii.gz"
        nib.save(nib.Nifti1Image(hu.astype(np.int16), affine), image)
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), label)
        items.append({"image": image.name, "label": label.name, "case_id": f"c{i}", "patient_id": f"p{i}",
                      "fold": i % 5, "malignancy": int(malignant), "diameter_mm": 2 * radius,
                      "calcification": 3 if calcified else 6, "texture": 5})  # fmt: skip
    path = root / "datalist.json"
    path.write_text(json.dumps({"training": items[:48], "validation": items[48:]}))
    return path


def test_measures_the_reference_masks_and_reports_out_of_fold(bench, tmp_path: Path, capsys) -> None:
    datalist = _datalist(tmp_path)
    out = tmp_path / "json" / "measured.json"
    assert bench.main(["--datalist", str(datalist), "--out", str(tmp_path / "tables"), "--bootstrap", "50",
                       "--json", str(out)]) == 0  # fmt: skip
    rows = list(csv.DictReader(open(tmp_path / "tables" / "f0" / "per_nodule.csv")))
    assert len(rows) == 12 and rows[0]["pred_malignancy_prob"] == ""
    # the equivalent diameter of the anisotropic voxels' sphere is near the radius's
    first = json.loads(datalist.read_text())["training"][0]
    assert float(rows[0]["pred_diameter_mm"]) == pytest.approx(first["diameter_mm"] * 0.8, rel=0.15)
    r = json.loads(out.read_text())
    size = r["malignancy"]["diameter (equivalent, reference mask)"]
    assert size["fused_auc"] > 0.85 and size["n_nodules"] == 60 and size["n_folds"] == 5
    # the readers' ceiling: only calcification is rated two ways here, and it is told malignancy's benign half
    ceiling = r["malignancy"]["size + readers' attributes (ceiling)"]
    assert ceiling["readers_attributes"] == ["calcification"] and ceiling["n_nodules"] == 60
    assert ceiling["fused_auc"] >= size["fused_auc"] - 0.02 and ceiling["features"][0] == "log_diameter_mm"
    calc = r["attributes"]["calcification"]
    assert calc["fused"]["exact"] > calc["majority"]["exact"] + 0.15
    assert "texture" not in r["attributes"]  # one rating: nothing to fit
    printed = capsys.readouterr().out
    assert "| size and density (measured) |" in printed and "| calcification |" in printed
    assert "| size + readers' attributes (ceiling) |" in printed


def test_items_without_folds_are_refused(bench, tmp_path: Path) -> None:
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": "b.nii.gz", "case_id": "c"}]}))
    with pytest.raises(ValueError, match=r"datalist\.json: item 'c' has no fold"):
        bench.main(["--datalist", str(datalist), "--out", str(tmp_path / "t")])
    with pytest.raises(FileNotFoundError, match="prepare-vois"):
        bench.main(["--datalist", str(tmp_path / "none.json"), "--out", str(tmp_path / "t")])


def test_readers_ceiling_sees_what_the_ratings_add_to_size(bench, tmp_path: Path) -> None:
    """Malignancy set by the spiculation rating, not by size: the readers' ceiling finds it, size does not."""
    rng = np.random.default_rng(1)
    z, y, x = np.indices((20, 20, 20)) - 9.5
    items = []
    for i in range(50):
        malignant = i % 2 == 0
        radius = rng.uniform(3.0, 7.0)
        mask = (z**2 + y**2 + x**2) <= radius**2
        hu = np.where(mask, 30.0, -850.0) + rng.normal(0, 20, mask.shape)
        image, label = tmp_path / f"img{i}.nii.gz", tmp_path / f"lab{i}.nii.gz"
        nib.save(nib.Nifti1Image(hu.astype(np.int16), np.eye(4)), image)
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)), label)
        spiculation = int(rng.integers(3, 6)) if malignant else int(rng.integers(1, 3))
        items.append({"image": image.name, "label": label.name, "case_id": f"c{i}", "patient_id": f"p{i}",
                      "fold": i % 5, "malignancy": int(malignant), "diameter_mm": 2 * radius,
                      "spiculation": spiculation, "lobulation": 1 + i % 3})  # fmt: skip
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": items}))
    tables = bench.measure_datalist(datalist, tmp_path / "tables")
    ceiling = bench.readers_attributes_ceiling(tables, ["log_diameter_mm"], n_bootstrap=50)
    assert ceiling["readers_attributes"] == ["lobulation", "spiculation"]
    assert ceiling["fused_auc"] > 0.95 and ceiling["reference_diameter_auc"] < 0.8
    assert ceiling["fused_minus_reference_diameter"] > 0.15
    for it in items:
        it.pop("spiculation"), it.pop("lobulation")
    datalist.write_text(json.dumps({"training": items}))
    tables = bench.measure_datalist(datalist, tmp_path / "tables")
    with pytest.raises(ValueError, match="no attribute is rated two ways"):
        bench.readers_attributes_ceiling(tables, ["log_diameter_mm"], n_bootstrap=10)
