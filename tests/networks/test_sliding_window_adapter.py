"""Sliding-window inference of LNMSNet with dict outputs (MONAI's sliding_window_inference)."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference

from lung_nodule_mtl.constants import OutputKeys
from lung_nodule_mtl.networks import LNMSNet, SlidingWindowAdapter, sample_heads, sliding_window_predict

MASK = str(OutputKeys.MASK)
ROI = (16, 16, 16)


@pytest.fixture(scope="module")
def net() -> LNMSNet:
    torch.manual_seed(0)
    return LNMSNet(
        in_channels=2, init_filters=4, blocks=(1, 1, 1), heads=["malignancy", "malignancy_score", "texture"]
    ).eval()


@pytest.fixture
def volume() -> torch.Tensor:
    return torch.randn(1, 2, 28, 24, 20)  # larger than the ROI, not a multiple of it


def test_raw_network_fails(net: LNMSNet, volume: torch.Tensor) -> None:
    """Documents why the adapter exists: MONAI cannot stitch (B, C) head outputs."""
    with torch.no_grad(), pytest.raises((ValueError, RuntimeError)):
        sliding_window_inference(volume, ROI, 2, net, overlap=0.5)


def test_dense_heads(net: LNMSNet, volume: torch.Tensor) -> None:
    with torch.no_grad():
        out = sliding_window_predict(volume, net, ROI, sw_batch_size=2, overlap=0.5, mode="gaussian")
        assert out[MASK].shape == (1, 1, 28, 24, 20)
        assert out["malignancy"].shape == (1, 1, 28, 24, 20)
        assert out["texture"].shape == (1, 5, 28, 24, 20)
        # the corner voxel is seen by the first window only: the blend is that window's own output
        first = net(volume[:, :, :16, :16, :16])
        torch.testing.assert_close(out["texture"][:, :, 0, 0, 0], first["texture"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out[MASK][:, :, :4, :4, :4], first[MASK][:, :, :4, :4, :4], rtol=1e-4, atol=1e-5)
        # elsewhere the blend is a weighted average of window outputs: inside their range
        score = out["malignancy_score"]
        assert bool(((score > 1) & (score < 5)).all())
        sampled = sample_heads(out, (14, 12, 10))
        assert set(sampled) == {"malignancy", "malignancy_score", "texture"}
        assert sampled["texture"].shape == (1, 5)


def test_segmentation_only_and_strided_heads(net: LNMSNet, volume: torch.Tensor) -> None:
    with torch.no_grad():
        dense = sliding_window_predict(volume, net, ROI, overlap=0.5)
        seg = sliding_window_predict(volume, net, ROI, overlap=0.5, heads="none")
        strided = sliding_window_predict(volume, net, ROI, overlap=0.5, head_stride=4)
    assert set(seg) == {MASK}
    torch.testing.assert_close(seg[MASK], dense[MASK])
    torch.testing.assert_close(strided[MASK], dense[MASK])
    assert strided["texture"].shape == (1, 5, 7, 6, 5)
    assert sample_heads(strided, (27, 23, 19))["malignancy"].shape == (1, 1)


@pytest.mark.parametrize("heads", ["none", "dense"])
def test_adapter_with_scripted_network(net: LNMSNet, volume: torch.Tensor, heads: str) -> None:
    """The scripted network (``segment`` for the mask only, ``forward`` for the heads) stitches to the eager one."""
    scripted = SlidingWindowAdapter(torch.jit.script(net), heads=heads)
    eager = SlidingWindowAdapter(net, heads=heads)
    with torch.no_grad():
        out = sliding_window_inference(volume, ROI, 2, scripted, overlap=0.25)
        expected = sliding_window_inference(volume, ROI, 2, eager, overlap=0.25)
    keys = {MASK} if heads == "none" else {MASK, "malignancy", "malignancy_score", "texture"}
    assert set(out) == set(expected) == keys
    assert out[MASK].shape == (1, 1, 28, 24, 20)
    for key in keys:
        torch.testing.assert_close(out[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)


def test_ill_arg(net: LNMSNet) -> None:
    with pytest.raises(ValueError, match="heads"):
        SlidingWindowAdapter(net, heads="vector")
    with pytest.raises(ValueError, match="head_stride"):
        SlidingWindowAdapter(net, head_stride=0)
    with pytest.raises(ValueError, match="voxel"):
        sample_heads({MASK: torch.zeros(1, 1, 4, 4, 4)}, (4, 0, 0))
