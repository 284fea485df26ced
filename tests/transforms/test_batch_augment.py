"""BatchAugmentation: the bundle's augmentation list as batched tensor operations, checked against MONAI's own
transforms (same geometry, same parameter ranges, same probabilities) on tiny synthetic batches."""

from __future__ import annotations

import math

import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import (
    Affine,
    Compose,
    Flip,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandZoomd,
    Rotate90,
    ScaleIntensityRanged,
)
from monai.transforms.utils import create_rotate

from lung_nodule_mtl.engines import MultiTaskPrepareBatch
from lung_nodule_mtl.transforms import BatchAugmentation
from lung_nodule_mtl.transforms.batch_augment import _Affine

KEYS = ["image", "label"]


def _blob_batch(b: int = 6, size: tuple[int, int, int] = (12, 12, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric blobs (so every flip and turn changes them) and their masks."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(b, 2, *size, generator=g) * 0.2
    image[:, :, 2:7, 1:4, 1:6] += 0.7
    label = (image[:, :1] > 0.5).float()
    return image, label


def _chain(*transforms) -> BatchAugmentation:
    return BatchAugmentation.from_compose(Compose(list(transforms)))


def test_flips_and_turns_are_monais_and_shared_by_the_mask() -> None:
    image, label = _blob_batch(64)
    aug = _chain(RandFlipd(KEYS, prob=0.5, spatial_axis=1), RandRotate90d(KEYS, prob=0.5, max_k=3, spatial_axes=[0, 1]))
    out, mask = aug(image, label)
    assert mask is not None
    assert torch.equal(mask, (out[:, :1] > 0.5).float())  # one draw moves image and mask alike
    seen = set()
    for i in range(image.shape[0]):  # each sample is one of MONAI's 2 x 4 results
        matches = [
            (f, k)
            for f in (False, True)
            for k in range(4)
            if torch.equal(out[i], Rotate90(k, (0, 1))(Flip(1)(image[i]) if f else image[i]).as_tensor())
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == 8  # every flip x turn occurs in 64 draws


def test_affine_is_monais_affine() -> None:
    image, label = _blob_batch(2, (20, 18, 16))
    angles, scales = [0.2, -0.1, 0.25], [1.08, 0.95, 1.02]
    op = _Affine(1.0, [0.3] * 3, [0.1] * 3)
    rot = torch.as_tensor(create_rotate(3, angles, backend="torch"), dtype=torch.float32)[:3, :3]
    op._matrices = lambda n, device: (rot * torch.tensor(scales)[None, :])[None].repeat(n, 1, 1)  # type: ignore[method-assign]
    out, mask = op(image, label)
    expected = Affine(rotate_params=angles, scale_params=scales, padding_mode="zeros", image_only=True)(image[0])
    torch.testing.assert_close(out[0], torch.as_tensor(expected), atol=1e-5, rtol=0)
    nearest = Affine(rotate_params=angles, scale_params=scales, padding_mode="zeros", mode="nearest", image_only=True)
    assert mask is not None and torch.equal(mask[1], torch.as_tensor(nearest(label[1])))
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_probabilities_and_ranges_follow_the_transforms() -> None:
    torch.manual_seed(0)
    n = 4000
    image = torch.full((n, 1, 4, 4, 4), 0.5)
    out, _ = _chain(RandScaleIntensityd("image", factors=0.1, prob=0.3))(image)
    factor = out[:, 0, 0, 0, 0] / 0.5 - 1
    changed = factor.abs() > 1e-7
    assert abs(changed.float().mean().item() - 0.3) < 0.03
    assert factor.min() >= -0.1 - 1e-6 and factor.max() <= 0.1 + 1e-6 and factor[changed].std() > 0.05
    assert torch.equal(out.amax(dim=(1, 2, 3, 4)), out.amin(dim=(1, 2, 3, 4)))  # one factor per sample
    out, _ = _chain(RandShiftIntensityd("image", offsets=0.05, prob=0.7))(image)
    offset = out[:, 0, 0, 0, 0] - 0.5
    assert abs((offset.abs() > 1e-7).float().mean().item() - 0.7) < 0.03 and offset.abs().max() <= 0.05 + 1e-6
    out, _ = _chain(RandGaussianNoised("image", prob=0.2, mean=0.0, std=0.01, sample_std=True))(image)
    std = (out - 0.5).flatten(1).std(dim=1)
    noisy = std > 0
    assert abs(noisy.float().mean().item() - 0.2) < 0.03 and std.max() < 0.02
    flips, _ = _chain(RandFlipd(KEYS, prob=0.25, spatial_axis=0))(torch.arange(n * 4.0).view(n, 1, 4, 1, 1))
    assert abs((flips[:, 0, 0, 0, 0] != torch.arange(n * 4.0).view(n, 4)[:, 0]).float().mean().item() - 0.25) < 0.03
    affine, _ = _chain(RandAffined(KEYS, prob=0.2, rotate_range=[0.3] * 3, padding_mode="zeros"))(_blob_batch(n)[0])
    moved = (affine - _blob_batch(n)[0]).flatten(1).abs().amax(dim=1) > 1e-4
    assert abs(moved.float().mean().item() - 0.2) < 0.03
    clipped, _ = _chain(ScaleIntensityRanged("image", a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True))(
        torch.linspace(-1, 2, 64).view(1, 1, 4, 4, 4)
    )
    assert clipped.min() == 0.0 and clipped.max() == 1.0


def test_the_bundle_augmentation_builds_in_order_and_runs() -> None:
    parser = ConfigParser()
    parser.read_config("bundle/configs/train.yaml")
    compose = parser.get_parsed_content("augmentation")
    aug = BatchAugmentation.from_compose(compose)
    assert aug.names == [type(t).__name__ for t in compose.transforms]
    assert [getattr(op, "prob", None) for op in aug.ops][:7] == [0.5, 0.5, 0.5, 0.5, 0.2, 0.5, 0.5]
    assert aug.ops[4].rotate == pytest.approx([math.radians(15.0)] * 3) and aug.ops[4].scale == pytest.approx([0.1] * 3)
    image, label = _blob_batch(8, (16, 16, 16))
    out, mask = aug(image, label)
    assert out.shape == image.shape and mask is not None and mask.shape == label.shape
    assert out.min() >= 0.0 and out.max() <= 1.0 and set(mask.unique().tolist()) <= {0.0, 1.0}
    aug.eval()
    same, same_mask = aug(image, label)
    assert same is image and same_mask is label  # evaluation: untouched


def test_unsupported_transforms_and_options_are_errors() -> None:
    with pytest.raises(ValueError, match="RandZoomd has no batched version"):
        _chain(RandZoomd(KEYS, prob=0.5))
    with pytest.raises(ValueError, match="translate_range"):
        _chain(RandAffined(KEYS, prob=0.5, translate_range=[2, 2, 2]))
    with pytest.raises(ValueError, match="padding_mode"):
        _chain(RandAffined(KEYS, prob=0.5, rotate_range=[0.1] * 3, padding_mode="border"))
    with pytest.raises(ValueError, match="acts on"):
        _chain(RandFlipd(["label"], prob=0.5, spatial_axis=0))
    with pytest.raises(ValueError, match="does not match"):
        _chain(RandFlipd(KEYS, prob=0.5, spatial_axis=0))(torch.zeros(2, 1, 4, 4, 4), torch.zeros(2, 1, 4, 4, 3))
    with pytest.raises(ValueError, match="axes of equal size"):
        _chain(RandRotate90d(KEYS, prob=1.0, spatial_axes=[0, 2]))(torch.zeros(2, 1, 4, 4, 3))


def test_prepare_batch_augments_image_and_mask_on_the_device() -> None:
    image, label = _blob_batch(4)
    batch = {"image": image, "label": label, "malignancy": torch.tensor([0.0, 1.0, 1.0, 0.0])}
    aug = _chain(RandFlipd(KEYS, prob=1.0, spatial_axis=0))
    x, targets = MultiTaskPrepareBatch(augmentation=aug)(batch, torch.device("cpu"))
    assert torch.equal(x, image.flip(2)) and torch.equal(targets["label"], label.flip(2))
    assert torch.equal(targets["malignancy"], batch["malignancy"])
    x, targets = MultiTaskPrepareBatch()(batch, torch.device("cpu"))
    assert torch.equal(x, image)
