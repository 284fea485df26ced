"""benchmarks/real_scans_pypi.py on stand-in sdists (tiny NRRD scans with a ball label each, a NIfTI scan without
labels; no download): the lesion tables carry the balls' world centres and equivalent diameters, the one above 30 mm
goes to the excluded table, the unlabelled scan is written without rows, a wrong archive fails naming the file, and
the report ranks the lesion, scores its mask and counts false positives at the threshold."""

from __future__ import annotations

import csv
import io
import json
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from lung_nodule_mtl.utils.io import file_sha256

sitk = pytest.importorskip("SimpleITK")


@pytest.fixture
def bench(load_benchmark) -> Iterator[ModuleType]:
    with load_benchmark("real_scans_pypi") as module:
        yield module


SPACING = (1.0, 1.0, 2.0)
ORIGIN = (-20.0, -30.0, -100.0)


def _nrrd(array: np.ndarray, suffix: str = ".nrrd") -> bytes:
    image = sitk.GetImageFromArray(array)  # (z, y, x)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        sitk.WriteImage(image, str(path))
        return path.read_bytes()


def _ball(shape: tuple[int, int, int], centre_zyx: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    d2 = ((z - centre_zyx[0]) * SPACING[2]) ** 2 + ((y - centre_zyx[1]) * SPACING[1]) ** 2
    d2 = d2 + ((x - centre_zyx[2]) * SPACING[0]) ** 2
    return (d2 <= radius_mm**2).astype(np.uint8)


def _sdist(path: Path, radii: dict[str, float], names: tuple[str, ...] = ("image", "label")) -> Path:
    shape = (24, 40, 40)
    with tarfile.open(path, "w:gz") as tar:
        for scan, radius in radii.items():
            label = _ball(shape, (12, 20, 16), radius)
            image = np.where(label > 0, 40, -800).astype(np.int16)
            for kind in names:
                data = _nrrd(image if kind == "image" else label)
                info = tarfile.TarInfo(f"pyradiomics-3.1.0/data/{scan}_{kind}.nrrd")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _tseg_sdist(path: Path) -> Path:
    """A stand-in TotalSegmentator sdist: its chest CT member, a NIfTI without labels."""
    data = _nrrd(np.full((10, 12, 14), -700, dtype=np.int16), suffix=".nii.gz")
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("totalsegmentator-2.18.0/tests/reference_files/aorta_report/example_ct.nii.gz")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def _prepare(bench: ModuleType, tmp_path: Path, out: str, radii: dict[str, float]) -> dict:
    sdists = {
        "pyradiomics": _sdist(tmp_path / "pyrad.tar.gz", radii),
        "totalsegmentator": _tseg_sdist(tmp_path / "t.tgz"),
    }
    return bench.prepare(tmp_path / out, sdists)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_prepare_writes_the_scans_and_the_lesion_tables(bench: ModuleType, tmp_path: Path) -> None:
    record = _prepare(bench, tmp_path, "out", {"lung1": 6.0, "lung2": 17.0})

    image = sitk.ReadImage(str(tmp_path / "out/images/PYRAD-lung1.nii.gz"))
    assert image.GetSize() == (40, 40, 24) and np.allclose(image.GetSpacing(), SPACING)
    assert sitk.GetArrayFromImage(image).max() == 40
    nodules, excluded = _rows(tmp_path / "out/annotations.csv"), _rows(tmp_path / "out/annotations_excluded.csv")
    assert [r["seriesuid"] for r in nodules] == ["PYRAD-lung1"]
    assert [r["seriesuid"] for r in excluded] == ["PYRAD-lung2"]  # 34 mm > LUNA16's 30 mm
    centre = [float(nodules[0][k]) for k in ("coordX", "coordY", "coordZ")]
    assert centre == pytest.approx([ORIGIN[0] + 16, ORIGIN[1] + 20, ORIGIN[2] + 24], abs=0.01)
    assert float(nodules[0]["diameter_mm"]) == pytest.approx(12.0, rel=0.08)
    assert float(excluded[0]["diameter_mm"]) == pytest.approx(34.0, rel=0.05)
    assert record["sources"]["pyradiomics"]["sha256"] == file_sha256(tmp_path / "pyrad.tar.gz")
    provenance = json.loads((tmp_path / "out/provenance.json").read_text())
    assert provenance["scans"]["PYRAD-lung2"]["size"] == [40, 40, 24]
    assert provenance["scans"]["TSEG-chest"] == {
        "source": "totalsegmentator",
        "size": [14, 12, 10],
        "spacing_mm": list(SPACING),
        "labelled": False,
        "lesions": [],
    }
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out/images/TSEG-chest.nii.gz"))).max() == -700
    assert not (tmp_path / "out/labels/TSEG-chest.nii.gz").exists()


def test_an_archive_without_the_scans_fails_naming_it(bench: ModuleType, tmp_path: Path) -> None:
    sdist = _sdist(tmp_path / "other.tar.gz", {"lung1": 6.0, "lung2": 6.0}, names=("image",))
    with pytest.raises(ValueError, match=r"other\.tar\.gz: no data/lung\d_label\.nrrd"):
        bench.prepare(tmp_path / "out", {"pyradiomics": sdist}, ("pyradiomics",))
    assert not (tmp_path / "out/annotations.csv").exists()
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    junk = ["prepare", "--out", str(tmp_path / "o2"), "--sources", "pyradiomics"]
    assert bench.main([*junk, "--sdist", f"pyradiomics={tmp_path / 'junk.tar.gz'}"]) == 2
    assert bench.main([*junk, "--sdist", str(tmp_path / "junk.tar.gz")]) == 2  # not NAME=PATH
    with pytest.raises(ValueError, match="unknown source 'lidc'"):
        bench.prepare(tmp_path / "o3", {}, ("lidc",))


def test_report_ranks_the_lesion_and_counts_false_positives_at_the_threshold(bench: ModuleType, tmp_path: Path) -> None:
    _prepare(bench, tmp_path, "data", {"lung1": 6.0, "lung2": 17.0})
    pred = tmp_path / "pred"
    pred.mkdir()
    x, y, z = ORIGIN[0] + 16, ORIGIN[1] + 20, ORIGIN[2] + 24  # both lesions' centre (LPS)
    rows = [
        ("PYRAD-lung1", x + 50, y, z, 0.9),  # false positive above the threshold
        ("PYRAD-lung1", x + 1, y, z, 0.7),  # on the nodule, ranked second
        ("PYRAD-lung1", x - 50, y, z, 0.2),  # false positive below
        ("PYRAD-lung2", x, y + 2, z, 0.95),  # on the excluded mass: neither found nor false
    ]
    lines = ["seriesuid,coordX,coordY,coordZ,probability"] + [",".join(map(str, r)) for r in rows]
    (pred / "summary.csv").write_text("\n".join(lines) + "\n")
    for case in ("PYRAD-lung1", "PYRAD-lung2", "TSEG-chest"):
        (pred / f"{case}.json").write_text(json.dumps({"case_id": case, "nodules": []}))

    result = bench.report(tmp_path / "data", pred, threshold=0.5)
    lung1, lung2 = result["scans"]["PYRAD-lung1"], result["scans"]["PYRAD-lung2"]
    assert result["scans"]["TSEG-chest"] == {
        "candidates": 0,
        "lesions": [],
        "false_positives_at_threshold": 0,
        "top_false_positive": None,
    }
    assert lung1["lesions"] == [
        {
            "kind": "nodule",
            "diameter_mm": pytest.approx(12.0, rel=0.08),
            "best_score": 0.7,
            "rank": 2,
            "reported": True,
            "dice": None,  # a LUNA16 submission: no label map
        }
    ]
    assert lung1["false_positives_at_threshold"] == 1 and lung1["top_false_positive"] == 0.9
    assert lung2["lesions"][0]["kind"] == "excluded" and lung2["lesions"][0]["rank"] == 1
    assert lung2["false_positives_at_threshold"] == 0 and lung2["top_false_positive"] is None
    assert (
        bench.report(tmp_path / "data", pred, threshold=0.8)["scans"]["PYRAD-lung1"]["lesions"][0]["reported"] is False
    )


def test_report_scores_the_mask_of_the_candidate_on_the_lesion(bench: ModuleType, tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    _prepare(bench, tmp_path, "data", {"lung1": 6.0, "lung2": 17.0})
    label = nib.load(tmp_path / "data/labels/PYRAD-lung1.nii.gz")
    ball = np.asarray(label.dataobj) > 0
    pred_map = np.zeros(ball.shape, dtype=np.uint8)
    pred_map[ball] = 2  # candidate 2 covers the lesion ...
    pred_map[np.roll(ball, 3, axis=0) & ~ball] = 2  # ... and more: a mask shifted by 3 voxels, united
    pred_map[:2, :2, :2] = 1  # candidate 1 is elsewhere
    pred = tmp_path / "pred"
    pred.mkdir()
    nib.save(nib.Nifti1Image(pred_map, label.affine), pred / "PYRAD-lung1_nodules.nii.gz")
    x, y, z = ORIGIN[0] + 16, ORIGIN[1] + 20, ORIGIN[2] + 24  # LPS; the project's table is RAS
    (pred / "summary.csv").write_text(
        "case_id,nodule_id,center_x_mm,center_y_mm,center_z_mm,detection_probability\n"
        f"PYRAD-lung1,1,{-x + 40},{-y},{z},0.9\nPYRAD-lung1,2,{-x},{-y},{z},0.6\n"
    )
    for case in ("PYRAD-lung1", "PYRAD-lung2"):
        (pred / f"{case}.json").write_text(json.dumps({"case_id": case, "nodules": []}))

    lesion = bench.report(tmp_path / "data", pred, threshold=0.5)["scans"]["PYRAD-lung1"]["lesions"][0]
    expected = 2 * ball.sum() / (ball.sum() + (ball | np.roll(ball, 3, axis=0)).sum())
    assert lesion["best_score"] == 0.6 and lesion["dice"] == pytest.approx(expected, abs=1e-4)
    assert 0.5 < lesion["dice"] < 0.95
