"""Whole-scan datalists: per-nodule items grouped by scan, masks merged, hosts, the epoch's mix."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from torch.utils.data import Dataset

from lung_nodule_mtl.data.scans import host_items, join_lists, mixed_dataset, scan_items


def _mask(path: Path, box: tuple[slice, slice, slice], affine: np.ndarray | None = None) -> str:
    m = np.zeros((10, 10, 10), dtype=np.uint8)
    m[box] = 1
    nib.save(nib.Nifti1Image(m, np.eye(4) if affine is None else affine), path)
    return str(path)


def test_nodules_of_one_scan_become_one_item_with_the_union_of_their_masks(tmp_path: Path) -> None:
    a = _mask(tmp_path / "a.nii.gz", (slice(1, 3), slice(1, 3), slice(1, 3)))
    b = _mask(tmp_path / "b.nii.gz", (slice(6, 8), slice(6, 8), slice(6, 8)))
    items = [
        {"image": "ct1.nii.gz", "label": a, "center_world_mm": [1.5, 1.5, 1.5], "patient_id": "P", "malignancy": 1},
        {"image": "ct1.nii.gz", "label": b, "center_world_mm": [6.5, 6.5, 6.5], "patient_id": "P", "texture": 3},
        {"image": "ct2.nii.gz", "label": a, "center_world_mm": [1.5, 1.5, 1.5], "patient_id": "Q", "fold": 2},
    ]
    scans = scan_items(items, label_dir=tmp_path / "merged")
    assert [s["image"] for s in scans] == ["ct1.nii.gz", "ct2.nii.gz"]
    first, second = scans
    assert len(first["nodules"]) == 2 and first["nodules"][0]["malignancy"] == 1 and first["nodules"][1]["texture"] == 3
    merged = np.asarray(nib.load(first["label"]).dataobj)
    assert merged.sum() == 16 and merged[1, 1, 1] == 1 and merged[7, 7, 7] == 1  # both nodules
    assert second["label"] == a and second["fold"] == 2  # one mask: used as it is
    with pytest.raises(ValueError, match="label_dir"):
        scan_items(items[:2])
    other = _mask(tmp_path / "c.nii.gz", (slice(0, 1),) * 3, affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="grid differs"):
        scan_items([items[0], {**items[1], "label": other}], label_dir=tmp_path / "merged2")


def test_host_items_and_list_joins(tmp_path: Path) -> None:
    ct = tmp_path / "host.nii.gz"
    ct.write_bytes(b"")
    [host] = host_items([ct])
    assert host["nodules"] == [] and host["case_id"] == "host" and "label" not in host
    with pytest.raises(FileNotFoundError, match="missing"):
        host_items([tmp_path / "missing.nii.gz"])
    assert join_lists({"training": [1, 2], "validation": [3]}, ["training", "validation"]) == [1, 2, 3]
    with pytest.raises(ValueError, match="among"):
        join_lists({"training": []}, ["test"])


class _Items(Dataset):
    def __init__(self, name: str, n: int) -> None:
        self.name, self.n = name, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.name, i


def test_an_epoch_mixes_every_crop_once_with_the_windows_asked_for() -> None:
    epoch = mixed_dataset(_Items("crop", 5), [(_Items("scan", 3), 7), (_Items("voi", 4), 0)])
    drawn = [epoch[i] for i in range(len(epoch))]
    assert len(epoch) == 12
    assert sorted(i for name, i in drawn if name == "crop") == [0, 1, 2, 3, 4]
    assert [i for name, i in drawn if name == "scan"] == [0, 1, 2, 0, 1, 2, 0]  # the scans cycle
    with pytest.raises(ValueError, match="non-empty"):
        mixed_dataset(_Items("crop", 5), [(_Items("scan", 0), 3)])


def test_negatives_table_joins_the_scans_by_case_id(tmp_path: Path) -> None:
    import json

    from lung_nodule_mtl.data.scans import read_negatives, read_scan_splits

    a = _mask(tmp_path / "a.nii.gz", (slice(1, 3), slice(1, 3), slice(1, 3)))
    for name in ("ct1.nii.gz", "ct2.nii.gz", "host.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    node = {"label": a, "center_world_mm": [1.5, 1.5, 1.5], "diameter_mm": 2.0}
    datalist = tmp_path / "scans.json"
    datalist.write_text(json.dumps({
        "training": [{"image": "ct1.nii.gz", "seriesuid": "S1", "patient_id": "P", **node}],
        "validation": [{"image": "ct2.nii.gz", "seriesuid": "S2", "patient_id": "Q", **node}],
    }))  # fmt: skip
    # LUNA16 candidates (LPS): class 1 rows are nodules, not negatives; a case of no scan here is ignored
    table = tmp_path / "candidates.csv"
    table.write_text(
        "seriesuid,coordX,coordY,coordZ,class\nS1,10,20,30,0\nS1,1,1,1,1\nS1,-5,0,2,0\nhost,4,4,4,0\nZ,0,0,0,0\n"
    )
    assert read_negatives(table) == {
        "S1": [[-10.0, -20.0, 30.0], [5.0, 0.0, 2.0]], "host": [[-4.0, -4.0, 4.0]], "Z": [[0.0, 0.0, 0.0]]
    }  # fmt: skip
    splits = read_scan_splits(datalist, hosts=[str(tmp_path / "host.nii.gz")], negatives=table)
    train = {s["case_id"]: s for s in splits["training"]}
    assert train["S1"]["negatives"] == [[-10.0, -20.0, 30.0], [5.0, 0.0, 2.0]]
    assert train["host"]["negatives"] == [[-4.0, -4.0, 4.0]] and train["host"]["nodules"] == []
    assert "negatives" not in splits["validation"][0]  # S2: none in the table
    assert "negatives" not in read_scan_splits(datalist)["training"][0]  # without a table: as before

    wrong = tmp_path / "other.csv"
    wrong.write_text("seriesuid,coordX,coordY,coordZ,class\nX1,0,0,0,0\nX2,0,0,0,0\n")
    with pytest.raises(ValueError, match=r"other\.csv: none of its 2 cases"):
        read_scan_splits(datalist, negatives=wrong)
