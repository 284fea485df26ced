"""Atomic writes: the destination appears whole or not at all."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from lung_nodule_mtl.utils.io import atomic_write, atomic_write_json, atomic_write_nifti, json_safe, reusable_record


def test_failed_write_keeps_old_file(tmp_path) -> None:
    dest = tmp_path / "report.json"
    atomic_write_json({"version": 1}, dest)
    with pytest.raises(RuntimeError), atomic_write(dest) as f:
        f.write('{"version": 2, "trunc')
        raise RuntimeError("interrupted")
    assert dest.read_text().startswith('{\n  "version": 1')
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_roundtrip(tmp_path, suffix: str) -> None:
    affine = np.array([[-0.7, 0, 0, 10.0], [0, -0.7, 0, 20.0], [0, 0, 2.5, -100.0], [0, 0, 0, 1]])
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 1000
    path = atomic_write_nifti(data, affine, tmp_path / f"ct{suffix}", dtype=np.int16)
    img = nib.load(path)
    assert img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(img.dataobj), data)
    np.testing.assert_allclose(img.affine, affine)
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert len(list(tmp_path.iterdir())) == 1


def test_ill_arg(tmp_path) -> None:
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", mode="a"):
            pass
    with pytest.raises(ValueError, match=r"\.nii"):
        atomic_write_nifti(np.zeros((2, 2, 2)), np.eye(4), tmp_path / "x.png")


def test_reusable_record_needs_the_same_key_and_every_file(tmp_path) -> None:
    record_path = tmp_path / "records" / "scan1.json"
    key = {"spacing": (0.7, 0.7, 1.25), "threshold": float("nan"), "n": np.int64(3)}

    def files(r: dict) -> list[str]:
        return [r["image"], *r["labels"]]

    assert reusable_record(record_path, "options", key, files, tmp_path) is None  # no record yet
    written = {"options": json_safe(key), "image": "images/a.nii.gz", "labels": ["labels/a_1.nii.gz"]}
    atomic_write_json(written, record_path)
    assert reusable_record(record_path, "options", key, files, tmp_path) is None  # its files are not there
    for rel in ("images/a.nii.gz", "labels/a_1.nii.gz"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    record = reusable_record(record_path, "options", key, files, tmp_path)
    assert record is not None and record["image"] == "images/a.nii.gz"  # tuples, NaN and NumPy ints as JSON has them
    assert reusable_record(record_path, "options", {**key, "n": 4}, files, tmp_path) is None  # other options
    assert reusable_record(record_path, "fingerprint", key, files, tmp_path) is None  # another field
    assert reusable_record(record_path, "options", key, lambda r: [r["missing"]], tmp_path) is None  # other layout
    (tmp_path / "labels/a_1.nii.gz").unlink()
    assert reusable_record(record_path, "options", key, files, tmp_path) is None
    record_path.write_text("{ half written")
    assert reusable_record(record_path, "options", key, files, tmp_path) is None
