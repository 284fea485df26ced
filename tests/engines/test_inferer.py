"""AutocastInferer: bfloat16 autocast for training on the CPU, float32 outputs for the losses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lung_nodule_mtl.engines import AutocastInferer, cpu_bf16_native


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
