"""NoduleGrowthNet: warping conventions, shapes, identity at init, interval conditioning, gradients, encoder loading."""

from __future__ import annotations

import pytest
import torch

from lung_nodule_mtl.losses import GrowthLoss
from lung_nodule_mtl.networks import GrowthBatchKeys, GrowthOutputKeys, LNMSNet, NoduleGrowthNet

TINY = {"init_filters": 4}
K = GrowthOutputKeys
ALL_KEYS = {str(k) for k in GrowthOutputKeys}


def _sphere(size: int | tuple[int, int, int], radius: float, center: tuple[float, float, float]) -> torch.Tensor:
    """Binary sphere ``(1, 1, D, H, W)``."""
    shape = (size,) * 3 if isinstance(size, int) else size
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij"))
    c = torch.tensor(center)[:, None, None, None]
    return (((grid - c) ** 2).sum(0) <= radius**2).float()[None, None]


def _com(m: torch.Tensor) -> torch.Tensor:
    """Centre of mass ``(3,)`` in voxels of a ``(1, 1, D, H, W)`` non-negative map, axes in tensor order."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in m.shape[2:]], indexing="ij"))
    w = m[0, 0]
    return (grid * w).flatten(1).sum(1) / w.sum()


def _crop(n: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    mask = _sphere(size, size / 6, ((size - 1) / 2,) * 3).repeat(n, 1, 1, 1, 1)
    image = 0.1 + 0.6 * mask.repeat(1, 3, 1, 1, 1) + 0.05 * torch.rand(n, 3, size, size, size)
    return image, mask


# ---------------------------------------------------------------- warping conventions
def test_zero_field_is_identity() -> None:
    net = NoduleGrowthNet(**TINY)
    image, mask = _crop()
    ddf = torch.zeros(2, 3, 32, 32, 32)
    torch.testing.assert_close(net.warp(image, ddf), image)
    torch.testing.assert_close(net.warp(mask, ddf, mask=True), mask)
    torch.testing.assert_close(net.field_to_ddf(ddf), ddf)


@pytest.mark.parametrize(("axis", "shift"), [(0, 2.0), (1, -3.0), (2, 1.5)])
@pytest.mark.parametrize("integrate", [False, True])
def test_constant_field_moves_sphere(axis: int, shift: float, integrate: bool) -> None:
    """``out[p] = in[p + ddf[p]]``: a constant ``ddf = +d`` along axis ``i`` moves the content by ``-d`` on axis ``i``.

    The same holds for a constant stationary velocity field integrated by scaling and squaring (its DDF is the
    velocity itself away from the borders).
    """
    net = NoduleGrowthNet(**TINY)
    mask = _sphere(32, 5.0, (15.5, 15.0, 16.0))
    field = torch.zeros(1, 3, 32, 32, 32)
    field[:, axis] = shift
    ddf = net.field_to_ddf(field) if integrate else field
    moved = net.warp(mask, ddf, mask=True)
    expected = _com(mask)
    expected[axis] -= shift
    torch.testing.assert_close(_com(moved), expected, atol=0.5, rtol=0)
    assert abs(float(moved.sum() - mask.sum())) < 0.02 * float(mask.sum())  # a translation keeps the volume
    image = mask.repeat(1, 3, 1, 1, 1) * torch.tensor([0.2, 0.5, 1.0])[None, :, None, None, None]
    moved_image = net.warp(image, ddf)
    for c in range(3):
        torch.testing.assert_close(_com(moved_image[:, c : c + 1]), expected, atol=0.5, rtol=0)


@pytest.mark.parametrize("field", ["svf", "ddf"])
def test_network_field_scales_with_interval(field: str) -> None:
    """The head predicts a velocity in voxels per ``interval_scale_days``: 2 years move twice as far as one."""
    net = NoduleGrowthNet(field=field, **TINY).eval()
    with torch.no_grad():
        net.field_head.bias.copy_(torch.tensor([1.5, 0.0, -1.0]))  # weights are zero (identity_init)
    image, mask = _crop(1)
    for years in (0.0, 1.0, 2.0):
        with torch.no_grad():
            out = net(image, torch.tensor([365.0 * years]), mask)
        expected = _com(mask) - years * torch.tensor([1.5, 0.0, -1.0])
        torch.testing.assert_close(_com(out[K.WARPED_MASK]), expected, atol=0.5, rtol=0)
        centre = out[K.DDF][0, :, 16, 16, 16]
        torch.testing.assert_close(centre, years * torch.tensor([1.5, 0.0, -1.0]), atol=1e-4, rtol=0)


# ---------------------------------------------------------------- shapes and identity at init
@pytest.mark.parametrize("use_mask_input", [False, True])
@pytest.mark.parametrize(("init_filters", "size"), [(4, (32, 32, 32)), (8, (48, 48, 48)), (4, (20, 33, 24))])
def test_shape(use_mask_input: bool, init_filters: int, size: tuple[int, int, int]) -> None:
    net = NoduleGrowthNet(use_mask_input=use_mask_input, init_filters=init_filters).eval()
    image = torch.rand(2, 3, *size)
    mask = _sphere(size, 4.0, tuple(s / 2 for s in size)).repeat(2, 1, 1, 1, 1)
    with torch.no_grad():
        out = net(image, torch.tensor([[90.0], [400.0]]), mask)
    assert set(out) == ALL_KEYS
    for key in (K.IMAGE, K.WARPED_IMAGE, K.RESIDUAL):
        assert out[key].shape == (2, 3, *size), key
    for key in (K.MASK, K.WARPED_MASK, K.BASELINE_MASK):
        assert out[key].shape == (2, 1, *size), key
    assert out[K.DDF].shape == (2, 3, *size)
    assert all(bool(torch.isfinite(v).all()) for v in out.values())


def test_mask_optional_without_mask_input() -> None:
    """Without a baseline mask, the shape decoder's own baseline mask is warped."""
    net = NoduleGrowthNet(**TINY).eval()
    image, _ = _crop()
    with torch.no_grad():
        out = net(image, 200.0)  # a scalar interval is broadcast to the batch
    torch.testing.assert_close(out[K.WARPED_MASK], torch.sigmoid(out[K.BASELINE_MASK]))
    assert set(out) == ALL_KEYS


