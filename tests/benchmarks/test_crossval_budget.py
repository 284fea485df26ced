"""benchmarks/crossval_budget.py at a tiny size: FLOPs counted on the meta device, the step measured, the
estimates consistent with each other."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture
def budget(load_benchmark) -> Iterator[ModuleType]:
    with load_benchmark("crossval_budget") as module:
        yield module


def test_counts_measures_and_estimates(budget, tmp_path: Path) -> None:
    out = tmp_path / "budget.json"
    argv = ["--patch", "32", "--init-filters", "4", "--epochs", "3", "--items", "10", "--folds", "5"]
    argv += ["--iterations", "1", "--warmup", "0", "--device", "cpu", "--json", str(out)]
    assert budget.main(argv) == 0
    r = json.loads(out.read_text())
    assert r["train_samples"] == 5 * 3 * 8  # folds x epochs x the other four folds' 8 of 10 items
    # a training sample (forward + backward) costs about 3 forward passes; the count is not a rule of thumb
    assert 2.0 < r["gflop_per_train_sample"] / r["gflop_per_eval_crop"] < 3.5
    total = r["train_samples"] * r["gflop_per_train_sample"] + 10 * r["gflop_per_eval_crop"]
    assert r["total_pflop"] == pytest.approx(total / 1e6)
    assert r["step_s"] > 0 and r["achieved_tflops"] > 0 and 0 < r["share_of_device_rate"]
    # bfloat16 only where this CPU computes it (emulated, one step takes minutes and says nothing), else float32
    from lung_nodule_mtl.engines.inferer import cpu_bf16_native

    assert r["precision"] == ("bf16" if cpu_bf16_native() else "fp32") and r["device_conv_tflops"] > 0
    assert r["gpu_s_at_peak"] == pytest.approx(total * 1e9 / 790e12)
    assert r["gpu_s_at_same_share"] == pytest.approx(r["gpu_s_at_peak"] / r["share_of_device_rate"])
    assert r["samples_per_s_needed"] == pytest.approx(r["train_samples"] / 600)


def test_counts_grow_with_the_recipe(budget) -> None:
    small, wide, big = budget.count_flops(4, 32), budget.count_flops(8, 32), budget.count_flops(4, 64)
    assert 3.0 < wide["eval_crop"] / small["eval_crop"] < 4.5  # twice the width: ~4x the convolutions
    assert 7.0 < big["eval_crop"] / small["eval_crop"] < 9.0  # twice the edge: 8x the voxels


def test_bad_arguments(budget) -> None:
    for bad in (["--epochs", "0"], ["--folds", "1"], ["--patch", "-4"]):
        with pytest.raises(SystemExit) as info:
            budget.main(bad)
        assert info.value.code == 2
