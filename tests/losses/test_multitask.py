"""MultiTaskLoss / UncertaintyWeightedLoss: missing labels, weighting, size priors, deep supervision, learning."""

from __future__ import annotations

import math

import pytest
import torch

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, ATTRIBUTE_NAMES, IGNORE_INDEX, Keys, OutputKeys
from lung_nodule_mtl.losses import TASKS, LossKeys, MultiTaskLoss, UncertaintyWeightedLoss
from lung_nodule_mtl.networks import LNMSNet, deep_supervision_key

B, S = 3, 12
MASK = str(OutputKeys.MASK)
TOTAL = str(LossKeys.TOTAL)


def _sphere(size: int, radius: float, center: tuple[float, float, float] | None = None) -> torch.Tensor:
    c = torch.tensor(center if center is not None else [(size - 1) / 2.0] * 3)
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij"))
    return (((grid - c[:, None, None, None]) ** 2).sum(0) <= radius**2).float()


def _pred(requires_grad: bool = True) -> dict[str, torch.Tensor]:
    pred = {
        MASK: torch.randn(B, 1, S, S, S),
        str(Keys.MALIGNANCY): torch.randn(B, 1),
        str(Keys.MALIGNANCY_SCORE): 1 + 4 * torch.rand(B, 1),
        **{name: torch.randn(B, n) for name, n in ATTRIBUTE_CLASSES.items()},
    }
    return {k: v.requires_grad_(requires_grad) for k, v in pred.items()}


def _batch() -> dict[str, torch.Tensor]:
    return {
        str(Keys.LABEL): _sphere(S, 3)[None, None].repeat(B, 1, 1, 1, 1),
        str(Keys.MALIGNANCY): torch.tensor([1.0, IGNORE_INDEX, 0.5]),  # a missing and a soft label
        str(Keys.MALIGNANCY_SCORE): torch.tensor([4.0, 2.0, IGNORE_INDEX]),
        **{name: torch.tensor([0, n - 1, IGNORE_INDEX]) for name, n in ATTRIBUTE_CLASSES.items()},
    }


def test_components_finite_and_total() -> None:
    loss = MultiTaskLoss(weights={"attributes": 0.5})
    pred, batch = _pred(), _batch()
    out = loss(pred, batch)
    assert {TOTAL, "segmentation", "malignancy", "malignancy_score", "attributes"} <= set(out)
    assert {f"attributes/{n}" for n in ATTRIBUTE_NAMES} <= set(out)
    assert all(bool(torch.isfinite(v)) and v.dim() == 0 for v in out.values())
    expected = out["segmentation"] + out["malignancy"] + out["malignancy_score"] + 0.5 * out["attributes"]
    torch.testing.assert_close(out[TOTAL], expected)
    out[TOTAL].backward()
    assert all(bool(torch.isfinite(v.grad).all()) for v in pred.values())


def test_ignored_labels_do_not_matter() -> None:
    loss = MultiTaskLoss()
    pred, batch = _pred(False), _batch()
    reference = loss(pred, batch)[TOTAL]
    # the ignored samples' predictions do not change the loss either
    pred2 = dict(pred)
    pred2[str(Keys.MALIGNANCY)] = pred[str(Keys.MALIGNANCY)].clone()
    pred2[str(Keys.MALIGNANCY)][1] = 100.0
    pred2[str(Keys.MALIGNANCY_SCORE)] = pred[str(Keys.MALIGNANCY_SCORE)].clone()
    pred2[str(Keys.MALIGNANCY_SCORE)][2] = 5.0
    for name in ATTRIBUTE_NAMES:
        pred2[name] = pred[name].clone()
        pred2[name][2] = 50.0
    torch.testing.assert_close(loss(pred2, batch)[TOTAL], reference)
    # other "missing" encodings: -1 (raw indeterminate), NaN
    batch2 = dict(batch)
    batch2[str(Keys.MALIGNANCY)] = torch.tensor([1.0, -1.0, 0.5])
    batch2[str(Keys.MALIGNANCY_SCORE)] = torch.tensor([4.0, 2.0, math.nan])
    torch.testing.assert_close(loss(pred, batch2)[TOTAL], reference)
    # a labelled value does matter
    batch2[str(Keys.MALIGNANCY)] = torch.tensor([0.0, IGNORE_INDEX, 0.5])
    assert not torch.allclose(loss(pred, batch2)[TOTAL], reference)