@pytest.mark.parametrize("use_mask_input", [False, True])
def test_identity_init_returns_baseline(use_mask_input: bool) -> None:
    net = NoduleGrowthNet(use_mask_input=use_mask_input, **TINY)
    image, mask = _crop()
    out = net(image, torch.tensor([100.0, 700.0]), mask)
    torch.testing.assert_close(out[K.DDF], torch.zeros_like(out[K.DDF]))
    torch.testing.assert_close(out[K.RESIDUAL], torch.zeros_like(image))
    torch.testing.assert_close(out[K.IMAGE], image)
    torch.testing.assert_close(out[K.WARPED_IMAGE], image)
    torch.testing.assert_close(out[K.WARPED_MASK], mask)
    assert torch.equal((out[K.MASK] > 0).float(), mask)
    torch.testing.assert_close(torch.sigmoid(out[K.MASK]), mask, atol=2 * net.mask_eps, rtol=0)


# ---------------------------------------------------------------- conditioning and gradients
def test_interval_changes_texture() -> None:
    net = NoduleGrowthNet(identity_init=False, residual_margin=None, **TINY).eval()
    image, mask = _crop(1)
    with torch.no_grad():
        short = net(image, torch.tensor([30.0]), mask)
        long = net(image, torch.tensor([1500.0]), mask)
        again = net(image, torch.tensor([30.0]), mask)
    torch.testing.assert_close(short[K.RESIDUAL], again[K.RESIDUAL])
    assert float((short[K.RESIDUAL] - long[K.RESIDUAL]).abs().max()) > 1e-4
    # no interval, no displacement (the velocity is scaled by the interval)
    with torch.no_grad():
        zero = net(image, torch.tensor([0.0]), mask)
    assert float(zero[K.DDF].abs().max()) == 0.0
    torch.testing.assert_close(zero[K.WARPED_IMAGE], image)


def test_residual_is_gated_around_the_nodule() -> None:
    net = NoduleGrowthNet(identity_init=False, residual_margin=2, **TINY).eval()
    image, mask = _crop(1)
    with torch.no_grad():
        out = net(image, torch.tensor([0.0]), mask)  # zero interval: warped mask == mask
    far = torch.nn.functional.max_pool3d(mask, kernel_size=5, stride=1, padding=2) == 0
    assert float(out[K.RESIDUAL].abs().amax(dim=1, keepdim=True)[far].max()) == 0.0
    assert float(out[K.RESIDUAL].abs().max()) > 0.0


def _batch(image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    size = image.shape[-1]
    grown = _sphere(size, size / 6 + 1.0, ((size - 1) / 2,) * 3).repeat(image.shape[0], 1, 1, 1, 1)
    return {
        str(GrowthBatchKeys.FOLLOWUP_IMAGE): 0.1 + 0.7 * grown.repeat(1, 3, 1, 1, 1),
        str(GrowthBatchKeys.FOLLOWUP_LABEL): grown,
        str(GrowthBatchKeys.LABEL): mask,
    }


@pytest.mark.parametrize("use_mask_input", [False, True])
def test_gradient_reaches_every_parameter(use_mask_input: bool) -> None:
    net = NoduleGrowthNet(identity_init=False, use_mask_input=use_mask_input, **TINY)
    image, mask = _crop()
    out = net(image, torch.tensor([200.0, 600.0]), mask)
    GrowthLoss()(out, _batch(image, mask))["loss"].backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
    for decoder in (net.shape_decoder, net.texture_decoder, net.cross_attention, net.interval_embedding):
        assert all(float(p.grad.abs().sum()) > 0 for p in decoder.parameters())


def test_gradient_at_identity_init() -> None:
    """Zero output layers still get gradients, so training leaves the identity on the first step."""
    net = NoduleGrowthNet(**TINY)
    image, mask = _crop()
    out = net(image, torch.tensor([200.0, 600.0]), mask)
    GrowthLoss()(out, _batch(image, mask))["loss"].backward()
    for layer in (net.field_head, net.residual_head, net.mask_head[-1]):
        assert float(layer.weight.grad.abs().sum()) > 0


def test_learns_growth() -> None:
    """A few steps on one baseline/follow-up pair lower the loss (the pipeline trains end to end)."""
    net = NoduleGrowthNet(init_filters=4, blocks=(1, 1, 1), cross_attention_levels=(1,))
    image, mask = _crop(1, size=16)
    batch = _batch(image, mask)
    loss_fn = GrowthLoss()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    days = torch.tensor([365.0])
    history = []
    for _ in range(12):
        opt.zero_grad()
        out = loss_fn(net(image, days, mask), batch)
        out["loss"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in out.items()})
    for term in ("loss", "image", "dice"):
        assert history[-1][term] < 0.8 * history[0][term], term


