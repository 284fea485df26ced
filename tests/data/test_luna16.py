"""LUNA16 converter: geometry and HU of the NIfTI, RAS centres, sphere labels, folds, missing and failing scans."""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from lung_nodule_mtl.cli.luna16 import register
from lung_nodule_mtl.constants import lps_to_ras
from lung_nodule_mtl.data.datalist import load_datalist
from lung_nodule_mtl.data.luna16 import (
    LUNA16_FOLDS,
    find_luna16_scans,
    prepare_luna16,
    sphere_mask,
)
from lung_nodule_mtl.data.nodule_table import read_nodule_table
from lung_nodule_mtl.io.geometry import world_to_voxel

SIZE = (40, 36, 20)  # ITK size (x, y, z) = NIfTI array shape (i, j, k)
SPACING = (0.7, 0.8, 2.5)
ORIGIN = (-12.3, 25.4, -101.7)
CENTRE_INDEX = (20.3, 17.6, 9.2)  # continuous ITK index of the bright sphere's centre
RADIUS_MM = 4.0
SPHERE_HU = 60
UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.{}"


def _direction() -> tuple[float, ...]:
    """A rotation of 20 degrees about z then 10 degrees about x (not axis-aligned)."""
    a, b = math.radians(20.0), math.radians(10.0)
    rz = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(b), -math.sin(b)], [0.0, math.sin(b), math.cos(b)]])
    return tuple((rz @ rx).ravel())


def _reference() -> sitk.Image:
    img = sitk.Image(SIZE, sitk.sitkInt16)
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    img.SetDirection(_direction())
    return img


def _physical_points(img: sitk.Image) -> np.ndarray:
    """LPS world point of every voxel, ``(i, j, k, 3)``, from SimpleITK itself."""
    idx = np.indices(SIZE).reshape(3, -1).T
    pts = [img.TransformIndexToPhysicalPoint(tuple(int(v) for v in i)) for i in idx]
    return np.asarray(pts, dtype=np.float64).reshape((*SIZE, 3))


