"""GrowthLoss: zero at a perfect prediction, each term reacts to its own error, weighting, missing labels, checks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from monai.losses import SSIMLoss

from lung_nodule_mtl.constants import IGNORE_INDEX
from lung_nodule_mtl.losses import DEFAULT_GROWTH_WEIGHTS, GROWTH_TERMS, GrowthLoss, GrowthLossKeys
from lung_nodule_mtl.networks import GrowthBatchKeys, GrowthOutputKeys

N, S = 2, 20
K, B, L = GrowthOutputKeys, GrowthBatchKeys, GrowthLossKeys
TOTAL = str(L.TOTAL)


def _sphere(radius: float, center: float = (S - 1) / 2) -> torch.Tensor:
    grid = torch.stack(torch.meshgrid(*[torch.arange(S, dtype=torch.float32)] * 3, indexing="ij"))
    return (((grid - center) ** 2).sum(0) <= radius**2).float()[None, None].repeat(N, 1, 1, 1, 1)


def _perfect() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A prediction equal to its target."""
    follow = _sphere(4.0)
    base = _sphere(3.0)
    target = 0.1 + 0.6 * follow.repeat(1, 3, 1, 1, 1) + 0.1 * torch.rand(N, 3, S, S, S)
    logits = 30.0 * (2 * follow - 1)
    pred = {
        str(K.IMAGE): target.clone(),
        str(K.MASK): logits,
        str(K.DDF): torch.zeros(N, 3, S, S, S),
        str(K.WARPED_MASK): torch.sigmoid(logits),
        str(K.BASELINE_MASK): 30.0 * (2 * base - 1),
    }
    batch = {str(B.FOLLOWUP_IMAGE): target, str(B.FOLLOWUP_LABEL): follow, str(B.LABEL): base}
    return pred, batch


def test_zero_when_prediction_equals_target() -> None:
    pred, batch = _perfect()
    out = GrowthLoss()(pred, batch)
    assert set(GROWTH_TERMS) <= set(out)
    for name, value in out.items():
        assert value.dim() == 0 and abs(float(value)) < 1e-5, name


def _noise_everywhere(pred: dict, batch: dict) -> None:
    pred[str(K.IMAGE)] = pred[str(K.IMAGE)] + 0.2 * torch.randn_like(pred[str(K.IMAGE)])


def _shrink_mask(pred: dict, batch: dict) -> None:
    logits = 30.0 * (2 * _sphere(2.5) - 1)
    pred[str(K.MASK)], pred[str(K.WARPED_MASK)] = logits, torch.sigmoid(logits)  # same volume as the warped mask


def _bend_field(pred: dict, batch: dict) -> None:
    pred[str(K.DDF)] = torch.randn(N, 3, S, S, S)


def _refine_volume(pred: dict, batch: dict) -> None:
    pred[str(K.WARPED_MASK)] = _sphere(3.0)  # the head changed the volume the deformation predicted


def _wrong_baseline(pred: dict, batch: dict) -> None:
    pred[str(K.BASELINE_MASK)] = -pred[str(K.BASELINE_MASK)]


@pytest.mark.parametrize(
    ("perturb", "terms"),
    [
        (_noise_everywhere, {L.IMAGE, L.IMAGE_REGION}),
        (_shrink_mask, {L.DICE}),
        (_bend_field, {L.SMOOTHNESS}),
        (_refine_volume, {L.VOLUME}),
        (_wrong_baseline, {L.BASELINE_DICE}),
    ],
)
def test_each_term_reacts_to_its_error(perturb: Callable[[dict, dict], None], terms: set[str]) -> None:
    pred, batch = _perfect()
    perturb(pred, batch)
    out = GrowthLoss()(pred, batch)
    for name in GROWTH_TERMS:
        if name in terms:
            assert float(out[name]) > 1e-2, name
        else:
            assert abs(float(out[name])) < 1e-5, name
    assert float(out[TOTAL]) > 1e-2


