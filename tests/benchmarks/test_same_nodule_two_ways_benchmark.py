"""benchmarks/same_nodule_two_ways.py on a tiny scan with one pasted nodule: the nodules of both kinds of sets found
and matched to their VOI rows, the reference mask read from the label map, the released weights run at the given
centre and the summary written."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS-stored NIfTI as insert-nodules writes: voxel (i, j, k) -> (-i, -j, k)


@pytest.fixture
def bench(load_benchmark) -> Iterator[ModuleType]:
    with load_benchmark("same_nodule_two_ways") as module:
        yield module


def _write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _scan_set(root: Path) -> tuple[Path, Path]:
    """One 96 x 96 x 64 mm "chest": lung at -850 HU inside soft tissue, a 12 mm solid nodule (label 2) and a second
    pasted nodule (label 1) whose VOI is not in the table; the VOI table of two VOIs."""
    rng = np.random.default_rng(0)
    shape = (96, 96, 64)
    g = np.indices(shape).astype(np.float64)
    hu = np.full(shape, 40.0)
    hu[8:-8, 8:-8, 4:-4] = -850.0
    labels = np.zeros(shape, np.uint8)
    centre = np.array([40.0, 50.0, 32.0])
    nodule = ((g - centre[:, None, None, None]) ** 2).sum(0) <= 6.0**2
    hu[nodule], labels[nodule] = 30.0, 2
    other = ((g - np.array([70.0, 30.0, 30.0])[:, None, None, None]) ** 2).sum(0) <= 3.0**2
    hu[other], labels[other] = 30.0, 1
    hu = ndimage.gaussian_filter(hu, 1.0) + rng.normal(0, 15, shape)  # partial volume: no real edge is sharp
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    nib.save(nib.Nifti1Image(hu.astype(np.int16), AFFINE), root / "images" / "SYN-0001.nii.gz")
    nib.save(nib.Nifti1Image(labels, AFFINE), root / "labels" / "SYN-0001.nii.gz")
    ras = (AFFINE @ np.r_[centre, 1.0])[:3].tolist()
    ras_other = (AFFINE @ np.r_[70.0, 30.0, 30.0, 1.0])[:3].tolist()
    _write_csv(
        root / "nodules.csv",
        [
            {"seriesuid": "SYN-0001", "source": "host", "center_ras": json.dumps([0.0, 0.0, 0.0]),
             "diameter_mm": 5.0, "from_case": ""},
            {"seriesuid": "SYN-0001", "source": "inserted", "center_ras": json.dumps(ras), "diameter_mm": 12.0,
             "from_case": "P1_R_1"},
            {"seriesuid": "SYN-0001", "source": "inserted", "center_ras": json.dumps(ras_other), "diameter_mm": 6.0,
             "from_case": "P9_R_1"},
        ],
    )  # fmt: skip
    table = _write_csv(
        root.parent / "per_nodule.csv",
        [
            {"case_id": "P1_R_1", "patient_id": "P1", "dice": 0.8, "diameter_mm": 12.0},
            {"case_id": "P2_R_1", "patient_id": "P2", "dice": 0.6, "diameter_mm": 20.0},
            {"case_id": "P2_R_2", "patient_id": "P2", "dice": 0.4, "diameter_mm": 8.0},
        ],
    )
    return root, table


def test_nodules_matched_to_their_vois(bench: ModuleType, tmp_path: Path) -> None:
    folder, table = _scan_set(tmp_path / "set")
    voi = bench._rows(table)
    nodules = bench.nodules_of_set(folder, voi)
    assert [n["voi"]["case_id"] for n in nodules] == ["P1_R_1"]  # the host nodule and the one without a VOI row out
    labels = np.asarray(nib.load(folder / "labels" / "SYN-0001.nii.gz").dataobj)
    ref = bench.reference_mask(labels, nodules[0]["centre"], AFFINE)
    assert ref is not None and np.array_equal(ref, labels == 2)
    # a prepare-lidc output: its nodules matched to the VOI of the same patient with the nearest diameter
    lidc = tmp_path / "lidc"
    lidc.mkdir()
    _write_csv(
        lidc / "nodules.csv",
        [
            {"case_id": "P2_1", "scan_id": "P2", "patient_id": "P2", "in_datalist": "True",
             "label": "labels/P2_1.nii.gz", "center_ras_x": 1.0, "center_ras_y": 2.0, "center_ras_z": 3.0,
             "diameter_mm": 9.0},
            {"case_id": "P2_2", "scan_id": "P2", "patient_id": "P2", "in_datalist": "False", "label": "",
             "center_ras_x": 0.0, "center_ras_y": 0.0, "center_ras_z": 0.0, "diameter_mm": 19.0},
        ],
    )  # fmt: skip
    matched = bench.nodules_of_set(lidc, voi)
    assert [(n["case"], n["voi"]["case_id"], n["centre"]) for n in matched] == [("P2", "P2_R_2", [1.0, 2.0, 3.0])]


def test_released_weights_at_the_given_centre(bench: ModuleType, tmp_path: Path) -> None:
    folder, table = _scan_set(tmp_path / "set")
    out = tmp_path / "two_ways.json"
    assert bench.main(["--set", str(folder), "--voi-table", str(table), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["voi"] == "P1_R_1" and row["voi_dice"] == 0.8
    assert row["scan_dice"] > 0.9  # a solid 12 mm sphere alone in the lung: the released weights segment it
    summary = result["summary"]
    assert summary["n"] == 1 and summary["scan_minus_voi"] == pytest.approx(row["scan_dice"] - 0.8, abs=1e-3)
    assert summary["per_set"] == {"set": {"n": 1, "voi_dice": 0.8, "scan_dice": row["scan_dice"]}}
    with pytest.raises(SystemExit):
        bench.main(["--set", str(folder), "--voi-table", str(table), "--set-config", "no_equals_sign"])
