"""Engine pieces: multi-task prepare_batch, the loss adapter, the validation metric, checkpoints, reports."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from PIL import Image

from lung_nodule_mtl.constants import IGNORE_INDEX
from lung_nodule_mtl.engines import (
    MultiTaskPrepareBatch,
    MultiTaskValidationMetric,
    NoduleEvaluationWriter,
    TotalLoss,
    head_predictions,
    latest_checkpoint,
)


def sphere(n: int = 16, r: float = 4.0) -> torch.Tensor:
    g = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32)] * 3, indexing="ij"))
    return (((g - n / 2) ** 2).sum(0) <= r * r).float()[None]


def test_prepare_batch_moves_labels() -> None:
    batch = {
        "image": torch.zeros(2, 3, 8, 8, 8),
        "label": torch.ones(2, 1, 8, 8, 8),
        "malignancy": torch.tensor([1.0, IGNORE_INDEX]),
        "texture": torch.tensor([4, 0]),
        "case_id": ["a", "b"],
    }
    image, targets = MultiTaskPrepareBatch()(batch, device="cpu")
    assert image.shape == (2, 3, 8, 8, 8)
    assert set(targets) == {"label", "malignancy", "texture"}  # strings and absent keys are skipped
    with pytest.raises(KeyError, match="image"):
        MultiTaskPrepareBatch()({"label": batch["label"]})
    with pytest.raises(TypeError, match="target_keys"):
        MultiTaskPrepareBatch(target_keys="label")


def test_total_loss_returns_total_and_publishes_means() -> None:
    class Terms(torch.nn.Module):
        def forward(self, pred, target):
            return {"loss": pred["x"].sum(), "a": torch.tensor(2.0), "b": torch.tensor(float(target))}

    wrapped = TotalLoss(Terms())
    engine = Engine(lambda e, b: wrapped({"x": torch.ones(3, requires_grad=True)}, b).item())
    wrapped.attach(engine)
    engine.run([1.0, 3.0], max_epochs=1)
    assert engine.state.output == 3.0
    assert engine.state.metrics["train_a"] == 2.0 and engine.state.metrics["train_b"] == 2.0

    class NotADict(torch.nn.Module):
        def forward(self, pred, target):
            return pred

    with pytest.raises(TypeError, match="'loss'"):
        TotalLoss(NotADict())(torch.zeros(1), None)


def _run_metric(preds: list[dict], labels: list[dict]) -> dict:
    metric = MultiTaskValidationMetric()
    engine = Engine(lambda e, b: {"pred": b[0], "label": b[1]})
    metric.attach(engine, "score")
    engine.run(list(zip(preds, labels, strict=True)), max_epochs=1)
    return engine.state.metrics


def test_validation_metric_values() -> None:
    mask = sphere()[None]  # (1, 1, 16, 16, 16)
    logits_good = (mask * 20 - 10).repeat(2, 1, 1, 1, 1)
    logits_empty = torch.full_like(logits_good, -10.0)
    label = mask.repeat(2, 1, 1, 1, 1)
    preds = [
        {"mask": logits_good, "malignancy": torch.tensor([[3.0], [-3.0]])},
        {"mask": logits_empty, "malignancy": torch.tensor([[1.0], [5.0]])},
    ]
    labels = [
        {"label": label, "malignancy": torch.tensor([1.0, 0.0])},
        {"label": label, "malignancy": torch.tensor([IGNORE_INDEX, 0.5])},  # missing and soft: left out of AUC
    ]
    m = _run_metric(preds, labels)
    assert m["score_dice"] == pytest.approx(0.5)  # two perfect masks, two empty ones
    assert m["score_auc"] == 1.0
    assert m["score"] == pytest.approx(0.75)
    # one class only: AUC undefined, the key score falls back to Dice
    labels[0]["malignancy"] = torch.tensor([1.0, 1.0])
    m = _run_metric(preds, labels)
    assert math.isnan(m["score_auc"]) and m["score"] == pytest.approx(0.5)


def test_latest_checkpoint(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "none") is None
    for name in ("checkpoint_epoch=2.pt", "checkpoint_epoch=10.pt", "model.pt", "x_checkpoint_epoch=3.pt.tmp"):
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "checkpoint_epoch=10.pt"


def test_head_predictions() -> None:
    pred = {
        "malignancy": torch.tensor([0.0]),
        "malignancy_score": torch.tensor([4.2]),
        "calcification": torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 9.0]),
    }
    out = head_predictions(pred)
    assert out == {"malignancy_prob": 0.5, "malignancy_score": pytest.approx(4.2), "calcification": 6}


def test_evaluation_writer(tmp_path: Path) -> None:
    mask = sphere()[None]
    writer = NoduleEvaluationWriter(tmp_path, spacing_mm=1.0)
    engine = Engine(lambda e, b: {"pred": b["pred"], "label": b["label"]})  # as MONAI's evaluator output
    writer.attach(engine)
    batch = {
        "pred": {
            "mask": torch.cat([mask * 20 - 10, torch.full_like(mask, -10.0)]),
            "malignancy": torch.tensor([[4.0], [-4.0]]),
            "texture": torch.tensor([[0.0, 0, 0, 0, 5], [5.0, 0, 0, 0, 0]]),
        },
        "label": {
            "label": mask.repeat(2, 1, 1, 1, 1),
            "malignancy": torch.tensor([IGNORE_INDEX, 0.0]),
            "malignancy_score": torch.tensor([3.0, 1.0]),  # the first is indeterminate (rating 3)
            "texture": torch.tensor([4, IGNORE_INDEX]),
            "diameter_mm": torch.tensor([8.0, 4.0]),
        },
        "case_id": ["n1", "n2"],
        "patient_id": ["p1", "p2"],
    }
    engine.run([batch], max_epochs=1)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_nodules"] == 2
    assert metrics["segmentation"]["dice"]["mean"] == pytest.approx(0.5)
    assert metrics["malignancy"]["indeterminate"]["n"] == 1
    assert metrics["malignancy"]["n_negative"] == 1 and metrics["malignancy"]["auc"] is None  # JSON null
    # the one benign nodule scored sigmoid(-4): its Brier score; no diameter model on one class
    assert metrics["malignancy"]["calibration"]["brier"] == pytest.approx(torch.sigmoid(torch.tensor(-4.0)).item() ** 2)
    assert "diameter_logistic" not in metrics["malignancy"]
    assert metrics["malignancy"]["size_matched"]["n_pairs"] == 0
    assert Image.open(tmp_path / "reliability.png").size[0] == 600
    assert metrics["attributes"]["texture"] == {"accuracy": 1.0, "within_one": 1.0, "n": 1, "majority_accuracy": 1.0}
    rows = list(csv.DictReader(open(tmp_path / "per_nodule.csv")))
    assert [r["case_id"] for r in rows] == ["n1", "n2"]
    assert rows[0]["malignancy"] == "-1" and rows[0]["texture"] == "5" and rows[1]["texture"] == ""
    # the size predict reports: the equivalent diameter of the predicted mask (none for the empty one)
    voxels = int(mask.sum())
    assert float(rows[0]["pred_diameter_mm"]) == pytest.approx((6 * voxels / math.pi) ** (1 / 3), abs=1e-3)
    assert rows[1]["pred_diameter_mm"] == ""
    with pytest.raises(ValueError, match="spacing_mm"):
        NoduleEvaluationWriter(tmp_path, spacing_mm=(1.0, 0.0, 1.0))


def test_evaluation_writer_with_a_malignancy_fusion(tmp_path: Path) -> None:
    from lung_nodule_mtl.inference.fusion import MalignancyFusion
    from lung_nodule_mtl.metrics.calibration import LogisticModel

    model = LogisticModel(coef=[0.0, 1.0], intercept=-math.log(10.0), features=["malignancy_logit", "log_diameter_mm"])
    fusion = MalignancyFusion(model).save(tmp_path / "fusion.json")
    writer = NoduleEvaluationWriter(tmp_path / "eval", spacing_mm=2.0, malignancy_fusion=fusion)
    engine = Engine(lambda e, b: {"pred": b["pred"], "label": b["label"]})
    writer.attach(engine)
    mask = sphere()[None]
    batch = {
        "pred": {"mask": mask * 20 - 10, "malignancy": torch.tensor([[4.0]])},
        "label": {"label": mask, "malignancy": torch.tensor([1.0]), "diameter_mm": torch.tensor([8.0])},
        "case_id": ["n1"],
    }
    engine.run([batch], max_epochs=1)
    [row] = list(csv.DictReader(open(tmp_path / "eval" / "per_nodule.csv")))
    d = (6 * int(mask.sum()) * 8.0 / math.pi) ** (1 / 3)  # 2 mm voxels
    assert float(row["pred_diameter_mm"]) == pytest.approx(d, abs=1e-3)
    assert float(row["pred_malignancy_prob"]) == pytest.approx(d / (d + 10.0), abs=1e-4)  # sigmoid(log(d / 10))
    assert float(row["pred_malignancy_prob_network"]) == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["malignancy_network"]["n_positive"] == 1


def test_atomic_checkpoint_saver(tmp_path: Path) -> None:
    """Checkpoints appear whole (temporary file, then rename) and keep MONAI's fixed names."""
    from lung_nodule_mtl.engines import AtomicCheckpointSaver, AtomicDiskSaver

    net = torch.nn.Linear(2, 1)
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_interval=1, n_saved=1, save_final=True
    )
    handlers = [saver._final_checkpoint, saver._interval_checkpoint]
    assert all(isinstance(c.save_handler, AtomicDiskSaver) for c in handlers)
    engine = Engine(lambda e, b: None)
    saver.attach(engine)
    engine.run([0, 1], max_epochs=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["model_epoch=2.pt", "model_final_iteration=4.pt"]  # epoch 1 removed (n_saved=1)
    state = torch.load(tmp_path / "model_epoch=2.pt", weights_only=True)
    torch.testing.assert_close(state["weight"], net.weight)
    assert (tmp_path / "model_epoch=2.pt").stat().st_mode & 0o044  # readable by others, unlike mkstemp's 0600
