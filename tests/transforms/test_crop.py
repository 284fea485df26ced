"""Nodule-centred crops: values, padding at the edges, affine correctness, inverse, random jitter and replay."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

from lung_nodule_mtl.constants import AIR_HU, Keys
from lung_nodule_mtl.io.geometry import voxel_to_world, world_to_voxel
from lung_nodule_mtl.transforms.crop import (
    NoduleCenteredCrop,
    NoduleCenteredCropd,
    RandNoduleCenteredCrop,
    RandNoduleCenteredCropd,
)

SHAPE = (20, 18, 10)
AFFINE_LPS = np.array([[-0.7, 0, 0, 30.0], [0, -0.8, 0, 40.0], [0, 0, 2.5, -120.0], [0, 0, 0, 1.0]])
_C, _S = np.cos(0.3), np.sin(0.3)
AFFINE_ROTATED = np.array(
    [[0.7 * _C, -0.8 * _S, 0, -5.0], [0.7 * _S, 0.8 * _C, 0.1, 12.0], [0, 0, 2.5, 33.0], [0, 0, 0, 1.0]]
)  # oblique and sheared, still a valid voxel -> world map

# (centre voxel, roi size): inside, at the first corner, at the last corner, ROI larger than the volume,
# centre outside the volume but the ROI still overlapping it
EDGE_CASES = {
    "inside": ((10, 9, 5), (8, 8, 4)),
    "first_corner": ((0, 0, 0), (8, 8, 4)),
    "last_corner": ((19, 17, 9), (6, 7, 5)),
    "roi_larger_than_volume": ((10, 9, 5), (30, 25, 16)),
    "centre_outside": ((22, 9, 5), (8, 8, 4)),
}
SUBVOXEL = np.array([0.3, -0.4, 0.2])  # the centre is not on a voxel centre: the nearest voxel is used


def _volume(affine: np.ndarray = AFFINE_LPS) -> MetaTensor:
    """``(1, 20, 18, 10)`` volume whose voxel values are unique (their linear index + 1)."""
    values = torch.arange(1, np.prod(SHAPE) + 1, dtype=torch.float32).reshape(1, *SHAPE)
    return MetaTensor(values, affine=torch.as_tensor(affine))


def _expected(volume: torch.Tensor, start: np.ndarray, roi: tuple[int, ...], pad: float) -> torch.Tensor:
    """The crop by hand: ``pad`` everywhere, then the part of the volume inside the ROI copied."""
    out = torch.full((volume.shape[0], *roi), pad, dtype=volume.dtype)
    src, dst = [slice(None)], [slice(None)]
    for s, r, n in zip(start, roi, volume.shape[1:], strict=True):
        lo, hi = max(s, 0), min(s + r, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = torch.as_tensor(volume)[tuple(src)]
    return out


def _centre_world(affine: np.ndarray, centre_vox: tuple[int, int, int]) -> np.ndarray:
    return voxel_to_world(affine, np.asarray(centre_vox, dtype=np.float64) + SUBVOXEL)


@pytest.mark.parametrize("case", list(EDGE_CASES))
@pytest.mark.parametrize("pad_value", [AIR_HU, 0.0])
def test_shape_and_values(case: str, pad_value: float) -> None:
    centre_vox, roi = EDGE_CASES[case]
    volume = _volume()
    out = NoduleCenteredCrop(roi, pad_value=pad_value)(volume, _centre_world(AFFINE_LPS, centre_vox))
    assert out.shape == (1, *roi) and out.dtype == torch.float32
    start = np.asarray(centre_vox) - np.asarray(roi) // 2
    torch.testing.assert_close(out.as_tensor(), _expected(volume.as_tensor(), start, roi, pad_value))
    n_inside = np.prod([min(s + r, n) - max(s, 0) for s, r, n in zip(start, roi, SHAPE, strict=True)])
    assert int((out == pad_value).sum()) == np.prod(roi) - n_inside  # volume values are >= 1: no clash


@pytest.mark.parametrize("affine", [AFFINE_LPS, AFFINE_ROTATED], ids=["lps", "rotated"])
@pytest.mark.parametrize("case", ["inside", "first_corner", "centre_outside"])
def test_affine(affine: np.ndarray, case: str) -> None:
    centre_vox, roi = EDGE_CASES[case]
    centre = _centre_world(affine, centre_vox)
    out = NoduleCenteredCrop(roi)(_volume(affine), centre)
    start = np.asarray(centre_vox) - np.asarray(roi) // 2
    # every output voxel sits where its source voxel was (also the padded ones, on the extended grid)
    idx = np.stack(np.meshgrid(*[np.arange(r) for r in roi], indexing="ij"), axis=-1).reshape(-1, 3)
    np.testing.assert_allclose(voxel_to_world(out.affine, idx), voxel_to_world(affine, idx + start), atol=1e-9)
    # the requested centre is within half a voxel of the crop's centre voxel roi // 2
    assert np.all(np.abs(world_to_voxel(out.affine, centre) - np.asarray(roi) // 2) <= 0.5)


def test_fully_outside_raises() -> None:
    crop = NoduleCenteredCrop((8, 8, 4))
    with pytest.raises(ValueError, match=r"entirely outside the image of shape \(20, 18, 10\)"):
        crop(_volume(), voxel_to_world(AFFINE_LPS, [40.0, 9.0, 5.0]))
    lps_centre = voxel_to_world(AFFINE_LPS, [10.0, 9.0, 5.0]) * [-1, -1, 1]  # an LPS centre given as RAS
    with pytest.raises(ValueError, match="LPS"):
        crop(_volume(), lps_centre)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"roi_size": 0}, "roi_size must be"),
        ({"roi_size": (8, 8)}, "roi_size must be"),
        ({"roi_size": (8, 8, 2.5)}, "roi_size must be"),
        ({"roi_size": 8, "pad_value": float("nan")}, "pad_value must be a finite number"),
        ({"roi_size": 8, "pad_value": "air"}, "pad_value must be a finite number"),
    ],
)
def test_ill_arg(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NoduleCenteredCrop(**kwargs)


def test_ill_input() -> None:
    crop = NoduleCenteredCrop(8)
    with pytest.raises(ValueError, match=r"center_world_mm must be 3 finite numbers.*\[1.0, 2.0\]"):
        crop(_volume(), [1.0, 2.0])
    with pytest.raises(ValueError, match="center_world_mm must be 3 finite numbers"):
        crop(_volume(), [1.0, float("nan"), 2.0])
    with pytest.raises(TypeError, match="MetaTensor"):
        crop(torch.zeros(1, *SHAPE), [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"\(C, H, W, D\), got shape \(20, 18, 10\)"):
        crop(MetaTensor(torch.zeros(SHAPE)), [0.0, 0.0, 0.0])


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_inverse(case: str) -> None:
    centre_vox, roi = EDGE_CASES[case]
    volume = _volume()
    crop = NoduleCenteredCrop(roi)
    out = crop(volume, _centre_world(AFFINE_LPS, centre_vox))
    assert [op["class"] for op in out.applied_operations] == ["NoduleCenteredCrop"]
    back = crop.inverse(out)
    assert back.shape == volume.shape and back.applied_operations == []
    torch.testing.assert_close(back.affine, volume.affine)
    start = np.asarray(centre_vox) - np.asarray(roi) // 2
    inside = tuple([slice(None)] + [slice(max(s, 0), min(s + r, n)) for s, r, n in zip(start, roi, SHAPE, strict=True)])
    torch.testing.assert_close(back[inside].as_tensor(), volume[inside].as_tensor())
    assert int((back != 0).sum()) == back[inside].numel()  # zeros outside the ROI


def test_dict_default_pad_values_and_same_roi() -> None:
    image = _volume()
    mask = MetaTensor(torch.ones(1, *SHAPE), affine=torch.as_tensor(AFFINE_LPS))
    data = {Keys.IMAGE: image, Keys.LABEL: mask, Keys.CENTER_WORLD: _centre_world(AFFINE_LPS, (0, 0, 0)).tolist()}
    out = NoduleCenteredCropd([Keys.IMAGE, Keys.LABEL], (8, 8, 4))(data)
    assert out[Keys.CENTER_WORLD] == data[Keys.CENTER_WORLD]
    torch.testing.assert_close(out[Keys.IMAGE].affine, out[Keys.LABEL].affine)
    padded = out[Keys.LABEL] == 0
    assert int(padded.sum()) == 8 * 8 * 4 - 4 * 4 * 2  # a quarter of the ROI in x, y and half in z is inside
    assert torch.all(out[Keys.IMAGE][padded] == AIR_HU) and torch.all(out[Keys.IMAGE][~padded] > 0)


def test_dict_keys_on_different_grids() -> None:
    """Each key goes through its own affine: a mask on a shifted grid gives the same world region."""
    image = _volume()
    shifted_affine = AFFINE_LPS.copy()
    shifted_affine[:3, 3] = voxel_to_world(AFFINE_LPS, [2.0, 0.0, 0.0])  # the mask starts 2 voxels further
    mask = MetaTensor(image[:, 2:].as_tensor().clone(), affine=torch.as_tensor(shifted_affine))
    data = {"image": image, "mask": mask, "centre": _centre_world(AFFINE_LPS, (10, 9, 5))}
    out = NoduleCenteredCropd(["image", "mask"], (8, 8, 4), center_key="centre", pad_value=(-5.0, -7.0))(data)
    torch.testing.assert_close(out["mask"].affine, out["image"].affine)
    torch.testing.assert_close(out["mask"].as_tensor(), out["image"].as_tensor())


def test_dict_ill_arg() -> None:
    with pytest.raises(ValueError, match=r"pad_value must be a number or one number per key \(2 keys\)"):
        NoduleCenteredCropd(["image", "label"], 8, pad_value=(0.0,))
    crop = NoduleCenteredCropd(["image"], 8)
    with pytest.raises(ValueError, match="data has no 'center_world_mm'"):
        crop({"image": _volume()})
    with pytest.raises(KeyError):
        crop({"label": _volume(), Keys.CENTER_WORLD: [0.0, 0.0, 0.0]})


def test_dict_inverse() -> None:
    data = {"image": _volume(), "label": _volume(), Keys.CENTER_WORLD: _centre_world(AFFINE_LPS, (19, 17, 9))}
    chain = Compose([NoduleCenteredCropd(["image", "label"], (6, 7, 5))])
    back = chain.inverse(chain(data))
    for key in ("image", "label"):
        assert back[key].shape == (1, *SHAPE)
        torch.testing.assert_close(back[key].affine, data[key].affine)
        assert torch.equal(back[key][0, 16:, 14:, 7:], data[key][0, 16:, 14:, 7:])


def test_rand_shift_within_bounds() -> None:
    crop = RandNoduleCenteredCrop((8, 8, 4), max_shift_mm=(2.0, 0.0, 5.0)).set_random_state(0)
    centre = _centre_world(AFFINE_LPS, (10, 9, 5))
    offsets = []
    for _ in range(30):
        crop(_volume(), centre)
        offsets.append(crop.last_center_world_mm - centre)
    offsets_np = np.asarray(offsets)
    assert np.all(np.abs(offsets_np) <= [2.0, 0.0, 5.0])
    assert np.all(offsets_np[:, 1] == 0.0)
    assert offsets_np[:, 0].std() > 0.5 and offsets_np[:, 2].std() > 1.0  # uniform on ±2 mm: std 1.15


def test_replay() -> None:
    volume = _volume()
    rand = RandNoduleCenteredCrop((8, 8, 4), max_shift_mm=3.0).set_random_state(1)
    centre = _centre_world(AFFINE_LPS, (1, 1, 1))
    for _ in range(3):
        out = rand(volume, centre)
        replay = NoduleCenteredCrop((8, 8, 4))(volume, rand.last_center_world_mm)
        assert torch.equal(out.as_tensor(), replay.as_tensor())
        torch.testing.assert_close(out.affine, replay.affine)
    assert torch.equal(rand.inverse(out).affine, volume.affine)


def test_set_random_state() -> None:
    centre = [4.0, 4.0, 4.0]
    volume = MetaTensor(torch.zeros(1, 8, 8, 8), affine=torch.eye(4, dtype=torch.float64))
    draws = []
    for seed in (5, 5, 6):
        crop = RandNoduleCenteredCrop(4, max_shift_mm=3.0).set_random_state(seed)
        centres = []
        for _ in range(3):
            crop(volume, centre)
            centres.append(crop.last_center_world_mm.tolist())
        draws.append(centres)
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]


def test_same_draw_all_keys() -> None:
    image = _volume()
    data = {"image": image, "label": image.clone(), Keys.CENTER_WORLD: _centre_world(AFFINE_LPS, (10, 9, 5))}
    rand = RandNoduleCenteredCropd(["image", "label"], (8, 8, 4), max_shift_mm=4.0, pad_value=0.0)
    rand.set_random_state(3)
    starts = set()
    for _ in range(5):
        out = rand(data)
        assert torch.equal(out["image"].as_tensor(), out["label"].as_tensor())
        torch.testing.assert_close(out["image"].affine, out["label"].affine)
        replay = NoduleCenteredCropd(["image", "label"], (8, 8, 4), pad_value=0.0)(
            data, center_world_mm=rand.last_center_world_mm
        )
        assert torch.equal(out["image"].as_tensor(), replay["image"].as_tensor())
        starts.add(tuple(out["image"].affine[:3, 3].tolist()))
    assert len(starts) > 1  # the draws differ between calls
    back = Compose([rand]).inverse(out)
    assert back["label"].shape == (1, *SHAPE)


def test_rand_ill_arg() -> None:
    for bad in (-1.0, float("nan"), (1.0, 2.0)):
        with pytest.raises(ValueError, match="max_shift_mm must be"):
            RandNoduleCenteredCrop(8, max_shift_mm=bad)
    with pytest.raises(ValueError, match="data has no 'center_world_mm'"):
        RandNoduleCenteredCropd(["image"], 8)({"image": _volume()})


@pytest.mark.parametrize("roi", [16, 40])
def test_centre_on_nodule_after_orientation_and_spacing(sphere_item: dict[str, Any], roi: int) -> None:
    """L,P,S anisotropic NIfTI → RAS, 1 mm → the crop's centre voxel is on the synthetic nodule."""
    keys = [Keys.IMAGE, Keys.LABEL]
    chain = Compose(
        [
            LoadImaged(keys, image_only=True),
            EnsureChannelFirstd(keys),
            Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacingd(keys, pixdim=(1.0, 1.0, 1.0), mode=("bilinear", "nearest")),
            NoduleCenteredCropd(keys, roi),
        ]
    )
    out = chain(sphere_item)
    image, mask = out[Keys.IMAGE], out[Keys.LABEL]
    assert image.shape == mask.shape == (1, roi, roi, roi)
    np.testing.assert_allclose(np.diag(image.affine.numpy())[:3], [1.0, 1.0, 1.0])  # RAS, 1 mm
    c = roi // 2
    assert mask[0, c, c, c] == 1 and image[0, c, c, c] == pytest.approx(40.0)  # NODULE_HU
    centroid = torch.nonzero(mask[0]).double().mean(dim=0).numpy()
    np.testing.assert_allclose(centroid, [c, c, c], atol=1.0)
    np.testing.assert_allclose(voxel_to_world(mask.affine, centroid), sphere_item[Keys.CENTER_WORLD], atol=1.0)
    assert 0.85 < float(mask.sum()) / (4 / 3 * np.pi * 5.0**3) < 1.15  # a 5 mm sphere at 1 mm voxels
    if roi == 40:  # beyond the 30 mm of the scan in z: air padding
        assert float(image.min()) == AIR_HU and float(image[0, c, c, 0]) == AIR_HU


