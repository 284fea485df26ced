"""Training windows of whole scans: the kinds, their labels, negatives clear of nodules, pasted nodules."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from lung_nodule_mtl.constants import IGNORE_INDEX
from lung_nodule_mtl.data.insertion import BankNodule, NoduleBank
from lung_nodule_mtl.transforms import TRAIN_KEYS, get_scan_train_transforms
from lung_nodule_mtl.transforms.scan_windows import POINTS_KEY, RandScanWindowsd, ScanSamplingPointsd

NODULE_VOXEL = (30, 30, 30)
NODULE_RADIUS = 4


def _scan() -> dict:
    """A 64 x 64 x 64 scan at 1 mm (identity affine = RAS): tissue, a lung box, one vessel, one labelled nodule."""
    hu = np.full((64, 64, 64), 40.0, dtype=np.float32)
    hu[6:58, 6:58, 6:58] = -850.0
    hu[44:46, 10:54, 10:54] = 40.0  # a vessel wall
    grid = np.indices(hu.shape)
    ball = ((grid - np.asarray(NODULE_VOXEL)[:, None, None, None]) ** 2).sum(axis=0) <= NODULE_RADIUS**2
    hu[ball] = 20.0
    label = ball.astype(np.float32)
    nodule = {
        "center_world_mm": list(map(float, NODULE_VOXEL)),
        "diameter_mm": 2.0 * NODULE_RADIUS,
        "malignancy": 1,
        "malignancy_score": 5,
        "texture": 5,
    }
    return {
        "image": MetaTensor(torch.from_numpy(hu)[None], affine=torch.eye(4)),
        "label": MetaTensor(torch.from_numpy(label)[None], affine=torch.eye(4)),
        "case_id": "scan",
        "nodules": [nodule],
    }


def _bank() -> NoduleBank:
    n = 11
    grid = np.indices((n, n, n)) - n // 2
    mask = (grid**2).sum(axis=0) <= 9
    return NoduleBank([BankNodule(np.where(mask, 60, -850).astype(np.int16), mask, {"malignancy": 0, "texture": 3})])


@pytest.fixture(scope="module")
def prepared() -> dict:
    return ScanSamplingPointsd(keys=("image", "label"))(_scan())


def test_sampling_points_are_cached_with_the_scan_and_the_scan_is_stored_compactly(prepared: dict) -> None:
    points = prepared[POINTS_KEY]
    assert prepared["image"].dtype == torch.int16 and prepared["label"].dtype == torch.uint8
    assert np.allclose(points["nodules"], [NODULE_VOXEL]) and points["radii"][0] == pytest.approx(NODULE_RADIUS)
    assert len(points["parenchyma"]) > 1000 and len(points["dense"]) > 100


def test_window_kinds_follow_the_fractions_and_carry_the_right_labels(prepared: dict) -> None:
    windows = RandScanWindowsd(roi_size=(24, 24, 24), max_shift_mm=2.0, anywhere_shift_mm=8.0)
    windows.set_random_state(0)
    kinds: Counter[str] = Counter()
    half = 12
    for _ in range(200):
        w = windows(prepared)
        kinds[w["window_kind"]] += 1
        assert w["image"].shape == (1, 24, 24, 24) and w["label"].shape == (1, 24, 24, 24)
        if w["window_kind"] == "centred":  # the nodule within 2 mm of the centre, its labels
            assert w["nodule"] == 1.0 and w["malignancy"] == 1 and w["texture"] == 5
            assert w["label"][0, half - 2 : half + 3, half - 2 : half + 3, half - 2 : half + 3].sum() > 0
        elif w["window_kind"] == "anywhere":  # the nodule in view, nothing said of the centre
            assert w["nodule"] is None and w["malignancy"] is None and w["label"].sum() > 0
        else:  # negatives: no nodule at the centre
            assert w["nodule"] == 0.0 and w["malignancy"] is None
            assert w["label"][0, half - 4 : half + 5, half - 4 : half + 5, half - 4 : half + 5].sum() == 0
    share = {k: v / 200 for k, v in kinds.items()}
    assert share["centred"] == pytest.approx(0.25, abs=0.08) and share["hard"] == pytest.approx(0.35, abs=0.08)
    assert share["random"] == pytest.approx(0.25, abs=0.08) and share["anywhere"] == pytest.approx(0.15, abs=0.07)


def test_hard_negatives_sit_on_dense_voxels_and_random_ones_in_parenchyma(prepared: dict) -> None:
    for kind, check in (("hard", lambda v: v >= -500), ("random", lambda v: v < -400)):
        windows = RandScanWindowsd(roi_size=(16, 16, 16), fractions={kind: 1.0})
        windows.set_random_state(1)
        for _ in range(30):
            w = windows(prepared)
            assert w["window_kind"] == kind and check(float(w["image"][0, 8, 8, 8]))


def test_a_scan_without_nodules_gets_pasted_bank_nodules_with_their_labels() -> None:
    scan = _scan()
    scan["label"] = None
    scan["nodules"] = []
    scan["image"] = MetaTensor(torch.where(scan["image"] == 20.0, -850.0, scan["image"]), affine=torch.eye(4))
    prepared = ScanSamplingPointsd(keys=("image", "label"))(scan)
    assert int(prepared["label"].sum()) == 0  # a label map of zeros was made
    windows = RandScanWindowsd(roi_size=(24, 24, 24), bank=_bank(), fractions={"centred": 1.0}, max_shift_mm=0.0)
    windows.set_random_state(2)
    for _ in range(10):
        w = windows(prepared)
        assert w["window_kind"] == "centred" and w["nodule"] == 1.0
        assert w["malignancy"] == 0 and w["texture"] == 3 and w["malignancy_score"] is None
        assert w["label"][0, 12, 12, 12] == 1.0 and w["image"][0, 12, 12, 12] >= 60.0 - 1e-3
        assert int(w["label"].sum()) == int(_bank()[0].mask.sum())
    # without a bank and without nodules of its own, a scan gives negatives only
    negatives = RandScanWindowsd(roi_size=(24, 24, 24), fractions={"centred": 1.0})
    assert negatives(prepared)["nodule"] == 0.0


def test_pasted_juxta_nodules_are_not_hidden_in_dense_tissue() -> None:
    scan = _scan()
    scan["label"], scan["nodules"] = None, []
    scan["image"] = MetaTensor(torch.where(scan["image"] == 20.0, -850.0, scan["image"]), affine=torch.eye(4))
    prepared = ScanSamplingPointsd(keys=("image", "label"))(scan)
    n = 9
    grid = np.indices((n, n, n)) - n // 2
    mask = (grid**2).sum(axis=0) <= 9
    ggo = NoduleBank([BankNodule(np.where(mask, -500, -850).astype(np.int16), mask, {})])  # dense host shows through
    windows = RandScanWindowsd(
        roi_size=(24, 24, 24), bank=ggo, fractions={"centred": 1.0}, max_shift_mm=0.0, dense_insert_fraction=1.0
    )
    windows.set_random_state(4)
    for _ in range(20):
        w = windows(prepared)
        assert w["nodule"] == 1.0 and int(w["label"].sum()) == int(mask.sum())
        shown = w["image"][0][w["label"][0] > 0]
        assert float((shown > -400).float().mean()) <= 0.15  # the label's voxels show the nodule, not the wall


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="fractions"):
        RandScanWindowsd(fractions={"positive": 1.0})
    with pytest.raises(ValueError, match="insert_prob"):
        RandScanWindowsd(insert_prob=1.5)
    with pytest.raises(ValueError, match="roi_size"):
        RandScanWindowsd(roi_size=(16, 16))
    with pytest.raises(ValueError, match="max_dense_overlap"):
        RandScanWindowsd(max_dense_overlap=-0.1)
    with pytest.raises(ValueError, match="place_tries"):
        RandScanWindowsd(place_tries=0)


def test_scan_chain_gives_batches_that_mix_with_the_crop_chain(tmp_path: Path) -> None:
    import nibabel as nib

    scan = _scan()
    nib.save(nib.Nifti1Image(scan["image"][0].numpy().astype(np.int16), np.eye(4)), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(scan["label"][0].numpy().astype(np.uint8), np.eye(4)), tmp_path / "lab.nii.gz")
    item = {"image": str(tmp_path / "ct.nii.gz"), "label": str(tmp_path / "lab.nii.gz"), "nodules": scan["nodules"]}
    chain = get_scan_train_transforms(roi_size=(16, 16, 16), bank=_bank(), select_keys=TRAIN_KEYS)
    chain.set_random_state(3)
    out = chain(item)
    assert set(out) == set(TRAIN_KEYS)
    assert out["image"].shape == (3, 16, 16, 16) and float(out["image"].min()) >= 0 and float(out["image"].max()) <= 1
    assert out["nodule"].dtype == torch.float32 and float(out["nodule"]) in (0.0, 1.0, float(IGNORE_INDEX))
