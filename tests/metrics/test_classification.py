"""Malignancy and attribute scores, with indeterminates apart and the diameter baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lung_nodule_mtl.metrics.classification import (
    attribute_accuracy,
    binary_scores,
    malignancy_report,
    paired_auc_bootstrap,
    rank_auc,
)


def test_binary_scores_values() -> None:
    probs = [0.9, 0.8, 0.3, 0.6, 0.1, 0.2]
    labels = [1, 1, 1, 0, 0, 0]
    s = binary_scores(probs, labels)
    # 8 of the 9 positive/negative pairs are ordered right (0.3 < 0.6)
    assert s["auc"] == pytest.approx(8 / 9)
    assert s["sensitivity"] == pytest.approx(2 / 3)
    assert s["specificity"] == pytest.approx(2 / 3)
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert (s["n_positive"], s["n_negative"]) == (3, 3)
    assert binary_scores(probs, labels, threshold=0.25)["sensitivity"] == 1.0


def test_one_class_is_nan() -> None:
    s = binary_scores([0.2, 0.7], [1, 1])
    assert math.isnan(s["auc"]) and math.isnan(s["specificity"]) and s["sensitivity"] == 0.5


def test_malignancy_report_keeps_indeterminate_apart() -> None:
    probs = [0.9, 0.1, 0.5, 0.7, 0.4]
    labels = [1, 0, -1, -1, None]
    diameters = [20.0, 4.0, 8.0, 9.0, 5.0]
    r = malignancy_report(probs, labels, diameters)
    assert r["auc"] == 1.0 and (r["n_positive"], r["n_negative"]) == (1, 1)
    assert r["indeterminate"] == {"n": 2, "mean_prob": pytest.approx(0.6)}
    assert r["n_unknown"] == 1
    assert r["diameter_baseline_auc"] == 1.0
    # a diameter that orders the classes the wrong way round scores 0
    assert malignancy_report(probs, labels, [3.0, 30.0, 8.0, 9.0, 5.0])["diameter_baseline_auc"] == 0.0
    # changing an indeterminate prediction changes nothing but the indeterminate summary
    r2 = malignancy_report([0.9, 0.1, 0.0, 0.0, 0.4], labels)
    assert r2["auc"] == r["auc"] and r2["indeterminate"]["mean_prob"] == 0.0
    # beyond size, on the benign and malignant nodules only: 20 vs 4 mm cannot be size-matched
    assert r["calibration"]["brier"] == pytest.approx(0.01) and r["calibration"]["n"] == 2
    assert r["size_matched"]["n_pairs"] == 0
    assert r["size_strata"][">=20 mm"]["n_malignant"] == 1 and r["size_strata"]["<10 mm"]["n_benign"] == 1
    assert r["diameter_logistic"]["features"] == ["log_diameter_mm"] and r["diameter_logistic"]["coef"][0] > 0
    assert "size_matched" not in r2 and r2["calibration"]["brier"] == r["calibration"]["brier"]


def test_attribute_accuracy() -> None:
    ref = {"spiculation": [1, 2, 5, None], "texture": [5, 5, 1, 3]}
    pred = {"spiculation": [1, 3, 2, 4], "texture": [5, 4, 1, 3], "margin": [1, 1, 1, 1]}
    acc = attribute_accuracy(pred, ref)
    assert set(acc) == {"spiculation", "texture"}
    assert acc["spiculation"] == {
        "accuracy": pytest.approx(1 / 3),
        "within_one": pytest.approx(2 / 3),
        "n": 3,
        "majority_accuracy": pytest.approx(1 / 3),  # 1, 2, 5: each once
    }
    assert acc["texture"]["accuracy"] == 0.75 and acc["texture"]["within_one"] == 1.0
    assert acc["texture"]["majority_accuracy"] == 0.5  # 5, 5, 1, 3: the mode 5 twice


def test_ill_arg() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        binary_scores([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="same length"):
        binary_scores([0.1], [0, 1])
    with pytest.raises(ValueError, match="finite"):
        binary_scores([np.nan, 0.2], [0, 1])
    with pytest.raises(ValueError, match="diameters_mm"):
        malignancy_report([0.1, 0.2], [0, 1], [3.0])
    with pytest.raises(ValueError, match="spiculation"):
        attribute_accuracy({"spiculation": [1]}, {"spiculation": [1, 2]})


def test_rank_auc_equals_monai_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = (rng.random(60) < 0.4).astype(float)
    assert rank_auc(scores, labels) == pytest.approx(binary_scores(scores, labels)["auc"])
    assert rank_auc([0.2, 0.8], [1, 0]) == 0.0
    assert math.isnan(rank_auc([0.2, 0.8], [1, 1]))


def test_paired_auc_bootstrap_tells_a_better_score_from_an_equal_one() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 100)
    weak = labels + rng.normal(0, 1.5, 200)
    strong = labels + rng.normal(0, 0.3, 200)
    patients = np.repeat(np.arange(100), 2)  # two nodules per patient
    better = paired_auc_bootstrap(strong, weak, labels, patients, n_bootstrap=300, seed=0)
    assert better["auc_a"] == pytest.approx(rank_auc(strong, labels))
    assert better["difference"] == pytest.approx(better["auc_a"] - better["auc_b"])
    assert better["ci_difference"][0] > 0 and better["p_a_not_better"] < 0.01
    assert better["ci_a"][0] < better["auc_a"] < better["ci_a"][1]
    assert better["n_groups"] == 100 and better["n_valid"] == 300
    same = paired_auc_bootstrap(weak, weak, labels, n_bootstrap=50)
    assert same["difference"] == 0.0 and same["ci_difference"] == [0.0, 0.0] and same["p_a_not_better"] == 1.0
    # resampling whole patients: a patient's nodules are always drawn together
    wide = paired_auc_bootstrap(strong, weak, labels, np.zeros(200), n_bootstrap=20)
    assert wide["ci_a"][0] == wide["ci_a"][1] == pytest.approx(wide["auc_a"])
    with pytest.raises(ValueError, match="one entry per case"):
        paired_auc_bootstrap(strong, weak, labels, patients[:10])
    with pytest.raises(ValueError, match="0 or 1"):
        paired_auc_bootstrap(strong, weak, labels * 2)
