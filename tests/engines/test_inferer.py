"""AutocastInferer: bfloat16 autocast for training on the CPU, float32 outputs for the losses."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lung_nodule_mtl.engines import AutocastInferer, bf16_native, cpu_bf16_native


class _Probe(nn.Module):
    """A conv whose output dtype shows the autocast, and a record of whether autocast was on."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 3, 3, padding=1)
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append(torch.is_autocast_enabled("cpu"))
        y = self.conv(x)
        return {"mask": y, "inner_dtype": torch.tensor(0, dtype=y.dtype), "count": torch.tensor([3])}


def test_autocast_on_the_cpu_with_float32_outputs() -> None:
    net, x = _Probe(), torch.randn(2, 2, 8, 8, 8)
    out = AutocastInferer(enabled=True)(x, net)
    assert net.seen == [True]
    assert out["mask"].dtype == torch.float32 and out["inner_dtype"].dtype == torch.float32
    assert out["count"].dtype == torch.int64  # integers are left alone
    reference = net.conv(x)
    assert torch.allclose(out["mask"], reference, atol=0.05, rtol=0.02)  # bfloat16 precision
    assert not torch.equal(out["mask"], reference)  # ...but computed in bfloat16


def test_disabled_is_the_plain_network() -> None:
    net, x = _Probe(), torch.randn(1, 2, 8, 8, 8)
    out = AutocastInferer(enabled=False)(x, net)
    assert net.seen == [False] and torch.equal(out["mask"], net.conv(x))


def test_bf16_native_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from lung_nodule_mtl.engines import inferer

    for native in (True, False):  # a CPU: oneDNN's check decides
        monkeypatch.setattr(inferer, "cpu_bf16_native", lambda native=native: native)
        assert bf16_native("cpu") is native and bf16_native(torch.device("cpu")) is native
    assert bf16_native("meta") is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for supported in (True, False):  # a GPU: Ampere and later
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert bf16_native("cuda") is supported


def test_auto_follows_the_cpu_and_accepts_a_dtype_name() -> None:
    assert AutocastInferer(enabled=None).enabled is cpu_bf16_native()
    assert AutocastInferer(dtype="float16").dtype is torch.float16


@pytest.mark.gpu
def test_cuda_inputs_are_left_to_the_engines_amp() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    net, x = _Probe().cuda(), torch.randn(1, 2, 8, 8, 8, device="cuda")
    AutocastInferer(enabled=True)(x, net)
    assert net.seen == [False]


def test_cuda_amp_dtype_names_and_auto() -> None:
    from lung_nodule_mtl.engines import cuda_amp_dtype

    assert cuda_amp_dtype("bfloat16") is torch.bfloat16 and cuda_amp_dtype(torch.float16) is torch.float16
    expected = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    assert cuda_amp_dtype("auto") is expected and cuda_amp_dtype(None) is expected
    for bad in ("float32", "fp8", torch.float32):
        with pytest.raises(ValueError, match="amp_dtype"):
            cuda_amp_dtype(bad)


def test_place_network_channels_last_same_outputs() -> None:
    """channels_last_3d changes the weights' memory layout, not what the network computes."""
    from lung_nodule_mtl.engines import place_network

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.InstanceNorm3d(4), torch.nn.Conv3d(4, 1, 1))
    x = torch.randn(2, 2, 8, 8, 8)
    expected = net(x)
    cl = place_network(copy.deepcopy(net), "cpu", "true")  # Module.to works in place
    assert cl[0].weight.is_contiguous(memory_format=torch.channels_last_3d) and not cl[0].weight.is_contiguous()
    torch.testing.assert_close(cl(x), expected, rtol=1e-5, atol=1e-5)
    plain = place_network(net, torch.device("cpu"), False)
    assert plain[0].weight.is_contiguous()
    with pytest.raises(ValueError, match="channels_last"):
        place_network(net, "cpu", "maybe")


def test_compiled_network_takes_metatensors_returns_dicts_and_shares_the_weights() -> None:
    """The trainer's compiled network: MetaTensor inputs unwrapped, a dict of outputs returned as is, gradients
    reach the wrapped network's own parameters, and its state dict is the network's."""
    from monai.data import MetaTensor

    from lung_nodule_mtl.engines import CompiledNetwork

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv3d(1, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            y = self.conv(x)
            return {"mask": y[:, :1], "malignancy": y.mean(dim=(2, 3, 4))}

    torch.manual_seed(0)
    net = TwoHeads()
    wrapped = CompiledNetwork(net, backend="eager")  # the eager backend: dynamo's tracing without a compiler
    x = MetaTensor(torch.randn(2, 1, 6, 6, 6), affine=torch.eye(4))
    out = wrapped(x)
    assert set(out) == {"mask", "malignancy"} and not isinstance(out["mask"], MetaTensor)
    torch.testing.assert_close(out["mask"], net(x.as_tensor())["mask"])
    out["malignancy"].sum().backward()
    assert net.conv.weight.grad is not None and net.conv.weight.grad.abs().sum() > 0
    assert list(wrapped.state_dict()) == [f"network.{k}" for k in net.state_dict()]
    assert {id(p) for p in wrapped.parameters()} == {id(p) for p in net.parameters()}


class _Asymmetric(nn.Module):
    """Not mirror-equivariant: a mask map that depends on the position along each axis, and a vector head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        ramp = torch.linspace(0.0, 1.0, x.shape[2]).view(1, 1, -1, 1, 1)
        mask = self.conv(x) + ramp
        return {"mask": mask, "score": mask.flatten(1)[:, :3]}


def test_mirror_inferer_is_the_mean_over_mirrored_passes() -> None:
    from lung_nodule_mtl.engines import MirrorInferer

    torch.manual_seed(0)
    net = _Asymmetric().eval()
    x = torch.randn(2, 1, 6, 5, 4)
    with torch.no_grad():
        got = MirrorInferer(axes=(0, 2))(x, net)
        passes = []
        for dims in ([], [2], [4], [2, 4]):
            out = net(torch.flip(x, dims) if dims else x)
            passes.append((torch.flip(out["mask"], dims) if dims else out["mask"], out["score"]))
    torch.testing.assert_close(got["mask"], torch.stack([m for m, _ in passes]).mean(0))
    torch.testing.assert_close(got["score"], torch.stack([s for _, s in passes]).mean(0))  # vectors: as they are
    assert not torch.allclose(got["mask"], net(x)["mask"])  # the network is not symmetric: mirroring changes it


def test_mirror_inferer_keeps_an_equivariant_network_and_checks_axes() -> None:
    from lung_nodule_mtl.engines import MirrorInferer

    net = nn.Conv3d(1, 1, 1)  # pointwise: mirror-equivariant
    x = torch.randn(1, 1, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(MirrorInferer()(x, net), net(x))
        inner = AutocastInferer(enabled=False)
        torch.testing.assert_close(MirrorInferer(inferer=inner)(x, net), net(x))
    with pytest.raises(ValueError, match="distinct"):
        MirrorInferer(axes=(0, 0))
    with pytest.raises(ValueError, match="do not fit"):
        MirrorInferer(axes=(3,))(x, net)
