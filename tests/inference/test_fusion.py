"""The late fusion: the network's outputs and the mask's measurements in logistic models, fitted out of fold."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from lung_nodule_mtl.cli.crossval import register
from lung_nodule_mtl.inference.fusion import (
    FUSION_FILE,
    MalignancyFusion,
    SoftmaxModel,
    fit_malignancy_fusion,
    fusion_beside,
)
from lung_nodule_mtl.metrics.calibration import LogisticModel


def _write_table(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(rows) + "\n")
    return path


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
        tables.append(_write_table(root / f"fold{fold}" / "evaluation" / "per_nodule.csv", rows))
    return tables


def test_fit_beats_size_and_network_alone_out_of_fold(tmp_path: Path) -> None:
    tables = _write_folds(tmp_path)
    fusion, full = fit_malignancy_fusion(tables, n_bootstrap=200)
    report = full["malignancy"]
    assert report["n_nodules"] == 400 and report["n_folds"] == 5 and "attributes" not in full
    assert fusion.model is not None and fusion.model.features == ["malignancy_logit", "log_diameter_mm"]
    assert fusion.model.coef[0] > 0.1 and fusion.model.coef[1] > 0.1  # both carry information
    assert report["fused_auc"] > report["mask_diameter_auc"] + 0.03 and report["fused_auc"] > report["network_auc"]
    assert report["ci_fused_minus_mask_diameter"][0] > 0
    assert report["mask_diameter_auc"] == pytest.approx(report["reference_diameter_auc"])  # d * 0.9: same ranks
    assert report["size_matched_fused"]["auc"] > 0.6
    # calibrated: the over-confident network's Brier score is beaten
    assert report["brier"]["fused"] < report["brier"]["network"]
    assert report["brier"]["fused"] < report["brier"]["mask_diameter_logistic"]
    assert report["ece"]["fused"] < report["ece"]["network"]
    assert fusion.fitted_on["out_of_fold"]["malignancy"]["n_nodules"] == 400
    assert fusion.attribute_models == {} and fusion.features == ["malignancy_logit", "log_diameter_mm"]


def test_one_held_out_table_is_split_by_patient(tmp_path: Path) -> None:
    tables = _write_folds(tmp_path, n_folds=1, per_fold=200)
    _, report = fit_malignancy_fusion(tables, n_bootstrap=50)
    assert report["malignancy"]["n_folds"] == 5 and report["malignancy"]["n_nodules"] == 200


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
    with pytest.raises(ValueError, match=r"bad\.json: features must be distinct names of .*got \['x'\]"):
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
    assert json.loads((tmp_path / "report.json").read_text())["malignancy"]["n_nodules"] == 400
    args = parser.parse_args(["fit-malignancy", "--cv-dir", str(tmp_path), "--out", str(out)])
    with pytest.raises(FileNotFoundError, match="no fold"):
        args.func(args)
    missing = tmp_path / "t.csv"
    missing.write_text("case_id,malignancy\nc,1\n")
    args = parser.parse_args(["fit-malignancy", "--tables", str(missing), "--out", str(out)])
    with pytest.raises(ValueError, match=r"t\.csv: lacks the columns"):
        args.func(args)


def _write_measured(root: Path, n_folds: int = 4, per_fold: int = 120, seed: int = 1) -> list[Path]:
    """per_nodule.csv with the mask's measurements: malignancy follows size and density (``hu_mean``), the
    calcification rating follows ``calcified_fraction``; the network rates every nodule 6 (the majority) and
    internal structure is always 1 (nothing to fit)."""
    rng = np.random.default_rng(seed)
    tables = []
    for fold in range(n_folds):
        d = rng.uniform(4, 30, per_fold)
        hu = rng.normal(-1.0, 2.0, per_fold)  # hundreds of HU
        calcified = rng.uniform(0, 1, per_fold) ** 3
        risk = 2.0 * (np.log(d) - np.log(12)) + 1.2 * (hu + 1.0) - 4.0 * calcified
        y = (rng.uniform(size=per_fold) < 1 / (1 + np.exp(-risk))).astype(int)
        calc = np.where(calcified > 0.3, 3, 6)
        p = 1 / (1 + np.exp(-(np.log(d) - np.log(12))))  # the network: size only
        rows = ["case_id,patient_id,diameter_mm,pred_diameter_mm,malignancy,pred_malignancy_prob,pred_calcification,"
                "pred_internal_structure,m_log_diameter_mm,m_hu_mean,m_calcified_fraction,calcification,"
                "internal_structure"]  # fmt: skip
        rows += [f"c{fold}_{i},p{fold}_{i},{d[i]:.3f},{d[i]:.3f},{y[i]},{p[i]:.6f},6,1,{np.log(d[i]):.6f},"
                 f"{hu[i]:.6f},{calcified[i]:.6f},{calc[i]},1" for i in range(per_fold)]  # fmt: skip
        tables.append(_write_table(root / f"f{fold}" / "per_nodule.csv", rows))
    return tables


def test_measured_features_and_attribute_models(tmp_path: Path) -> None:
    tables = _write_measured(tmp_path)
    fusion, report = fit_malignancy_fusion(
        tables,
        n_bootstrap=200,
        features=["log_diameter_mm", "hu_mean", "calcified_fraction"],
        attribute_features=["calcified_fraction", "hu_mean"],
    )
    m = report["malignancy"]
    assert m["fused_auc"] > m["mask_diameter_auc"] + 0.03 and m["ci_fused_minus_mask_diameter"][0] > 0
    calc = report["attributes"]["calcification"]
    assert calc["n"] == 480 and calc["network"]["exact"] == pytest.approx(calc["majority"]["exact"])
    assert calc["fused"]["exact"] > calc["majority"]["exact"] + 0.1
    assert set(fusion.attribute_models) == {"calcification"}  # internal structure: one rating, no model
    assert fusion.features == ["log_diameter_mm", "hu_mean", "calcified_fraction"]

    path = fusion.save(tmp_path / FUSION_FILE)
    back = MalignancyFusion.load(path)
    heads = {"malignancy_prob": 0.5, "calcification": 6, "internal_structure": 1}
    low = {"log_diameter_mm": math.log(20.0), "hu_mean": 0.3, "calcified_fraction": 0.9}
    high = {**low, "calcified_fraction": 0.0}
    fused_low, fused_high = back.fuse_heads(heads, low), back.fuse_heads(heads, high)
    assert fused_low["calcification"] == 3 and fused_high["calcification"] == 6
    assert fused_low["calcification_network"] == 6 and "internal_structure_network" not in fused_low
    assert fused_low["malignancy_prob_network"] == 0.5
    assert fused_low["malignancy_prob"] < fused_high["malignancy_prob"]  # calcified: benign
    assert fused_low == fusion.fuse_heads(heads, low)  # the file gives back the same models
    # no mask, no measurements: the network's outputs stay
    alone = back.fuse_heads(heads, None)
    assert alone["malignancy_prob"] == 0.5 and alone["calcification"] == 6 and alone["calcification_network"] == 6


def test_attribute_models_on_other_tables_and_no_malignancy_model(tmp_path: Path) -> None:
    tables = _write_measured(tmp_path / "a")
    other = _write_measured(tmp_path / "b", n_folds=2, seed=5)
    fusion, report = fit_malignancy_fusion(
        tables[:1], n_bootstrap=50, features=["malignancy_logit"], attribute_features=["calcified_fraction"],
        attribute_tables=other,
    )  # fmt: skip
    assert report["malignancy"]["n_nodules"] == 120 and report["malignancy"]["n_folds"] == 5
    assert report["attributes"]["calcification"]["n"] == 240 and report["attribute_tables"] == [str(t) for t in other]
    assert fusion.fitted_on["attribute_tables"] == [str(t) for t in other]
    # Platt scaling: monotone, so the ranking (the AUC) of the network is kept
    assert fusion.model is not None
    a, b = fusion.malignancy({"malignancy_logit": -1.0}), fusion.malignancy({"malignancy_logit": 1.0})
    assert a is not None and b is not None and a < b

    only, rep = fit_malignancy_fusion(tables, features=None, attribute_features=["calcified_fraction"])
    assert only.model is None and "malignancy" not in rep
    out = MalignancyFusion.load(only.save(tmp_path / "only.json")).fuse_heads(
        {"malignancy_prob": 0.7, "calcification": 6}, {"calcified_fraction": 0.9}
    )
    assert out["malignancy_prob"] == 0.7 and "malignancy_prob_network" not in out and out["calcification"] == 3
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_malignancy_fusion(tables, features=None)
    with pytest.raises(ValueError, match="attribute_features: features must be distinct"):
        fit_malignancy_fusion(tables, attribute_features=["hu_mean", "hu_mean"])


def test_softmax_model_fits_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    y = np.where(x[:, 0] > 0.5, 5, np.where(x[:, 0] < -0.5, 1, 3))
    model = SoftmaxModel.fit(x, y, ["a", "b"], l2=1e-3)
    assert model.classes == [1, 3, 5]
    assert np.mean(model.predict(x) == y) > 0.9
    assert np.abs(np.asarray(model.coef)[:, 0]).max() > 5 * np.abs(np.asarray(model.coef)[:, 1]).max()
    back = SoftmaxModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert back.predict_proba(x) == pytest.approx(model.predict_proba(x))
    assert model.predict_proba(x).sum(axis=1) == pytest.approx(np.ones(300))
    with pytest.raises(ValueError, match="two classes or more"):
        SoftmaxModel.fit(x, np.ones(300), ["a", "b"])
    with pytest.raises(ValueError, match="one value per feature"):
        SoftmaxModel.from_dict({**model.to_dict(), "features": ["a"]})


def test_version_two_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "v2.json"
    entry = {"classes": [1, 2], "coef": [[0.0], [1.0]], "intercept": [0.0, 0.0], "features": ["hu_mean"],
             "center": [0.0], "scale": [1.0]}  # fmt: skip
    bad.write_text(json.dumps({"kind": "malignancy_fusion", "version": 2, "attributes": {"colour": entry}}))
    with pytest.raises(ValueError, match=r"v2\.json: unknown attribute 'colour'"):
        MalignancyFusion.load(bad)
    bad.write_text(json.dumps({"kind": "malignancy_fusion", "version": 2,
                               "attributes": {"texture": {**entry, "features": ["colour"]}}}))  # fmt: skip
    with pytest.raises(ValueError, match=r"v2\.json: texture: features must be distinct"):
        MalignancyFusion.load(bad)
    bad.write_text(json.dumps({"kind": "malignancy_fusion", "version": 2, "attributes": {"texture": {"coef": 1}}}))
    with pytest.raises(ValueError, match=r"v2\.json: not a multinomial model"):
        MalignancyFusion.load(bad)


def test_fit_malignancy_cli_measured_features(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tables = _write_measured(tmp_path / "t")
    parser = argparse.ArgumentParser(prog="lung-nodule-mtl")
    register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / FUSION_FILE
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"w")
    args = parser.parse_args(["fit-malignancy", "--tables", *map(str, tables[:1]), "--features", "calibrate",
                              "--weights", str(weights),
                              "--attribute-features", "calcified_fraction,hu_mean", "--attribute-tables",
                              *map(str, tables), "--out", str(out), "--bootstrap", "50"])  # fmt: skip
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "malignancy (malignancy_logit): fitted on 120 nodules" in printed
    assert "calcification: exact / within one, fused" in printed and "(480 nodules)" in printed
    fusion = MalignancyFusion.load(out)
    assert fusion.features == ["malignancy_logit", "calcified_fraction", "hu_mean"]
    assert fusion.fitted_on["weights"]["sha256"] == hashlib.sha256(b"w").hexdigest()
    assert fusion_beside(weights) == str(out)


def test_a_fusion_fitted_for_other_weights_is_not_used(tmp_path: Path) -> None:
    from lung_nodule_mtl.inference.fusion import weights_fingerprint

    ckpt = tmp_path / "models" / "model.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights one")
    model = LogisticModel(coef=[1.0], intercept=0.0, features=["malignancy_logit"])
    path = MalignancyFusion(model, {"weights": weights_fingerprint(ckpt)}).save(ckpt.parent / FUSION_FILE)
    assert weights_fingerprint(ckpt)["file"] == "model.pt" and len(weights_fingerprint(ckpt)["sha256"]) == 64
    assert fusion_beside(ckpt) == str(path)
    ckpt.write_bytes(b"weights two: retrained in the same folder")
    with pytest.warns(UserWarning, match=r"fitted for other weights .* not used"):
        assert fusion_beside(ckpt) is None
    # a fusion without the record is used beside any weights (files of the first version)
    MalignancyFusion(model, {}).save(path)
    assert fusion_beside(ckpt) == str(path)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        weights_fingerprint(tmp_path / "none.pt")
