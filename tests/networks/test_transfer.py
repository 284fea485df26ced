"""Transfer learning: partial checkpoint loading and frozen encoder stages."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
import torch

from lung_nodule_mtl.networks import LNMSNet, freeze_encoder_stages, load_partial_state

TINY = {"init_filters": 4, "blocks": (1, 1, 1)}


def test_partial_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = LNMSNet(in_channels=1, heads=["malignancy", "texture"], **TINY)
    dst = LNMSNet(in_channels=3, heads=["malignancy", "subtlety"], **TINY)
    state = {f"module.{k}": v for k, v in src.state_dict().items()}  # a DataParallel-style checkpoint
    state["module.extra.weight"] = torch.zeros(3)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": state, "epoch": 3}, path)
    before = {k: v.clone() for k, v in dst.state_dict().items()}

    with caplog.at_level(logging.INFO, logger="lung_nodule_mtl.networks.transfer"):
        _, report = load_partial_state(dst, path, exclude=r"^heads\.malignancy\.3\.")
    assert "loaded" in caplog.text and "encoder.conv1.weight" in caplog.text

    # in_channels differ: the stem convolution is skipped for its shape
    assert report.shape_mismatch["encoder.conv1.weight"] == ([4, 1, 3, 3, 3], [4, 3, 3, 3, 3])
    assert any(k.startswith("heads.subtlety.") for k in report.missing)
    assert any(k.startswith("heads.texture.") for k in report.unexpected) and "extra.weight" in report.unexpected
    assert sorted(report.excluded) == ["heads.malignancy.3.bias", "heads.malignancy.3.weight"]
    assert set(report.skipped) >= {"encoder.conv1.weight", "heads.malignancy.3.weight"}
    after = dst.state_dict()
    src_state = src.state_dict()
    for k in report.loaded:
        torch.testing.assert_close(after[k], src_state[k])
    for k in report.skipped:
        torch.testing.assert_close(after[k], before[k])
    assert "encoder.layer1.0.conv1.weight" in report.loaded and "heads.malignancy.0.weight" in report.loaded
    assert report.as_dict()["excluded"] == report.excluded


def test_load_prefix_and_errors(tmp_path: Path) -> None:
    src = LNMSNet(**TINY)
    dst = LNMSNet(**TINY, msconv=False)
    enc = {k[len("encoder.") :]: v for k, v in src.state_dict().items() if k.startswith("encoder.")}
    _, report = load_partial_state(dst, enc, dst_prefix="encoder.")  # e.g. a bare ResNet checkpoint
    assert report.loaded and all(k.startswith("encoder.") for k in report.loaded)
    _, report = load_partial_state(dst, {"state_dict": src.state_dict()}, src_prefix="encoder.", dst_prefix="encoder.")
    assert report.loaded and not report.unexpected
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_partial_state(dst, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="state dict"):
        load_partial_state(dst, {"epoch": 3})


class _Payload:
    pass


def test_load_is_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "unsafe.pt"
    torch.save({"model": LNMSNet(**TINY).state_dict(), "payload": _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_partial_state(LNMSNet(**TINY), path)


def test_freeze() -> None:
    net = LNMSNet(norm="batch", **TINY)
    assert freeze_encoder_stages(net, ["stem", 1]) == ["stem", "layer1"]
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {
        n for n, _ in net.named_parameters() if n.startswith(("encoder.conv1", "encoder.bn1", "encoder.layer1."))
    }
    net.train()
    assert not net.encoder.layer1.training and not net.encoder.bn1.training and net.encoder.layer2.training
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    buffers = {n: b.clone() for n, b in net.named_buffers() if n.startswith("encoder.layer1.")}
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    out = net(torch.randn(2, 1, 16, 16, 16))
    sum(v.float().pow(2).mean() for v in out.values()).backward()
    opt.step()
    for n, p in net.named_parameters():
        changed = not torch.equal(p.detach(), before[n])
        assert changed == (n not in frozen), n
    for n, b in net.named_buffers():  # batch-norm statistics of frozen stages do not move either
        if n in buffers:
            assert torch.equal(b, buffers[n]), n
    net.unfreeze_stages()
    assert all(p.requires_grad for p in net.parameters()) and net.encoder.layer1.training


def test_frozen_stages_option() -> None:
    net = LNMSNet(frozen_stages=["encoder"], **TINY)
    assert net.frozen_stages == ["stem", "layer1", "layer2", "layer3"]
    assert not any(p.requires_grad for p in net.encoder.parameters())
    assert all(p.requires_grad for n, p in net.named_parameters() if not n.startswith("encoder."))
    with pytest.raises(ValueError, match="stage"):
        freeze_encoder_stages(net, ["layer4"])
    with pytest.raises(ValueError, match="LNMSNet"):
        freeze_encoder_stages(torch.nn.Linear(2, 2), ["stem"])
