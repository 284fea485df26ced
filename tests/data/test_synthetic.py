"""The synthetic chest CT generator: anatomy densities, nodules, labels, geometry, files and datalist."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, Attribute, Keys, malignancy_label_from_score
from lung_nodule_mtl.data.datalist import load_datalist, read_splits
from lung_nodule_mtl.data.synthetic import (
    SynthConfig,
    SyntheticVolume,
    Tissue,
    draw_nodule,
    generate_case,
    label_nodule,
    render_volume,
    synthesize_dataset,
)
from lung_nodule_mtl.data.synthetic.geometry import Grid

SMALL_SCAN = (96, 96, 48)
TINY_SCAN = (40, 40, 20)


def _interior(mask: np.ndarray) -> np.ndarray:
    """The voxels of ``mask`` whose 6 neighbours are in it too (away from partial-volume edges)."""
    return ndimage.binary_erosion(mask)


def _centre_voxel(volume: SyntheticVolume, centre_mm: np.ndarray | list[float]) -> tuple[int, int, int]:
    ijk = np.linalg.solve(volume.affine, np.r_[np.asarray(centre_mm, dtype=float), 1.0])[:3]
    return tuple(int(v) for v in np.rint(ijk))


def _nodule_component(volume: SyntheticVolume, ijk: tuple[int, int, int]) -> np.ndarray:
    labels, _ = ndimage.label(volume.mask)
    assert labels[ijk] > 0
    return labels == labels[ijk]


@pytest.fixture(scope="module")
def scan_volume() -> SyntheticVolume:
    return generate_case(0, seed=0, mode="scans", scan_shape=SMALL_SCAN).volumes[0]


@pytest.fixture(scope="module")
def crop_cases() -> list:
    return [generate_case(i, seed=1, mode="crops") for i in range(4)]


@pytest.fixture(scope="module")
def crop_volumes(crop_cases: list) -> list[SyntheticVolume]:
    return [v for case in crop_cases for v in case.volumes]


# --------------------------------------------------------------------------------------------- densities
@pytest.mark.parametrize(
    ("tissue", "low", "high"),
    [
        (Tissue.OUTSIDE_AIR, -1010.0, -990.0),
        (Tissue.LUNG, -900.0, -780.0),
        (Tissue.FAT, -130.0, -70.0),
        (Tissue.MUSCLE, 15.0, 70.0),
        (Tissue.ORGAN, 15.0, 75.0),
    ],
)
def test_tissue_hu(scan_volume: SyntheticVolume, tissue: Tissue, low: float, high: float) -> None:
    inner = _interior(scan_volume.tissue == tissue)
    assert inner.sum() > 200
    mean = float(scan_volume.image[inner].mean())
    assert low <= mean <= high, f"{tissue.name}: mean {mean:.1f} HU outside [{low}, {high}]"


def test_bone_hu(scan_volume: SyntheticVolume) -> None:
    image, tissue = scan_volume.image.astype(float), scan_volume.tissue
    bone = (tissue == Tissue.BONE_MARROW) | (tissue == Tissue.BONE_CORTEX)
    assert bone.sum() > 100
    assert image[bone].mean() >= 300.0
    assert image[tissue == Tissue.BONE_CORTEX].mean() > image[_interior(tissue == Tissue.BONE_MARROW)].mean()


def test_vessel_and_airway_hu(crop_cases: list) -> None:
    """Sample the anatomy at 0.5 mm around the thickest vessel: its inside is blood, about +40 HU."""
    patient = crop_cases[0].patient
    i = int(np.argmax(patient.vessels.radius))
    centre = 0.5 * (patient.vessels.p0[i] + patient.vessels.p1[i])
    n, s = 40, 0.5
    grid = Grid((n, n, n), (s, s, s), tuple(centre + np.array([1, 1, -1]) * s * (n // 2)))
    vol = render_volume(patient, grid, [], np.random.default_rng(0))
    vessel = _interior(_interior(vol.tissue == Tissue.VESSEL))
    assert vessel.sum() > 50
    assert 0.0 <= vol.image[vessel].mean() <= 80.0
    lung = _interior(vol.tissue == Tissue.LUNG)
    if lung.sum() > 50:
        assert vol.image[lung].mean() < -600.0


def test_airway_lumen_is_air(scan_volume: SyntheticVolume) -> None:
    lumen = _interior(scan_volume.tissue == Tissue.AIRWAY_LUMEN)
    assert lumen.sum() > 20
    assert scan_volume.image[lumen].mean() < -900.0


def test_ground_glass_and_calcified_hu() -> None:
    ggo = generate_case(0, seed=3, nodule_type_probabilities={"ground_glass": 1.0})
    values = np.concatenate([v.image[_interior(v.tissue == Tissue.NODULE_GGO)] for v in ggo.volumes])
    assert values.size > 20
    assert -650.0 <= values.mean() <= -300.0
    calc = generate_case(1, seed=3, nodule_type_probabilities={"calcified": 1.0})
    for vol in calc.volumes:  # every calcified nodule shows calcium, even when small (partial volume)
        comp = _nodule_component(vol, _centre_voxel(vol, vol.nodules[0].center))
        assert vol.image[comp].max() >= 300.0
    values = np.concatenate([v.image[_interior(v.tissue == Tissue.NODULE_CALCIFIED)] for v in calc.volumes])
    assert values.size > 10
    assert np.median(values) >= 200.0
    assert all(n.malignancy == 0 and n.attributes[Attribute.CALCIFICATION] < 6 for n in calc.nodules)


def test_solid_nodule_hu(crop_volumes: list[SyntheticVolume]) -> None:
    values = np.concatenate([v.image[_interior(v.tissue == Tissue.NODULE_SOLID)] for v in crop_volumes])
    assert values.size > 50
    assert -50.0 <= values.mean() <= 110.0


# --------------------------------------------------------------------------------------------- nodules
def test_nodule_in_lung_and_mask(crop_volumes: list[SyntheticVolume], scan_volume: SyntheticVolume) -> None:
    for vol in [*crop_volumes, scan_volume]:
        for nod in vol.nodules:
            ijk = _centre_voxel(vol, nod.center)
            assert all(0 <= c < n for c, n in zip(ijk, vol.image.shape, strict=True))
            assert vol.lung[ijk], f"{vol.name}: nodule {nod.nodule_id} centre not in the lung"
            assert vol.mask[ijk] == 1


def test_mask_diameter(crop_volumes: list[SyntheticVolume]) -> None:
    for vol in crop_volumes:
        nod = vol.nodules[0]
        comp = _nodule_component(vol, _centre_voxel(vol, nod.center))
        d_eq = (6.0 * comp.sum() * vol.grid.voxel_volume / math.pi) ** (1.0 / 3.0)
        tol = 0.15 * nod.diameter_mm + 0.25 * max(vol.spacing)
        assert abs(d_eq - nod.diameter_mm) <= tol, f"{vol.name}: {d_eq:.2f} vs {nod.diameter_mm:.2f} mm"


@pytest.mark.parametrize("location", ["juxta_pleural", "isolated"])
def test_pleural_contact(location: str) -> None:
    """Juxta-pleural nodules touch the chest wall; isolated ones keep lung all around them."""
    case = generate_case(1, seed=5, location_probabilities={location: 1.0})
    for vol in case.volumes:
        nod = vol.nodules[0]
        assert nod.location == location
        comp = _nodule_component(vol, _centre_voxel(vol, nod.center))
        touches_wall = bool((ndimage.binary_dilation(comp, iterations=2) & ~vol.lung).any())
        assert touches_wall == (location == "juxta_pleural")


def test_juxta_vascular_contact() -> None:
    case = generate_case(2, seed=5, location_probabilities={"juxta_vascular": 1.0})
    vessels = case.patient.vessels
    for nod in case.nodules:
        assert nod.location == "juxta_vascular"
        gap = vessels.distance(nod.center[None])[0] - vessels.radius  # centre to each vessel surface (mm)
        assert gap.min() < nod.radius_min


# --------------------------------------------------------------------------------------------- labels
@pytest.fixture(scope="module")
def drawn_nodules() -> list:
    rng = np.random.default_rng(0)
    config = SynthConfig()
    nodules = []
    for _ in range(600):
        nod = draw_nodule(rng, config)
        label_nodule(nod, rng)
        nodules.append(nod)
    return nodules


def test_attributes_follow_shape_and_type(drawn_nodules: list) -> None:
    seen = defaultdict(int)
    for nod in drawn_nodules:
        a = nod.attributes
        for name, levels in ATTRIBUTE_CLASSES.items():
            assert 1 <= a[name] <= levels
        seen[nod.nodule_type, nod.shape] += 1
        if nod.shape == "spiculated":
            assert a[Attribute.SPICULATION] >= 3
        else:
            assert a[Attribute.SPICULATION] <= 2
        if nod.shape == "lobulated":
            assert a[Attribute.LOBULATION] >= 3
        if nod.shape == "round":
            assert a[Attribute.LOBULATION] == 1
        texture = a[Attribute.TEXTURE]
        expected = {"ground_glass": {1, 2}, "part_solid": {2, 3, 4}, "solid": {5}, "calcified": {5}}
        assert texture in expected[nod.nodule_type]
        assert (a[Attribute.CALCIFICATION] < 6) == (nod.nodule_type == "calcified")
        if a[Attribute.INTERNAL_STRUCTURE] == 4:
            assert nod.nodule_type in ("solid", "part_solid")
    assert {t for t, _ in seen} == {"solid", "part_solid", "ground_glass", "calcified"}
    assert {s for _, s in seen} == {"round", "lobulated", "spiculated"}


def test_malignancy_follows_model(drawn_nodules: list) -> None:
    for nod in drawn_nodules:
        assert nod.malignancy == malignancy_label_from_score(nod.malignancy_score)
        if nod.nodule_type == "calcified":
            assert nod.malignancy_score <= 2 and nod.malignancy == 0
    labels = {n.malignancy for n in drawn_nodules}
    assert labels == {0, 1, -1}
    solid = [n for n in drawn_nodules if n.nodule_type == "solid"]
    small = np.mean([n.malignancy_probability for n in solid if n.diameter_mm < 6])
    large = np.mean([n.malignancy_probability for n in solid if n.diameter_mm >= 15])
    assert large > small + 0.2  # size matters ...
    mid = [n for n in solid if 7 <= n.diameter_mm < 13]
    spiculated = np.mean([n.malignancy_probability for n in mid if n.shape == "spiculated"])
    round_ = np.mean([n.malignancy_probability for n in mid if n.shape == "round"])
    assert spiculated > round_ + 0.2  # ... and so does shape, at equal size


# --------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_case() -> None:
    a = generate_case(3, seed=7, mode="scans", scan_shape=TINY_SCAN).volumes[0]
    b = generate_case(3, seed=7, mode="scans", scan_shape=TINY_SCAN).volumes[0]
    c = generate_case(3, seed=8, mode="scans", scan_shape=TINY_SCAN).volumes[0]
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)
    assert not np.allclose(a.affine, c.affine)


def test_crop_geometry(crop_volumes: list[SyntheticVolume]) -> None:
    config = SynthConfig()
    for vol in crop_volumes:
        assert nib.aff2axcodes(vol.affine) == ("L", "P", "S")
        sx, sy, sz = vol.spacing
        assert sx == sy and config.spacing_xy_mm[0] <= sx <= config.spacing_xy_mm[1]
        assert config.slice_mm[0] <= sz <= config.slice_mm[1]
        assert vol.image.shape[:2] == (config.crop_size_xy, config.crop_size_xy)
        assert vol.image.dtype == np.int16 and vol.mask.dtype == np.uint8
        assert np.abs(vol.affine[:3, 3]).max() > 10.0  # a scanner-like origin, not 0
        ijk = np.asarray(_centre_voxel(vol, vol.nodules[0].center))
        assert np.all(np.abs(ijk - np.asarray(vol.image.shape) // 2) * vol.spacing <= config.crop_offset_mm + 1e-6)


# --------------------------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def crops_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth_crops")
    summary = synthesize_dataset(out, cases=5, seed=2, mode="crops", n_folds=2, test_fraction=0.2)
    return out, summary


def test_files_on_disk(crops_dir: tuple[Path, dict]) -> None:
    out, summary = crops_dir
    datalist = json.loads((out / "datalist.json").read_text())
    items = [item for split in ("training", "validation", "test") for item in datalist[split]]
    assert summary["nodules"] == len(items) and summary["patients"] == 5
    assert summary["files"] == 2 * len(items)
    assert sum(summary["splits"].values()) == len(items)
    assert sum(summary["nodule_types"].values()) == len(items)
    assert summary["malignant"] + summary["benign"] + summary["indeterminate"] == len(items)
    assert json.loads(json.dumps(summary)) == summary
    for item in items:
        image = nib.load(out / item[Keys.IMAGE])
        label = nib.load(out / item[Keys.LABEL])
        assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
        assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
        np.testing.assert_allclose(image.affine, label.affine)
        sx, sy, sz = image.header.get_zooms()
        assert 0.6 - 1e-4 <= sx <= 0.9 + 1e-4 and abs(sx - sy) < 1e-6 and 1.0 - 1e-4 <= sz <= 2.5 + 1e-4
        mask = np.asarray(label.dataobj)
        ijk = np.rint(np.linalg.solve(image.affine, np.r_[item[Keys.CENTER_WORLD], 1.0])[:3]).astype(int)
        assert mask[tuple(ijk)] == 1
        hu = np.asarray(image.dataobj)
        assert -1024 <= hu.min() and hu.max() <= 3071
        assert item["nodule_type"] in ("solid", "part_solid", "ground_glass", "calcified")
        assert item[Keys.MALIGNANCY] == malignancy_label_from_score(item[Keys.MALIGNANCY_SCORE])


def test_datalist_loads_and_splits_by_patient(crops_dir: tuple[Path, dict]) -> None:
    from monai.data import load_decathlon_datalist

    out, _ = crops_dir
    patients: dict[str, set[str]] = defaultdict(set)
    for split in ("training", "validation", "test"):
        items = load_datalist(out / "datalist.json", split)
        for item in items:
            patients[item[Keys.PATIENT_ID]].add(split)
            assert Path(item[Keys.IMAGE]).is_file()
        if items:
            monai_items = load_decathlon_datalist(str(out / "datalist.json"), True, split, base_dir=str(out))
            assert len(monai_items) == len(items)
    assert len(patients) == 5
    assert all(len(splits) == 1 for splits in patients.values())


def test_scans_annotations(tmp_path: Path) -> None:
    summary = synthesize_dataset(
        tmp_path, cases=2, seed=4, mode="scans", n_folds=2, test_fraction=0.0, scan_shape=SMALL_SCAN
    )
    items = load_datalist(tmp_path / "datalist.json", "training") + load_datalist(
        tmp_path / "datalist.json", "validation"
    )
    with open(tmp_path / "annotations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
    assert len(rows) == len(items) == summary["nodules"]
    assert summary["files"] == 4 and summary["annotations"] == str(tmp_path / "annotations.csv")
    table = {(r["seriesuid"], *(round(float(r[c]), 2) for c in ("coordX", "coordY", "coordZ"))): r for r in rows}
    for item in items:
        assert Path(item[Keys.IMAGE]).name == f"{item['seriesuid']}.nii.gz"
        x, y, z = item[Keys.CENTER_WORLD]
        row = table[item["seriesuid"], round(-x, 2), round(-y, 2), round(z, 2)]  # LPS = RAS with x, y negated
        assert float(row["diameter_mm"]) == pytest.approx(item[Keys.DIAMETER], abs=1e-2)
        image = nib.load(item[Keys.IMAGE])
        assert image.shape == SMALL_SCAN
        mask = np.asarray(nib.load(item[Keys.LABEL]).dataobj)
        ijk = np.rint(np.linalg.solve(image.affine, np.r_[x, y, z, 1.0])[:3]).astype(int)
        assert mask[tuple(ijk)] == 1


def test_case_does_not_depend_on_case_count(tmp_path: Path) -> None:
    kw = {"seed": 9, "mode": "scans", "n_folds": 2, "test_fraction": 0.0, "scan_shape": TINY_SCAN}
    synthesize_dataset(tmp_path / "a", cases=2, **kw)
    synthesize_dataset(tmp_path / "b", cases=3, **kw)
    for name in ("SYN-0001", "SYN-0002"):
        a = nib.load(tmp_path / "a" / "images" / f"{name}.nii.gz")
        b = nib.load(tmp_path / "b" / "images" / f"{name}.nii.gz")
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)


def test_out_dir_protection(tmp_path: Path) -> None:
    kw = {"seed": 0, "mode": "scans", "n_folds": 2, "test_fraction": 0.0, "scan_shape": TINY_SCAN}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="out_dir"):
        synthesize_dataset(tmp_path / "other", cases=2, **kw)
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"
    out = tmp_path / "synth"
    synthesize_dataset(out, cases=3, **kw)
    assert (out / "images" / "SYN-0003.nii.gz").is_file()
    synthesize_dataset(out, cases=2, **kw)  # a previous synthetic output: rewritten, stale cases removed
    assert not (out / "images" / "SYN-0003.nii.gz").exists()
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["SYN-0001.nii.gz", "SYN-0002.nii.gz"]
    (out / "datalist.json").unlink()  # as if interrupted before the datalist was written: still ours
    synthesize_dataset(out, cases=2, **kw)
    assert (out / "datalist.json").is_file()
    synthesize_dataset(tmp_path / "other", cases=2, overwrite=True, **kw)
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"


def test_one_scan_gets_no_folds(tmp_path: Path) -> None:
    """``synth --cases 1 --mode scans`` (a scan to try ``predict`` on): no folds, no test split, with a note."""
    summary = synthesize_dataset(tmp_path / "one", cases=1, seed=3, mode="scans", scan_shape=TINY_SCAN)
    assert summary["n_folds"] == 1 and summary["patients"] == 1 and summary["nodules"] >= 1
    assert summary["splits"] == {"training": summary["nodules"], "validation": 0, "test": 0}
    assert len(summary["notes"]) == 1 and "1 patient(s): too few for folds" in summary["notes"][0]
    data = json.loads((tmp_path / "one" / "datalist.json").read_text())
    assert data["metadata"]["n_folds"] == 1 and {item["fold"] for item in data["training"]} == {0}
    assert [p.name for p in (tmp_path / "one" / "images").iterdir()] == ["SYN-0001.nii.gz"]
    splits = read_splits(tmp_path / "one" / "datalist.json", val_fold=0)  # training's own re-split: all validation
    assert splits["training"] == [] and len(splits["validation"]) == summary["nodules"]
    assert all(Path(item[Keys.IMAGE]).is_file() for item in splits["validation"])


@pytest.mark.parametrize(("cases", "folds", "test"), [(3, 2, 1), (4, 3, 1), (6, 5, 1)])
def test_fewer_folds_for_few_cases(tmp_path: Path, cases: int, folds: int, test: int) -> None:
    summary = synthesize_dataset(tmp_path / "few", cases=cases, seed=1, test_fraction=0.2, val_fold=4)
    data = json.loads((tmp_path / "few" / "datalist.json").read_text())
    assert summary["n_folds"] == data["metadata"]["n_folds"] == folds
    note = f"{cases - test} patients outside 'test': {folds} folds instead of 5"
    assert summary["notes"] == ([] if folds == 5 else [note])
    assert len({item["patient_id"] for item in data["test"]}) == test
    assert {item["fold"] for item in data["training"] + data["validation"]} == set(range(folds))
    assert {item["fold"] for item in data["validation"]} == {min(4, folds - 1)}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cases": 0}, "cases"),
        ({"cases": 2.5}, "cases"),
        ({"cases": True}, "cases"),
        ({"mode": "volumes"}, "mode"),
        ({"seed": -1}, "seed"),
        ({"n_folds": 1}, "n_folds"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"val_fold": 5}, "val_fold"),
        ({"crop_size_xy": 8}, "crop_size_xy"),
        ({"diameter_mm": (1.0, 40.0)}, "diameter_mm"),
        ({"slice_mm": (2.0, 1.0)}, "slice_mm"),
        ({"nodules_per_scan": (0, 2)}, "nodules_per_scan"),
        ({"scan_shape": (64, 64)}, "scan_shape"),
        ({"nodule_type_probabilities": {"cancer": 1.0}}, "nodule_type_probabilities"),
        ({"noise": 3}, "unknown generator option"),
    ],
)
def test_ill_arg(tmp_path: Path, kwargs: dict, match: str) -> None:
    args = {"cases": 4, "n_folds": 2, "test_fraction": 0.2} | kwargs
    with pytest.raises(ValueError, match=match):
        synthesize_dataset(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()
