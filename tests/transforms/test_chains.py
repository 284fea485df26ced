"""The train / val / inference chains on a synthetic NIfTI nodule, and the val chain on real LIDC VOIs."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from lung_nodule_mtl.constants import DEFAULT_WINDOWS, IGNORE_INDEX, Keys
from lung_nodule_mtl.io.geometry import voxel_to_world
from lung_nodule_mtl.transforms.chains import get_inference_transforms, get_train_transforms, get_val_transforms

ROI = 24
TRAIN_ROI = 32
OFF_CENTRE_MM = np.array([4.0, -3.0, 3.0])
ALL_AUGMENTATIONS = {
    "flip_prob": 1.0,
    "rot90_prob": 1.0,
    "affine_prob": 1.0,
    "intensity_scale_prob": 1.0,
    "intensity_shift_prob": 1.0,
    "noise_prob": 1.0,
}
NODULE_LUNG_WINDOW = (40.0 + 1000.0) / 1400.0  # the synthetic nodule (40 HU) in the lung window
LUNG_LUNG_WINDOW = (-850.0 + 1000.0) / 1400.0  # the synthetic lung (-850 HU)


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_train_shape_and_alignment(sphere_item: dict[str, Any], seed: int) -> None:
    """Every augmentation on (probability 1): image in [0, 1], the mask still on the bright nodule.

    The crop is centred 6 mm off the nodule, so a flip or rotation applied to one key and not the
    other would move the nodule away from its mask.
    """
    item = dict(sphere_item)
    item[Keys.CENTER_WORLD] = (np.asarray(sphere_item[Keys.CENTER_WORLD]) + OFF_CENTRE_MM).tolist()
    chain = get_train_transforms(roi_size=TRAIN_ROI, **ALL_AUGMENTATIONS)
    chain.set_random_state(seed)
    out = chain(item)
    image, mask = out[Keys.IMAGE], out[Keys.LABEL]
    assert image.shape == (len(DEFAULT_WINDOWS), *[TRAIN_ROI] * 3) and image.dtype == torch.float32
    assert mask.shape == (1, *[TRAIN_ROI] * 3) and mask.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert set(torch.unique(mask).tolist()) == {0.0, 1.0}
    assert 0.7 < float(mask.sum()) / (4 / 3 * np.pi * 5.0**3) < 1.4  # the 5 mm nodule, scaled by at most 10 %
    bright = image[0] > (NODULE_LUNG_WINDOW + LUNG_LUNG_WINDOW) / 2  # lung channel thresholded half way
    assert _dice(bright, mask[0]) > 0.85
    assert out[Keys.MALIGNANCY].item() == 1.0 and out["texture"].item() == 4 and out["margin"].item() == IGNORE_INDEX


def test_train_replay(sphere_item: dict[str, Any]) -> None:
    outs = []
    for seed in (7, 7, 8):
        chain = get_train_transforms(roi_size=ROI, **ALL_AUGMENTATIONS)
        chain.set_random_state(seed)
        outs.append(chain(sphere_item))
    assert torch.equal(outs[0][Keys.IMAGE], outs[1][Keys.IMAGE])
    assert torch.equal(outs[0][Keys.LABEL], outs[1][Keys.LABEL])
    assert not torch.equal(outs[0][Keys.IMAGE], outs[2][Keys.IMAGE])


def test_train_without_augmentation_equals_val_at_same_centre(sphere_item: dict[str, Any]) -> None:
    no_aug = {name: 0.0 for name in ALL_AUGMENTATIONS}
    train = get_train_transforms(roi_size=ROI, max_shift_mm=0.0, **no_aug)(sphere_item)
    val = get_val_transforms(roi_size=ROI)(sphere_item)
    torch.testing.assert_close(train[Keys.IMAGE].as_tensor(), val[Keys.IMAGE].as_tensor())
    assert torch.equal(train[Keys.LABEL].as_tensor(), val[Keys.LABEL].as_tensor())


def test_val(sphere_item: dict[str, Any]) -> None:
    out = get_val_transforms(roi_size=ROI, spacing_mm=1.0, indeterminate="soft")(sphere_item)
    image, mask = out[Keys.IMAGE], out[Keys.LABEL]
    c = ROI // 2
    assert mask[0, c, c, c] == 1.0
    expected = [(40.0 - low) / (high - low) for low, high in DEFAULT_WINDOWS.values()]  # the nodule, per window
    torch.testing.assert_close(image[:, c, c, c].as_tensor(), torch.tensor(expected))
    np.testing.assert_allclose(voxel_to_world(image.affine, [c, c, c]), sphere_item[Keys.CENTER_WORLD], atol=0.5)
    assert out[Keys.MALIGNANCY_SCORE].item() == 4.0


def test_val_inverse_puts_mask_back(sphere_item: dict[str, Any]) -> None:
    """Inverting the val chain brings the cropped mask back to the scan's own L,P,S anisotropic grid."""
    chain = get_val_transforms(roi_size=ROI)
    back = chain.inverse(chain(sphere_item))
    original = nib.load(sphere_item[Keys.LABEL])
    assert back[Keys.LABEL].shape == (1, *original.shape)
    np.testing.assert_allclose(back[Keys.LABEL].affine.numpy(), original.affine, atol=1e-5)
    assert _dice(back[Keys.LABEL][0] > 0.5, torch.as_tensor(np.asarray(original.dataobj))) > 0.85


