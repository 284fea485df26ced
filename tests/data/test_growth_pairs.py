"""Real growth pairs from PAIRS.csv: cropping, rigid registration of the follow-up, files, datalist, bad rows, re-runs.

The scans are synthetic but built like real ones: one smooth textured "lung" with vessels and two nodules, seen at
baseline on a 96x96x60 grid of 0.8x0.8x1.5 mm (LPS-like axes) and at follow-up on another grid (0.75x0.75x1.4 mm,
RAS axes) after a known rigid motion of the patient (3 degrees about an oblique axis through the scan centre, then
(4, -3, 2) mm), with nodule A grown from 10 to 12 mm and nodule B (6 mm) stable, and independent image noise. The
follow-up centre given for A is off by (1.5, -1, 1) mm, as a reader's mark may be: registration must correct it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from lung_nodule_mtl.cli.main import main
from lung_nodule_mtl.constants import DatalistSplit, Keys, ras_to_lps
from lung_nodule_mtl.data.growth_pairs import (
    CENTER_SEARCH_MM,
    CENTRE_SEARCH_MM,
    PAIRS_COLUMNS,
    SUMMARY_COLUMNS,
    RegistrationSettings,
    prepare_growth_pairs,
    read_pairs_csv,
)
from lung_nodule_mtl.data.growth_pairs import loader as growth_pairs_loader

SEED = 0
SCAN_CENTRE = np.array([10.0, -20.0, 30.0])
MOTION_AXIS, MOTION_DEG, MOTION_SHIFT = (0.3, 0.5, 0.8), 3.0, np.array([4.0, -3.0, 2.0])
NODULE_A, RADIUS_A0, RADIUS_A1 = SCAN_CENTRE + np.array([8.0, 6.0, -5.0]), 5.0, 6.0
NODULE_B, RADIUS_B = SCAN_CENTRE + np.array([-12.0, -10.0, 8.0]), 3.0
MARK_ERROR = np.array([1.5, -1.0, 1.0])
"""Error of the follow-up centre given for nodule A (mm)."""
SETTINGS = RegistrationSettings(threads=1)
HEADER = [*PAIRS_COLUMNS, "interval_days", "baseline_date", "followup_date", "coordinate_system", "followup_label"]


def _rotation(axis: tuple[float, float, float], deg: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    th = np.radians(deg)
    return np.eye(3) + np.sin(th) * k + (1.0 - np.cos(th)) * k @ k


ROTATION = _rotation(MOTION_AXIS, MOTION_DEG)


def _motion(x: np.ndarray) -> np.ndarray:
    """Baseline world point (RAS mm) → where the patient's motion puts it at follow-up."""
    return (x - SCAN_CENTRE) @ ROTATION.T + SCAN_CENTRE + MOTION_SHIFT


def _motion_inverse(y: np.ndarray) -> np.ndarray:
    return (y - SCAN_CENTRE - MOTION_SHIFT) @ ROTATION + SCAN_CENTRE