def make_scan(path: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Write ``path`` (.mhd + .raw): int16 HU, lung-like noise, a bright ball at :data:`CENTRE_INDEX`.

    Returns:
        The ball's centre in LPS world mm, the ``(i, j, k)`` voxel array written and the ball's voxel mask.
    """
    ref = _reference()
    centre_lps = np.asarray(ref.TransformContinuousIndexToPhysicalPoint(CENTRE_INDEX), dtype=np.float64)
    ball = np.linalg.norm(_physical_points(ref) - centre_lps, axis=-1) <= RADIUS_MM
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, -850, size=SIZE).astype(np.int16)  # (i, j, k)
    array[ball] = SPHERE_HU + rng.integers(-5, 6, size=int(ball.sum()))
    image = sitk.GetImageFromArray(array.transpose(2, 1, 0))  # SimpleITK arrays are (k, j, i)
    image.CopyInformation(ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return centre_lps, array, ball


def write_annotations(path: Path, rows: Sequence[tuple[str, Sequence[float], float]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"])
        for uid, xyz, diameter in rows:
            w.writerow([uid, *(repr(float(v)) for v in xyz), repr(float(diameter))])
    return path


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.logical_and(a, b).sum()) / float(a.sum() + b.sum())


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["seriesuid"]: row for row in csv.DictReader(f)}


def all_items(datalist_path: Path) -> list[dict]:
    data = json.loads(datalist_path.read_text())
    return data["training"] + data["validation"] + data["test"]


# --------------------------------------------------------------------------------------------------------------


def test_geometry_hu_centre_and_sphere_label(tmp_path: Path) -> None:
    uid = UID.format(1)
    centre_lps, array, ball = make_scan(tmp_path / "luna" / "subset0" / f"{uid}.mhd")
    ann = write_annotations(tmp_path / "annotations.csv", [(uid, centre_lps, 2 * RADIUS_MM)])
    result = prepare_luna16(tmp_path / "luna", ann, tmp_path / "out")
    assert result.ok and result.failed == {} and result.missing == []

    img = nib.load(tmp_path / "out" / "images" / f"{uid}.nii.gz")
    assert img.shape == SIZE
    assert img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(img.dataobj), array)  # HU identical, voxel (i, j, k) = ITK index
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1

    # every voxel (corners included) at SimpleITK's physical point, flipped to RAS
    ref = _reference()
    corners = [(i, j, k) for i in (0, SIZE[0] - 1) for j in (0, SIZE[1] - 1) for k in (0, SIZE[2] - 1)]
    voxels = [*corners, (20, 17, 9), (3, 30, 11), (39, 2, 5)]
    for affine in (img.affine, img.get_qform()):
        for v in voxels:
            expected = lps_to_ras(ref.TransformIndexToPhysicalPoint(v))
            np.testing.assert_allclose((affine @ [*v, 1.0])[:3], expected, atol=1e-3)
    ras = _physical_points(ref) * np.array([-1.0, -1.0, 1.0])
    idx = np.indices(SIZE).reshape(3, -1).T
    np.testing.assert_allclose(idx @ img.affine[:3, :3].T + img.affine[:3, 3], ras.reshape(-1, 3), atol=1e-3)

    items = all_items(result.datalist)
    assert len(items) == 1
    item = items[0]
    assert item["patient_id"] == uid and item["seriesuid"] == uid
    assert item["nodule_id"] == "1" and item["case_id"] == f"{uid}_1"
    assert item["fold"] == 0 and item["subset"] == 0
    assert item["malignancy"] is None and item["malignancy_score"] is None
    assert item["diameter_mm"] == pytest.approx(2 * RADIUS_MM)
    assert item["label_source"] == "sphere" and item["annotation_row"] == 2
    np.testing.assert_allclose(item["center_world_mm"], lps_to_ras(centre_lps), atol=1e-9)
    ijk = world_to_voxel(img.affine, item["center_world_mm"])
    assert np.all(np.abs(ijk - np.asarray(CENTRE_INDEX)) < 0.5)
    np.testing.assert_allclose(ijk, CENTRE_INDEX, atol=1e-3)
    assert array[tuple(np.rint(ijk).astype(int))] >= SPHERE_HU - 5  # the centre voxel is the bright ball

    label = nib.load(tmp_path / "out" / item["label"])
    np.testing.assert_allclose(label.affine, img.affine, atol=1e-6)
    mask = np.asarray(label.dataobj)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert dice(mask > 0, array >= SPHERE_HU - 5) > 0.8
    assert dice(mask > 0, ball) > 0.95

    # the datalist reads back with MONAI (absolute paths, validated); fold 0 is the validation fold
    validation = load_datalist(result.datalist, "validation")
    assert len(validation) == 1 and Path(validation[0]["image"]).is_file() and Path(validation[0]["label"]).is_file()
    meta = json.loads(result.datalist.read_text())["metadata"]
    assert meta["fold_source"] == "luna16_subsets" and meta["n_folds"] == LUNA16_FOLDS
    assert meta["label_source"] == "sphere" and meta["source"] == "LUNA16"


@pytest.fixture
def luna_tree(tmp_path: Path) -> dict:
    """A LUNA16-like folder: A subset0 and B subset3 annotated, C subset3 unannotated, E subset1 with a centre
    outside its image; D annotated but absent."""
    root = tmp_path / "luna"
    uids = {name: UID.format(n) for n, name in enumerate("ABCDE", start=10)}
    centres = {}
    for name, sub in (("A", 0), ("B", 3), ("C", 3), ("E", 1)):
        centres[name], _, _ = make_scan(root / f"subset{sub}" / f"{uids[name]}.mhd", seed=ord(name))
    far = centres["E"] + np.array([0.0, 0.0, 500.0])
    rows = [
        (uids["A"], centres["A"], 8.0),
        (uids["B"], centres["B"], 8.0),
        (uids["B"], centres["B"] + np.array([3.0, 0.0, 0.0]), 5.0),
        (uids["D"], (1.0, 2.0, 3.0), 6.0),
        (uids["D"], (4.0, 5.0, 6.0), 7.0),
        (uids["E"], centres["E"], 8.0),
        (uids["E"], far, 8.0),  # line 8 of the file
    ]
    ann = write_annotations(tmp_path / "annotations.csv", rows)
    return {"root": root, "ann": ann, "uids": uids, "out": tmp_path / "out", "rows": rows}


def test_subset_folds_missing_and_failing_scan(luna_tree: dict) -> None:
    uids, out = luna_tree["uids"], luna_tree["out"]
    result = prepare_luna16(luna_tree["root"], luna_tree["ann"], out)
    s = result.summary

    assert not result.ok
    assert list(result.failed) == [uids["E"]]
    reason = result.failed[uids["E"]]
    assert f"{luna_tree['ann']} line 8" in reason and str(luna_tree["root"] / "subset1" / f"{uids['E']}.mhd") in reason
    assert "outside the image" in reason and "\n" not in reason
    for sub in ("images", "labels", "meta"):  # the failed scan leaves no output
        assert not list((out / sub).glob(f"{uids['E']}.*"))

    assert result.missing == [uids["D"]]
    assert (s["missing_scans"], s["nodules_in_missing_scans"]) == (1, 2)
    assert (s["scans_found"], s["scans_converted"], s["scans_skipped"], s["scans_failed"]) == (4, 3, 0, 1)
    assert (s["scans_with_nodules"], s["scans_without_nodules"], s["nodules"], s["annotations"]) == (2, 1, 3, 7)
    assert s["fold_source"] == "luna16_subsets"

    items = all_items(result.datalist)
    assert sorted((i["case_id"], i["fold"]) for i in items) == sorted(
        [(f"{uids['A']}_1", 0), (f"{uids['B']}_1", 3), (f"{uids['B']}_2", 3)]
    )
    assert {i["case_id"] for i in json.loads(result.datalist.read_text())["validation"]} == {f"{uids['A']}_1"}

    # the unannotated scan is converted and listed, without label or items
    assert (out / "images" / f"{uids['C']}.nii.gz").is_file()
    assert not (out / "labels" / f"{uids['C']}.nii.gz").exists()
    rows = read_rows(out / "scans.csv")
    assert {u: r["status"] for u, r in rows.items()} == {
        uids["A"]: "converted",
        uids["B"]: "converted",
        uids["C"]: "converted",
        uids["D"]: "missing",
        uids["E"]: "failed",
    }
    assert rows[uids["C"]]["fold"] == "3" and rows[uids["C"]]["n_nodules"] == "0"
    assert rows[uids["E"]]["error"] == reason and rows[uids["D"]]["image"] == ""

    # B's label holds both of its balls
    mask = np.asarray(nib.load(out / "labels" / f"{uids['B']}.nii.gz").dataobj)
    img = nib.load(out / "images" / f"{uids['B']}.nii.gz")
    for item in (i for i in items if i["patient_id"] == uids["B"]):
        assert mask[tuple(np.rint(world_to_voxel(img.affine, item["center_world_mm"])).astype(int))] == 1


def test_rerun_skips_complete_scans(luna_tree: dict) -> None:
    uids, out, root, ann = luna_tree["uids"], luna_tree["out"], luna_tree["root"], luna_tree["ann"]
    first = prepare_luna16(root, ann, out)
    image_a = out / "images" / f"{uids['A']}.nii.gz"
    stamp = image_a.stat().st_mtime_ns
    items = all_items(first.datalist)

    again = prepare_luna16(root, ann, out)
    assert (again.summary["scans_converted"], again.summary["scans_skipped"], again.summary["scans_failed"]) == (
        0,
        3,
        1,
    )
    assert image_a.stat().st_mtime_ns == stamp
    assert all_items(again.datalist) == items

    # a changed annotation redoes that scan only
    rows = list(luna_tree["rows"])
    rows[1] = (rows[1][0], rows[1][1], 9.5)
    write_annotations(ann, rows)
    changed = prepare_luna16(root, ann, out)
    assert (changed.summary["scans_converted"], changed.summary["scans_skipped"]) == (1, 2)
    assert read_rows(out / "scans.csv")[uids["B"]]["status"] == "converted"

    # an incomplete scan (its label lost) is redone; --overwrite redoes everything
    (out / "labels" / f"{uids['A']}.nii.gz").unlink()
    assert prepare_luna16(root, ann, out).summary["scans_converted"] == 1
    assert (out / "labels" / f"{uids['A']}.nii.gz").is_file()
    assert prepare_luna16(root, ann, out, overwrite=True).summary["scans_converted"] == 3


def test_patient_folds_without_subset_folders(tmp_path: Path) -> None:
    rows = []
    for n in range(4):
        uid = UID.format(100 + n)
        centre, _, _ = make_scan(tmp_path / "luna" / ("nested" if n % 2 else "") / f"{uid}.mhd", seed=n)
        rows += [(uid, centre, 8.0), (uid, centre + 1.0, 4.0)]
    ann = write_annotations(tmp_path / "annotations.csv", rows)
    result = prepare_luna16(tmp_path / "luna", ann, tmp_path / "out", n_folds=2, seed=3)
    assert result.ok
    assert result.summary["fold_source"] == "patient_folds" and result.summary["n_folds"] == 2
    items = all_items(result.datalist)
    assert len(items) == 8 and all(item["subset"] is None for item in items)
    folds: dict[str, set[int]] = {}
    for item in items:
        folds.setdefault(item["patient_id"], set()).add(item["fold"])
    assert all(len(f) == 1 for f in folds.values())  # each patient in one fold
    assert sorted(f.pop() for f in folds.values()) == [0, 0, 1, 1]

    few = prepare_luna16(tmp_path / "luna", ann, tmp_path / "out10")  # 10 folds asked, 4 patients
    assert few.summary["n_folds"] == 4 and any("4 fold(s)" in w for w in few.summary["warnings"])


def test_no_labels(tmp_path: Path) -> None:
    uid = UID.format(7)
    centre, _, _ = make_scan(tmp_path / "luna" / "subset2" / f"{uid}.mhd")
    ann = write_annotations(tmp_path / "annotations.csv", [(uid, centre, 8.0)])
    result = prepare_luna16(tmp_path / "luna", ann, tmp_path / "out", labels=False, val_fold=2)
    assert result.ok and not (tmp_path / "out" / "labels").exists()
    (item,) = load_datalist(result.datalist, "validation")
    assert "label" not in item and item["label_source"] is None and item["fold"] == 2


def test_unusable_scans_fail_alone(tmp_path: Path) -> None:
    root = tmp_path / "luna"
    good, bad, twice = UID.format(20), UID.format(21), UID.format(22)
    centre, _, _ = make_scan(root / "subset0" / f"{good}.mhd")
    make_scan(root / "subset0" / f"{bad}.mhd")
    raw = root / "subset0" / f"{bad}.raw"
    raw.write_bytes(raw.read_bytes()[:1000])  # truncated data file
    make_scan(root / "subset1" / f"{twice}.mhd")
    make_scan(root / "subset2" / f"{twice}.mhd")
    ann = write_annotations(tmp_path / "annotations.csv", [(good, centre, 8.0), (bad, centre, 8.0)])
    result = prepare_luna16(root, ann, tmp_path / "out")
    assert sorted(result.failed) == sorted([bad, twice])
    assert str(root / "subset0" / f"{bad}.mhd") in result.failed[bad] and "truncated" in result.failed[bad]
    assert "found 2 times" in result.failed[twice]
    assert [i["patient_id"] for i in all_items(result.datalist)] == [good]


def test_find_scans_nesting_and_hidden_files(tmp_path: Path) -> None:
    root = tmp_path / "LUNA16"
    for rel in ("subset4/subset4/1.2.3.mhd", "subset4/subset4/._1.2.3.mhd", "other/x/1.2.4.mha", "1.2.5.MHD"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    (root / "subset4" / "1.2.3.raw").write_text("")
    scans = find_luna16_scans(root)
    assert [(s.seriesuid, s.subset) for s in scans] == [("1.2.3", 4), ("1.2.4", None), ("1.2.5", None)]
    with pytest.raises(FileNotFoundError):
        find_luna16_scans(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):
        prepare_luna16(tmp_path / "nowhere", tmp_path / "a.csv", tmp_path / "out")


def test_sphere_mask_small_and_outside() -> None:
    affine = np.diag([-0.7, -0.7, 2.5, 1.0])
    mask = sphere_mask((10, 10, 10), affine, [(-3.5, -3.5, 12.5)], [0.5])  # smaller than a voxel
    assert mask.sum() == 1 and mask[5, 5, 5] == 1
    assert sphere_mask((10, 10, 10), affine, [(100.0, 100.0, 100.0)], [5.0]).sum() == 0
    with pytest.raises(ValueError, match="diameter"):
        sphere_mask((10, 10, 10), affine, [(0.0, 0.0, 0.0)], [-1.0])


def test_sphere_mask_old_keyword_warns_and_gives_the_same_mask() -> None:
    affine = np.diag([-0.7, -0.7, 2.5, 1.0])
    new = sphere_mask((10, 10, 10), affine, centers_ras_mm=[(-3.5, -3.5, 12.5)], diameters_mm=[3.0])
    with pytest.warns(FutureWarning, match="`centres_ras_mm` of `sphere_mask` has been deprecated.*`centers_ras_mm`"):
        old = sphere_mask((10, 10, 10), affine, centres_ras_mm=[(-3.5, -3.5, 12.5)], diameters_mm=[3.0])
    np.testing.assert_array_equal(old, new)
    assert new.sum() > 1
    with pytest.raises(TypeError, match="deprecated spelling"):
        sphere_mask((10, 10, 10), affine, [(0.0, 0.0, 0.0)], [1.0], centres_ras_mm=[(0.0, 0.0, 0.0)])


def test_workers_give_the_same_datalist(luna_tree: dict, tmp_path: Path) -> None:
    one = prepare_luna16(luna_tree["root"], luna_tree["ann"], tmp_path / "one")
    two = prepare_luna16(luna_tree["root"], luna_tree["ann"], tmp_path / "two", workers=2)
    assert one.failed == two.failed
    assert all_items(one.datalist) == all_items(two.datalist)
    uid = luna_tree["uids"]["B"]
    a = np.asarray(nib.load(tmp_path / "one" / "labels" / f"{uid}.nii.gz").dataobj)
    b = np.asarray(nib.load(tmp_path / "two" / "labels" / f"{uid}.nii.gz").dataobj)
    np.testing.assert_array_equal(a, b)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lung-nodule-mtl")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_exit_status_and_error_line(luna_tree: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, ann = luna_tree["root"], luna_tree["ann"]
    rc = _cli(["prepare-luna16", "--luna-root", str(root), "--annotations", str(ann), "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert rc == 1
    errors = captured.err.strip().splitlines()
    bad = root / "subset1" / f"{luna_tree['uids']['E']}.mhd"
    assert (
        len(errors) == 1 and errors[0].startswith("lung-nodule-mtl prepare-luna16: error: ") and str(bad) in errors[0]
    )
    assert "missing scans       1" in captured.out and "time" in captured.out

    for f in bad.parent.iterdir():  # without the failing scan: exit status 0
        f.unlink()
    rc = _cli(["prepare-luna16", "--luna-root", str(root), "--annotations", str(ann), "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert rc == 0 and captured.err == ""
    assert "3 found: 0 converted, 3 already done, 0 failed" in captured.out


@pytest.mark.real_data
def test_real_luna16_annotations_with_empty_root(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "luna16"
    if not (folder / "annotations.csv").is_file():
        pytest.skip(f"LUNA16 annotations not found in {folder}")
    table = read_nodule_table(folder / "annotations.csv")
    assert (len(table), sum(len(v) for v in table.values())) == (601, 1186)
    (tmp_path / "luna").mkdir()
    excluded = folder / "annotations_excluded.csv"
    result = prepare_luna16(
        tmp_path / "luna",
        folder / "annotations.csv",
        tmp_path / "out",
        excluded=excluded if excluded.is_file() else None,
    )
    s = result.summary
    assert result.ok and len(result.missing) == 601
    assert (s["scans_found"], s["nodules"], s["missing_scans"], s["nodules_in_missing_scans"]) == (0, 0, 601, 1186)
    assert any("no .mhd/.mha scan found" in w for w in s["warnings"])
    assert all_items(result.datalist) == []
    rows = read_rows(tmp_path / "out" / "scans.csv")
    assert len(rows) == 601 and {r["status"] for r in rows.values()} == {"missing"}