def test_inference(sphere_item: dict[str, Any]) -> None:
    item = {k: sphere_item[k] for k in (Keys.IMAGE, Keys.CENTER_WORLD)}
    out = get_inference_transforms(roi_size=(ROI, ROI, 16), windows={"lung": (-1000, 400)})(item)
    assert set(out) == {Keys.IMAGE, Keys.CENTER_WORLD}
    assert out[Keys.IMAGE].shape == (1, ROI, ROI, 16) and isinstance(out[Keys.IMAGE], MetaTensor)
    assert out[Keys.IMAGE][0, ROI // 2, ROI // 2, 8].item() == pytest.approx(NODULE_LUNG_WINDOW)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"flip_prob": 1.5}, r"flip_prob must be a probability in \[0, 1\], got 1.5"),
        ({"noise_prob": -0.1}, "noise_prob must be a probability"),
        ({"rotate_range_rad": -0.1}, "rotate_range_rad must be a finite number >= 0"),
        ({"noise_std": float("inf")}, "noise_std must be a finite number >= 0"),
        ({"spacing_mm": (1.0, 0.0, 1.0)}, r"spacing_mm must be a number or 3 numbers > 0"),
        ({"roi_size": (24, 24)}, "roi_size must be"),
        ({"max_shift_mm": -1.0}, "max_shift_mm must be"),
        ({"windows": {"lung": (400, -1000)}}, "low < high"),
        ({"indeterminate": "drop"}, "indeterminate must be one of"),
    ],
)
def test_ill_arg(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_train_transforms(**kwargs)


N_REAL = 3
REAL_ROI = 32


@pytest.mark.real_data
def test_val_on_real_vois(shared_data: Path) -> None:
    """On real LIDC VOIs (L,P,S, slices up to 2.5 mm) the crop's centre voxel is inside the nodule mask."""
    from lung_nodule_mtl.data.lidc_vois import voi_item

    vois = shared_data / "lidc_vois"
    with open(vois / "nodules.csv", newline="", encoding="utf-8") as f:
        rows = [row for row in csv.DictReader(f) if float(row["diameter_mm"]) >= 10.0][:N_REAL]
    assert len(rows) == N_REAL
    chain = get_val_transforms(roi_size=REAL_ROI)
    c = REAL_ROI // 2
    for i, row in enumerate(rows):
        out = chain(voi_item(row, vois, where=f"nodules.csv row {i}"))
        image, mask = out[Keys.IMAGE], out[Keys.LABEL]
        assert image.shape == (3, REAL_ROI, REAL_ROI, REAL_ROI) and mask.shape == (1, REAL_ROI, REAL_ROI, REAL_ROI)
        assert mask[0, c, c, c] == 1.0, f"{row['patient_id']} nodule {row['nodule_id']}: centre voxel not in mask"
        assert float(image.min()) == 0.0 and float(image.max()) <= 1.0  # VOIs are smaller than 32 mm: air padding
        assert float(image[0][mask[0] > 0].mean()) > float(image[0][mask[0] == 0].mean())  # nodule brighter
