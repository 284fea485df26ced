"""The one CT storage rule and the one NIfTI image builder (what the LIDC-IDRI, LUNA16 and growth converters and
``predict`` write)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from lung_nodule_mtl.io import ct_storage_dtype
from lung_nodule_mtl.utils.io import NiftiGeometry, atomic_write_nifti, nifti_image


def test_ct_is_stored_as_int16_only_when_that_is_lossless() -> None:
    hu = np.full((4, 4, 40), -1000.0, dtype=np.float32)
    hu[1, 1, 5] = 3071.0
    assert ct_storage_dtype(hu) is np.int16
    assert ct_storage_dtype(hu.astype(np.int32)) is np.int16
    wide = hu.copy()
    wide[0, 0, 0] = -40000.0  # integers beyond int16
    assert ct_storage_dtype(wide) is np.int32
    fractional = hu.copy()
    fractional[3, 3, 39] = 12.5  # in the last slab of 16 slices
    assert ct_storage_dtype(fractional) is np.float32


def test_nifti_image_gets_scanner_codes_or_keeps_the_inputs_header(tmp_path) -> None:
    affine = np.array([[-0.7, 0, 0, 10.0], [0, -0.7, 0, 20.0], [0, 0, 2.5, -300.0], [0, 0, 0, 1]])
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    img = nifti_image(array, affine, np.int16)
    assert img.get_data_dtype() == np.int16
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.get_sform(), affine)

    sform = affine.copy()
    sform[0, 3] = 11.0  # an input whose sform and qform disagree keeps both as they were
    geometry = NiftiGeometry(sform=sform, sform_code=2, qform=affine, qform_code=1, xyzt_units=("mm", "sec"))
    path = atomic_write_nifti(array, affine, tmp_path / "x.nii.gz", np.int16, geometry)
    back = nib.load(path)
    assert int(back.header["sform_code"]) == 2 and int(back.header["qform_code"]) == 1
    np.testing.assert_allclose(back.get_sform(), sform, atol=1e-5)
    np.testing.assert_allclose(back.get_qform(), affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(back.dataobj), array.astype(np.int16))
    with pytest.raises(ValueError, match=r"\.nii"):
        atomic_write_nifti(array, affine, tmp_path / "x.mha")