@pytest.mark.parametrize(
    ("old", "new", "args"),
    [
        ("NoduleCentredCrop", NoduleCenteredCrop, ((8, 8, 4),)),
        ("NoduleCentredCropd", NoduleCenteredCropd, (["image", "label"], (8, 8, 4))),
        ("RandNoduleCentredCrop", RandNoduleCenteredCrop, ((8, 8, 4), 3.0)),
        ("RandNoduleCentredCropd", RandNoduleCenteredCropd, (["image", "label"], (8, 8, 4), 3.0)),
    ],
)
def test_old_spelling_of_the_classes_warns_and_builds_the_same_transform(old: str, new: type, args: tuple) -> None:
    """The former class names (``Centred``) are deprecated subclasses: same transform, a FutureWarning naming the
    new class, importable from the module and the package (old bundle configs' ``_target_`` still resolve)."""
    import lung_nodule_mtl.transforms as package
    import lung_nodule_mtl.transforms.crop as module

    assert getattr(package, old) is getattr(module, old) and old in module.__all__ and old in package.__all__
    with pytest.warns(FutureWarning, match=rf"`{old}` has been deprecated since version 0\.1\.0.*{new.__name__}"):
        legacy = getattr(module, old)(*args)
    assert isinstance(legacy, new)
    current = new(*args)
    centre = _centre_world(AFFINE_LPS, (10, 9, 5))
    if "Rand" in old:
        legacy.set_random_state(4)
        current.set_random_state(4)
    if old.endswith("d"):
        data = {"image": _volume(), "label": _volume(), Keys.CENTER_WORLD: centre}
        out_d = legacy(data)
        out, expected, back = out_d["label"], current(data)["label"], legacy.inverse(out_d)["label"]
    else:
        out, expected = legacy(_volume(), centre), current(_volume(), centre)
        back = legacy.inverse(out)
    assert torch.equal(out.as_tensor(), expected.as_tensor())
    torch.testing.assert_close(out.affine, expected.affine)
    assert back.shape == (1, *SHAPE)  # the inverse still finds its own operation
