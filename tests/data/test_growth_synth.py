"""Synthetic nodule growth pairs: the doubling-time law, shape change, registration noise, files and CLI."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from lung_nodule_mtl.cli.main import main
from lung_nodule_mtl.constants import Keys
from lung_nodule_mtl.data.datalist import load_datalist
from lung_nodule_mtl.data.synthetic import (
    GROWTH_COLUMNS,
    GROWTH_MODELS,
    Growth,
    GrowthKeys,
    GrowthPair,
    SynthConfig,
    draw_growth,
    draw_nodule,
    draw_registration,
    generate_case,
    generate_growth_case,
    grow_nodule,
    label_nodule,
    render_followup,
    synthesize_dataset,
)
from lung_nodule_mtl.data.synthetic import config as C
from lung_nodule_mtl.data.synthetic.nodules import _SPHERE

MODELS = ("malignant_solid", "benign_stable", "benign_shrinking")
VOLUME_OPTIONS = {
    "location_probabilities": {"isolated": 1.0},  # lung all around: the mask is the whole body
    "nodules_per_crop_patient": (1, 1),
    "diameter_mm": (12.0, 30.0),
    "followup_intervals_days": (180.0,),
    "spacing_xy_mm": (0.6, 0.6),
    "slice_mm": (0.625, 0.625),
}
"""Large nodules (>= 12 mm) in small voxels (0.6 x 0.6 x 0.625 mm), so that voxelisation errors are small."""
SMALL = {"crop_size_xy": 32, "diameter_mm": (4.0, 12.0), "nodules_per_crop_patient": (1, 2)}
"""Tiny crops for the file tests."""


def _volume(mask: np.ndarray, pair: GrowthPair) -> float:
    return float(mask.sum()) * pair.baseline.grid.voxel_volume


def _voxelisation_tolerance(diameter_mm: float, voxel_mm: float) -> float:
    """Relative volume error of a smooth body of radius ``r`` voxelised at spacing ``h``: ``(h / r) ** 1.5``.

    The order of the lattice-point discrepancy of a smooth convex body in 3D (the number of voxel
    centres inside it differs from its volume in voxels by ``O((r / h) ** 1.5)``).
    """
    return (2.0 * voxel_mm / diameter_mm) ** 1.5


def _centroid_mm(mask: np.ndarray, pair: GrowthPair) -> np.ndarray:
    ijk = np.asarray(ndimage.center_of_mass(mask))
    return pair.baseline.grid.voxel_to_world(ijk[None])[0]


@pytest.fixture(scope="module")
def pairs() -> dict[str, GrowthPair]:
    return {
        model: generate_growth_case(0, seed=0, growth_model_probabilities={model: 1.0}, **VOLUME_OPTIONS).pairs[0]
        for model in MODELS
    }


# --------------------------------------------------------------------------------------------- growth law
@pytest.mark.parametrize("model", MODELS)
def test_mask_volume_follows_doubling_time(pairs: dict[str, GrowthPair], model: str) -> None:
    pair = pairs[model]
    growth = pair.growth
    assert growth.growth_model == model and growth.interval_days in range(162, 199)  # 180 days +- 10%
    if model == "benign_stable":
        assert growth.vdt_days is None
        expected = 1.0
    else:
        assert growth.vdt_days is not None and (growth.vdt_days > 0) == (model == "malignant_solid")
        expected = 2.0 ** (growth.interval_days / growth.vdt_days)
        assert (expected > 1.2) if model == "malignant_solid" else (expected < 0.9)
    assert growth.volume_ratio == pytest.approx(expected, rel=1e-9)
    for mask in (pair.baseline.mask, pair.followup.mask):  # the body lies inside the crop
        assert not any(np.take(mask, i, axis=a).any() for a in range(3) for i in (0, -1))
    h = pair.baseline.grid.voxel_volume ** (1.0 / 3.0)
    tol0 = _voxelisation_tolerance(growth.baseline_diameter_mm, h)
    tol1 = _voxelisation_tolerance(growth.followup_diameter_mm, h)
    v0, v1 = _volume(pair.baseline.mask, pair), _volume(pair.followup.mask, pair)
    assert abs(math.log(v0 / growth.baseline_volume_mm3)) <= tol0
    assert abs(math.log(v1 / growth.followup_volume_mm3)) <= tol1
    assert abs(math.log(v1 / v0) - math.log(expected)) <= tol0 + tol1, f"{v1 / v0:.4f} vs {expected:.4f}"


def test_drawn_growth_law() -> None:
    rng = np.random.default_rng(0)
    config = SynthConfig()
    seen = set()
    for i in range(400):
        nod = draw_nodule(rng, config)
        label_nodule(nod, rng)
        model = GROWTH_MODELS[i % len(GROWTH_MODELS)]
        if model in C.GROWING_MODEL_OF_TYPE.values() or (
            model == "benign_shrinking" and nod.nodule_type == "calcified"
        ):
            continue
        g = draw_growth(nod, model, rng, config)
        seen.add(model)
        assert C.FOLLOWUP_MIN_DIAMETER_MM <= g.followup_diameter_mm <= config.diameter_mm[1]
        assert any(abs(g.interval_days - d) <= C.INTERVAL_JITTER * d + 0.5 for d in C.FOLLOWUP_INTERVALS_DAYS)
        if g.vdt_days is None:
            assert g.followup_diameter_mm == g.baseline_diameter_mm
        else:
            assert g.volume_ratio == pytest.approx(2.0 ** (g.interval_days / g.vdt_days), rel=1e-9)
        if model == "benign_shrinking" and not g.size_capped:
            assert -C.HALVING_DAYS[1] <= g.vdt_days <= -C.HALVING_DAYS[0]  # type: ignore[operator]
    assert seen == {"benign_stable", "benign_shrinking"}
    for model, (lo, hi) in C.VDT_DAYS.items():
        ntype = next(t for t, m in C.GROWING_MODEL_OF_TYPE.items() if m == model)
        for _ in range(50):
            nod = draw_nodule(rng, config, ntype)
            g = draw_growth(nod, model, rng, config)
            assert g.vdt_days is not None and g.volume_ratio >= 1.0
            assert g.volume_ratio == pytest.approx(2.0 ** (g.interval_days / g.vdt_days), rel=1e-9)
            if not g.size_capped:
                assert lo <= g.vdt_days <= hi


def test_default_models_follow_type() -> None:
    case = generate_growth_case(2, seed=4, nodule_type_probabilities={"calcified": 1.0})
    assert {p.growth.growth_model for p in case.pairs} == {"benign_stable"}
    for pair in case.pairs:  # stable: exactly the same nodule
        assert pair.followup_nodule.diameter_mm == pair.baseline_nodule.diameter_mm
        np.testing.assert_array_equal(pair.followup_nodule.lobe_amps, pair.baseline_nodule.lobe_amps)


def _body_volume(nod) -> float:
    return 4.0 / 3.0 * math.pi * nod.scale**3 * float(np.mean(nod.radial(_SPHERE) ** 3)) * float(np.prod(nod.axes))


def _growth(nod, d1: float, **kw) -> Growth:
    return Growth("malignant_solid", 365, 200.0, nod.diameter_mm, d1, **kw)


def test_shape_change_not_isotropic() -> None:
    rng = np.random.default_rng(3)
    config = SynthConfig(diameter_mm=(10.0, 12.0))
    nod = next(n for n in (draw_nodule(rng, config, "solid") for _ in range(200)) if n.shape == "spiculated")
    g = 1.5
    growth = _growth(nod, nod.diameter_mm * g, lobe_exponent=1.0, spicule_exponent=1.5, axis_exponents=(0.1, 0, -0.1))
    out = grow_nodule(nod, growth)
    assert _body_volume(out) == pytest.approx(math.pi / 6.0 * out.diameter_mm**3, rel=1e-9)
    assert _body_volume(nod) == pytest.approx(math.pi / 6.0 * nod.diameter_mm**3, rel=1e-9)
    assert nod.lobe_amps.max() > 0.01
    np.testing.assert_allclose(out.lobe_amps, np.minimum(nod.lobe_amps * g, C.MAX_LOBE_AMPLITUDE))  # lobes faster
    grown = out.spicule_lengths[nod.spicule_lengths * g**1.5 < C.SPICULE_MAX_MM]
    assert len(grown) and np.all(grown > g * nod.spicule_lengths[nod.spicule_lengths * g**1.5 < C.SPICULE_MAX_MM])
    ratio = lambda n: float(n.axes.min() / n.axes.max())  # noqa: E731
    assert ratio(out) < ratio(nod)  # anisotropic: more elongated
    assert nod.diameter_mm < out.diameter_mm  # the input is not changed
    stable = grow_nodule(nod, Growth("benign_stable", 365, None, nod.diameter_mm, nod.diameter_mm))
    assert stable.scale == nod.scale and stable is not nod


def test_solid_component_grows_and_appears() -> None:
    rng = np.random.default_rng(5)
    config = SynthConfig(diameter_mm=(10.0, 14.0))
    part_solid = draw_nodule(rng, config, "part_solid")
    out = grow_nodule(part_solid, _growth(part_solid, part_solid.diameter_mm * 1.3, solid_exponent=1.0))
    assert out.solid_ratio == pytest.approx(min(part_solid.solid_ratio * 1.3, C.MAX_SOLID_RATIO))
    core_room = (1.0 - out.solid_ratio) * out.radius_min * C.SOLID_CORE_MAX_OFFSET
    assert np.linalg.norm(out.solid_offset) <= core_room + 1e-9
    ggo = draw_nodule(rng, config, "ground_glass")
    d1 = ggo.diameter_mm * 2.0 ** (1.0 / 3.0)  # one volume doubling
    growth = Growth(
        "ground_glass", 730, 730.0, ggo.diameter_mm, d1, density_hu_per_doubling=40.0, emerging_solid_ratio=0.25
    )
    out = grow_nodule(ggo, growth)
    assert (ggo.nodule_type, out.nodule_type) == ("ground_glass", "part_solid")
    assert out.solid_ratio == 0.25
    assert out.base_hu == pytest.approx(min(ggo.base_hu + 40.0, C.GGO_DENSITY_LIMITS_HU[1]))  # denser ground glass


# --------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_pairs() -> None:
    kw = {"nodules_per_crop_patient": (1, 1), "crop_size_xy": 32, "diameter_mm": (4.0, 10.0)}
    a = generate_growth_case(1, seed=3, **kw).pairs[0]
    b = generate_growth_case(1, seed=3, **kw).pairs[0]
    c = generate_growth_case(1, seed=4, **kw).pairs[0]
    for va, vb in ((a.baseline, b.baseline), (a.followup, b.followup)):
        np.testing.assert_array_equal(va.image, vb.image)
        np.testing.assert_array_equal(va.mask, vb.mask)
        np.testing.assert_array_equal(va.affine, vb.affine)
    assert a.growth == b.growth and a.registration == b.registration
    assert not np.array_equal(a.followup.affine, c.followup.affine) or not np.array_equal(
        a.followup.image, c.followup.image
    )
    # the anatomy of patient k is that of crops mode
    crops = generate_case(1, seed=3, mode="crops", **kw)
    np.testing.assert_array_equal(crops.patient.vessels.p0, generate_growth_case(1, seed=3, **kw).patient.vessels.p0)


# --------------------------------------------------------------------------------------------- registration
def test_registration_noise_bounded(pairs: dict[str, GrowthPair]) -> None:
    pair = pairs["benign_stable"]
    shift = SynthConfig().registration_shift_mm
    moved = _centroid_mm(pair.followup.mask, pair) - _centroid_mm(pair.baseline.mask, pair)
    h = max(pair.baseline.spacing)
    assert np.linalg.norm(pair.registration.translation_mm) <= shift
    assert np.linalg.norm(moved) <= shift + 0.25 * h  # plus the centroid's voxelisation error
    expected = pair.followup_center - pair.baseline_nodule.center  # -R^T t
    np.testing.assert_allclose(moved, expected, atol=0.25 * h)
    assert not np.array_equal(pair.followup.image, pair.baseline.image)  # independent noise


def test_drawn_registration_bounds() -> None:
    rng = np.random.default_rng(0)
    config = SynthConfig(registration_shift_mm=1.5, registration_rotation_deg=2.0)
    regs = [draw_registration(rng, config) for _ in range(500)]
    shifts = np.array([np.linalg.norm(r.translation_mm) for r in regs])
    angles = np.array([r.angle_deg for r in regs])
    assert shifts.max() <= 1.5 and shifts.max() > 1.2 and angles.max() <= 2.0 and angles.max() > 1.8
    rot = regs[0].rotation
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    centre = np.array([10.0, -20.0, -150.0])
    moved = regs[0].world_matrix(centre) @ np.r_[regs[0].apparent_center(centre), 1.0]
    np.testing.assert_allclose(moved[:3], centre, atol=1e-9)  # the nodule centre appears at c - R^T t


def test_old_spellings_of_the_centres_warn_and_give_the_same(pairs: dict[str, GrowthPair]) -> None:
    """``apparent_centre``, ``world_matrix(centre=)``, ``GrowthPair.followup_centre`` and the ``Nodule`` attributes
    ``centre``, ``calc_centres``, ``inclusion_centres``: deprecated spellings, same values, a FutureWarning each."""
    pair = pairs["malignant_solid"]
    reg, c = pair.registration, pair.baseline_nodule.center
    with pytest.warns(FutureWarning, match="`Registration.apparent_centre` has been deprecated .* `apparent_center`"):
        np.testing.assert_array_equal(reg.apparent_centre(c), reg.apparent_center(c))
    with pytest.warns(FutureWarning, match="`centre` of `Registration.world_matrix` has been deprecated"):
        np.testing.assert_array_equal(reg.world_matrix(centre=c), reg.world_matrix(c))
    with pytest.warns(FutureWarning, match="`GrowthPair.followup_centre` has been deprecated .* `followup_center`"):
        np.testing.assert_array_equal(pair.followup_centre, pair.followup_center)
    nod = copy.deepcopy(pair.baseline_nodule)
    for old, new in (
        ("centre", "center"),
        ("calc_centres", "calc_centers"),
        ("inclusion_centres", "inclusion_centers"),
    ):
        with pytest.warns(FutureWarning, match=f"`Nodule.{old}` has been deprecated .* `{new}`"):
            assert getattr(nod, old) is getattr(nod, new)
        value = np.full((1, 3), 0.5)
        with pytest.warns(FutureWarning, match=f"`Nodule.{old}`"):
            setattr(nod, old, value)
        assert getattr(nod, new) is value


def test_render_followup_old_keyword_warns_and_renders_the_same() -> None:
    case = generate_growth_case(0, seed=2, **{**VOLUME_OPTIONS, "crop_size_xy": 32})
    pair = case.pairs[0]
    args = (case.patient, pair.baseline.grid, [pair.followup_nodule], pair.registration)
    new = render_followup(*args, center=pair.baseline_nodule.center, rng=np.random.default_rng(0))
    with pytest.warns(FutureWarning, match="`centre` of `render_followup` has been deprecated .* `center`"):
        old = render_followup(*args, centre=pair.baseline_nodule.center, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(old.image, new.image)
    np.testing.assert_array_equal(old.mask, new.mask)


def test_no_registration_noise_same_grid() -> None:
    kw = dict(VOLUME_OPTIONS, registration_shift_mm=0.0, registration_rotation_deg=0.0, crop_size_xy=48)
    pair = generate_growth_case(0, seed=1, growth_model_probabilities={"benign_stable": 1.0}, **kw).pairs[0]
    np.testing.assert_array_equal(pair.followup.mask, pair.baseline.mask)
    np.testing.assert_array_equal(pair.followup.tissue, pair.baseline.tissue)
    diff = pair.followup.image.astype(float) - pair.baseline.image
    assert 0 < diff.std() < 200  # noise only


# --------------------------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def growth_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth_growth")
    summary = synthesize_dataset(out, cases=5, seed=2, mode="growth", n_folds=2, test_fraction=0.2, **SMALL)
    return out, summary


def test_growth_files_and_datalist(growth_dir: tuple[Path, dict]) -> None:
    out, summary = growth_dir
    datalist = json.loads((out / "datalist.json").read_text())
    items = [it for split in ("training", "validation", "test") for it in datalist[split]]
    assert len(items) == summary["nodules"] >= 5 and summary["files"] == 4 * len(items)
    assert datalist["metadata"]["mode"] == "growth" and "growth" in datalist["metadata"]
    required = {*(k.value for k in GrowthKeys), "patient_id", "nodule_id", "nodule_type", "malignancy", "subtlety"}
    for item in items:
        assert required <= set(item), required - set(item)
        assert item["image"] == item["baseline"] and item["label"] == item["baseline_mask"]
        assert item["baseline"].endswith("_t0.nii.gz") and item["followup"].endswith("_t1.nii.gz")
        assert item["growth_model"] in GROWTH_MODELS and isinstance(item["interval_days"], int)
        assert (item["vdt_days"] is None) == (item["followup_volume_mm3"] == item["baseline_volume_mm3"])
        if item["vdt_days"] is not None:
            ratio = item["followup_volume_mm3"] / item["baseline_volume_mm3"]
            assert ratio == pytest.approx(2.0 ** (item["interval_days"] / item["vdt_days"]), rel=1e-3)
        b, f = nib.load(out / item["baseline"]), nib.load(out / item["followup"])
        bm, fm = nib.load(out / item["baseline_mask"]), nib.load(out / item["followup_mask"])
        assert b.get_data_dtype() == np.int16 and fm.get_data_dtype() == np.uint8
        assert b.shape == f.shape == bm.shape == fm.shape
        np.testing.assert_array_equal(b.affine, f.affine)
        assert np.asarray(bm.dataobj).sum() * np.prod(b.header.get_zooms()) == pytest.approx(
            item["baseline_mask_volume_mm3"], rel=0.05
        )
    # patient-level folds: every patient in one fold; test patients in none
    folds: dict[str, set] = {}
    for split in ("training", "validation"):
        for item in datalist[split]:
            folds.setdefault(item["patient_id"], set()).add(item["fold"])
    assert all(len(f) == 1 for f in folds.values())
    test_patients = {item["patient_id"] for item in datalist["test"]}
    assert test_patients and not test_patients & set(folds) and all("fold" not in it for it in datalist["test"])
    loaded = load_datalist(out / "datalist.json", "training")
    assert Path(loaded[0]["followup"]).is_absolute() and Path(loaded[0][Keys.IMAGE]).is_file()
    with open(out / "growth.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == GROWTH_COLUMNS and len(rows) == len(items)
    assert {r["case_id"] for r in rows} == {it["case_id"] for it in items}


def test_growth_rerun_and_mode_switch(tmp_path: Path) -> None:
    kw = {"seed": 0, "n_folds": 2, "test_fraction": 0.0, **SMALL, "nodules_per_crop_patient": (1, 1)}
    out = tmp_path / "syn"
    synthesize_dataset(out, cases=2, mode="growth", **kw)
    before = (out / "datalist.json").read_bytes()
    synthesize_dataset(out, cases=2, mode="growth", **kw)  # a previous synthetic output: refreshed
    assert (out / "datalist.json").read_bytes() == before
    synthesize_dataset(out, cases=2, mode="crops", **kw)  # stale pairs and growth.csv removed
    assert sorted(p.name for p in (out / "images").iterdir()) == ["SYN-0001_1.nii.gz", "SYN-0002_1.nii.gz"]
    assert not (out / "growth.csv").exists()
    synthesize_dataset(out, cases=2, mode="growth", **kw)
    assert len(list((out / "labels").iterdir())) == 4 and (out / "growth.csv").is_file()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"growth_model_probabilities": {"cancer": 1.0}}, "growth_model_probabilities"),
        ({"growth_model_probabilities": {"benign_stable": -1.0}}, "growth_model_probabilities"),
        ({"followup_intervals_days": ()}, "followup_intervals_days"),
        ({"followup_intervals_days": (180, -5)}, "followup_intervals_days"),
        ({"followup_intervals_days": "often"}, "followup_intervals_days"),
        ({"registration_shift_mm": -1.0}, "registration_shift_mm"),
        ({"registration_shift_mm": 50.0}, "registration_shift_mm"),
        ({"registration_rotation_deg": 45.0}, "registration_rotation_deg"),
        ({"registration_rotation_deg": float("nan")}, "registration_rotation_deg"),
    ],
)
def test_ill_arg(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        synthesize_dataset(tmp_path / "out", cases=4, mode="growth", n_folds=2, **kwargs)
    assert not (tmp_path / "out").exists()


def test_generate_case_points_to_growth() -> None:
    with pytest.raises(ValueError, match="generate_growth_case"):
        generate_case(0, mode="growth")
    with pytest.raises(ValueError, match="growth_model"):
        draw_growth(
            draw_nodule(np.random.default_rng(0), SynthConfig()), "exploding", np.random.default_rng(0), SynthConfig()
        )


# --------------------------------------------------------------------------------------------- CLI
def test_cli_growth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "growth"
    args = ["synth", "--out", str(out), "--mode", "growth", "--cases", "2", "--seed", "1", "--folds", "2"]
    assert main([*args, "--test-fraction", "0", "--interval-days", "365", "--registration-shift-mm", "1"]) == 0
    assert "growth_models" in capsys.readouterr().out
    datalist = json.loads((out / "datalist.json").read_text())
    items = datalist["training"] + datalist["validation"]
    assert len(list((out / "images").glob("*_t1.nii.gz"))) == len(items) >= 2
    assert all(abs(it["interval_days"] - 365) <= 37 for it in items)
    assert all(np.linalg.norm(it["registration_translation_mm"]) <= 1.0 for it in items)
    assert (out / "growth.csv").is_file()


def test_cli_growth_four_cases_fewer_folds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``synth --cases 4 --mode growth`` (default 5 folds, test fraction 0.2): 1 test patient, 3 folds, a note."""
    out = tmp_path / "growth4"
    assert main(["synth", "--out", str(out), "--mode", "growth", "--cases", "4"]) == 0
    printed = capsys.readouterr().out
    assert "note: 3 patients outside 'test': 3 folds instead of 5" in printed
    datalist = json.loads((out / "datalist.json").read_text())
    assert datalist["metadata"]["n_folds"] == 3 and datalist["metadata"]["val_fold"] == 0
    pooled = datalist["training"] + datalist["validation"]
    fold_of = {it["patient_id"]: it["fold"] for it in pooled}
    assert sorted(fold_of.values()) == [0, 1, 2] and {it["fold"] for it in datalist["validation"]} == {0}
    test_patients = {it["patient_id"] for it in datalist["test"]}
    assert len(test_patients) == 1 and not test_patients & set(fold_of)
    assert len(fold_of) + len(test_patients) == 4
    with open(out / "growth.csv", newline="") as f:
        split_of = {r["case_id"]: r["split"] for r in csv.DictReader(f)}
    assert split_of == {it["case_id"]: s for s in ("training", "validation", "test") for it in datalist[s]}
    assert len(load_datalist(out / "datalist.json", "test")) == len(datalist["test"]) >= 1


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--mode", "growth", "--interval-days", "0"], "followup_intervals_days"),
        (["--mode", "growth", "--registration-rotation-deg", "90"], "registration_rotation_deg"),
        (["--mode", "crops", "--registration-shift-mm", "1"], "--registration-shift-mm applies to --mode growth"),
    ],
)
def test_cli_bad_growth_args(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list, match: str) -> None:
    assert main(["synth", "--out", str(tmp_path / "x"), "--cases", "3", "--folds", "2", *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lung-nodule-mtl synth: error:") and match in err[0]
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit) as e:
        main(["synth", "--out", str(tmp_path / "x"), "--mode", "growths"])
    assert e.value.code == 2