def test_all_missing_is_zero_not_nan() -> None:
    pred = _pred()
    batch = {k: torch.full_like(v, IGNORE_INDEX) for k, v in _batch().items()}
    for loss in (MultiTaskLoss(), UncertaintyWeightedLoss()):
        out = loss(pred, batch)
        assert all(float(v.detach()) == 0.0 for k, v in out.items() if not k.startswith("log_var/")), out
        out[TOTAL].backward()
        assert all(v.grad is not None and bool((v.grad == 0).all()) for v in pred.values())
    # absent keys are the same as all missing
    out = MultiTaskLoss()({k: v.detach() for k, v in pred.items()}, {})
    assert float(out[TOTAL]) == 0.0


def test_missing_mask_per_sample() -> None:
    loss = MultiTaskLoss()
    pred, batch = _pred(False), _batch()
    batch[str(Keys.LABEL)][1] = IGNORE_INDEX  # sample 1 has no mask
    reference = loss(pred, batch)["segmentation"]
    pred[MASK][1] = 30.0
    torch.testing.assert_close(loss(pred, batch)["segmentation"], reference)
    expected = loss({MASK: pred[MASK][[0, 2]]}, {str(Keys.LABEL): batch[str(Keys.LABEL)][[0, 2]]})["segmentation"]
    torch.testing.assert_close(reference, expected)


def test_ablation_outputs() -> None:
    """Segmentation-only and classification-only predictions: only their tasks are computed."""
    pred, batch = _pred(False), _batch()
    seg = MultiTaskLoss()({MASK: pred[MASK]}, batch)
    assert set(seg) == {TOTAL, "segmentation"}
    cls = MultiTaskLoss()({k: v for k, v in pred.items() if k != MASK}, batch)
    assert "segmentation" not in cls and "malignancy" in cls


def test_pos_weight_and_focal() -> None:
    pred, batch = _pred(False), _batch()
    plain = MultiTaskLoss()(pred, batch)
    weighted = MultiTaskLoss(pos_weight=5.0)(pred, batch)
    assert float(weighted["malignancy"]) > float(plain["malignancy"])
    focal = MultiTaskLoss(seg_loss="dice_focal")(pred, batch)
    assert bool(torch.isfinite(focal["segmentation"]))


def test_deep_supervision() -> None:
    pred, batch = _pred(False), _batch()
    label = batch[str(Keys.LABEL)]
    pred[deep_supervision_key(1)] = torch.nn.functional.interpolate(label, size=(6, 6, 6)) * 20 - 10  # perfect
    pred[deep_supervision_key(2)] = torch.randn(B, 1, 3, 3, 3)
    loss = MultiTaskLoss()
    with_ds = loss(pred, batch)["segmentation"]
    main = loss({MASK: pred[MASK]}, batch)["segmentation"]
    assert bool(torch.isfinite(with_ds)) and not torch.allclose(with_ds, main)


def test_uncertainty_weighting() -> None:
    loss = UncertaintyWeightedLoss(log_var_init=0.5)
    params = list(loss.parameters())
    assert len(params) == 1 and params[0].shape == (len(TASKS),) and params[0].requires_grad
    assert not list(MultiTaskLoss().parameters())
    pred, batch = _pred(), _batch()
    out = loss(pred, batch)
    assert {f"log_var/{t}" for t in TASKS} <= set(out)
    out[TOTAL].backward()
    grad = dict(zip(TASKS, loss.log_vars.grad, strict=True))
    assert all(float(grad[t]) != 0 for t in ("segmentation", "malignancy", "malignancy_score", "attributes"))
    assert float(grad["diameter_mm"]) == 0.0  # no diameter head: no gradient
    # the same interface: s = 0 gives the fixed-weight total
    fixed = MultiTaskLoss()(pred, batch)[TOTAL]
    torch.testing.assert_close(UncertaintyWeightedLoss()(pred, batch)[TOTAL], fixed)
    # the learned weights move with an optimiser
    opt = torch.optim.SGD(loss.parameters(), lr=0.1)
    before = loss.log_vars.detach().clone()
    opt.step()
    assert not torch.equal(before, loss.log_vars.detach())


