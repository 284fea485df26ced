"""Growth scores and the two baselines on spheres whose volumes are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lung_nodule_mtl.metrics.growth import (
    doubling_time_days,
    fit_growth_rate,
    growth_rate_per_year,
    growth_scores,
    no_change_prediction,
    summarise_growth,
    volume_extrapolation_prediction,
)

SHAPE = (40, 40, 40)


def _sphere(radius: float, centre=(20.0, 20.0, 20.0)) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1)
    return ((grid - np.asarray(centre)) ** 2).sum(-1) <= radius**2


def _image(mask: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(0.2 + 0.6 * mask + rng.normal(0, 0.02, SHAPE), 0, 1).astype(np.float32)[None]


def test_doubling_time_and_growth_rate() -> None:
    assert doubling_time_days(100.0, 200.0, 150.0) == pytest.approx(150.0)
    assert doubling_time_days(100.0, 400.0, 150.0) == pytest.approx(75.0)
    assert doubling_time_days(100.0, 100.0, 90.0) == math.inf
    assert doubling_time_days(100.0, 50.0, 90.0) == pytest.approx(-90.0)
    assert growth_rate_per_year(100.0, 100.0 * math.e, 365.25) == pytest.approx(1.0)
    assert math.isnan(doubling_time_days(0.0, 10.0, 90.0))


def test_perfect_prediction_scores() -> None:
    base, follow = _sphere(5.0), _sphere(7.0)
    img = _image(follow)
    s = growth_scores(img, follow, img, follow, base, interval_days=180.0, spacing_mm=(0.5, 0.5, 0.5))
    assert s["dice"] == 1.0 and s["sensitivity"] == 1.0 and s["ppv"] == 1.0
    assert s["ssim"] == pytest.approx(1.0) and s["ssim_nodule"] == pytest.approx(1.0)
    assert s["relative_volume_error"] == 0.0 and s["vdt_days"] == pytest.approx(s["true_vdt_days"])
    assert s["true_volume_mm3"] == pytest.approx(follow.sum() * 0.125)
    assert s["true_vdt_days"] == pytest.approx(180.0 * math.log(2) / math.log(follow.sum() / base.sum()))


def test_extrapolation_beats_no_change_on_a_growing_nodule() -> None:
    base, follow = _sphere(6.0), _sphere(6.0 * 2 ** (1 / 3))  # volume doubled
    img0, img1 = _image(base), _image(follow)
    rate = fit_growth_rate(
        [{"baseline_volume_mm3": 100.0, "followup_volume_mm3": 200.0, "interval_days": 200.0}] * 3
        + [{"baseline_volume_mm3": 100.0, "followup_volume_mm3": 100.0, "interval_days": 200.0}]
    )
    assert rate == pytest.approx(1.0 / 200.0)  # the median pair doubles in 200 days
    still = growth_scores(*no_change_prediction(img0, base), img1, follow, base, interval_days=200.0)
    _, grown = volume_extrapolation_prediction(img0, base, rate, 200.0)
    assert grown.sum() == round(2.0 * base.sum())  # exactly the extrapolated volume
    extrapolated = growth_scores(img0, grown, img1, follow, base, interval_days=200.0)
    assert extrapolated["dice"] > still["dice"] + 0.1
    assert abs(extrapolated["relative_volume_error"]) < 0.08 < abs(still["relative_volume_error"])
    assert still["ssim_nodule"] < still["ssim"]  # the change is in the nodule region
    summary = summarise_growth([still, extrapolated])
    assert summary["dice"]["n"] == 2 and summary["dice"]["mean"] == pytest.approx(
        (still["dice"] + extrapolated["dice"]) / 2
    )


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="shape"):
        growth_scores(_image(_sphere(3)), _sphere(3)[:20], _image(_sphere(3)), _sphere(3), _sphere(3), 90.0)
    with pytest.raises(ValueError, match="no pair"):
        fit_growth_rate([])
