"""The malignancy fusion: the network's output and the measured size in a logistic model, fitted out of fold."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from lung_nodule_mtl.cli.crossval import register
from lung_nodule_mtl.inference.fusion import FUSION_FILE, MalignancyFusion, fit_malignancy_fusion, fusion_beside
from lung_nodule_mtl.metrics.calibration import LogisticModel


def _write_folds(root: Path, n_folds: int = 5, per_fold: int = 80, seed: int = 0) -> list[Path]:
    """per_nodule.csv of a cross-validation: malignancy follows size AND a trait only the network sees;
    the network's probability is that trait, over-confident and blind to size."""
    rng = np.random.default_rng(seed)
    tables = []
    for fold in range(n_folds):
        d = rng.uniform(4, 30, per_fold)
        trait = rng.normal(size=per_fold)
        risk = 2.5 * (np.log(d) - np.log(12)) + 1.5 * trait
        y = (rng.uniform(size=per_fold) < 1 / (1 + np.exp(-risk))).astype(int)
        p = 1 / (1 + np.exp(-(4.0 * trait + 2.0)))  # over-confident, shifted
        rows = ["case_id,patient_id,diameter_mm,pred_diameter_mm,malignancy,pred_malignancy_prob"]
        rows += [f"c{fold}_{i},p{fold}_{i},{d[i]:.3f},{d[i] * 0.9:.3f},{y[i]},{p[i]:.6f}" for i in range(per_fold)]
        rows.append(f"c{fold}_x,p{fold}_x,9.0,8.0,-1,0.5")  # rating 3: not fitted on
        path = root / f"fold{fold}" / "evaluation" / "per_nodule.csv"
        path.parent.mkdir(parents=True)
        path.write_text("\n".join(rows) + "\n")
        tables.append(path)
    return tables


def test_fit_beats_size_and_network_alone_out_of_fold(tmp_path: Path) -> None:
    tables = _write_folds(tmp_path)
    fusion, report = fit_malignancy_fusion(tables, n_bootstrap=200)
    assert report["n_nodules"] == 400 and report["n_folds"] == 5
    assert fusion.model.features == ["malignancy_logit", "log_diameter_mm"]
    assert fusion.model.coef[0] > 0.1 and fusion.model.coef[1] > 1.0  # both carry information
    assert report["fused_auc"] > report["mask_diameter_auc"] + 0.03 and report["fused_auc"] > report["network_auc"]
    assert report["ci_fused_minus_mask_diameter"][0] > 0
    assert report["mask_diameter_auc"] == pytest.approx(report["reference_diameter_auc"])  # d * 0.9: same ranks
    assert report["size_matched_fused"]["auc"] > 0.6
    # calibrated: the over-confident network's Brier score is beaten
    assert report["brier"]["fused"] < report["brier"]["network"]
    assert report["brier"]["fused"] < report["brier"]["mask_diameter_logistic"]
    assert fusion.fitted_on["n_nodules"] == 400


def test_one_held_out_table_is_split_by_patient(tmp_path: Path) -> None:
    tables = _write_folds(tmp_path, n_folds=1, per_fold=200)
    _, report = fit_malignancy_fusion(tables, n_bootstrap=50)
    assert report["n_folds"] == 5 and report["n_nodules"] == 200


def test_fusion_file_round_trip_and_errors(tmp_path: Path) -> None:
    model = LogisticModel(coef=[0.5, 1.0], intercept=-2.0, features=["malignancy_logit", "log_diameter_mm"])
    path = MalignancyFusion(model, {"n_nodules": 3}).save(tmp_path / "models" / FUSION_FILE)
    fusion = MalignancyFusion.load(path)
    expected = 1 / (1 + math.exp(-(-2.0 + 0.5 * math.log(0.8 / 0.2) + math.log(12.0))))
    assert fusion(0.8, 12.0) == pytest.approx(expected) and fusion.fitted_on == {"n_nodules": 3}
    assert fusion(None, 12.0) is None and fusion(0.8, None) is None and fusion(0.8, 0.0) is None
    # looked up beside the weights only
    assert fusion_beside(tmp_path / "models" / "model.pt") == str(path)
    assert fusion_beside(tmp_path / "model.pt") is None and fusion_beside(None) is None
    assert MalignancyFusion.from_config(None) is None
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        MalignancyFusion.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "something"}))
    with pytest.raises(ValueError, match=r"bad\.json: not a malignancy fusion"):
        MalignancyFusion.load(bad)
    bad.write_text(json.dumps({"kind": "malignancy_fusion", "coef": [1.0], "intercept": 0, "features": ["x"]}))
    with pytest.raises(ValueError, match=r"bad\.json: features \['x'\]"):
        MalignancyFusion.load(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        MalignancyFusion.load(bad)


def test_fit_malignancy_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_folds(tmp_path / "cv" / "multitask")
    parser = argparse.ArgumentParser(prog="lung-nodule-mtl")
    register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "models" / FUSION_FILE
    args = parser.parse_args(["fit-malignancy", "--cv-dir", str(tmp_path / "cv" / "multitask"), "--out", str(out),
                              "--report", str(tmp_path / "report.json"), "--bootstrap", "100",
                              "--description", "test folds"])  # fmt: skip
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "fitted on 400 nodules" in printed and "size-matched AUC fused" in printed
    fusion = MalignancyFusion.load(out)
    assert fusion.fitted_on["description"] == "test folds" and len(fusion.fitted_on["tables"]) == 5
    assert json.loads((tmp_path / "report.json").read_text())["n_nodules"] == 400
    args = parser.parse_args(["fit-malignancy", "--cv-dir", str(tmp_path), "--out", str(out)])
    with pytest.raises(FileNotFoundError, match="no fold"):
        args.func(args)
    missing = tmp_path / "t.csv"
    missing.write_text("case_id,malignancy\nc,1\n")
    args = parser.parse_args(["fit-malignancy", "--tables", str(missing), "--out", str(out)])
    with pytest.raises(ValueError, match=r"t\.csv: lacks the columns"):
        args.func(args)