def test_size_prior_off_by_default() -> None:
    pred, batch = _pred(False), _batch()
    batch[str(Keys.DIAMETER)] = torch.tensor([6.0, 6.0, IGNORE_INDEX])
    out = MultiTaskLoss()(pred, batch)
    assert "size_prior" not in out and "spatial_prior" not in out
    pred[MASK] = torch.full_like(pred[MASK], 10.0)  # everything foreground: no prior reacts
    out_big = MultiTaskLoss()(pred, batch)
    assert "size_prior" not in out_big


def test_size_prior_grows_with_oversized_mask() -> None:
    batch = {str(Keys.DIAMETER): torch.tensor([6.0, 6.0, IGNORE_INDEX])}
    loss = MultiTaskLoss(size_prior_weight=1.0, spatial_prior_weight=1.0)

    def priors(radius: float) -> tuple[float, float]:
        mask = (_sphere(S, radius) * 20 - 10)[None, None].repeat(B, 1, 1, 1, 1)
        out = loss({MASK: mask}, batch)
        return float(out["size_prior"]), float(out["spatial_prior"])

    right_size, right_spatial = priors(3.0)
    too_big, too_big_spatial = priors(6.0)
    far_too_big, far_spatial = priors(12.0)
    assert right_size == pytest.approx(0.0, abs=1e-3) and right_spatial < 1e-3
    assert 0 < too_big < far_too_big and 0 < too_big_spatial < far_spatial
    # the prior enters the total with its weight
    mask = torch.full((B, 1, S, S, S), 10.0)
    with_prior = loss({MASK: mask}, batch)
    without = MultiTaskLoss()({MASK: mask}, batch)
    torch.testing.assert_close(
        with_prior[TOTAL], without[TOTAL] + with_prior["size_prior"] + with_prior["spatial_prior"]
    )


