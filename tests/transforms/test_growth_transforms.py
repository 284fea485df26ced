"""The growth-pair chain (:func:`lung_nodule_mtl.transforms.growth.get_growth_transforms`) on tiny NIfTI pairs.

The pairs are written here: 24^3 voxels of 1 mm, RAS, random HU (no symmetry, so any flip or rotation shows)
and random 0/1 masks; the crop is 16^3 around voxel (12, 12, 12), i.e. voxels 4 .. 19 of each axis. One test
runs an item of the synthetic growth generator (:mod:`lung_nodule_mtl.data.synthetic.growth`) through it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from lung_nodule_mtl.constants import AIR_HU, DEFAULT_WINDOWS, GrowthBatchKeys, GrowthKeys, Keys
from lung_nodule_mtl.data.synthetic import generate_growth_case
from lung_nodule_mtl.data.synthetic.growth import pair_item, write_pair
from lung_nodule_mtl.transforms import get_val_transforms
from lung_nodule_mtl.transforms.growth import (
    FOLLOWUP_IMAGE_KEY,
    FOLLOWUP_LABEL_KEY,
    GROWTH_IMAGE_KEYS,
    GROWTH_MASK_KEYS,
    get_growth_transforms,
)

N = 24
ROI = 16
ORIGIN = np.array([-10.0, -20.0, -30.0])
CENTRE = (ORIGIN + 12.0).tolist()  # voxel (12, 12, 12)
CROP = (slice(4, 20),) * 3
SPATIAL = ("image", "followup_image", "label", "followup_label")
OUTPUT_KEYS = {"image", "label", "followup_image", "followup_label", "interval_days", "case_id", "patient_id"}


def ras_affine(spacing: float = 1.0, origin: np.ndarray = ORIGIN) -> np.ndarray:
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def save(path: Path, array: np.ndarray, affine: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(array, affine), path)
    return str(path)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("growth_pairs")
    rng = np.random.default_rng(0)
    arrays = {
        "base": rng.integers(-1100, 500, (N, N, N)).astype(np.int16),
        "base_mask": (rng.random((N, N, N)) < 0.3).astype(np.uint8),
        "follow": rng.integers(-1100, 500, (N, N, N)).astype(np.int16),
        "follow_mask": (rng.random((N, N, N)) < 0.3).astype(np.uint8),
    }
    paths = {name: save(folder / f"{name}.nii.gz", a, ras_affine()) for name, a in arrays.items()}
    return {"folder": folder, "arrays": arrays, "paths": paths}


def item(volumes: dict[str, Any], followup: str = "follow", **extra: Any) -> dict[str, Any]:
    p = volumes["paths"]
    return {
        Keys.IMAGE.value: p["base"],
        Keys.LABEL.value: p["base_mask"],
        GrowthKeys.BASELINE.value: p["base"],
        GrowthKeys.BASELINE_MASK.value: p["base_mask"],
        GrowthKeys.FOLLOWUP.value: p[followup],
        GrowthKeys.FOLLOWUP_MASK.value: p[f"{followup}_mask"],
        Keys.CENTER_WORLD.value: CENTRE,
        GrowthKeys.INTERVAL_DAYS.value: 365,
        Keys.CASE_ID.value: "case_1",
        Keys.PATIENT_ID.value: "patient_1",
        GrowthKeys.VDT_DAYS.value: None,
        GrowthKeys.GROWTH_MODEL.value: "malignant_solid",
        **extra,
    }


def windowed(hu: np.ndarray) -> np.ndarray:
    """The default windows stacked as channels (lung, mediastinal, wide), as the training chain makes them."""
    return np.stack([np.clip((hu - lo) / (hi - lo), 0.0, 1.0) for lo, hi in DEFAULT_WINDOWS.values()])


def plain(x: Any) -> torch.Tensor:
    return torch.as_tensor(x).clone()


Spatial = Callable[[torch.Tensor], torch.Tensor]


def candidates() -> list[tuple[str, Spatial]]:
    """Every composition of flips (any spatial axes) followed by a 90-degree rotation in the (0, 1) plane."""
    out: list[tuple[str, Spatial]] = []
    for n_flips in range(4):
        for axes in itertools.combinations((1, 2, 3), n_flips):
            for k in range(4):

                def f(x: torch.Tensor, axes: tuple[int, ...] = axes, k: int = k) -> torch.Tensor:
                    return torch.rot90(x.flip(axes) if axes else x, k, dims=(1, 2))

                out.append((f"flip{axes}_rot{k}", f))
    return out


def which_transform(before: torch.Tensor, after: torch.Tensor) -> tuple[str, Spatial]:
    matches = [(name, f) for name, f in candidates() if torch.equal(f(before), after)]
    assert matches, "the output is no flip/rotation of the un-augmented crop"
    return matches[0]


# ------------------------------------------------------------------------------------------------ keys and shapes


def test_keys_shapes_and_types(volumes: dict[str, Any]) -> None:
    out = get_growth_transforms(ROI, spacing_mm=1.0, train=False)(item(volumes))
    assert set(out) == OUTPUT_KEYS  # the datalist's followup / followup_mask renamed; null keys dropped
    assert (FOLLOWUP_IMAGE_KEY, FOLLOWUP_LABEL_KEY) == ("followup_image", "followup_label")
    assert GROWTH_IMAGE_KEYS == (GrowthBatchKeys.IMAGE, GrowthBatchKeys.FOLLOWUP_IMAGE)
    assert GROWTH_MASK_KEYS == (GrowthBatchKeys.LABEL, GrowthBatchKeys.FOLLOWUP_LABEL)
    for key in ("image", "followup_image"):
        assert out[key].shape == (3, ROI, ROI, ROI) and out[key].dtype == torch.float32
        assert 0.0 <= float(out[key].min()) and float(out[key].max()) <= 1.0
    for key in ("label", "followup_label"):
        assert out[key].shape == (1, ROI, ROI, ROI) and out[key].dtype == torch.float32
        assert set(torch.unique(out[key]).tolist()) == {0.0, 1.0}
    assert (out["interval_days"], out["case_id"], out["patient_id"]) == (365, "case_1", "patient_1")
    one = get_growth_transforms((ROI, 12, 8), spacing_mm=1.0, windows={"lung": (-1000, 400)}, train=False)
    small = one(item(volumes))
    assert small["image"].shape == small["followup_image"].shape == (1, ROI, 12, 8)
    assert small["label"].shape == small["followup_label"].shape == (1, ROI, 12, 8)


def test_crop_and_windows_are_the_training_chains(volumes: dict[str, Any]) -> None:
    a = volumes["arrays"]
    out = get_growth_transforms(ROI, spacing_mm=1.0, train=False)(item(volumes))
    np.testing.assert_allclose(out["image"].numpy(), windowed(a["base"][CROP].astype(np.float64)), atol=1e-6)
    np.testing.assert_allclose(out["followup_image"].numpy(), windowed(a["follow"][CROP].astype(np.float64)), atol=1e-6)
    np.testing.assert_array_equal(out["label"].numpy()[0], a["base_mask"][CROP])
    np.testing.assert_array_equal(out["followup_label"].numpy()[0], a["follow_mask"][CROP])
    # the same numbers as the nodule chain's validation transforms, for either scan of the pair
    for spacing in (1.0, (1.0, 1.0, 2.0)):
        out = get_growth_transforms(ROI, spacing_mm=spacing, train=False)(item(volumes))
        val = get_val_transforms(ROI, spacing_mm=spacing)
        p = volumes["paths"]
        base = val({"image": p["base"], "label": p["base_mask"], Keys.CENTER_WORLD: CENTRE})
        follow = val({"image": p["follow"], "label": p["follow_mask"], Keys.CENTER_WORLD: CENTRE})
        for key, ref in [("image", base["image"]), ("label", base["label"])]:
            torch.testing.assert_close(plain(out[key]), plain(ref))
        for key, ref in [("followup_image", follow["image"]), ("followup_label", follow["label"])]:
            torch.testing.assert_close(plain(out[key]), plain(ref))


def test_padding_outside_the_scan_is_air_and_background(volumes: dict[str, Any]) -> None:
    corner = (ORIGIN + 2.0).tolist()  # voxel (2, 2, 2): the crop starts 6 voxels before the scan
    out = get_growth_transforms(ROI, spacing_mm=1.0, train=False)(item(volumes, center_world_mm=corner))
    air = windowed(np.array([AIR_HU]))[:, 0]
    assert air.tolist() == [0.0, 0.0, 0.25]  # the wide window starts at -1400 HU
    for key in ("image", "followup_image"):
        image = out[key].numpy()
        for axis in range(3):
            pad = np.take(image, range(6), axis=axis + 1)
            np.testing.assert_allclose(pad, np.broadcast_to(air[:, None, None, None], pad.shape), atol=1e-6)
    for key in ("label", "followup_label"):
        for axis in range(3):
            assert not np.take(out[key].numpy(), range(6), axis=axis + 1).any()
    np.testing.assert_array_equal(out["label"].numpy()[0, 6:, 6:, 6:], volumes["arrays"]["base_mask"][:10, :10, :10])


# ------------------------------------------------------------------------------------------------ joint augmentation


def test_identical_follow_up_stays_identical_voxel_for_voxel(volumes: dict[str, Any]) -> None:
    reference = get_growth_transforms(ROI, spacing_mm=1.0, train=False)(item(volumes, followup="base"))
    seen = set()
    for seed in range(8):
        chain = get_growth_transforms(ROI, spacing_mm=1.0, train=True)
        chain.set_random_state(seed=seed)
        out = chain(item(volumes, followup="base"))
        assert torch.equal(plain(out["image"]), plain(out["followup_image"]))
        assert torch.equal(plain(out["label"]), plain(out["followup_label"]))
        seen.add(which_transform(plain(reference["image"]), plain(out["image"]))[0])
    assert len(seen) >= 3  # the default probabilities do move the pair, differently from seed to seed


def test_follow_up_and_masks_get_the_baselines_flips_and_rotation(volumes: dict[str, Any]) -> None:
    reference = get_growth_transforms(ROI, spacing_mm=1.0, train=False)(item(volumes))
    for seed in range(6):
        chain = get_growth_transforms(ROI, spacing_mm=1.0, train=True, flip_prob=0.5, rot90_prob=1.0)
        chain.set_random_state(seed=seed)
        out = chain(item(volumes))
        _, spatial = which_transform(plain(reference["image"]), plain(out["image"]))
        for key in ("followup_image", "label", "followup_label"):
            assert torch.equal(spatial(plain(reference[key])), plain(out[key])), (seed, key)
        assert not torch.equal(plain(out["image"]), plain(reference["image"]))


def test_flip_probability_one_flips_every_axis(volumes: dict[str, Any]) -> None:
    reference = get_growth_transforms(ROI, spacing_mm=1.0, train=False)(item(volumes))
    chain = get_growth_transforms(ROI, spacing_mm=1.0, train=True, flip_prob=1.0, rot90_prob=0.0)
    out = chain(item(volumes))
    for key in SPATIAL:
        assert torch.equal(plain(out[key]), plain(reference[key]).flip((1, 2, 3))), key


def test_rotations_are_in_the_axial_plane(volumes: dict[str, Any]) -> None:
    reference = get_growth_transforms(ROI, spacing_mm=1.0, train=False)(item(volumes))
    ks = set()
    for seed in range(10):
        chain = get_growth_transforms(ROI, spacing_mm=1.0, train=True, flip_prob=0.0, rot90_prob=1.0)
        chain.set_random_state(seed=seed)
        out = chain(item(volumes))
        ref = plain(reference["image"])
        k = [k for k in range(4) if torch.equal(torch.rot90(ref, k, dims=(1, 2)), plain(out["image"]))]
        assert len(k) == 1 and k[0] != 0  # always rotated (max_k=3), about the cranio-caudal axis
        for key in SPATIAL:
            assert torch.equal(torch.rot90(plain(reference[key]), k[0], dims=(1, 2)), plain(out[key]))
        ks.add(k[0])
    assert ks == {1, 2, 3}


def test_no_augmentation_without_train_and_a_seed_replays(volumes: dict[str, Any]) -> None:
    reference = get_growth_transforms(ROI, spacing_mm=1.0, train=False)(item(volumes))
    still = get_growth_transforms(ROI, spacing_mm=1.0, train=False, flip_prob=1.0, rot90_prob=1.0)(item(volumes))
    for key in SPATIAL:
        assert torch.equal(plain(still[key]), plain(reference[key]))
    runs = []
    for _ in range(2):
        chain = get_growth_transforms(ROI, spacing_mm=1.0, train=True)
        chain.set_random_state(seed=11)
        runs.append(chain(item(volumes)))
    for key in SPATIAL:
        assert torch.equal(plain(runs[0][key]), plain(runs[1][key]))


@pytest.mark.parametrize(("name", "value"), [("flip_prob", -0.1), ("flip_prob", 1.5), ("rot90_prob", 2.0)])
def test_probability_outside_zero_one_raises(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        get_growth_transforms(ROI, **{name: value})


# ------------------------------------------------------------------------------------------------ joint geometry


def test_follow_up_stored_lps_lands_on_the_baselines_voxels(volumes: dict[str, Any]) -> None:
    """The same world content stored with i and j reversed (a DICOM-like L, P orientation) comes out identical."""
    a, folder = volumes["arrays"], volumes["folder"]
    lps = ras_affine()
    lps[0, 0] = lps[1, 1] = -1.0
    lps[:2, 3] = ORIGIN[:2] + (N - 1)  # voxel (0, 0) of the reversed array is the old voxel (23, 23)
    paths = dict(volumes["paths"])
    paths["lps"] = save(folder / "lps.nii.gz", a["base"][::-1, ::-1].copy(), lps)
    paths["lps_mask"] = save(folder / "lps_mask.nii.gz", a["base_mask"][::-1, ::-1].copy(), lps)
    out = get_growth_transforms(ROI, spacing_mm=1.0, train=False)(item({**volumes, "paths": paths}, followup="lps"))
    torch.testing.assert_close(plain(out["followup_image"]), plain(out["image"]), atol=1e-6, rtol=0)
    assert torch.equal(plain(out["followup_label"]), plain(out["label"]))


def test_follow_up_on_a_coarser_grid_is_resampled_to_the_same_crop(volumes: dict[str, Any]) -> None:
    """A follow-up at 1.5 mm, same origin: resampled to 1 mm, then cropped at the same world centre."""
    folder = volumes["folder"]
    n2 = 16  # 16 voxels of 1.5 mm span the baseline's 24 mm
    coarse = np.zeros((n2,) * 3, np.uint8)
    coarse[6:11, 6:11, 6:11] = 1  # world [8.25, 15.75) mm from the origin: 1 mm voxel centres 9 .. 15
    cube = np.zeros((N, N, N), np.uint8)
    cube[9:16, 9:16, 9:16] = 1
    coarse_hu = np.where(coarse > 0, 40, -800).astype(np.int16)
    base_hu = np.where(cube > 0, 40, -800).astype(np.int16)
    paths = {
        "base": save(folder / "cube_hu.nii.gz", base_hu, ras_affine()),
        "base_mask": save(folder / "cube.nii.gz", cube, ras_affine()),
        "follow": save(folder / "coarse_hu.nii.gz", coarse_hu, ras_affine(1.5)),
        "follow_mask": save(folder / "coarse.nii.gz", coarse, ras_affine(1.5)),
    }
    out = get_growth_transforms(ROI, spacing_mm=1.0, train=False)(item({**volumes, "paths": paths}))
    assert out["followup_label"].shape == (1, ROI, ROI, ROI) and out["label"].sum() == 7**3
    assert torch.equal(plain(out["followup_label"]), plain(out["label"]))  # nearest neighbour: the same voxels
    inside = out["label"][0] > 0.5
    # bilinear: the follow-up's 40 HU where both masks are, away from the cube's edge
    core = torch.zeros_like(inside)
    core[6:10, 6:10, 6:10] = True
    torch.testing.assert_close(plain(out["followup_image"])[:, core], plain(out["image"])[:, core])
    assert bool(inside[core].all())


def test_synthetic_growth_item(tmp_path: Path) -> None:
    growing = {"growth_model_probabilities": {"malignant_solid": 1.0}, "followup_intervals_days": (365.0,)}
    case = generate_growth_case(0, seed=0, crop_size_xy=32, **growing)
    pair = case.pairs[0]
    write_pair(pair, tmp_path)
    record = pair_item(pair)
    for key in (Keys.IMAGE, Keys.LABEL, GrowthKeys.FOLLOWUP, GrowthKeys.FOLLOWUP_MASK):  # relative to the folder
        record[key.value] = str(tmp_path / record[key.value])
    roi = (24, 24, 24)
    reference = get_growth_transforms(roi, train=False)(dict(record))
    assert set(reference) == OUTPUT_KEYS and reference["interval_days"] == record["interval_days"]
    assert reference["label"][0, 12, 12, 12] == 1  # the crop is centred on the baseline's nodule
    grown = float(reference["followup_label"].sum()) / float(reference["label"].sum())
    assert grown > 1.2  # a growing nodule
    chain = get_growth_transforms(roi, train=True, flip_prob=1.0, rot90_prob=1.0)
    chain.set_random_state(seed=3)
    out = chain(dict(record))
    _, spatial = which_transform(plain(reference["image"]), plain(out["image"]))
    for key in ("followup_image", "label", "followup_label"):
        assert torch.equal(spatial(plain(reference[key])), plain(out[key])), key
    assert float(out["followup_label"].sum()) / float(out["label"].sum()) == pytest.approx(grown)
