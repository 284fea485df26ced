"""Real nodules pasted into scans: the bank, the blend, the places, whole-scan insertion and its command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from lung_nodule_mtl.cli.main import main
from lung_nodule_mtl.data import read_splits
from lung_nodule_mtl.data.insertion import (
    DENSE_OVERLAP_HU,
    BankNodule,
    NoduleBank,
    dense_overlap,
    insert_nodules,
    nodule_place,
    paste_nodule,
    random_orientation,
    sampling_points,
    soft_edge,
)


def _ball(radius: int, hu: float) -> BankNodule:
    n = 2 * radius + 7
    grid = np.indices((n, n, n)) - n // 2
    mask = (grid**2).sum(axis=0) <= radius**2
    patch = np.where(mask, hu, -850.0).astype(np.int16)
    return BankNodule(patch, mask, {"patient_id": "P1", "fold": 0, "malignancy": 1, "malignancy_score": 4})


def _lung_volume() -> tuple[np.ndarray, np.ndarray]:
    """A 60³ 'chest': tissue (40 HU) around a lung box (-850 HU) holding one 'vessel' rod (40 HU) along z."""
    hu = np.full((60, 60, 60), 40.0, dtype=np.float32)
    hu[10:50, 10:50, 5:55] = -850.0
    hu[29:31, 29:31, 5:55] = 40.0
    lung = np.zeros(hu.shape, dtype=bool)
    lung[8:52, 8:52, 3:57] = True
    return hu, lung


def test_paste_puts_the_nodules_hu_inside_its_mask_and_keeps_the_far_host() -> None:
    nodule = _ball(4, 30)
    region = np.full((40, 40, 40), -1000.0, dtype=np.float32)  # host air; the patch's own surround is -850
    label = np.zeros(region.shape, dtype=np.uint8)
    touched = paste_nodule(region, label, nodule.hu.astype(np.float32), nodule.mask, (20, 20, 20))
    assert touched is not None
    assert np.all(region[label == 1] == 30.0)  # weight 1 inside the mask: the nodule's own HU
    assert int(label.sum()) == int(nodule.mask.sum())  # the exact mask, at the place asked for
    assert label[20, 20, 20] == 1 and label[20, 20, 25] == 0
    assert -1000.0 < region[20, 20, 25] < -850.0  # just outside: blended with the patch's surround (soft edge)
    assert region[0, 0, 0] == -1000.0 and region[20, 20, 32] == -1000.0  # far away: untouched


def test_paste_keeps_denser_host_tissue_through_a_ground_glass_nodule() -> None:
    ggo = _ball(5, -600)
    region = np.full((30, 30, 30), -850.0, dtype=np.float32)
    region[15, 15, :] = 40.0  # a vessel through the nodule's place
    paste_nodule(region, None, ggo.hu.astype(np.float32), ggo.mask, (15, 15, 15))
    assert region[15, 15, 15] == 40.0  # the vessel shows through
    assert region[13, 15, 15] == -600.0  # the rest of the mask is the nodule


def test_paste_outside_the_region_returns_none_and_partial_paste_is_clipped() -> None:
    nodule = _ball(3, 0)
    region = np.full((20, 20, 20), -850.0, dtype=np.float32)
    assert paste_nodule(region, None, nodule.hu.astype(np.float32), nodule.mask, (60, 60, 60)) is None
    label = np.zeros(region.shape, dtype=np.uint8)
    paste_nodule(region, label, nodule.hu.astype(np.float32), nodule.mask, (0, 10, 10))
    assert 0 < int(label.sum()) < int(nodule.mask.sum())  # only the half inside


def test_paste_old_keyword_warns_and_pastes_the_same() -> None:
    nodule = _ball(4, 30)
    regions = [np.full((40, 40, 40), -1000.0, dtype=np.float32) for _ in range(2)]
    new = paste_nodule(regions[0], None, nodule.hu.astype(np.float32), nodule.mask, center=(20, 18, 21))
    with pytest.warns(FutureWarning, match="`centre` of `paste_nodule` has been deprecated.*`center`"):
        old = paste_nodule(regions[1], None, nodule.hu.astype(np.float32), nodule.mask, centre=(20, 18, 21))
    assert old == new
    np.testing.assert_array_equal(regions[1], regions[0])


def test_soft_edge_is_one_inside_and_falls_off_outside() -> None:
    mask = _ball(4, 0).mask
    alpha = soft_edge(mask, 1.0, (1.0, 1.0, 1.0))
    assert np.all(alpha[mask] == 1.0)
    c = mask.shape[0] // 2
    assert 0.0 < alpha[c, c, c + 5] < 1.0 and alpha[c, c, c + 5] > alpha[c, c, c + 7]


def test_random_orientation_keeps_the_volume_and_the_cranio_caudal_axis() -> None:
    nodule = BankNodule(np.zeros((5, 7, 3), dtype=np.int16), np.ones((5, 7, 3), dtype=bool))
    shapes = {random_orientation(nodule, np.random.default_rng(s))[0].shape for s in range(20)}
    assert shapes == {(5, 7, 3), (7, 5, 3)}  # axial rotations swap x and y only


def test_sampling_points_are_parenchyma_and_dense_voxels_of_the_lung() -> None:
    hu, lung = _lung_volume()
    points = sampling_points(hu, lung, np.random.default_rng(0), max_points=5000)
    par, dense = points["parenchyma"], points["dense"]
    assert len(par) == 5000 and len(dense) > 0
    assert np.all(hu[tuple(par.T)] < -400) and np.all(lung[tuple(par.T)])
    assert np.all(hu[tuple(dense.T)] >= -500) and np.all(lung[tuple(dense.T)])
    # dense places hug the lung (the vessel, the lung's wall), never deep in the tissue the lung mask reaches
    near = [hu[max(i - 3, 0) : i + 4, max(j - 3, 0) : j + 4, max(k - 3, 0) : k + 4] for i, j, k in dense[:300]]
    assert all(np.abs(n + 850).min() == 0 for n in near)


def test_dense_overlap_is_the_share_of_the_mask_on_dense_or_missing_host_voxels() -> None:
    hu, _ = _lung_volume()  # lung box [10, 50) on axes 0 and 1, tissue outside
    mask = _ball(4, 0).mask  # 15³ patch, ball of radius 4 at its centre
    assert dense_overlap(hu, mask, (20, 20, 30)) == 0.0  # in parenchyma
    on_wall = dense_overlap(hu, mask, (10, 20, 30))  # centred on the lung's wall: about half in the tissue
    assert 0.4 < on_wall < 0.65
    assert 0.0 < dense_overlap(hu, mask, (29, 27, 30)) < 0.15  # the vessel rod (x, y 29-30) crosses its edge
    # beyond the volume counts as hidden: half the ball lies past the first slice
    assert dense_overlap(np.full((30, 30, 30), -850.0), mask, (15, 15, 0)) == pytest.approx(on_wall, abs=0.12)
    assert dense_overlap(hu, mask, (200, 200, 200)) == 1.0


def test_nodule_place_moves_a_juxta_nodule_off_the_wall_into_the_lung() -> None:
    hu, _ = _lung_volume()
    mask = _ball(4, 0).mask
    rng = np.random.default_rng(0)
    centre, overlap = nodule_place(hu, mask, (10, 25, 30), "dense", rng)  # a point on the wall x = 10
    assert 13 <= centre[0] <= 16 and tuple(centre[1:]) == (25, 30)  # one radius in, along +x, into the lung
    assert overlap <= 0.15
    # the same point as a solitary place: the nodule would straddle the wall
    assert nodule_place(hu, mask, (10, 25, 30), "parenchyma", rng) is None
    assert nodule_place(hu, mask, (10, 25, 30), "parenchyma", rng, max_dense_overlap=1.0) is not None
    # a thin vessel surrounded by parenchyma: moved by its radius in some direction, abutting the rod
    centre, overlap = nodule_place(hu, mask, (29, 29, 30), "dense", rng)
    assert 3 <= np.linalg.norm(centre - [29, 29, 30]) <= 5.5 and overlap <= 0.15
    with pytest.raises(ValueError, match="kind"):
        nodule_place(hu, mask, (20, 20, 20), "pleura", rng)


def test_inserted_juxta_nodules_abut_dense_tissue_without_hiding_in_it() -> None:
    hu, lung = _lung_volume()
    bank = NoduleBank([_ball(4, -500), _ball(3, -500), _ball(4, -500)])  # ground glass: denser host shows through
    out, labels, records = insert_nodules(
        hu, np.eye(4), lung, bank, 3, np.random.default_rng(3), min_distance_mm=10, dense_fraction=1.0
    )
    assert len(records) == 3 and all(r["placement"] == "juxta_dense" for r in records)
    grow = np.ones((5, 5, 5), dtype=bool)
    for r in records:
        m = labels == r["label_value"]
        hidden = float((hu[m] >= DENSE_OVERLAP_HU).mean())
        assert hidden == pytest.approx(r["dense_overlap"], abs=1e-3) and hidden <= 0.15
        assert float((out[m] > -400).mean()) <= 0.15  # what the label claims is visible as the nodule
        near = ndimage.binary_dilation(m, grow) & ~m
        assert (hu[near] >= DENSE_OVERLAP_HU).any()  # it touches what it was placed against
    with pytest.raises(ValueError, match="max_dense_overlap"):
        insert_nodules(hu, np.eye(4), lung, bank, 1, np.random.default_rng(1), max_dense_overlap=1.5)


def test_insert_nodules_places_distinct_nodules_apart_in_the_lungs() -> None:
    hu, lung = _lung_volume()
    bank = NoduleBank([_ball(3, 30), _ball(4, -500), _ball(2, 100)])
    _, labels, records = insert_nodules(
        hu, np.eye(4), lung, bank, 3, np.random.default_rng(1), avoid_world_mm=[[30, 30, 10]], min_distance_mm=12
    )
    assert len(records) == 3 and set(np.unique(labels).tolist()) == {0, 1, 2, 3}
    centres = np.asarray([r["center_world_mm"] for r in records])
    for i in range(3):
        assert lung[tuple(np.round(centres[i]).astype(int))]
        assert np.linalg.norm(centres[i] - [30, 30, 10]) >= 12 - 1.5  # the mask's centre of mass, near its place
        for j in range(i):
            assert np.linalg.norm(centres[i] - centres[j]) >= 12 - 3
    assert sorted(r["diameter_mm"] for r in records) == pytest.approx(
        sorted(float(np.cbrt(6 * n.mask.sum() / np.pi)) for n in bank.nodules), rel=0.05
    )
    assert np.array_equal(hu, _lung_volume()[0])  # the input is not modified
    with pytest.raises(ValueError, match="exceeds the bank"):
        insert_nodules(hu, np.eye(4), lung, bank, 4, np.random.default_rng(1))


def test_bank_from_crops_round_trips_and_selects_by_fold(dataset: Path, tmp_path: Path) -> None:
    items = read_splits(dataset / "datalist.json")["training"]
    bank = NoduleBank.from_items(items)
    assert len(bank) == len(items)
    for nodule, item in zip(bank.nodules, items, strict=True):
        assert nodule.hu.shape == nodule.mask.shape and nodule.mask.any()
        assert nodule.info["malignancy_score"] == item["malignancy_score"]
        # the mask's volume at 1 mm is the nodule's (the datalist diameter is the body's, the mask its voxels)
        d = float(np.cbrt(6 * nodule.mask.sum() / np.pi))
        assert d == pytest.approx(item["diameter_mm"], rel=0.35)
        assert np.median(nodule.hu[nodule.mask]) > -750  # nodule tissue, not lung
    path = bank.save(tmp_path / "bank.npz")
    again = NoduleBank.load(path)
    assert len(again) == len(bank) and again.spacing_mm == bank.spacing_mm
    assert all(np.array_equal(a.hu, b.hu) and np.array_equal(a.mask, b.mask) for a, b in zip(again, bank, strict=True))
    folds = {int(n.info["fold"]) for n in bank.nodules}
    one = next(iter(folds))
    assert all(int(n.info["fold"]) == one for n in bank.select(folds=[one]).nodules)
    (tmp_path / "bad.npz").write_bytes(b"not a bank")
    with pytest.raises(ValueError, match=r"bad\.npz"):
        NoduleBank.load(tmp_path / "bad.npz")


def test_insert_nodules_command_writes_scans_labels_and_annotations(dataset: Path, tmp_path: Path) -> None:
    from lung_nodule_mtl.data.synthetic.phantom import chest_phantom

    hosts = tmp_path / "hosts"
    hosts.mkdir()
    image, affine, _ = chest_phantom(nodules=())
    nib.save(nib.Nifti1Image(image, affine), hosts / "host.nii.gz")
    own = tmp_path / "own.csv"
    own.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\nhost,40.0,-10.0,5.0,8.0\n")
    out = tmp_path / "out"
    args = ["insert-nodules", "--hosts", str(hosts), "--nodules", str(dataset / "datalist.json"), "--per-scan", "2"]
    assert main([*args, "--out", str(out), "--host-nodules", str(own), "--min-distance-mm", "15",
                 "--max-dense-overlap", "0.1"]) == 0  # fmt: skip
    rows = list(csv.DictReader((out / "annotations.csv").open()))
    assert len(rows) == 3 and {r["seriesuid"] for r in rows} == {"host"}
    ct = nib.load(out / "images" / "host.nii.gz")
    labels = np.asarray(nib.load(out / "labels" / "host.nii.gz").dataobj)
    assert np.allclose(np.abs(np.diag(ct.affine)[:3]), 1.0)  # the isotropic 1 mm training grid
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    datalist = json.loads((out / "datalist.json").read_text())
    assert len(datalist["training"]) == 2 and all(i["malignancy_score"] for i in datalist["training"])
    inserted = [r for r in csv.DictReader((out / "nodules.csv").open()) if r["source"] == "inserted"]
    assert len(inserted) == 2 and all(r["from_patient"] for r in inserted)
    assert all(0.0 <= float(r["dense_overlap"]) <= 0.1 for r in inserted)
