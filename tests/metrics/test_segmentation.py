"""Per-nodule Dice, IoU and HD95 against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lung_nodule_mtl.metrics.segmentation import segmentation_scores


def box(shape=(20, 20, 10), lo=(5, 5, 3), hi=(10, 10, 6)) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return m


def test_identical() -> None:
    s = segmentation_scores(box(), box(), spacing=(0.7, 0.7, 2.5))
    assert s == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}


def test_shifted_values() -> None:
    ref = box()
    pred = box(lo=(6, 5, 3), hi=(11, 10, 6))  # shifted by one voxel along H: overlap 4/5
    s = segmentation_scores(pred, ref, spacing=(2.0, 1.0, 1.0))
    assert s["dice"] == pytest.approx(0.8)
    assert s["iou"] == pytest.approx(4 / 6)
    assert s["hd95"] == pytest.approx(2.0)  # one voxel of 2 mm along the shifted axis
    assert segmentation_scores(pred, ref)["hd95"] == pytest.approx(1.0)  # in voxels without spacing


def test_empty_cases() -> None:
    empty = np.zeros((20, 20, 10))
    missed = segmentation_scores(empty, box())
    assert missed["dice"] == 0.0 and missed["iou"] == 0.0 and math.isinf(missed["hd95"])
    assert all(math.isnan(v) for v in segmentation_scores(box(), empty).values())


def test_channel_first_tensor() -> None:
    t = torch.as_tensor(box())[None]
    assert segmentation_scores(t, t)["dice"] == 1.0


def test_ill_arg() -> None:
    with pytest.raises(ValueError, match="share one grid"):
        segmentation_scores(box(), box(shape=(20, 20, 11)))
    with pytest.raises(ValueError, match="3D mask"):
        segmentation_scores(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="spacing"):
        segmentation_scores(box(), box(), spacing=(1.0, 1.0))