def test_size_prior_from_predicted_diameter() -> None:
    mask = torch.full((2, 1, S, S, S), 10.0, requires_grad=True)
    pred = {MASK: mask, str(Keys.DIAMETER): torch.tensor([[6.0], [6.0]], requires_grad=True)}
    loss = MultiTaskLoss(size_prior_weight=1.0)
    out = loss(pred, {})
    assert float(out["size_prior"]) > 0 and float(out["diameter_mm"]) == 0.0
    out[TOTAL].backward()
    assert pred[str(Keys.DIAMETER)].grad is None or bool((pred[str(Keys.DIAMETER)].grad == 0).all())
    assert bool(mask.grad.abs().sum() > 0)
    assert float(MultiTaskLoss(size_prior_weight=1.0, use_predicted_diameter=False)(pred, {})["size_prior"]) == 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"seg_loss": "dice"}, "seg_loss"),
        ({"seg_loss_kwargs": {"no_such": 1}}, "seg_loss_kwargs"),
        ({"pos_weight": 0}, "pos_weight"),
        ({"weights": {"mask": 1.0}}, "weights"),
        ({"weights": {"malignancy": -1.0}}, "weights"),
        ({"deep_supervision_weight_mode": "linear"}, "deep_supervision_weight_mode"),
        ({"size_prior_weight": -1}, "size_prior_weight"),
        ({"spacing_mm": (1.0, 1.0)}, "spacing_mm"),
        ({"size_tolerance": 0.5}, "size_tolerance"),
        ({"spatial_radius_factor": 0}, "spatial_radius_factor"),
        ({"spatial_radius_mm": -2.0}, "spatial_radius_mm"),
    ],
)
def test_ill_arg(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        MultiTaskLoss(**kwargs)


def test_ill_batch() -> None:
    pred = _pred(False)
    with pytest.raises(ValueError, match="label"):
        MultiTaskLoss()(pred, {str(Keys.LABEL): torch.zeros(B, 1, 4, 4, 4)})
    with pytest.raises(ValueError, match="malignancy"):
        MultiTaskLoss()(pred, {str(Keys.MALIGNANCY): torch.zeros(B + 1)})


@pytest.mark.slow
def test_learns_sphere() -> None:
    """A few dozen steps on two 32³ volumes with a bright sphere: the loss falls and the Dice rises."""
    torch.manual_seed(0)
    size = 32
    label = torch.stack([_sphere(size, 6, (14, 16, 17)), _sphere(size, 4, (17, 15, 15))])[:, None]
    image = label + 0.2 * torch.randn_like(label)
    batch = {
        str(Keys.LABEL): label,
        str(Keys.MALIGNANCY): torch.tensor([1.0, 0.0]),
        str(Keys.MALIGNANCY_SCORE): torch.tensor([4.5, 1.5]),
        str(Keys.DIAMETER): torch.tensor([12.0, 8.0]),
    }
    net = LNMSNet(init_filters=4, heads=["malignancy", "malignancy_score"], deep_supervision=True)
    loss_fn = UncertaintyWeightedLoss(size_prior_weight=0.1)
    opt = torch.optim.Adam([*net.parameters(), *loss_fn.parameters()], lr=3e-3)

    def dice(logits: torch.Tensor) -> float:
        p = (logits.detach() > 0).float()
        return float(2 * (p * label).sum() / (p.sum() + label.sum()))

    losses, dices = [], []
    for _ in range(40):
        out = net(image)
        terms = loss_fn(out, batch)
        opt.zero_grad()
        terms[TOTAL].backward()
        opt.step()
        losses.append(float(terms[TOTAL].detach()))
        dices.append(dice(out[MASK]))
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, Dice {dices[0]:.3f} -> {dices[-1]:.3f}")
    assert dices[-1] > 0.7 > dices[0], dices


def test_detection_head_loss_is_bce_over_labelled_windows_only() -> None:
    logits = torch.tensor([[2.0], [-1.0], [0.5]], requires_grad=True)
    pred = {**_pred(False), str(OutputKeys.NODULE): logits}
    batch = {**_batch(), str(Keys.NODULE): torch.tensor([1.0, 0.0, IGNORE_INDEX])}
    out = MultiTaskLoss()(pred, batch)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(out[str(LossKeys.DETECTION)], expected)
    assert str(LossKeys.DETECTION) in TASKS
    out[TOTAL].backward()
    assert logits.grad is not None and logits.grad[2, 0] == 0  # the unlabelled window gives no gradient
    # a batch without detection labels: the task adds exactly zero
    none = MultiTaskLoss()({**_pred(False), str(OutputKeys.NODULE): logits.detach()}, _batch())
    assert none[str(LossKeys.DETECTION)].item() == 0.0


def test_attribute_class_weights_reweight_the_cross_entropy() -> None:
    import torch.nn.functional as F

    from lung_nodule_mtl.data.datalist import attribute_class_weights

    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 5])
    y = torch.tensor([0, 4, IGNORE_INDEX])  # the third is unlabelled
    pred, batch = {"texture": logits}, {"texture": y}
    ce = F.cross_entropy(logits[:2], y[:2], reduction="none")
    plain = MultiTaskLoss().attribute_losses(pred, batch)["texture"]
    assert plain.item() == pytest.approx(ce.mean().item())
    weights = [1.0, 1.0, 1.0, 1.0, 3.0]
    weighted = MultiTaskLoss(attribute_class_weights={"texture": weights}).attribute_losses(pred, batch)
    assert weighted["texture"].item() == pytest.approx(((ce[0] + 3 * ce[1]) / 4).item())  # the rare class counts 3x
    assert weighted["texture"].item() > plain.item() and weighted["texture/valid"].item() == 1.0
    with pytest.raises(ValueError, match="texture"):
        MultiTaskLoss(attribute_class_weights={"texture": [1.0, 2.0]})
    with pytest.raises(ValueError, match="attribute_class_weights"):
        MultiTaskLoss(attribute_class_weights={"colour": [1.0]})

    # from a training split's 1-based ratings: (count + 1) ** -power, mean 1 over the ratings seen
    items = [{"texture": 5}] * 8 + [{"texture": 1}] * 2 + [{"texture": None}, {}]
    w = attribute_class_weights(items, power=1.0, attributes=["texture"])
    raw_common, raw_rare = 1 / 9, 1 / 3
    mean = (raw_common + raw_rare) / 2
    assert w == {"texture": pytest.approx([raw_rare / mean, raw_rare / mean, raw_rare / mean, raw_rare / mean,
                                           raw_common / mean], abs=1e-6)}  # fmt: skip
    assert attribute_class_weights(items, power=0.0) is None
    assert set(attribute_class_weights(items, power=0.5)) == {"texture"}  # attributes without ratings left out
    with pytest.raises(ValueError, match="power"):
        attribute_class_weights(items, power=-1)


