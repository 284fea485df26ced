"""LNMSNet: shapes, argument checks, TorchScript, gradients, switches and ablation configurations."""

from __future__ import annotations

import io

import pytest
import torch

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, ATTRIBUTE_NAMES, Keys, OutputKeys
from lung_nodule_mtl.networks import DEFAULT_HEADS, LNMSNet, deep_supervision_key

TINY = {"init_filters": 4}
MASK = str(OutputKeys.MASK)


def _expected_head_shapes(batch: int) -> dict[str, tuple[int, int]]:
    shapes = {str(Keys.MALIGNANCY): (batch, 1), str(Keys.MALIGNANCY_SCORE): (batch, 1)}
    shapes.update({name: (batch, ATTRIBUTE_CLASSES[name]) for name in ATTRIBUTE_NAMES})
    return shapes


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "size"),
    [
        (1, 1, (16, 16, 16)),
        (3, 1, (17, 23, 19)),  # odd, non-power-of-two
        (2, 2, (21, 16, 33)),
        (1, 1, (7, 9, 40)),  # smaller than the total stride
    ],
)
def test_shape(in_channels: int, out_channels: int, size: tuple[int, int, int]) -> None:
    net = LNMSNet(in_channels=in_channels, out_channels=out_channels, **TINY).eval()
    with torch.no_grad():
        out = net(torch.randn(2, in_channels, *size))
    assert out[MASK].shape == (2, out_channels, *size)
    for name, shape in _expected_head_shapes(2).items():
        assert out[name].shape == shape, name
    assert set(out) == {MASK, *DEFAULT_HEADS}
    score = out[str(Keys.MALIGNANCY_SCORE)]
    assert bool(((score > 1) & (score < 5)).all())