def _grid_points(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def _affine(shape: tuple[int, int, int], diagonal: tuple[float, float, float], centre: np.ndarray) -> np.ndarray:
    affine = np.diag([*diagonal, 1.0])
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine


class _Anatomy:
    """Smooth lung texture (-820 HU +- 90) with vessels (+40 HU) and spherical nodules (+30 HU), in baseline mm."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.low = SCAN_CENTRE - 70.0
        noise = ndimage.gaussian_filter(rng.standard_normal((141, 141, 141)), 2.0)
        self.noise = noise / noise.std()
        self.vessels = []
        for _ in range(10):
            p = SCAN_CENTRE + rng.uniform(-40.0, 40.0, 3)
            d = rng.normal(size=3)
            d /= np.linalg.norm(d)
            self.vessels.append((p - 60.0 * d, p + 60.0 * d, float(rng.uniform(0.8, 2.0))))

    def __call__(self, points: np.ndarray, nodules: list[tuple[np.ndarray, float]], rng: np.random.Generator):
        hu = -820.0 + 90.0 * ndimage.map_coordinates(self.noise, (points - self.low).T, order=1, mode="nearest")

        def blend(hu: np.ndarray, distance: np.ndarray, radius: float, value: float) -> np.ndarray:
            return hu + (value - hu) / (1.0 + np.exp(-(radius - distance) / 0.4))

        for a, b, r in self.vessels:
            ab = b - a
            t = np.clip((points - a) @ ab / (ab @ ab), 0.0, 1.0)
            hu = blend(hu, np.linalg.norm(points - (a + t[:, None] * ab), axis=1), r, 40.0)
        for centre, radius in nodules:
            hu = blend(hu, np.linalg.norm(points - centre, axis=1), radius, 30.0)
        return hu + rng.normal(0.0, 15.0, hu.shape)


def _write_scans(folder: Path) -> None:
    rng = np.random.default_rng(SEED)
    anatomy = _Anatomy(rng)
    b_shape, f_shape = (96, 96, 60), (104, 104, 66)
    b_affine = _affine(b_shape, (-0.8, -0.8, 1.5), SCAN_CENTRE)
    f_affine = _affine(f_shape, (0.75, 0.75, 1.4), SCAN_CENTRE + MOTION_SHIFT)
    pb = _grid_points(b_shape, b_affine)
    hu0 = anatomy(pb, [(NODULE_A, RADIUS_A0), (NODULE_B, RADIUS_B)], rng).reshape(b_shape)
    mask0 = (np.linalg.norm(pb - NODULE_A, axis=1) <= RADIUS_A0) | (np.linalg.norm(pb - NODULE_B, axis=1) <= RADIUS_B)
    x = _motion_inverse(_grid_points(f_shape, f_affine))  # the anatomy each follow-up voxel shows
    hu1 = anatomy(x, [(NODULE_A, RADIUS_A1), (NODULE_B, RADIUS_B)], rng).reshape(f_shape)
    labels1 = np.zeros(f_shape, dtype=np.uint8)  # a label map: B is 1, A is 2
    labels1[(np.linalg.norm(x - NODULE_B, axis=1) <= RADIUS_B).reshape(f_shape)] = 1
    labels1[(np.linalg.norm(x - NODULE_A, axis=1) <= RADIUS_A1).reshape(f_shape)] = 2
    scans = folder / "scans"
    scans.mkdir(parents=True)
    for name, array, affine in (
        ("base.nii.gz", np.rint(hu0).astype(np.int16), b_affine),
        ("base_mask.nii.gz", mask0.reshape(b_shape).astype(np.uint8), b_affine),
        ("follow.nii.gz", np.rint(hu1).astype(np.int16), f_affine),
        ("follow_labels.nii.gz", labels1, f_affine),
    ):
        nib.save(nib.Nifti1Image(array, affine), scans / name)


def _row(patient: str, nodule: str, baseline: np.ndarray, followup: np.ndarray, **extra: Any) -> dict[str, Any]:
    row = {
        "patient_id": patient,
        "nodule_id": nodule,
        "baseline_image": "scans/base.nii.gz",
        "baseline_mask": "scans/base_mask.nii.gz",
        "followup_image": "scans/follow.nii.gz",
        "followup_mask": "scans/follow_labels.nii.gz",
        **{f"baseline_{a}": float(v) for a, v in zip("xyz", baseline, strict=True)},
        **{f"followup_{a}": float(v) for a, v in zip("xyz", followup, strict=True)},
    }
    row.update(extra)
    return row


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


FOLLOWUP_A = _motion(NODULE_A) + MARK_ERROR
GOOD_ROWS = [
    _row("P1", "1", NODULE_A, FOLLOWUP_A, interval_days=365),
    _row("P1", "2", NODULE_B, _motion(NODULE_B), interval_days=365, followup_label=1),
    _row(
        "P2",
        "1",
        np.asarray(ras_to_lps(NODULE_A)),
        np.asarray(ras_to_lps(FOLLOWUP_A)),
        baseline_date="2020-01-15",
        followup_date="2021-01-14",
        coordinate_system="LPS",
    ),
    _row("P3", "1", NODULE_A, FOLLOWUP_A, interval_days=400),
]


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("growth_pairs")
    _write_scans(folder)
    return folder


@pytest.fixture(scope="module")
def prepared(scans: Path) -> dict[str, Any]:
    """The good rows prepared with and without registration."""
    pairs = _write_csv(scans / "pairs.csv", GOOD_ROWS)
    out = {}
    for register in (True, False):
        target = scans / f"out_{'reg' if register else 'centres'}"
        summary = prepare_growth_pairs(
            pairs, target, n_folds=2, test_fraction=0.0, register=register, settings=SETTINGS, progress=print
        )
        with open(target / "datalist.json") as f:
            datalist = json.load(f)
        items = {item[Keys.CASE_ID]: item for s in DatalistSplit for item in datalist[s.value]}
        out[register] = {"dir": target, "summary": summary, "datalist": datalist, "items": items, "csv": pairs}
    return out


def _load(folder: Path, rel: str) -> nib.Nifti1Image:
    return nib.load(folder / rel)


def _mask_centre_mm(img: nib.Nifti1Image) -> np.ndarray:
    com = np.asarray(ndimage.center_of_mass(np.asarray(img.dataobj) > 0))
    return img.affine[:3, :3] @ com + img.affine[:3, 3]


def _background_correlation(folder: Path, item: dict[str, Any]) -> float:
    """Correlation of baseline and follow-up crops outside the (dilated) nodule masks."""
    i0 = np.asarray(_load(folder, item["image"]).dataobj, dtype=np.float64)
    i1 = np.asarray(_load(folder, item["followup"]).dataobj, dtype=np.float64)
    nodules = (np.asarray(_load(folder, item["label"]).dataobj) > 0) | (
        np.asarray(_load(folder, item["followup_mask"]).dataobj) > 0
    )
    background = ~ndimage.binary_dilation(nodules, iterations=3)
    return float(np.corrcoef(i0[background], i1[background])[0, 1])


def test_registration_aligns_followup(prepared: dict[str, Any]) -> None:
    reg, centres = prepared[True], prepared[False]
    for case in ("P1_1", "P2_1", "P3_1"):
        item = reg["items"][case]
        error = np.linalg.norm(
            _mask_centre_mm(_load(reg["dir"], item["followup_mask"])) - np.asarray(item[Keys.CENTER_WORLD])
        )
        assert error < 1.0, (case, error)  # the given centre was 2.06 mm off
        assert item["registration"]["status"] == "registered"
        assert item["registration"]["rotation_deg"] == pytest.approx(MOTION_DEG, abs=0.5)
        assert np.linalg.norm(np.asarray(item["registration"]["centre_correction_mm"]) + MARK_ERROR) < 1.0
        r_reg = _background_correlation(reg["dir"], item)
        r_centres = _background_correlation(centres["dir"], centres["items"][case])
        assert r_reg > 0.95 and r_reg > r_centres + 0.1, (case, r_reg, r_centres)
        unregistered = centres["items"][case]
        error_centres = np.linalg.norm(
            _mask_centre_mm(_load(centres["dir"], unregistered["followup_mask"]))
            - np.asarray(unregistered[Keys.CENTER_WORLD])
        )
        assert error_centres == pytest.approx(np.linalg.norm(MARK_ERROR), abs=0.3)
        assert unregistered["registration"]["method"] == "centres"
        assert unregistered["registration"]["rotation_deg"] == 0.0


def test_stable_nodule_and_label_value(prepared: dict[str, Any]) -> None:
    reg = prepared[True]
    item = reg["items"]["P1_2"]  # followup_label=1 picks nodule B in the label map
    error = np.linalg.norm(_mask_centre_mm(_load(reg["dir"], item["followup_mask"])) - np.asarray(NODULE_B))
    assert error < 1.0
    volume = 4.0 / 3.0 * np.pi * RADIUS_B**3
    for key in ("baseline_mask_volume_mm3", "followup_mask_volume_mm3"):
        assert item[key] == pytest.approx(volume, rel=0.25), key
    assert item["followup_mask_volume_mm3"] == pytest.approx(item["baseline_mask_volume_mm3"], rel=0.2)


def test_only_the_nodule_at_the_centre(prepared: dict[str, Any]) -> None:
    """Nodule B lies in A's crop, in both masks (0/1 and label map): only A's component is kept."""
    reg = prepared[True]
    item = reg["items"]["P1_1"]
    for key in ("label", "followup_mask"):
        img = _load(reg["dir"], item[key])
        _, n = ndimage.label(np.asarray(img.dataobj) > 0)
        assert n == 1, key
        b_voxel = np.round(np.linalg.inv(img.affine) @ [*NODULE_B, 1.0])[:3].astype(int)
        assert np.all((b_voxel >= 0) & (b_voxel < img.shape)) and np.asarray(img.dataobj)[tuple(b_voxel)] == 0


def test_volumes_equal_masks(prepared: dict[str, Any]) -> None:
    for result in prepared.values():
        for item in result["items"].values():
            for mask_key, volume_key in (
                ("baseline_mask", "baseline_mask_volume_mm3"),
                ("followup_mask", "followup_mask_volume_mm3"),
            ):
                img = _load(result["dir"], item[mask_key])
                voxels = int(np.count_nonzero(np.asarray(img.dataobj)))
                assert item[volume_key] == pytest.approx(voxels * abs(np.linalg.det(img.affine[:3, :3])), abs=1e-3)
    item = prepared[True]["items"]["P1_1"]
    assert item["baseline_mask_volume_mm3"] == pytest.approx(4.0 / 3.0 * np.pi * RADIUS_A0**3, rel=0.1)
    assert item["followup_mask_volume_mm3"] == pytest.approx(4.0 / 3.0 * np.pi * RADIUS_A1**3, rel=0.1)


def test_items_and_files(prepared: dict[str, Any]) -> None:
    result = prepared[True]
    assert result["summary"]["written"] == len(GOOD_ROWS) and not result["summary"]["failed"]
    keys = {
        "image", "label", "baseline", "baseline_mask", "followup", "followup_mask", "interval_days", "center_world_mm",
        "patient_id", "case_id", "nodule_id", "fold", "baseline_mask_volume_mm3", "followup_mask_volume_mm3",
        "registration", "source",
    }  # fmt: skip
    for case, item in result["items"].items():
        assert keys <= set(item), case
        assert item["source"] == "user pairs"
        assert item["image"] == item["baseline"] == f"images/{case}_t0.nii.gz"
        assert item["label"] == item["baseline_mask"] == f"labels/{case}_t0.nii.gz"
        assert item["followup"] == f"images/{case}_t1.nii.gz" and item["followup_mask"] == f"labels/{case}_t1.nii.gz"
        assert {"rotation_deg", "translation_mm", "final_metric"} <= set(item["registration"])
        images = [_load(result["dir"], item[k]) for k in ("image", "followup", "label", "followup_mask")]
        for img, dtype in zip(images, (np.int16, np.int16, np.uint8, np.uint8), strict=True):
            assert img.shape == (48, 48, 48) and img.get_data_dtype() == dtype
            np.testing.assert_allclose(img.affine, images[0].affine)
        np.testing.assert_allclose(np.diag(images[0].affine)[:3], 1.0)
        centre_voxel = np.linalg.inv(images[0].affine) @ [*item[Keys.CENTER_WORLD], 1.0]
        np.testing.assert_allclose(centre_voxel[:3], 24.0, atol=1e-6)  # voxel n // 2, as NoduleCenteredCrop crops
    np.testing.assert_allclose(result["items"]["P2_1"][Keys.CENTER_WORLD], NODULE_A, atol=1e-3)  # LPS row
    with open(result["dir"] / "pairs_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[: len(SUMMARY_COLUMNS)] == list(SUMMARY_COLUMNS)
    assert [r["status"] for r in rows] == ["written"] * len(GOOD_ROWS)
    assert float(rows[0]["vdt_days"]) > 0


def test_patient_level_folds(prepared: dict[str, Any]) -> None:
    datalist = prepared[True]["datalist"]
    assert datalist["metadata"]["source"] == "user pairs"
    where: dict[str, set[tuple[str, int]]] = {}
    for split in DatalistSplit:
        for item in datalist[split.value]:
            where.setdefault(item[Keys.PATIENT_ID], set()).add((split.value, item[Keys.FOLD]))
    assert set(where) == {"P1", "P2", "P3"}
    assert all(len(places) == 1 for places in where.values())
    assert {fold for places in where.values() for _, fold in places} == {0, 1}


def test_interval_from_dates(prepared: dict[str, Any]) -> None:
    items = prepared[True]["items"]
    assert items["P2_1"]["interval_days"] == 365  # 2020-01-15 to 2021-01-14 (a leap year)
    assert items["P2_1"]["baseline_date"] == "2020-01-15" and items["P2_1"]["followup_date"] == "2021-01-14"
    assert items["P3_1"]["interval_days"] == 400 and "baseline_date" not in items["P3_1"]


def test_growth_transforms_read_items(prepared: dict[str, Any]) -> None:
    from lung_nodule_mtl.data.datalist import load_datalist
    from lung_nodule_mtl.transforms.growth import FOLLOWUP_LABEL_KEY, get_growth_transforms

    items = load_datalist(prepared[True]["dir"] / "datalist.json", "training")
    data = get_growth_transforms(roi_size=48, train=False)(items[0])
    assert data["image"].shape[1:] == (48, 48, 48) and data[FOLLOWUP_LABEL_KEY].shape == (1, 48, 48, 48)
    expected = items[0]["followup_mask_volume_mm3"]
    assert float(data[FOLLOWUP_LABEL_KEY].sum()) == pytest.approx(expected, rel=1e-6)  # 1 mm voxels: nothing lost


def test_rerun_skips_complete_pairs(prepared: dict[str, Any]) -> None:
    result = prepared[True]
    files = sorted(p for p in (result["dir"]).rglob("*.nii.gz"))
    before = {p: p.stat().st_mtime_ns for p in files}
    summary = prepare_growth_pairs(result["csv"], result["dir"], n_folds=2, test_fraction=0.0, settings=SETTINGS)
    assert summary["reused"] == len(GOOD_ROWS) and summary["written"] == 0
    assert {p: p.stat().st_mtime_ns for p in files} == before
    with open(result["dir"] / "datalist.json") as f:
        assert json.load(f) == result["datalist"]


def test_bad_rows_cli(scans: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        GOOD_ROWS[0],
        {**_row("Q1", "1", NODULE_A, FOLLOWUP_A, interval_days=90), "followup_image": "scans/missing.nii.gz"},
        _row("Q2", "1", NODULE_A + np.array([0.0, 0.0, 200.0]), FOLLOWUP_A, interval_days=90),
        _row("Q3", "1", NODULE_A, FOLLOWUP_A, baseline_date="2021-05-01", followup_date="2021-05-01"),
        _row("Q4", "1", SCAN_CENTRE + np.array([-20.0, 20.0, -20.0]), FOLLOWUP_A, interval_days=90),
    ]
    pairs = _write_csv(scans / "bad_pairs.csv", rows)
    out = scans / "out_bad"
    args = ["prepare-growth", "--pairs", str(pairs), "--out", str(out), "--threads", "1", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4
    for line, text in zip(err, ("line 3", "line 4", "line 5", "line 6"), strict=True):
        assert f"bad_pairs.csv {text} (patient Q" in line
    assert "missing.nii.gz: file not found" in err[0]
    assert "outside baseline_image" in err[1]
    assert "interval must be > 0 days" in err[2]
    assert "empty mask at the centre" in err[3]
    with open(out / "datalist.json") as f:
        datalist = json.load(f)
    assert [i[Keys.CASE_ID] for s in DatalistSplit for i in datalist[s.value]] == ["P1_1"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["P1_1_t0.nii.gz", "P1_1_t1.nii.gz"]
    with open(out / "pairs_summary.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["written", "failed", "failed", "failed", "failed"]
    assert main(args) == 1  # the bad rows again; the good pair is reused
    printed = capsys.readouterr()
    assert "reused               1" in printed.out and len(printed.err.strip().splitlines()) == 4


def test_keep_spacing_copies_baseline_voxels(scans: Path, tmp_path: Path) -> None:
    pairs = _write_csv(scans / "one_pair.csv", GOOD_ROWS[:1])
    summary = prepare_growth_pairs(pairs, tmp_path, spacing_mm=None, register=False, settings=SETTINGS)
    assert summary["written"] == 1 and "too few for folds" in summary["notes"][0]
    source = nib.load(scans / "scans" / "base.nii.gz")
    crop = nib.load(tmp_path / "images" / "P1_1_t0.nii.gz")
    assert crop.shape == (60, 60, 32)  # 48 mm at 0.8 x 0.8 x 1.5 mm
    np.testing.assert_allclose(crop.affine[:3, :3], source.affine[:3, :3])
    start = np.round(np.linalg.inv(source.affine) @ crop.affine[:, 3])[:3].astype(int)
    centre = np.floor(np.linalg.inv(source.affine) @ [*NODULE_A, 1.0] + 0.5)[:3].astype(int)
    np.testing.assert_array_equal(start, centre - np.array(crop.shape) // 2)
    box = tuple(slice(a, a + n) for a, n in zip(start, crop.shape, strict=True))
    np.testing.assert_array_equal(np.asarray(crop.dataobj), np.asarray(source.dataobj)[box])


def test_rejected_registration_keeps_centres(scans: Path, tmp_path: Path) -> None:
    pairs = _write_csv(scans / "one_pair.csv", GOOD_ROWS[:1])
    settings = RegistrationSettings(threads=1, max_rotation_deg=1.0)  # the true 3 degrees are too many
    summary = prepare_growth_pairs(pairs, tmp_path, settings=settings)
    assert summary["written"] == 1 and "registration rejected (rotation" in summary["warnings"]["P1_1"][0]
    with open(tmp_path / "datalist.json") as f:
        datalist = json.load(f)
    (item,) = [i for s in DatalistSplit for i in datalist[s.value]]
    assert item["registration"]["method"] == "centres" and item["registration"]["rotation_deg"] == 0.0
    assert item["registration"]["status"].startswith("centres only: registration rejected")
    np.testing.assert_allclose(item["registration"]["centre_correction_mm"], 0.0, atol=1e-6)


def test_cli_help_lists_columns(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["prepare-growth", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for column in (*PAIRS_COLUMNS, "interval_days", "baseline_date", "followup_date", "--lps", "--no-register"):
        assert column in text
    assert "predict" in text and "--nodules" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"interval_days": "0"}, "interval must be > 0 days"),
        ({"interval_days": "-30"}, "interval must be > 0 days"),
        ({"interval_days": "", "baseline_date": "2021-01-01"}, "give both baseline_date and followup_date"),
        ({"baseline_date": "2021-01-01", "followup_date": "2021-03-01"}, "disagrees with the dates"),
        ({"baseline_date": "01/02/2021", "followup_date": "2021-03-01"}, "ISO date"),
        ({"baseline_x": "abc"}, "baseline_x must be a number"),
        ({"followup_label": "1.5"}, "followup_label must be a whole number"),
        ({"coordinate_system": "XYZ"}, "coordinate_system must be RAS or LPS"),
        ({"patient_id": ""}, "patient_id is empty"),
    ],
)
def test_row_errors(tmp_path: Path, change: dict[str, str], message: str) -> None:
    row = {**_row("P1", "1", NODULE_A, FOLLOWUP_A, interval_days=365), **change}
    rows = read_pairs_csv(_write_csv(tmp_path / "pairs.csv", [row]))
    assert rows[0].spec is None and message in str(rows[0].error)
    assert rows[0].where.startswith("pairs.csv line 2 (patient")


def test_duplicate_and_lps_default(tmp_path: Path) -> None:
    row = _row("P 1", "1", NODULE_A, FOLLOWUP_A, interval_days=365)
    rows = read_pairs_csv(_write_csv(tmp_path / "pairs.csv", [row, row]), coordinate_system="LPS")
    assert rows[0].spec is not None and rows[0].spec.case_id == "P_1_1"
    np.testing.assert_allclose(rows[0].spec.baseline_center, ras_to_lps(NODULE_A))
    assert rows[0].spec.baseline_image == tmp_path / "scans" / "base.nii.gz"
    assert rows[1].spec is None and "repeats line 2" in str(rows[1].error)


def test_old_spellings_of_the_centres(prepared: dict[str, Any], tmp_path: Path) -> None:
    """``CENTRE_SEARCH_MM`` is an alias; ``PairSpec.*_centre`` read the ``*_center`` fields with a FutureWarning;
    the pair records on disk keep their keys (``key.row.baseline_centre``), so earlier runs' records are reused."""
    assert CENTRE_SEARCH_MM == CENTER_SEARCH_MM == growth_pairs_loader.CENTRE_SEARCH_MM
    spec = read_pairs_csv(
        _write_csv(tmp_path / "pairs.csv", [_row("P1", "1", NODULE_A, FOLLOWUP_A, interval_days=365)])
    )[0].spec
    assert spec is not None
    for old, new in (("baseline_centre", "baseline_center"), ("followup_centre", "followup_center")):
        with pytest.warns(FutureWarning, match=f"PairSpec.{old}` has been deprecated .* use `{new}`"):
            assert getattr(spec, old) == getattr(spec, new)
        assert spec.as_json()[old] == list(getattr(spec, new)) and new not in spec.as_json()
    record = json.loads(next((prepared[True]["dir"] / "records").glob("*.json")).read_text())
    assert {"baseline_centre", "followup_centre"} <= set(record["key"]["row"])


def test_ill_csv_and_args(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,nodule_id,baseline_image\nP1,1,a.nii.gz\n")
    with pytest.raises(ValueError, match="missing column"):
        read_pairs_csv(bad)
    no_interval = tmp_path / "no_interval.csv"
    no_interval.write_text(",".join(PAIRS_COLUMNS) + "\n")
    with pytest.raises(ValueError, match="no interval column"):
        read_pairs_csv(no_interval)
    with pytest.raises(FileNotFoundError):
        read_pairs_csv(tmp_path / "absent.csv")
    good = _write_csv(tmp_path / "pairs.csv", GOOD_ROWS[:1])
    with pytest.raises(ValueError, match="crop_mm"):
        prepare_growth_pairs(good, tmp_path / "out", crop_mm=0)
    with pytest.raises(ValueError, match="coordinate_system"):
        prepare_growth_pairs(good, tmp_path / "out", coordinate_system="XYZ")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_shift_mm"):
        RegistrationSettings(max_shift_mm=20.0, margin_mm=10.0)