def test_ordinal_term_costs_distant_ratings_more() -> None:
    from lung_nodule_mtl.losses import ranked_probability_score

    # a certain answer: 0 when right, (distance) / (n - 1) when wrong; the cross-entropy cannot tell them apart
    certain = torch.full((3, 5), -30.0)
    certain[:, 0] = 30.0  # every sample answers level 0 (rating 1)
    rps = ranked_probability_score(certain, torch.tensor([0, 1, 4]))
    torch.testing.assert_close(rps, torch.tensor([0.0, 0.25, 1.0]), atol=1e-6, rtol=0)
    # uniform probabilities against the middle level: sum_k (F_k - 1[2 <= k])^2 / 4 = (.04 + .16 + .16 + .04) / 4
    assert ranked_probability_score(torch.zeros(1, 5), torch.tensor([2])).item() == pytest.approx(0.1)

    logits = torch.tensor([[3.0, 0.0, 0.0, 0.0, 0.0]] * 2, requires_grad=True)
    y = torch.tensor([1, 4])  # one level off, four levels off
    batch = {"texture": y, "calcification": torch.tensor([1, 5])}
    pred = {"texture": logits, "calcification": torch.zeros(2, 6)}
    plain = MultiTaskLoss().attribute_losses(pred, batch)
    ordinal = MultiTaskLoss(attribute_ordinal_weight=2.0).attribute_losses(pred, batch)
    import torch.nn.functional as F

    ce = F.cross_entropy(logits, y, reduction="none")
    expected = (ce + 2.0 * ranked_probability_score(logits, y)).mean()
    assert ordinal["texture"].item() == pytest.approx(expected.item())
    assert ordinal["texture"].item() > plain["texture"].item()
    # calcification names kinds, not degrees: no ordinal term
    assert ordinal["calcification"].item() == pytest.approx(plain["calcification"].item())
    # its gradient moves probability towards the far rating more than the cross-entropy's does
    ordinal["texture"].backward()
    grad_far = logits.grad[1].clone()
    assert grad_far[4] < 0 and grad_far[3] < 0  # raising the levels near the truth lowers the loss
    # only the listed attributes, and a valid weight
    only = MultiTaskLoss(attribute_ordinal_weight=2.0, ordinal_attributes=["margin"]).attribute_losses(pred, batch)
    assert only["texture"].item() == pytest.approx(plain["texture"].item())
    with pytest.raises(ValueError, match="attribute_ordinal_weight"):
        MultiTaskLoss(attribute_ordinal_weight=-1.0)
    with pytest.raises(ValueError, match="ordinal_attributes"):
        MultiTaskLoss(ordinal_attributes=["colour"])