def test_shape_blocks_and_diameter_head() -> None:
    net = LNMSNet(init_filters=4, blocks=(1, 1, 1), heads=["malignancy", "diameter_mm"], upsample="nontrainable")
    out = net.eval()(torch.randn(1, 1, 13, 10, 12))
    assert out[MASK].shape == (1, 1, 13, 10, 12)
    assert out[str(Keys.DIAMETER)].shape == (1, 1) and bool((out[str(Keys.DIAMETER)] > 0).all())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"spatial_dims": 2}, "spatial_dims"),
        ({"in_channels": 0}, "in_channels"),
        ({"out_channels": 1.5}, "out_channels"),
        ({"init_filters": True}, "init_filters"),
        ({"blocks": []}, "blocks"),
        ({"blocks": [2, 0]}, "blocks"),
        ({"dropout": 1.0}, "dropout"),
        ({"msconv": "yes"}, "msconv"),
        ({"msconv_dilations": []}, "msconv_dilations"),
        ({"heads": ["malignancy", "size"]}, "heads"),
        ({"heads": ["malignancy", "malignancy"]}, "heads"),
        ({"heads": "malignancy"}, "heads"),
        ({"head_channels": 0}, "head_channels"),
        ({"segmentation": False}, "feature_combination"),
        ({"segmentation": False, "feature_combination": False, "heads": []}, "heads"),
        ({"deep_supervision": True, "deep_supr_num": 4}, "deep_supr_num"),
        ({"upsample": "pixelshuffle"}, "upsample"),
        ({"act": "no-such-act"}, "act"),
        ({"norm": ("group", {"num_groups": 3})}, "norm"),  # 4 channels are not divisible into 3 groups
        ({"frozen_stages": ["layer9"]}, "stage"),
    ],
)
def test_ill_arg(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        LNMSNet(**{**TINY, **kwargs})


@pytest.mark.filterwarnings("ignore:`torch.jit.(save|load)` is deprecated:DeprecationWarning")
def test_script() -> None:
    net = LNMSNet(in_channels=2, deep_supervision=True, **TINY)
    x = torch.randn(1, 2, 18, 16, 20)
    scripted = torch.jit.script(net)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    for mode in (False, True):  # eval, then training mode (deep supervision outputs)
        net.train(mode)
        loaded.train(mode)
        with torch.no_grad():
            eager, script = net(x), loaded(x)
        assert set(eager) == set(script)
        for key in eager:
            torch.testing.assert_close(script[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)
    torch.testing.assert_close(loaded.segment(x), net.segment(x), rtol=1e-4, atol=1e-5)


def test_deep_supervision_train_vs_eval() -> None:
    net = LNMSNet(deep_supervision=True, deep_supr_num=2, heads=[], **TINY)
    x = torch.randn(1, 1, 19, 16, 17)
    train_out = net.train()(x)
    assert train_out[deep_supervision_key(1)].shape == (1, 1, 10, 8, 9)
    assert train_out[deep_supervision_key(2)].shape == (1, 1, 5, 4, 5)
    assert set(net.eval()(x)) == {MASK}


def test_gradient_reaches_every_parameter() -> None:
    net = LNMSNet(in_channels=2, deep_supervision=True, **TINY).train()
    out = net(torch.randn(2, 2, 16, 16, 16))
    sum(v.float().pow(2).mean() for v in out.values()).backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not no_grad


def test_switches_change_parameter_set() -> None:
    def names(**kwargs: object) -> set[str]:
        return {n for n, _ in LNMSNet(**TINY, **kwargs).named_parameters()}

    full = names()
    no_ms = names(msconv=False)
    no_fc = names(feature_combination=False)
    assert any("bottleneck_ms" in n or "skip_ms" in n for n in full - no_ms) and not no_ms - full
    # feature combination widens the neck's input: same names, other shape
    net_fc, net_plain = LNMSNet(**TINY), LNMSNet(**TINY, feature_combination=False)
    assert full == no_fc
    assert net_fc.neck[0].in_features > net_plain.neck[0].in_features


def test_ablation_configs() -> None:
    x = torch.randn(1, 1, 16, 16, 16)
    seg_only = LNMSNet(heads=[], **TINY).eval()
    cls_only = LNMSNet(segmentation=False, feature_combination=False, **TINY).eval()
    full = LNMSNet(**TINY).eval()
    with torch.no_grad():
        assert set(seg_only(x)) == {MASK}
        assert set(cls_only(x)) == set(DEFAULT_HEADS)
    assert not any(n.startswith(("decoder", "skip_ms", "seg_head")) for n, _ in cls_only.named_parameters())
    assert not any(n.startswith(("heads", "neck")) for n, _ in seg_only.named_parameters())
    # the same backbone: the encoder's parameters have the same names and shapes in all three
    enc = {n: p.shape for n, p in full.named_parameters() if n.startswith("encoder.")}
    for other in (seg_only, cls_only):
        assert {n: p.shape for n, p in other.named_parameters() if n.startswith("encoder.")} == enc
    with pytest.raises(ValueError, match="segmentation=False"):
        cls_only.segment(x)


def test_segment_matches_forward() -> None:
    net = LNMSNet(**TINY).eval()
    x = torch.randn(1, 1, 17, 18, 16)
    with torch.no_grad():
        torch.testing.assert_close(net.segment(x), net(x)[MASK])


def test_heads_ignore_padding() -> None:
    """Pooling skips the padded voxels: the heads of an odd-sized input do not see the replicated border."""
    net = LNMSNet(**TINY, feature_combination=False).eval()
    x = torch.randn(1, 1, 17, 16, 16)
    feats = net.encode(torch.nn.functional.pad(x, [0, 16, 0, 16, 0, 15], mode="replicate"))
    region = torch.zeros(1, 1, 32, 32, 32)
    region[:, :, :17, :16, :16] = 1
    with torch.no_grad():
        torch.testing.assert_close(net(x)["malignancy"], net.classify(feats, None, None, region)["malignancy"])
        assert not torch.allclose(net(x)["malignancy"], net.classify(feats)["malignancy"])


@pytest.mark.gpu
def test_half_precision_gpu() -> None:
    net = LNMSNet(in_channels=3, deep_supervision=True, init_filters=8).cuda().half()
    x = torch.randn(2, 3, 40, 37, 48, device="cuda", dtype=torch.half)
    with torch.no_grad():
        out = net.eval()(x)
    assert out[MASK].dtype == torch.half and out[MASK].shape == (2, 1, 40, 37, 48)
    assert all(bool(torch.isfinite(v).all()) for v in out.values())
    with torch.autocast("cuda", dtype=torch.float16):
        out = LNMSNet(init_filters=8).cuda().train()(torch.randn(2, 1, 32, 32, 32, device="cuda"))
    sum(v.float().mean() for v in out.values()).backward()