def test_region_term_sees_only_the_nodule() -> None:
    pred, batch = _perfect()
    # region: 1 voxel around the nodule; SSIM windows reach 1 voxel further; the error starts 4 voxels away
    far = (torch.nn.functional.max_pool3d(batch[str(B.FOLLOWUP_LABEL)], 7, stride=1, padding=3) == 0).float()
    pred[str(K.IMAGE)] = pred[str(K.IMAGE)] + 0.3 * far
    out = GrowthLoss(region_margin=1, ssim_win_size=3, ssim_kernel_sigma=0.5)(pred, batch)
    assert float(out[f"{L.IMAGE}/l1"]) > 1e-2 and float(out[f"{L.IMAGE}/ssim"]) > 1e-3
    assert abs(float(out[L.IMAGE_REGION])) < 1e-5


def test_global_ssim_is_monai_ssim_loss() -> None:
    pred, batch = _perfect()
    _noise_everywhere(pred, batch)
    out = GrowthLoss(ssim_win_size=5, ssim_kernel_sigma=0.8)(pred, batch)
    reference = SSIMLoss(spatial_dims=3, win_size=5, kernel_sigma=0.8)(pred[str(K.IMAGE)], batch[str(B.FOLLOWUP_IMAGE)])
    torch.testing.assert_close(out[f"{L.IMAGE}/ssim"], reference)
    l1 = (pred[str(K.IMAGE)] - batch[str(B.FOLLOWUP_IMAGE)]).abs().mean()
    torch.testing.assert_close(out[L.IMAGE], l1 + reference)


def test_total_is_weighted_sum_and_backward() -> None:
    pred, batch = _perfect()
    for f in (_noise_everywhere, _shrink_mask, _bend_field):
        f(pred, batch)
    pred[str(K.WARPED_MASK)] = _sphere(3.0)
    pred = {k: v.requires_grad_(True) for k, v in pred.items()}
    weights = {str(L.SMOOTHNESS): 0.5, str(L.VOLUME): 2.0, str(L.BASELINE_DICE): 0.0}
    out = GrowthLoss(weights=weights)(pred, batch)
    w = {**DEFAULT_GROWTH_WEIGHTS, **weights}
    expected = sum(w[t] * out[t] for t in GROWTH_TERMS)
    torch.testing.assert_close(out[TOTAL], expected)
    assert all(not v.requires_grad for k, v in out.items() if k != TOTAL)
    out[TOTAL].backward()
    for k in (K.IMAGE, K.MASK, K.DDF, K.WARPED_MASK):
        assert bool(torch.isfinite(pred[k].grad).all()) and float(pred[k].grad.abs().sum()) > 0, k


def test_custom_batch_keys() -> None:
    pred, batch = _perfect()
    _shrink_mask(pred, batch)
    reference = GrowthLoss()(pred, batch)
    renamed = {"fu_ct": batch[str(B.FOLLOWUP_IMAGE)], "fu_seg": batch[str(B.FOLLOWUP_LABEL)], "base": batch[B.LABEL]}
    loss = GrowthLoss(followup_image_key="fu_ct", followup_label_key="fu_seg", baseline_label_key="base")
    out = loss(pred, renamed)
    assert set(out) == set(reference)
    for k, v in reference.items():
        torch.testing.assert_close(out[k], v)


def test_missing_and_ignored_labels() -> None:
    pred, batch = _perfect()
    _shrink_mask(pred, batch)
    del batch[str(B.FOLLOWUP_LABEL)], batch[str(B.LABEL)]
    out = GrowthLoss()(pred, batch)
    assert not {L.DICE, L.IMAGE_REGION, L.BASELINE_DICE} & set(out)
    assert {L.IMAGE, L.SMOOTHNESS, L.VOLUME} <= set(out)

    pred, batch = _perfect()
    _shrink_mask(pred, batch)
    full = GrowthLoss()(pred, batch)[L.DICE]
    batch[str(B.FOLLOWUP_LABEL)] = batch[str(B.FOLLOWUP_LABEL)].clone()
    batch[str(B.FOLLOWUP_LABEL)][1] = IGNORE_INDEX
    pred[str(K.MASK)][1] = -pred[str(K.MASK)][1]  # a wrong prediction for the ignored sample does not count
    torch.testing.assert_close(GrowthLoss()(pred, batch)[L.DICE], full)


