"""The growth configs of the bundle end to end: training then evaluating_growth on generated growth pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundle" / "configs"
GROWTH = [str(CONFIGS / "train.yaml"), str(CONFIGS / "train_growth.yaml")]
META = str(CONFIGS / "metadata.json")
TINY = {
    "synthetic_cases": 6,
    "patch_size": [32, 32, 32],
    "network_def#init_filters": 4,
    "batch_size": 2,
    "val_batch_size": 2,
    "num_workers": 0,
    "epochs": 1,
}


@pytest.mark.slow
def test_growth_training_and_evaluation(tmp_path: Path) -> None:
    from monai.bundle import run

    run("training", config_file=GROWTH, meta_file=META, bundle_root=str(tmp_path), **TINY)
    data = tmp_path / "data" / "synthetic_growth"
    assert (data / "datalist.json").is_file() and (data / "growth.csv").is_file()  # generated on first use
    models = tmp_path / "models" / "growth"
    state = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("encoder") for k in state) and any("texture" in k for k in state)
    run("evaluating_growth", config_file=GROWTH, meta_file=META, bundle_root=str(tmp_path), **TINY)
    metrics = json.loads((tmp_path / "eval" / "growth" / "test" / "metrics.json").read_text())
    test_items = json.loads((data / "datalist.json").read_text())["test"]
    assert metrics["n_pairs"] == len(test_items) > 0
    dice = {}
    for method in ("model", "no_change", "volume_extrapolation"):
        assert {"psnr", "ssim", "psnr_nodule", "ssim_nodule", "dice", "sensitivity", "ppv"} <= set(metrics[method])
        dice[method] = metrics[method]["dice"]["mean"]
    # measured: no change 0.61 and volume extrapolation 0.61 (baseline and follow-up masks on one grid overlap; a
    # misaligned follow-up crop or mask brings them near 0); the model 0.61 too, equal to no change (the network
    # starts as the identity and one epoch barely moves it), so a broken warp, mask head or threshold falls below
    assert dice["no_change"] > 0.4 and dice["volume_extrapolation"] > 0.4
    assert dice["model"] > dice["no_change"] - 0.1
