"""The HU lung mask and its bounding box (:mod:`lung_nodule_mtl.transforms.lung`), on a tiny chest phantom.

The phantom (64 x 64 x 32 voxels of 2 x 2 x 4 mm, 128 x 128 x 128 mm): air (-1000 HU) around a soft-tissue
body (40 HU) that runs through every slice, two lungs (-850 HU, about 250 ml each) joined by bronchi to a
trachea of air that leaves through the cranial face. Every boundary lies on an even index, so the default
2x coarser morphology grid sees the same shapes as the full grid.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lung_nodule_mtl.transforms.lung import DEFAULT_LUNG_THRESHOLD_HU, bounding_box, lung_mask

AIR, TISSUE, LUNG = -1000.0, 40.0, -850.0
SHAPE = (64, 64, 32)
SPACING = (2.0, 2.0, 4.0)
BODY = (slice(6, 58), slice(8, 56), slice(None))
LEFT = (slice(10, 28), slice(14, 50), slice(4, 28))
RIGHT = (slice(36, 54), slice(14, 50), slice(4, 28))
BRONCHI = (slice(28, 36), slice(30, 34), slice(20, 24))
TRACHEA = (slice(30, 34), slice(30, 34), slice(20, 32))  # reaches the cranial face (k = 31)
NO_MORPHOLOGY = {"closing_mm": 0.0, "margin_mm": 0.0}


def phantom() -> np.ndarray:
    ct = np.full(SHAPE, AIR)
    ct[BODY] = TISSUE
    ct[LEFT] = LUNG
    ct[RIGHT] = LUNG
    ct[BRONCHI] = -900.0
    ct[TRACHEA] = AIR
    return ct


def airways() -> np.ndarray:
    """Lungs, bronchi and trachea: every voxel below the threshold inside the body."""
    inside = np.zeros(SHAPE, dtype=bool)
    for box in (LEFT, RIGHT, BRONCHI, TRACHEA):
        inside[box] = True
    return inside


def outside_air() -> np.ndarray:
    out = np.ones(SHAPE, dtype=bool)
    out[BODY] = False
    return out


# ------------------------------------------------------------------------------------------------ the components


@pytest.mark.parametrize("downsample", [1, 2])
def test_mask_is_the_lungs_and_airways_not_the_air_around_the_body(downsample: int) -> None:
    ct = phantom()
    mask = lung_mask(ct, SPACING, downsample=downsample, **NO_MORPHOLOGY)
    assert mask is not None and mask.dtype == np.bool_ and mask.shape == SHAPE
    assert mask.flags.c_contiguous
    # exactly the lungs and the airways (the trachea touches the cranial face: kept), none of the outside air,
    # although that air is the largest component below the threshold
    assert outside_air().sum() > airways().sum()
    np.testing.assert_array_equal(mask, airways())


@pytest.mark.parametrize("axis", [0, 1])
def test_air_touching_a_single_in_plane_face_is_outside(axis: int) -> None:
    """A body filling the field of view but for a pocket of air against one face (a patient wider than the FOV)."""
    ct = np.where(airways(), phantom(), TISSUE)
    pocket = [slice(12, 52), slice(12, 52), slice(None)]
    pocket[axis] = slice(0, 6)  # 12 mm of air in front of one face only, all slices: > 100 ml
    ct[tuple(pocket)] = AIR
    faces = [ct.take(0, axis=a) == AIR for a in (0, 1)] + [ct.take(-1, axis=a) == AIR for a in (0, 1)]
    assert [bool(f.any()) for f in faces] == [axis == 0, axis == 1, False, False]
    mask = lung_mask(ct, SPACING, **NO_MORPHOLOGY)
    assert mask is not None
    np.testing.assert_array_equal(mask, airways())


def test_default_mask_holds_the_lungs_with_a_margin_inside_the_body() -> None:
    mask = lung_mask(phantom(), SPACING)
    assert mask is not None
    assert mask[airways()].all()
    assert not mask[outside_air()].any()  # the body wall (>= 8 mm) is thicker than the 5 mm margin
    # soft tissue far from the lungs (a 10-voxel band along the body's posterior wall) stays out
    assert not mask[20:50, 8:10, :].any() and not mask[6:8].any()
    # more than the lungs (margin), but not much more: within the margin + closing of the lungs
    assert mask.sum() > airways().sum()
    reach = ndimage.distance_transform_edt(~airways(), sampling=SPACING)
    assert reach[mask].max() <= 5.0 + 8.0 + 2 * max(SPACING)


def test_tissue_inside_the_lung_is_filled_slice_by_slice() -> None:
    ct = phantom()
    ct[18:20, 30:32, 6:26] = TISSUE  # a vessel along the lung, a hole in every axial slice
    ct[20:24, 20:24, 12:16] = TISSUE  # a nodule in the middle of the left lung
    mask = lung_mask(ct, SPACING, **NO_MORPHOLOGY)
    assert mask is not None
    assert mask[18:20, 30:32, 6:26].all() and mask[20:24, 20:24, 12:16].all()
    np.testing.assert_array_equal(mask, airways())


def test_closing_brings_a_juxtapleural_nodule_back_in() -> None:
    ct = phantom()
    nodule = (slice(10, 18), slice(28, 34), slice(14, 18))  # 16 x 12 x 16 mm, against the lateral wall
    ct[nodule] = TISSUE
    lungs = airways()
    lungs[nodule] = False
    opts = {"downsample": 1}
    without = lung_mask(ct, SPACING, closing_mm=0.0, margin_mm=0.0, **opts)
    assert without is not None and not without[nodule].any()  # the threshold cuts it out of the lung
    closed = lung_mask(ct, SPACING, closing_mm=8.0, margin_mm=0.0, **opts)
    assert closed is not None
    # a ball of 8 mm cannot enter deeper than ~2 mm into a 12 mm wide dent: all but its mouth comes back
    assert closed[12:18, 28:34, 14:18].all()
    assert closed[lungs].all() and not closed[outside_air()].any()  # a closing only adds
    margin_only = lung_mask(ct, SPACING, closing_mm=0.0, margin_mm=5.0, **opts)
    assert margin_only is not None and not margin_only[nodule].all()  # the margin alone misses its core
    both = lung_mask(ct, SPACING, closing_mm=8.0, margin_mm=5.0, **opts)
    assert both is not None and both[nodule].all() and not both[outside_air()].any()
    # on the default 2x coarser grid the closing still brings most of it back
    coarse = lung_mask(ct, SPACING, closing_mm=8.0, margin_mm=0.0)
    assert coarse is not None and coarse[14:18, 28:34, 14:18].all()


def test_margin_is_a_dilation_in_millimetres_with_anisotropic_voxels() -> None:
    ct = phantom()
    mask = lung_mask(ct, SPACING, closing_mm=0.0, margin_mm=8.0, downsample=1)
    assert mask is not None
    i, j, k = 19, 20, 10  # a voxel of the left lung, away from the airways
    # 8 mm = 4 voxels along i and j (2 mm), 2 voxels along k (4 mm)
    assert mask[10 - 4, j, k] and not mask[10 - 5, j, k]
    assert mask[i, 14 - 4, k] and not mask[i, 14 - 5, k]
    assert mask[i, j, 4 - 2] and not mask[i, j, 4 - 3]
    # Euclidean, not a box: off the lung's corner by (3, 2) voxels = 7.2 mm in, (3, 3) = 8.5 mm out
    assert mask[10 - 3, 14 - 2, k] and not mask[10 - 3, 14 - 3, k]
    # the whole mask is the lungs grown by exactly 8 mm
    expected = ndimage.distance_transform_edt(~airways(), sampling=SPACING) <= 8.0
    np.testing.assert_array_equal(mask, expected)


def test_coarse_grid_is_upsampled_to_the_input_shape() -> None:
    ct = phantom()[:63, :61, :31]  # odd sizes: the coarse grid's last cells are half outside
    for step in (1, 2):
        mask = lung_mask(ct, SPACING, downsample=step)
        assert mask is not None and mask.shape == ct.shape
        assert mask[LEFT].all() and mask[RIGHT].all() and not mask[:6].any()
    # 3x: 6 x 6 x 12 mm cells sampled at their first voxel; a margin over a cell's diagonal covers the lungs
    mask = lung_mask(ct, SPACING, downsample=3, margin_mm=15.0)
    assert mask is not None and mask.shape == ct.shape
    assert mask[LEFT].all() and mask[RIGHT].all()


def test_small_and_relatively_small_components_are_dropped() -> None:
    ct = np.full(SHAPE, AIR)
    ct[BODY] = TISSUE
    ct[LEFT] = LUNG  # 18 x 36 x 24 voxels of 16 mm^3: 249 ml
    small = (slice(40, 50), slice(14, 24), slice(4, 12))  # 800 voxels = 12.8 ml: 5 % of the lung
    large = (slice(40, 50), slice(30, 48), slice(4, 20))  # 2880 voxels = 46 ml: 18 % of the lung
    ct[small] = LUNG
    ct[large] = LUNG
    mask = lung_mask(ct, SPACING, min_component_ml=1.0, **NO_MORPHOLOGY)
    assert mask is not None
    assert mask[LEFT].all() and mask[large].all()
    assert not mask[small].any()  # above min_component_ml but under 10 % of the largest
    stricter = lung_mask(ct, SPACING, min_component_ml=50.0, **NO_MORPHOLOGY)
    assert stricter is not None and stricter[LEFT].all() and not stricter[large].any()


def test_threshold_is_a_parameter() -> None:
    ct = phantom()
    ct[LEFT] = -300.0  # dense (consolidated) lung: above the default -320 HU
    default = lung_mask(ct, SPACING, **NO_MORPHOLOGY)
    assert DEFAULT_LUNG_THRESHOLD_HU == -320.0
    assert default is not None and not default[LEFT].any() and default[RIGHT].all()
    raised = lung_mask(ct, SPACING, threshold_hu=-200.0, **NO_MORPHOLOGY)
    assert raised is not None and raised[LEFT].all() and raised[RIGHT].all()


def test_integer_input_gives_the_same_mask() -> None:
    ct = phantom()
    np.testing.assert_array_equal(lung_mask(ct.astype(np.int16), SPACING), lung_mask(ct, SPACING))


# ------------------------------------------------------------------------------------------------ no lung: None


def test_no_lung_gives_none() -> None:
    solid = np.full(SHAPE, TISSUE)
    assert lung_mask(solid, SPACING) is None  # nothing below the threshold
    body = phantom()
    body[airways()] = TISSUE
    assert lung_mask(body, SPACING) is None  # only the air around the body
    tiny = body.copy()
    tiny[20:24, 20:24, 10:14] = LUNG  # a 1 ml air pocket: under min_component_ml
    assert lung_mask(tiny, SPACING) is None
    mask = lung_mask(tiny, SPACING, min_component_ml=0.5)
    assert mask is not None and mask[20:24, 20:24, 10:14].all()


def test_no_lung_gives_none_whatever_the_minimum_size() -> None:
    body = phantom()
    body[airways()] = TISSUE
    mask = lung_mask(body, SPACING, min_component_ml=0.0)
    assert mask is None


@pytest.mark.parametrize(
    ("image", "spacing", "downsample", "match"),
    [
        (np.zeros((8, 8)), (1.0, 1.0, 1.0), 2, "3D"),
        (np.zeros((8, 8, 8)), (1.0, 1.0), 2, "spacing_mm"),
        (np.zeros((8, 8, 8)), (1.0, 0.0, 1.0), 2, "spacing_mm"),
        (np.zeros((8, 8, 8)), (1.0, float("nan"), 1.0), 2, "spacing_mm"),
        (np.zeros((8, 8, 8)), (1.0, -1.0, 1.0), 2, "spacing_mm"),
        (np.zeros((8, 8, 8)), (1.0, 1.0, 1.0), 0, "downsample"),
    ],
)
def test_bad_arguments_raise(image: np.ndarray, spacing: tuple[float, ...], downsample: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lung_mask(image, spacing, downsample=downsample)


# ------------------------------------------------------------------------------------------------ bounding_box


def test_bounding_box_exact_grown_and_clipped() -> None:
    mask = np.zeros((10, 12, 14), dtype=bool)
    mask[2, 3, 4] = True
    mask[5, 9, 6] = True
    assert bounding_box(mask) == (slice(2, 6), slice(3, 10), slice(4, 7))
    assert bounding_box(mask, margin=2) == (slice(0, 8), slice(1, 12), slice(2, 9))
    assert bounding_box(mask, margin=5) == (slice(0, 10), slice(0, 12), slice(0, 12))  # clipped to the shape
    box = bounding_box(mask)
    assert box is not None and mask[box].sum() == mask.sum()


def test_bounding_box_of_an_empty_mask_is_none() -> None:
    assert bounding_box(np.zeros((4, 5, 6), dtype=bool)) is None
    assert bounding_box(np.zeros((4, 5, 6), dtype=bool), margin=3) is None


def test_bounding_box_of_the_lung_mask() -> None:
    mask = lung_mask(phantom(), SPACING, **NO_MORPHOLOGY)
    assert mask is not None
    # from the left lung's lateral edge to the right lung's, the lungs' j extent, the lungs' base to the top
    assert bounding_box(mask) == (slice(10, 54), slice(14, 50), slice(4, 32))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_morphology_in_the_mask_box_equals_the_whole_array(seed: int) -> None:
    """Dilation and erosion compute distances only in the mask's (grown) box: exactly the whole array's answer,
    also for masks touching the array's faces (where no background lies beyond) and anisotropic voxels."""
    from lung_nodule_mtl.transforms.lung import _dilate, _erode

    rng = np.random.default_rng(seed)
    spacing = [2.0, 1.5, 3.0]
    mask = np.zeros((40, 36, 30), dtype=bool)
    mask[8:30, 5:20, 4:22] = rng.random((22, 15, 18)) < 0.7  # ragged blob with holes
    if seed == 1:
        mask[0:6, 0:4, :] = True  # touching four faces
    if seed == 2:
        mask[:, :, :] = rng.random(mask.shape) < 0.95  # nearly everything: background scattered everywhere
    for radius in (2.0, 4.0, 9.0):
        full_dilated = ndimage.distance_transform_edt(~mask, sampling=spacing) <= radius
        full_eroded = ndimage.distance_transform_edt(mask, sampling=spacing) > radius
        np.testing.assert_array_equal(_dilate(mask, radius, spacing), full_dilated)
        np.testing.assert_array_equal(_erode(mask, radius, spacing), full_eroded)
        assert full_dilated.sum() > mask.sum() > full_eroded.sum()  # the radii do something
