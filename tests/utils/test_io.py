"""Atomic writes: the destination appears whole or not at all."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from lung_nodule_mtl.utils.io import atomic_write, atomic_write_json, atomic_write_nifti


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
