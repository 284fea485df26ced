"""The separable isotropic resampling against MONAI's Orientation + Spacing and ResampleToMatch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation, ResampleToMatch, Spacing

from lung_nodule_mtl.transforms.chains import AXIS_LABELS, ORIENTATION
from lung_nodule_mtl.transforms.resample import IsotropicResampler, axis_map


def _affine(steps, origin=(100.0, 120.0, -50.0), perm=(0, 1, 2), rotation=None) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = np.diag(steps)[:, list(perm)]
    if rotation is not None:
        a[:3, :3] = rotation @ a[:3, :3]
    a[:3, 3] = origin
    return a


def _monai(image: MetaTensor, spacing) -> MetaTensor:
    orient = Orientation(axcodes=ORIENTATION, labels=AXIS_LABELS)
    return Spacing(pixdim=spacing, mode="bilinear", padding_mode="border")(orient(image))


def _image(affine: np.ndarray, shape=(40, 34, 18), seed=0) -> MetaTensor:
    data = np.random.default_rng(seed).normal(size=(1, *shape)).astype(np.float32) * 300.0
    return MetaTensor(torch.from_numpy(data), affine=torch.from_numpy(affine))


GRIDS = {
    "LPS anisotropic (DICOM axial)": _affine((-0.7, -0.7, 2.5)),
    "RAS, mixed steps": _affine((0.8, 0.66, 1.25)),
    "axes permuted and flipped": _affine((-0.7, 2.5, -0.9), perm=(0, 2, 1)),
}


@pytest.mark.parametrize("name", list(GRIDS))
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.5, 1.5, 0.8)])
def test_isotropic_equals_monai_orientation_spacing(name, spacing) -> None:
    image = _image(GRIDS[name])
    expected = _monai(image, spacing)
    resampler = IsotropicResampler(spacing, ORIENTATION, AXIS_LABELS)
    got = resampler.to_isotropic(image)
    assert resampler.last_path == "separable"
    assert got.shape == expected.shape
    np.testing.assert_allclose(np.asarray(got.affine), np.asarray(expected.affine), atol=1e-9)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-3)  # values of +-1000: float32 rounding


def test_oblique_input_is_separable_too() -> None:
    # MONAI's Spacing keeps the input's axis directions: the isotropic grid is rotated as the input is
    c, s = np.cos(0.3), np.sin(0.3)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    image = _image(_affine((-0.7, -0.7, 2.5), rotation=rotation))
    resampler = IsotropicResampler((1.0, 1.0, 1.0), ORIENTATION, AXIS_LABELS)
    got = resampler.to_isotropic(image)
    assert resampler.last_path == "separable"
    np.testing.assert_allclose(got.numpy(), _monai(image, (1.0, 1.0, 1.0)).numpy(), atol=1e-3)


def test_fallback_to_monai_when_the_axes_are_not_parallel(monkeypatch) -> None:
    import lung_nodule_mtl.transforms.resample as resample

    image = _image(GRIDS["LPS anisotropic (DICOM axial)"])
    monkeypatch.setattr(resample, "axis_map", lambda *a: None)
    resampler = IsotropicResampler((1.0, 1.0, 1.0), ORIENTATION, AXIS_LABELS)
    got = resampler.to_isotropic(image)
    assert resampler.last_path == "monai"
    np.testing.assert_allclose(got.numpy(), _monai(image, (1.0, 1.0, 1.0)).numpy(), atol=1e-3)
    shape, iso_affine = resampler.target(image)
    labels = resampler.labels_to(_blobs(shape), iso_affine, image)
    assert labels.shape == tuple(image.shape[1:]) and labels.max() == 4
    rotated = np.eye(4)
    rotated[:2, :2] = [[0.8, -0.6], [0.6, 0.8]]
    assert axis_map(np.eye(4), rotated) is None  # the real function: a rotation between the grids


def _blobs(shape, seed=1) -> np.ndarray:
    """A label map of a few boxes (labels 1..4) on the isotropic grid."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint8)
    for k in range(1, 5):
        lo = [int(rng.integers(0, n - 6)) for n in shape]
        labels[tuple(slice(a, a + 6) for a in lo)] = k
    return labels


@pytest.mark.parametrize("affine", [_affine((0.8, 0.6, 1.2)), _affine((-0.8, 1.2, -0.6), perm=(0, 2, 1))])
def test_labels_back_equal_resample_to_match(affine) -> None:
    # steps of 0.6, 0.8 and 1.2 mm from a 1 mm grid never fall half-way: nearest neighbour has one answer
    image = _image(affine)
    resampler = IsotropicResampler((1.0, 1.0, 1.0), ORIENTATION, AXIS_LABELS)
    shape, iso_affine = resampler.target(image)
    labels = _blobs(shape)
    src = MetaTensor(torch.from_numpy(labels[None].astype(np.float32)), affine=torch.from_numpy(iso_affine))
    expected = ResampleToMatch(mode="nearest", padding_mode="zeros", dtype=torch.float32)(src, img_dst=image)
    got = resampler.labels_to(labels, iso_affine, image)
    assert got.shape == tuple(image.shape[1:]) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.rint(expected[0].numpy()).astype(np.uint8))
    assert set(np.unique(got)) == set(range(5))


def test_labels_back_at_half_voxel_ties_take_a_nearest_voxel() -> None:
    # 2.5 mm slices from a 1 mm grid: every other slice is exactly half-way between two isotropic slices
    image = _image(_affine((-0.7, -0.7, 2.5)))
    resampler = IsotropicResampler((1.0, 1.0, 1.0), ORIENTATION, AXIS_LABELS)
    shape, iso_affine = resampler.target(image)
    ramp = np.broadcast_to(np.arange(1, shape[2] + 1, dtype=np.int32)[None, None], shape)
    got = resampler.labels_to(ramp, iso_affine, image)[0, 0].astype(np.float64) - 1.0
    coords = axis_map(iso_affine, np.asarray(image.affine)).coords(2, image.shape[3])
    assert np.all(np.abs(got - coords) <= 0.5 + 1e-9)
    assert np.any(np.isclose(np.abs(got - coords), 0.5))  # ties exist and took one of their two neighbours


def test_labels_outside_the_isotropic_grid_are_zero() -> None:
    image = _image(GRIDS["RAS, mixed steps"])
    resampler = IsotropicResampler((1.0, 1.0, 1.0), ORIENTATION, AXIS_LABELS)
    shape, iso_affine = resampler.target(image)
    shifted = iso_affine.copy()
    shifted[0, 3] += 10.0  # the label grid covers only x >= origin + 10 mm of the image
    got = resampler.labels_to(np.ones(shape, dtype=np.uint8), shifted, image)
    assert not got[:5].any() and got[-5:].all()
