"""benchmarks/training.py on a tiny configuration: it runs the bundle's trainer and reports sane, complete results."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def training_benchmark(load_benchmark) -> Iterator[ModuleType]:
    with load_benchmark("training") as module:
        yield module


# 32³ crops at 2 mm, 4 base filters, 2 measured iterations: the bundle's code paths, not its cost
TINY = [
    "--iterations", "2",
    "--warmup", "1",
    "--patch-size", "32", "32", "32",
    "--set", "spacing_mm=[2.0, 2.0, 2.0]",
    "--set", "network_def#init_filters=4",
    "--workers", "0",
    "--augmentations", "sample", "device",
    "--trainer-variants", "bf16",
    "--step-variants", "fp32", "fp32-cl",
    "--step-iterations", "1",
    "--step-warmup", "1",
    "--device", "cpu",
    "--threads", "1",
]  # fmt: skip


@pytest.mark.slow
def test_tiny_run(training_benchmark: ModuleType, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out" / "training.json"
    results = training_benchmark.main([*TINY, "--dataset-dir", str(dataset), "--json", str(out)])

    rows = {(r["device_augmentation"], r["cache_rate"], r["bf16"]): r for r in results["trainer"]}
    # per-sample and batched augmentation, each uncached and cached; then cached + bf16 autocast
    assert list(rows) == [
        (False, 0.0, False),
        (False, 1.0, False),
        (True, 0.0, False),
        (True, 1.0, False),
        (True, 1.0, True),
    ]
    n_training = len(json.loads((dataset / "datalist.json").read_text())["training"])
    for r in results["trainer"]:
        assert r["num_workers"] == 0 and r["iterations"] == 2 and r["training_items"] == n_training
        assert math.isfinite(r["samples_per_s"]) and r["samples_per_s"] > 0
        assert math.isfinite(r["samples_per_s_mean"]) and r["samples_per_s_mean"] > 0
        assert 0.0 <= r["wait_fraction"] <= 1.0 and 0.0 <= r["wait_fraction_total"] <= 1.0
        assert 0.0 <= r["wait_s"] <= r["step_s"]
        assert len(r["repeat_samples_per_s"]) == 1
    # the baseline: uncached, first --workers and --augmentations values
    assert [r["baseline"] for r in results["trainer"]] == [True, False, False, False, False]
    assert rows[(False, 0.0, False)]["ratio_vs_baseline"] == pytest.approx(1.0)

    steps = {(r["precision"], r["channels_last"]): r for r in results["raw_step"]}
    assert set(steps) == {("fp32", False), ("fp32", True)}
    for r in steps.values():
        assert r["samples_per_s"] > 0 and math.isfinite(r["first_loss"])
    # same weights, batch and dropout draws: channels-last changes the memory layout, not the loss
    assert steps[("fp32", True)]["first_loss"] == pytest.approx(steps[("fp32", False)]["first_loss"], rel=1e-4)

    machine = results["machine"]
    assert machine["gpu"] == "none" and machine["torch_threads"] == 1 and machine["torch"] and machine["monai"]
    assert results["settings"]["patch_size"] == [32, 32, 32]

    assert json.loads(out.read_text()) == json.loads(json.dumps(results))  # the JSON is the returned results
    assert sorted(p.name for p in out.parent.iterdir()) == ["training.json"]  # written atomically, no leftovers
    printed = capsys.readouterr().out
    assert "uncached, workers 0, per-sample augmentation (baseline)" in printed
    assert "cached, workers 0, batched device augmentation, bf16 autocast" in printed
    assert "fp32 + channels_last_3d" in printed


def test_command_line_errors(training_benchmark: ModuleType) -> None:
    with pytest.raises(SystemExit) as info:
        training_benchmark.main(["--help"])
    assert info.value.code == 0
    for bad in (["--step-variants", "fp8"], ["--iterations", "0"], ["--set", "epochs"], ["--cache-rates", "2"]):
        with pytest.raises(SystemExit) as info:
            training_benchmark.main(bad)
        assert info.value.code == 2, bad
