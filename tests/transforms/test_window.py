"""HU windows: shapes, exact values at and beyond the edges, channel order, meta kept, bad windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from lung_nodule_mtl.constants import DEFAULT_WINDOWS
from lung_nodule_mtl.transforms.window import LungWindow, LungWindowd, normalise_windows

AFFINE = torch.tensor(
    [[-0.7, 0, 0, 30.0], [0, -0.7, 0, 40.0], [0, 0, 2.5, -120.0], [0, 0, 0, 1.0]], dtype=torch.float64
)


@pytest.fixture
def ct() -> MetaTensor:
    """``(1, 16, 16, 16)`` HU volume, uniform in [-2000, 2000], with an L,P,S affine and a file name."""
    values = torch.from_numpy(np.random.default_rng(0).uniform(-2000, 2000, size=(1, 16, 16, 16)).astype(np.float32))
    return MetaTensor(values, affine=AFFINE, meta={"filename_or_obj": "ct.nii.gz"})


@pytest.mark.parametrize(
    ("windows", "n_channels"),
    [(None, len(DEFAULT_WINDOWS)), ({"lung": (-1000, 400)}, 1), ([(-1000, 400), (-160, 240)], 2)],
)
def test_shape(ct: MetaTensor, windows: object, n_channels: int) -> None:
    out = LungWindow(windows)(ct)
    assert out.shape == (n_channels, 16, 16, 16)
    assert out.dtype == torch.float32
    assert isinstance(out, MetaTensor)
    torch.testing.assert_close(out.affine, AFFINE)
    assert out.meta["filename_or_obj"] == "ct.nii.gz"
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0  # the uniform HU spans beyond every window


def test_values_at_and_beyond_edges() -> None:
    hu = torch.tensor([-3000.0, -1000.0, -999.0, -300.0, 399.0, 400.0, 3000.0]).reshape(1, 7, 1, 1)
    out = LungWindow({"lung": (-1000, 400), "mediastinal": (-160, 240)})(hu)
    lung = out[0].flatten().tolist()
    assert lung[:2] == [0.0, 0.0] and lung[-2:] == [1.0, 1.0]  # exactly 0 at/below low, 1 at/above high
    assert (
        lung[2] == pytest.approx(1 / 1400) and lung[3] == pytest.approx(0.5) and lung[4] == pytest.approx(1399 / 1400)
    )
    mediastinal = out[1].flatten().tolist()
    assert mediastinal == pytest.approx([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])


def test_channel_order(ct: MetaTensor) -> None:
    windows = {"wide": (-1400.0, 200.0), "lung": (-1000.0, 400.0)}
    transform = LungWindow(windows)
    out = transform(ct)
    assert transform.window_names == ["wide", "lung"]
    expected_wide = ((ct[0] + 1400.0) / 1600.0).clamp(0, 1)
    torch.testing.assert_close(out[0].as_tensor(), expected_wide.as_tensor())
    torch.testing.assert_close(out[1], LungWindow({"lung": (-1000.0, 400.0)})(ct)[0])


def test_numpy_input() -> None:
    out = LungWindow([(-1000, 400)])(np.full((1, 4, 4, 4), -300, dtype=np.int16))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((1, 4, 4, 4), 0.5))


@pytest.mark.parametrize(
    ("windows", "match"),
    [
        ({"lung": (400, -1000)}, r"windows\['lung'\] must have low < high.*low=400.0, high=-1000.0"),
        ({"flat": (0, 0)}, "low < high"),
        ([(-1000, math.nan)], r"windows\['window0'\] must be finite"),
        ([(-1000, math.inf)], "must be finite"),
        ([(-1000, 400, 5)], "must be two numbers"),
        ([(-1000,)], "must be two numbers"),
        ({}, "at least one"),
        ("lung", "windows must be"),
        (5, "windows must be"),
    ],
)
def test_ill_arg(windows: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LungWindow(windows)  # type: ignore[arg-type]


def test_ill_input(ct: MetaTensor) -> None:
    with pytest.raises(ValueError, match=r"one channel\), got shape \(2, 16, 16, 16\)"):
        LungWindow()(torch.cat([ct, ct]))


def test_normalise_windows_default() -> None:
    assert normalise_windows(None) == DEFAULT_WINDOWS
    assert normalise_windows([(-1, 1)]) == {"window0": (-1.0, 1.0)}


def test_dict(ct: MetaTensor) -> None:
    mask = MetaTensor(torch.ones(1, 16, 16, 16), affine=AFFINE)
    out = LungWindowd(keys="image")({"image": ct, "label": mask, "case_id": "a"})
    assert out["image"].shape == (3, 16, 16, 16)
    assert out["label"] is mask and out["case_id"] == "a"
    with pytest.raises(KeyError):
        LungWindowd(keys=["image", "other"])({"image": ct})
    assert LungWindowd(keys=["image", "other"], allow_missing_keys=True)({"image": ct})["image"].shape[0] == 3
