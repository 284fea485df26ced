"""Malignancy beyond size: size-matched and stratified AUC, calibration, the logistic model, the threshold."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lung_nodule_mtl.metrics.calibration import (
    LogisticModel,
    calibration_report,
    size_matched_auc,
    size_matched_pairs,
    size_strata_auc,
    write_reliability_diagram,
    youden_threshold,
)


def test_size_matched_pairs_are_nearest_first_without_replacement_and_within_the_gap() -> None:
    d = [10.0, 12.0, 10.5, 11.0, 30.0, 20.0]
    y = [1, 1, 0, 0, 1, 0]
    # 10.0-10.5 (0.5) and 12.0-11.0 (1.0) pair; 30 has no benign within 3 mm (20 is 10 mm away)
    assert size_matched_pairs(d, y) == [(0, 2), (1, 3)]
    assert size_matched_pairs(d, y, max_gap_mm=10.0) == [(0, 2), (1, 3), (4, 5)]
    # one benign nodule cannot serve two malignant ones
    assert size_matched_pairs([10.0, 10.3, 10.1], [1, 1, 0]) == [(0, 2)]
    assert size_matched_pairs([1.0, 2.0], [1, 1]) == []
    with pytest.raises(ValueError, match="0 \\(benign\\) or 1"):
        size_matched_pairs([1.0, 2.0], [1, 3])
    with pytest.raises(ValueError, match="one value per nodule"):
        size_matched_pairs([1.0, 2.0], [1])


def test_size_matched_auc_removes_what_size_alone_explains() -> None:
    rng = np.random.default_rng(0)
    # malignant nodules larger on average; the score here is the diameter itself: perfect overall,
    # only what is left within 3 mm on matched pairs
    d_mal, d_ben = rng.uniform(8, 30, 60), rng.uniform(4, 20, 120)
    d = np.concatenate([d_mal, d_ben])
    y = np.r_[np.ones(60), np.zeros(120)]
    size_only = size_matched_auc(d, y, d)
    assert size_only["n_pairs"] > 30 and size_only["mean_gap_mm"] <= 3.0
    assert size_only["auc"] == pytest.approx(size_only["diameter_auc"])
    assert size_only["auc"] < 0.75  # a diameter of ~0.9 AUC overall says little within 3 mm
    # a score that knows the label beyond size: 1 on every matched pair
    informed = size_matched_auc(y + 0.001 * d, y, d)
    assert informed["auc"] == 1.0 and informed["concordance"] == 1.0
    assert size_matched_auc([0.5], [1], [10.0])["n_pairs"] == 0 and math.isnan(
        size_matched_auc([0.5], [1], [10.0])["auc"]
    )


def test_size_strata_auc_splits_at_the_edges() -> None:
    d = [5, 6, 9.99, 10, 15, 19, 20, 25, 30]
    y = [0, 1, 0, 1, 0, 1, 0, 1, 1]
    p = [0.1, 0.9, 0.2, 0.3, 0.8, 0.2, 0.4, 0.6, 0.7]
    strata = size_strata_auc(p, y, d)
    assert list(strata) == ["<10 mm", "10-20 mm", ">=20 mm"]
    assert (strata["<10 mm"]["n_malignant"], strata["<10 mm"]["n_benign"]) == (1, 2)
    assert strata["<10 mm"]["auc"] == 1.0
    assert (strata["10-20 mm"]["n_malignant"], strata["10-20 mm"]["n_benign"]) == (2, 1)
    assert strata["10-20 mm"]["auc"] == 0.0  # benign 0.8 above both malignant (0.3, 0.2)
    assert strata[">=20 mm"]["auc"] == 1.0 and strata[">=20 mm"]["lower_mm"] == 20.0
    assert strata[">=20 mm"]["upper_mm"] is None
    only_one = size_strata_auc([0.5, 0.6], [1, 1], [3.0, 4.0])
    assert math.isnan(only_one["<10 mm"]["auc"]) and only_one["10-20 mm"]["n_malignant"] == 0
    with pytest.raises(ValueError, match="increase"):
        size_strata_auc(p, y, d, edges_mm=(20, 10))


def test_calibration_report_values() -> None:
    p = [0.05, 0.05, 0.95, 0.95, 0.55, 0.55]
    y = [0, 0, 1, 1, 0, 1]
    r = calibration_report(p, y, n_bins=10)
    assert r["brier"] == pytest.approx((4 * 0.05**2 + 0.55**2 + 0.45**2) / 6)
    # bins 0, 5, 9: gaps 0.05, 0.05, 0.05, each a third of the nodules
    assert r["ece"] == pytest.approx(0.05)
    assert [b["n"] for b in r["bins"]] == [2, 0, 0, 0, 0, 2, 0, 0, 0, 2]
    assert r["bins"][5]["observed"] == 0.5 and r["bins"][1]["mean_prob"] is None
    assert calibration_report([1.0], [1], n_bins=4)["bins"][3]["n"] == 1  # p = 1 in the last bin
    worse = calibration_report([0.9, 0.9, 0.1, 0.1, 0.5, 0.5], y)
    assert worse["brier"] > r["brier"] and worse["ece"] > r["ece"]
    with pytest.raises(ValueError, match="probabilities"):
        calibration_report([1.5], [1])


def test_reliability_diagram_is_a_png_with_the_curves(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 200)
    y = (rng.uniform(0, 1, 200) < p).astype(int)
    out = write_reliability_diagram(
        {"model": calibration_report(p, y), "diameter": calibration_report(np.full(200, y.mean()), y)},
        tmp_path / "sub" / "reliability.png",
    )
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[0] > 500 and img.shape[1] == 600
    blue = (img[..., 0] == 31) & (img[..., 1] == 119) & (img[..., 2] == 180)
    red = (img[..., 0] == 214) & (img[..., 1] == 39) & (img[..., 2] == 40)
    assert blue.sum() > 200 and red.sum() > 50  # both curves drawn
    assert not list(out.parent.glob("*.tmp*"))


def test_logistic_model_recovers_its_coefficients_and_round_trips() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4000, 2))
    y = (rng.uniform(size=4000) < 1 / (1 + np.exp(-(0.5 + 2.0 * x[:, 0] - 1.0 * x[:, 1])))).astype(float)
    m = LogisticModel.fit(x, y, features=["a", "b"], l2=0.0)
    assert m.intercept == pytest.approx(0.5, abs=0.15)
    assert m.coef == pytest.approx([2.0, -1.0], abs=0.2)
    again = LogisticModel.from_dict(m.to_dict())
    np.testing.assert_allclose(again.predict(x[:5]), m.predict(x[:5]))
    assert LogisticModel.fit([1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1]).predict([[10.0]])[0] > 0.9  # 1D input
    with pytest.raises(ValueError, match="one class"):
        LogisticModel.fit([[1.0], [2.0]], [1, 1])
    with pytest.raises(ValueError, match="takes 2 features"):
        m.predict([[1.0]])
    with pytest.raises(ValueError, match="not a logistic model"):
        LogisticModel.from_dict({"coef": [1.0]})


def test_youden_threshold_is_chosen_on_the_nodules_given() -> None:
    p = [0.1, 0.2, 0.3, 0.6, 0.7, 0.35]
    y = [0, 0, 0, 1, 1, 1]
    assert youden_threshold(p, y) == 0.35  # sens 1, spec 1
    assert youden_threshold([0.1, 0.9, 0.5], [0, 1, 0]) == 0.9
    with pytest.raises(ValueError, match="one class"):
        youden_threshold([0.1], [1])
