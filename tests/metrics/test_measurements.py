"""What the mask measures: size, density and shape of synthetic nodules with known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lung_nodule_mtl.metrics.measurements import (
    MEASURE_WINDOW_HU,
    MEASUREMENTS,
    hu_from_lung_window,
    nodule_measurements,
)


def _ball(shape: tuple[int, int, int], radius: float, center: tuple[float, ...] | None = None) -> np.ndarray:
    c = center or tuple((s - 1) / 2 for s in shape)
    z, y, x = np.indices(shape)
    return (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= radius**2


def test_solid_sphere_in_lung() -> None:
    mask = _ball((32, 32, 32), 6.0)
    hu = np.where(mask, 40.0, -850.0).astype(np.float32)
    m = nodule_measurements(hu, mask)
    assert m is not None and set(m) == set(MEASUREMENTS)
    assert math.exp(m["log_diameter_mm"]) == pytest.approx(12.0, rel=0.03)
    assert m["hu_mean"] == pytest.approx(0.40) and m["hu_std"] == pytest.approx(0.0, abs=1e-6)
    assert m["calcified_fraction"] == 0.0 and m["ground_glass_fraction"] == 0.0
    assert m["rim_contrast"] == pytest.approx(8.9)  # 40 - (-850) HU, in hundreds
    assert 0.6 < m["sphericity"] < 0.9  # staircase faces of a voxel sphere
    assert m["elongation"] == pytest.approx(1.0, abs=0.02) and m["flatness"] == pytest.approx(1.0, abs=0.02)


def test_spacing_scales_the_size_and_the_shape_follows_the_mask() -> None:
    mask = _ball((32, 32, 32), 6.0)
    hu = np.where(mask, 40.0, -850.0)
    one = nodule_measurements(hu, mask, 1.0)
    two = nodule_measurements(hu, mask, (2.0, 2.0, 2.0))
    assert one is not None and two is not None
    assert two["log_diameter_mm"] - one["log_diameter_mm"] == pytest.approx(math.log(2.0))
    assert two["sphericity"] == pytest.approx(one["sphericity"])  # scale-free
    # a flat ellipsoid: lower flatness and sphericity than the ball of the same grid
    z, y, x = np.indices((32, 32, 32)) - 15.5
    flat = (z / 2.5) ** 2 + (y / 9.0) ** 2 + (x / 9.0) ** 2 <= 1.0
    f = nodule_measurements(np.where(flat, 40.0, -850.0), flat)
    assert f is not None and f["flatness"] < 0.4 < f["elongation"] and f["sphericity"] < one["sphericity"]


def test_calcified_and_ground_glass_fractions_and_the_window() -> None:
    mask = _ball((24, 24, 24), 5.0)
    hu = np.full(mask.shape, -900.0, dtype=np.float32)
    core = _ball((24, 24, 24), 3.5)
    hu[mask] = -500.0  # ground glass
    hu[core] = 3000.0  # bone-bright core, clipped to the lung window's 400 HU
    m = nodule_measurements(hu, mask)
    assert m is not None
    frac = core.sum() / mask.sum()
    assert m["calcified_fraction"] == pytest.approx(frac)
    assert m["ground_glass_fraction"] == pytest.approx(1 - frac)
    assert m["hu_p90"] == pytest.approx(MEASURE_WINDOW_HU[1] / 100.0)
    assert m["hu_mean"] == pytest.approx((frac * 400.0 + (1 - frac) * -500.0) / 100.0, rel=1e-5)


def test_lung_window_channel_gives_back_the_hu() -> None:
    hu = np.array([-1200.0, -1000.0, -300.0, 400.0, 900.0])
    channel = (np.clip(hu, -1000, 400) + 1000) / 1400
    assert hu_from_lung_window(channel) == pytest.approx([-1000.0, -1000.0, -300.0, 400.0, 400.0], abs=1e-3)


def test_empty_mask_and_bad_input() -> None:
    hu = np.zeros((8, 8, 8))
    assert nodule_measurements(hu, np.zeros((8, 8, 8), bool)) is None
    with pytest.raises(ValueError, match="same 3D shape"):
        nodule_measurements(hu, np.zeros((8, 8, 7), bool))
    with pytest.raises(ValueError, match="spacing_mm must be positive"):
        nodule_measurements(hu, np.ones((8, 8, 8), bool), (1.0, 0.0, 1.0))
    one = np.zeros((8, 8, 8), bool)
    one[4, 4, 4] = True
    m = nodule_measurements(hu, one, 0.5)  # 0.62 mm across
    assert m is not None and m["log_diameter_mm"] == 0.0 and m["elongation"] == 1.0  # at least 1 mm