# ---------------------------------------------------------------- encoder transfer
@pytest.mark.parametrize("use_mask_input", [False, True])
def test_load_encoder_from_lnmsnet(use_mask_input: bool, tmp_path) -> None:
    source = LNMSNet(in_channels=3, heads=[], **TINY)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))  # different from any fresh initialisation
    net = NoduleGrowthNet(use_mask_input=use_mask_input, **TINY)
    decoder_before = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("shape_decoder.")}
    path = tmp_path / "lnmsnet.pt"
    torch.save({"model": source.state_dict()}, path)
    report = net.load_encoder_from(path)
    assert not report.shape_mismatch and not report.missing
    src, dst = source.state_dict(), net.state_dict()
    encoder_keys = [k for k in src if k.startswith(("encoder.", "bottleneck_ms."))]
    assert sorted(report.loaded) == sorted(encoder_keys)
    for k in encoder_keys:
        if k == "encoder.conv1.weight" and use_mask_input:
            assert torch.equal(dst[k][:, :3], src[k]) and not bool(dst[k][:, 3:].any())
        else:
            assert torch.equal(dst[k], src[k]), k
    for k, v in decoder_before.items():
        assert torch.equal(net.state_dict()[k], v), k


def test_load_encoder_from_state_dict_and_missing_file(tmp_path) -> None:
    source = LNMSNet(in_channels=3, heads=[], **TINY)
    net = NoduleGrowthNet(**TINY)
    report = net.load_encoder_from(source.state_dict())
    assert "encoder.conv1.weight" in report.loaded
    assert torch.equal(net.bottleneck_ms.fuse[0].weight, source.bottleneck_ms.fuse[0].weight)
    with pytest.raises(FileNotFoundError, match="not found"):
        net.load_encoder_from(tmp_path / "nope.pt")


# ---------------------------------------------------------------- argument checks
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"spatial_dims": 2}, "spatial_dims"),
        ({"in_channels": 0}, "in_channels"),
        ({"init_filters": True}, "init_filters"),
        ({"blocks": []}, "blocks"),
        ({"msconv": "yes"}, "msconv"),
        ({"use_mask_input": 1}, "use_mask_input"),
        ({"upsample": "pixelshuffle"}, "upsample"),
        ({"field": "bspline"}, "field"),
        ({"integration_steps": 0}, "integration_steps"),
        ({"interval_scale_days": 0}, "interval_scale_days"),
        ({"cross_attention_levels": [4]}, "cross_attention_levels"),
        ({"cross_attention_levels": [1, 1]}, "cross_attention_levels"),
        ({"residual_margin": -1}, "residual_margin"),
        ({"mask_eps": 0.5}, "mask_eps"),
        ({"act": "no-such-act"}, "act"),
    ],
)
def test_ill_arg(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        NoduleGrowthNet(**{**TINY, **kwargs})


def test_ill_input() -> None:
    net = NoduleGrowthNet(use_mask_input=True, **TINY)
    image, mask = _crop()
    with pytest.raises(ValueError, match="mask is required"):
        net(image, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="x must be"):
        net(image[:, :2], torch.tensor([1.0, 2.0]), mask)
    with pytest.raises(ValueError, match="interval_days must be"):
        net(image, torch.tensor([1.0, 2.0, 3.0]), mask)
    with pytest.raises(ValueError, match="finite and >= 0"):
        net(image, torch.tensor([1.0, -2.0]), mask)
    with pytest.raises(ValueError, match="mask must be"):
        net(image, torch.tensor([1.0, 2.0]), mask[:, :, :16])


@pytest.mark.filterwarnings("ignore:The tensor attributes .*ref_grid:UserWarning")  # MONAI Warp's cached grid
def test_export() -> None:
    """``torch.export`` (TorchScript cannot compile MONAI's ``Warp``) matches eager mode."""
    net = NoduleGrowthNet(identity_init=False, **TINY).eval()
    image, mask = _crop(1)
    days = torch.tensor([300.0])
    program = torch.export.export(net, (image, days, mask))
    other = torch.rand_like(image)
    with torch.no_grad():
        exported, eager = program.module()(other, days * 2, mask), net(other, days * 2, mask)
    assert set(exported) == ALL_KEYS
    for key in ALL_KEYS:
        torch.testing.assert_close(exported[key], eager[key], atol=1e-5, rtol=1e-5)
