"""Cross-validation and ablations with the bundle's commands: plan, summary, and a tiny run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lung_nodule_mtl.engines.crossval import ABLATIONS, NO_VALIDATION_INTERVAL, plan_cross_validation
from lung_nodule_mtl.reports.crossval import summarise_cross_validation


def test_plan_layout_and_overrides(tmp_path: Path) -> None:
    runs = plan_cross_validation(tmp_path, ["multitask", "single_window"], [0, 2], {"epochs": 3, "windows": {"x": 1}})
    assert [(r.config, r.fold) for r in runs] == [
        ("multitask", 0), ("single_window", 0), ("multitask", 2), ("single_window", 2)
    ]  # fmt: skip
    assert runs[1].root == tmp_path / "single_window" / "fold0"
    assert runs[0].overrides == {"epochs": 3, "windows": {"x": 1}}
    assert runs[1].overrides["windows"] == {"lung": [-1000, 400]}  # the ablation's switch wins
    train = runs[3].training_command(tmp_path / "data")
    assert train[train.index("--val_fold") + 1] == "2"
    assert train[train.index("--val_interval") + 1] == str(NO_VALIDATION_INTERVAL)
    assert json.loads(train[train.index("--windows") + 1]) == {"lung": [-1000, 400]}
    evaluate = runs[3].evaluating_command(tmp_path / "data")
    assert evaluate[evaluate.index("--ckpt_file") + 1].endswith("fold2/models/model_final.pt")
    assert "evaluating" in evaluate and "--val_interval" not in evaluate
    no_msconv = plan_cross_validation(tmp_path, ["no_msconv"], [0])[0].training_command(tmp_path)
    assert no_msconv[no_msconv.index("--network_def#msconv") + 1] == "False"  # Fire reads "false" as a string


@pytest.mark.parametrize(
    ("configs", "folds", "overrides", "message"),
    [
        (["bogus"], [0], None, "unknown configuration"),
        (["multitask"], [0, 0], None, "distinct"),
        (["multitask"], [0], {"val_fold": 1}, "set by the cross-validation"),
        ([], [0], None, "at least one"),
    ],
)
def test_plan_rejects_bad_requests(tmp_path: Path, configs, folds, overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        plan_cross_validation(tmp_path, configs, folds, overrides)


def _write_metrics(root: Path, config: str, fold: int, dice: float, auc: float | None, spiculation: float) -> None:
    metrics = {"n_nodules": 10, "segmentation": {k: {"mean": dice, "std": 0.1, "n": 10} for k in ("dice", "iou")}}
    metrics["segmentation"]["hd95"] = {"mean": 2.0, "std": 1.0, "n": 10}
    if auc is not None:
        metrics["malignancy"] = {
            "auc": auc, "accuracy": 0.8, "sensitivity": 0.7, "specificity": 0.9, "diameter_baseline_auc": 0.9,
            "indeterminate": {"n": 3, "mean_prob": 0.3}, "n_unknown": 0,
        }  # fmt: skip
        metrics["attributes"] = {"spiculation": {"accuracy": spiculation, "within_one": 1.0, "n": 10,
                                                 "majority_accuracy": 0.6}}  # fmt: skip
    path = root / config / f"fold{fold}" / "evaluation" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))
    if auc is not None:  # out-of-fold predictions: the model ranks by diameter, except one swapped pair per fold
        rows = ["case_id,patient_id,diameter_mm,malignancy,pred_malignancy_prob"]
        for i in range(8):
            label = int(i >= 4)
            prob = (i + (1.5 if i == 3 else -1.5 if i == 4 else 0)) / 10
            rows.append(f"c{fold}_{i},p{fold}_{i // 2},{4 + i},{label},{prob}")
        rows.append(f"c{fold}_x,p{fold}_x,9.0,-1,0.5")  # indeterminate: left out
        (path.parent / "per_nodule.csv").write_text("\n".join(rows) + "\n")


def test_summary_means_sds_and_paired_differences(tmp_path: Path) -> None:
    for fold, (dice, auc) in enumerate([(0.70, 0.80), (0.80, 0.90), (0.90, 0.85)]):
        _write_metrics(tmp_path, "multitask", fold, dice, auc, spiculation=0.5 + 0.1 * fold)
    # the ablation is 0.05 Dice worse on every fold, and has only folds 0 and 2
    for fold, dice in [(0, 0.65), (2, 0.85)]:
        _write_metrics(tmp_path, "segmentation_only", fold, dice, None, 0.0)
    (tmp_path / "no_msconv" / "fold0").mkdir(parents=True)  # started, not finished: left out
    summary = summarise_cross_validation(tmp_path)
    multitask = summary["configs"]["multitask"]
    assert multitask["folds"] == [0, 1, 2]
    assert multitask["dice"]["mean"] == pytest.approx(0.80)
    assert multitask["dice"]["std"] == pytest.approx(0.10)  # sample sd over folds
    assert multitask["malignancy_auc"]["mean"] == pytest.approx(0.85)
    assert multitask["spiculation_accuracy"]["mean"] == pytest.approx(0.6)
    ablation = summary["configs"]["segmentation_only"]
    assert ablation["dice"]["mean"] == pytest.approx(0.75)
    assert ablation["dice"]["delta_mean"] == pytest.approx(-0.05)  # paired on folds 0 and 2 only
    assert ablation["dice"]["delta_std"] == pytest.approx(0.0, abs=1e-12)
    assert "malignancy_auc" not in ablation
    assert "no_msconv" not in summary["configs"]
    pooled = multitask["pooled_malignancy"]
    assert pooled["n_positive"] == pooled["n_negative"] == 12 and pooled["n_groups"] == 12
    assert pooled["diameter_auc"] == pytest.approx(1.0)
    # one swapped pair per fold; pooled, each fold's swapped negative outranks all three folds' swapped positive
    assert pooled["model_auc"] == pytest.approx(1 - 9 / 144)
    assert pooled["difference"] == pytest.approx(-9 / 144) and pooled["ci_difference"][1] <= 0.0
    assert "pooled_malignancy" not in ablation
    assert "pooled_fusion" not in multitask  # tables without the measurements (m_* columns)
    # size-matched (3 mm): each fold's 8 mm malignant with a 7 mm benign, 9 with 6; 10 and 11 have no benign
    # within 3 mm left. Malignant scores 0.25, 0.5 against benign 0.45, 0.2: 27 of 36 pairs ordered
    matched = pooled["size_matched"]
    assert (matched["n_pairs"], matched["mean_gap_mm"]) == (6, 2.0)
    assert matched["auc"] == pytest.approx(0.75) and matched["diameter_auc"] == pytest.approx(1.0)
    assert pooled["size_strata"]["<10 mm"]["n_malignant"] == 6 and pooled["size_strata"]["10-20 mm"]["n_benign"] == 0
    # Brier of the out-of-fold probabilities; the diameter separates these perfectly, so its model is sharper
    assert pooled["calibration"]["model"]["brier"] == pytest.approx(1.315 / 8)
    assert pooled["calibration"]["diameter_logistic"]["brier"] < 0.05
    # thresholds from the other two folds (Youden: 0.25 and 0.5 tie, the lower kept), applied to each fold
    assert pooled["oof_threshold"]["thresholds"] == {"0": 0.25, "1": 0.25, "2": 0.25}
    assert (pooled["oof_threshold"]["sensitivity"], pooled["oof_threshold"]["specificity"]) == (1.0, 0.75)
    table = (tmp_path / "cv_table.md").read_text(encoding="utf-8")
    assert "| multitask | 3 | 0.800 ± 0.100 |" in table
    assert "0.750 ± 0.141 (-0.050)" in table
    assert "| majority class | 0.600 ± 0.000 |" in table
    assert "| multitask | 0.938 [" in table
    assert "| 0.750 [" in table and "(1.000; 6 pairs) | 0.164 / " in table and "| 1.000 / 0.750 |" in table
    assert "| 0.30 ± 0.00 |" in table  # rating-3 nodules, reported apart
    rows = (tmp_path / "cv_folds.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + 5 and rows[0].startswith("config,fold,n_nodules,dice")
    assert json.loads((tmp_path / "cv_summary.json").read_text())["configs"]["multitask"]["dice"]["n_folds"] == 3
    assert summarise_cross_validation(tmp_path / "empty", ["multitask"])["configs"] == {}


def test_cross_validate_cli_end_to_end(tmp_path: Path, dataset: Path) -> None:
    """Two ablations (a bool and a dict switch through the bundle's command line) on one fold; a re-run skips."""
    out = tmp_path / "cv"
    command = [
        sys.executable, "-m", "lung_nodule_mtl", "cross-validate", "--dataset-dir", str(dataset), "--out", str(out),
        "--configs", "classification_only", "single_window", "--folds", "1", "--threads", "1",
        "--set", "patch_size=[32,32,32]", "--set", "spacing_mm=[2.0,2.0,2.0]", "--set", "network_def#init_filters=4",
        "--set", "epochs=1", "--set", "num_workers=0", "--set", "val_batch_size=2",
    ]  # fmt: skip
    ascii_console = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": "ascii", "PYTHONUTF8": "0"}
    done = subprocess.run(command, capture_output=True, encoding="utf-8", env=ascii_console, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "+/-" in done.stdout  # an ASCII console gets the table without ± rather than a crash
    datalist = json.loads((dataset / "datalist.json").read_text())
    fold1 = [i for split in ("training", "validation") for i in datalist[split] if i["fold"] == 1]
    for config in ("classification_only", "single_window"):
        root = out / config / "fold1"
        metrics = json.loads((root / "evaluation" / "metrics.json").read_text())
        assert metrics["n_nodules"] == len(fold1)  # evaluated on the held-out fold, nothing else
        assert not (root / "models" / "model.pt").exists()  # no validation, so no "best" checkpoint
        record = json.loads((root / "run.json").read_text())
        assert record["status"] == "done" and record["fold"] == 1
    classification_only = json.loads((out / "classification_only/fold1/evaluation/metrics.json").read_text())
    assert "segmentation" not in classification_only and "auc" in classification_only["malignancy"]
    first = json.loads((out / "single_window/fold1/run.json").read_text())
    assert first["overrides"]["windows"] == {"lung": [-1000, 400]}
    summary = json.loads((out / "cv_summary.json").read_text())
    assert set(summary["configs"]) == {"classification_only", "single_window"}
    again = subprocess.run(command, capture_output=True, encoding="utf-8", check=False)
    assert again.returncode == 0 and again.stdout.count("done before") == 2, again.stdout + again.stderr


def test_ablations_are_network_switches() -> None:
    from lung_nodule_mtl.networks import LNMSNet

    for name, overrides in ABLATIONS.items():
        kwargs = {k.removeprefix("network_def#"): v for k, v in overrides.items() if k.startswith("network_def#")}
        in_channels = len(overrides.get("windows", {"a": 0, "b": 0, "c": 0}))
        net = LNMSNet(spatial_dims=3, in_channels=in_channels, out_channels=1, init_filters=4, **kwargs)
        assert net is not None, name


@pytest.mark.parametrize(("jobs", "gpus", "expected"), [(3, [0], {"0"}), (4, [0, 1], {"0", "1"}), (2, None, {None})])
def test_gpu_slots_are_dealt_round_robin(
    tmp_path: Path, dataset: Path, monkeypatch: pytest.MonkeyPatch, jobs: int, gpus: list[int] | None, expected: set
) -> None:
    """--jobs slots share --gpus: each run's CUDA_VISIBLE_DEVICES names one of them, never more runs on a GPU at
    once than its share of the slots; without --gpus the environment is left alone."""
    import threading
    import time

    from lung_nodule_mtl.engines import crossval

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    lock, running, peak, seen = threading.Lock(), {}, {}, []

    def fake_run(command: list[str], log: Path, env: dict) -> int:  # stands in for the bundle's commands
        gpu = env.get("CUDA_VISIBLE_DEVICES")
        with lock:
            seen.append(gpu)
            running[gpu] = running.get(gpu, 0) + 1
            peak[gpu] = max(peak.get(gpu, 0), running[gpu])
        time.sleep(0.05)
        with lock:
            running[gpu] -= 1
        root = log.parent
        (root / "models").mkdir(parents=True, exist_ok=True)
        (root / "models" / "model_final.pt").write_bytes(b"")
        if "evaluating" in command:
            (root / "evaluation").mkdir(exist_ok=True)
            (root / "evaluation" / "metrics.json").write_text("{}")
        return 0

    monkeypatch.setattr(crossval, "_run_logged", fake_run)
    runs = plan_cross_validation(tmp_path / "cv", ["multitask", "single_window", "no_msconv"], [0, 1])
    records = crossval.run_cross_validation(dataset, runs, jobs=jobs, gpus=gpus)
    assert [r["status"] for r in records] == ["done"] * len(runs)
    assert set(seen) == expected and len(seen) == 2 * len(runs)  # training and evaluating of each run
    assert {r["gpu"] for r in records} == {None if g is None else int(g) for g in expected}
    share = {g: sum(1 for k in range(jobs) if gpus and str(gpus[k % len(gpus)]) == g) for g in expected}
    for g in expected:
        assert peak[g] <= (share[g] if gpus else jobs)
    with pytest.raises(ValueError, match="gpus"):
        crossval.run_cross_validation(dataset, runs, jobs=2, gpus=[])


def test_summary_judges_late_fusions_of_the_out_of_fold_tables(tmp_path: Path) -> None:
    """Out-of-fold tables with the predicted masks' measurements: malignancy follows size and density, the network
    sees size only, calcification ratings follow the calcified fraction; each fusion is fitted on the other folds."""
    rng = np.random.default_rng(3)
    for fold in range(4):
        _write_metrics(tmp_path, "multitask", fold, 0.8, 0.8, spiculation=0.6)
        d = rng.uniform(4, 30, 100)
        hu = rng.normal(-1.0, 2.0, 100)
        calcified = rng.uniform(0, 1, 100) ** 3
        glass = rng.uniform(0, 1, 100)  # says nothing
        risk = 2.0 * (np.log(d) - np.log(12)) + 1.2 * (hu + 1.0) - 4.0 * calcified
        y = (rng.uniform(size=100) < 1 / (1 + np.exp(-risk))).astype(int)
        p = 1 / (1 + np.exp(-(np.log(d) - np.log(12))))
        rows = ["case_id,patient_id,diameter_mm,pred_diameter_mm,malignancy,pred_malignancy_prob,pred_calcification,"
                "m_log_diameter_mm,m_hu_mean,m_calcified_fraction,m_ground_glass_fraction,calcification"]  # fmt: skip
        rows += [f"c{fold}_{i},p{fold}_{i},{d[i]:.3f},{d[i]:.3f},{y[i]},{p[i]:.6f},6,{np.log(d[i]):.6f},{hu[i]:.6f},"
                 f"{calcified[i]:.6f},{glass[i]:.6f},{3 if calcified[i] > 0.3 else 6}" for i in range(100)]  # fmt: skip
        (tmp_path / "multitask" / f"fold{fold}" / "evaluation" / "per_nodule.csv").write_text("\n".join(rows) + "\n")
    summary = summarise_cross_validation(tmp_path, ["multitask"], n_bootstrap=100)
    fusion = summary["configs"]["multitask"]["pooled_fusion"]
    variants = fusion["malignancy"]
    assert list(variants) == ["network logit + size", "size + density (no network)", "network logit + size + density"]
    dense = variants["size + density (no network)"]
    assert dense["n_nodules"] == 400 and dense["fused_minus_mask_diameter"] > 0.03
    assert dense["ci_fused_minus_mask_diameter"][0] > 0
    # the network knows the size only: with it and the density the fusion beats the network and the size alone
    both = variants["network logit + size + density"]
    assert both["fused_auc"] > both["network_auc"] + 0.03
    assert variants["network logit + size"]["fused_auc"] < dense["fused_auc"]
    calc = fusion["attributes"]["calcification"]
    assert calc["fused"]["exact"] > calc["majority"]["exact"] + 0.1 == pytest.approx(calc["network"]["exact"] + 0.1)
    table = (tmp_path / "cv_table.md").read_text(encoding="utf-8")
    assert "| multitask | size + density (no network) | " in table and "| multitask | calcification | " in table
