"""inferring's post-processing with the fusion beside the weights: the heads are the fusion's, told the predicted
mask's measurements on the crop, as evaluating and predict report them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from lung_nodule_mtl.inference.fusion import MalignancyFusion, SoftmaxModel, _Standard
from lung_nodule_mtl.metrics.calibration import LogisticModel
from lung_nodule_mtl.reports import SplitPredictiond


def _sample(nodule_hu: float, spacing: float = 2.0) -> dict:
    z, y, x = np.indices((16, 16, 16)) - 7.5
    ball = torch.as_tensor((z**2 + y**2 + x**2) <= 16).float()
    lung = torch.where(ball > 0, torch.tensor(nodule_hu), torch.tensor(-850.0))
    channel = (lung.clamp(-1000, 400) + 1000) / 1400
    image = MetaTensor(torch.stack([channel, channel, channel]), affine=torch.diag(torch.tensor([spacing] * 3 + [1.0])))
    pred = {
        "mask": (ball * 20 - 10)[None],
        "malignancy": torch.tensor([0.0]),
        "texture": torch.tensor([0, 0, 0, 0, 9.0]),
    }
    return {"image": image, "pred": pred}, int(ball.sum())


def _fusion(tmp_path: Path) -> Path:
    # malignancy: sigmoid(log d - log 10); texture 3 where the mask is dense (hu_mean > -3 hundreds of HU), else 5
    model = LogisticModel(coef=[1.0], intercept=-math.log(10.0), features=["log_diameter_mm"])
    texture = SoftmaxModel(classes=[3, 5], coef=[[10.0], [0.0]], intercept=[30.0, 0.0], features=["hu_mean"])
    unit = _Standard(["hu_mean"], [0.0], [1.0])
    return MalignancyFusion(model, attribute_models={"texture": (texture, unit)}).save(tmp_path / "fusion.json")


def test_the_fusion_reads_the_crop_and_keeps_the_network_outputs(tmp_path: Path) -> None:
    split = SplitPredictiond(keys="pred", malignancy_fusion=_fusion(tmp_path))
    data, voxels = _sample(40.0)
    out = split(data)
    heads = out["pred_heads"]
    d = (6 * voxels * 8.0 / math.pi) ** (1 / 3)  # 2 mm voxels, from the image's affine
    assert heads["malignancy_prob"] == pytest.approx(d / (d + 10.0), rel=1e-5)
    assert heads["malignancy_prob_network"] == pytest.approx(0.5)
    assert heads["texture"] == 3 and heads["texture_network"] == 5
    assert out["pred"].shape == (1, 16, 16, 16) and isinstance(out["pred"], MetaTensor)
    # a ground-glass nodule: the measured density flips the fused texture, the network's stays
    assert split(_sample(-600.0)[0])["pred_heads"]["texture"] == 5
    # without a fusion, the network's outputs only
    plain = SplitPredictiond(keys="pred")(_sample(40.0)[0])["pred_heads"]
    assert plain == {"malignancy_prob": 0.5, "texture": 5}