@pytest.mark.parametrize(("smoothness", "expected"), [("bending", 4.0 / 3.0), ("diffusion", None)])
def test_smoothness_of_a_known_field(smoothness: str, expected: float | None) -> None:
    """``ddf_0 = x_0**2``: second derivative 2 along axis 0, so the bending energy is ``2**2`` on one channel of 3;
    the diffusion (first derivatives ``2 x_0``) averages ``(2 x_0)**2 / 3`` over the inner voxels."""
    x0 = torch.arange(S, dtype=torch.float32)[:, None, None].expand(S, S, S)
    ddf = torch.zeros(N, 3, S, S, S)
    ddf[:, 0] = x0**2
    if expected is None:
        expected = float(((2 * x0[1:-1, 1:-1, 1:-1]) ** 2).mean() / 3)
    pred, batch = _perfect()
    pred[str(K.DDF)] = ddf
    out = GrowthLoss(smoothness=smoothness)(pred, batch)
    torch.testing.assert_close(out[L.SMOOTHNESS], torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_diffusion_smoothness() -> None:
    loss = GrowthLoss(smoothness="diffusion")
    pred, batch = _perfect()
    pred[str(K.DDF)] = torch.full((N, 3, S, S, S), 2.0)  # a translation is smooth
    assert abs(float(loss(pred, batch)[L.SMOOTHNESS])) < 1e-6
    _bend_field(pred, batch)
    assert float(loss(pred, batch)[L.SMOOTHNESS]) > 1e-2


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"weights": {"psnr": 1.0}}, "weights"),
        ({"weights": {"dice": -1.0}}, "weights"),
        ({"smoothness": "tv"}, "smoothness"),
        ({"ssim_win_size": 6}, "ssim_win_size"),
        ({"ssim_kernel_sigma": 0}, "ssim_kernel_sigma"),
        ({"data_range": -1}, "data_range"),
        ({"region_margin": -1}, "region_margin"),
        ({"volume_eps": 0}, "volume_eps"),
        ({"dice_kwargs": {"no_such_arg": 1}}, "dice_kwargs"),
        ({"followup_label_key": ""}, "followup_label_key"),
    ],
)
def test_ill_arg(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        GrowthLoss(**kwargs)


def test_ill_input() -> None:
    pred, batch = _perfect()
    with pytest.raises(ValueError, match="'followup_image'"):
        GrowthLoss()(pred, {k: v for k, v in batch.items() if k != B.FOLLOWUP_IMAGE})
    with pytest.raises(ValueError, match="followup_label"):
        GrowthLoss()(pred, {**batch, str(B.FOLLOWUP_LABEL): batch[str(B.FOLLOWUP_LABEL)][:, :, :10]})
    with pytest.raises(ValueError, match="ssim_win_size"):
        GrowthLoss(ssim_win_size=31)(pred, batch)


def test_key_names_live_in_constants() -> None:
    """The key enums are those of ``constants`` (the old import paths re-export them); the loss reads by default the
    batch names the transforms give the datalist's follow-up, which keeps its own names."""
    import lung_nodule_mtl.constants as C
    from lung_nodule_mtl.data.synthetic.growth import GrowthKeys
    from lung_nodule_mtl.losses.multitask import LossKeys
    from lung_nodule_mtl.transforms.growth import FOLLOWUP_IMAGE_KEY, FOLLOWUP_LABEL_KEY

    assert (K, B, L, GrowthKeys, LossKeys) == (
        C.GrowthOutputKeys,
        C.GrowthBatchKeys,
        C.GrowthLossKeys,
        C.GrowthKeys,
        C.LossKeys,
    )
    assert (GrowthKeys.FOLLOWUP, GrowthKeys.FOLLOWUP_MASK) == ("followup", "followup_mask")  # datalists on disk
    assert (B.FOLLOWUP_IMAGE, B.FOLLOWUP_LABEL) == (FOLLOWUP_IMAGE_KEY, FOLLOWUP_LABEL_KEY)
    loss = GrowthLoss()
    assert (loss.followup_image_key, loss.followup_label_key) == ("followup_image", "followup_label")
