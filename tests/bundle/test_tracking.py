"""Experiment tracking: ``training`` with MONAI's ``--tracking mlflow`` logs to MLflow as well as to TensorBoard.

MONAI patches the bundle at run time: it appends an ``MLFlowHandler`` to ``train#handlers`` (iteration loss via
``from_engine(['loss'], first=True)`` plus the trainer's epoch metrics) and one to ``validate#handlers`` (the
validation metrics), and logs to ``sqlite:///<output_dir>/mlruns.db`` with the artifacts in ``<output_dir>/mlruns``.
Skipped without ``mlflow`` (the project's ``tracking`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundle" / "configs"

# As tests/bundle/test_bundle.py's TINY, without caching up front.
TINY = {
    "patch_size": [32, 32, 32],
    "spacing_mm": [2.0, 2.0, 2.0],
    "network_def#init_filters": 4,
    "batch_size": 2,
    "val_batch_size": 2,
    "num_workers": 0,
    "epochs": 1,
    "cache_rate": 0.0,
}


@pytest.mark.slow
def test_training_tracks_to_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: Path) -> None:
    mlflow = pytest.importorskip("mlflow")  # imported here, while PYTEST_CURRENT_TEST keeps its telemetry off
    from monai.bundle import run
    from monai.utils import path_to_sqlite_uri

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # it would take priority over the bundle's URI
    monkeypatch.chdir(tmp_path)  # MLflow must write nothing to the working folder
    root = tmp_path / "root"
    run(
        "training",
        config_file=str(CONFIGS / "train.yaml"),
        meta_file=str(CONFIGS / "metadata.json"),
        bundle_root=str(root),
        dataset_dir=str(dataset),
        tracking="mlflow",  # as `python -m monai.bundle run training ... --tracking mlflow`
        **TINY,
    )

    eval_dir = root / "eval"  # train.yaml's output_dir
    assert list(eval_dir.glob("events.out.tfevents.*"))  # TensorBoard still
    assert (eval_dir / "mlruns.db").is_file() and (eval_dir / "mlruns").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]

    client = mlflow.MlflowClient(tracking_uri=path_to_sqlite_uri(str(eval_dir / "mlruns.db")))
    experiment = client.get_experiment_by_name("monai_experiment")
    assert experiment is not None
    (tracked,) = client.search_runs([experiment.experiment_id])
    assert tracked.info.status == "FINISHED"
    metrics = tracked.data.metrics
    # iteration loss (trainer), epoch means of the loss terms (trainer), key metric (validator), learning rate
    for name in ("train_loss", "train_segmentation", "train_malignancy", "train_attributes", "val_score", "lr_group_0"):
        assert name in metrics, sorted(metrics)
    n_train = len(json.loads((dataset / "datalist.json").read_text())["training"])
    iterations = -(-n_train // TINY["batch_size"])
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, "train_loss")] == list(
        range(1, iterations + 1)
    )
    assert tracked.data.params.get("max_epochs") == "1"
    artifacts = [a.path for a in client.list_artifacts(tracked.info.run_id)]
    assert any(a.startswith("config_") and a.endswith(".json") for a in artifacts), artifacts  # the executed config
