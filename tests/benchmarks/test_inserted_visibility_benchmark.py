"""benchmarks/inserted_visibility.py on a tiny chest: a pasted nodule in the lung is visible, one centred on the
lung's wall is half hidden; the predictions' hits are counted per group and the tables split the annotations; the
``places`` measurement finds the old centred juxta places hidden more often than the new ones."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pytest


@pytest.fixture
def bench(load_benchmark) -> Iterator[ModuleType]:
    with load_benchmark("inserted_visibility") as module:
        yield module


def _chest() -> np.ndarray:
    """60³ at 1 mm: tissue (40 HU) around a lung box (-850 HU) holding a vessel rod along z."""
    hu = np.full((60, 60, 60), 40, dtype=np.int16)
    hu[10:50, 10:50, 5:55] = -850
    hu[29:31, 29:31, 5:55] = 40
    return hu


def _ball(centre: tuple[int, int, int], radius: int) -> np.ndarray:
    grid = np.indices((60, 60, 60)) - np.asarray(centre)[:, None, None, None]
    return (grid**2).sum(axis=0) <= radius**2


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture
def made_set(tmp_path: Path) -> tuple[Path, Path, Path]:
    hosts, s, pred = tmp_path / "hosts", tmp_path / "set", tmp_path / "pred"
    for d in (hosts, s / "images", s / "labels", pred):
        d.mkdir(parents=True)
    nib.save(nib.Nifti1Image(_chest(), np.eye(4)), hosts / "host.nii.gz")
    labels = np.zeros((60, 60, 60), dtype=np.uint8)
    inside, on_wall = (20, 20, 30), (10, 35, 30)  # in parenchyma; centred on the wall x = 10
    labels[_ball(inside, 4)] = 1
    labels[_ball(on_wall, 4)] = 2
    nib.save(nib.Nifti1Image(_chest(), np.eye(4)), s / "images" / "host.nii.gz")
    nib.save(nib.Nifti1Image(labels, np.eye(4)), s / "labels" / "host.nii.gz")
    nodules = [
        {"seriesuid": "host", "source": "inserted", "placement": p, "diameter_mm": 8.0,
         "center_ras": json.dumps(list(map(float, c)))}
        for p, c in (("solitary", inside), ("juxta_dense", on_wall))
    ]  # fmt: skip
    _write_csv(s / "nodules.csv", nodules)
    annotations = [{"seriesuid": "host", "coordX": -c[0], "coordY": -c[1], "coordZ": c[2], "diameter_mm": 8.0}
                   for c in (inside, on_wall)]  # fmt: skip
    _write_csv(s / "annotations.csv", annotations)
    found = [{"case_id": "host", "center_x_mm": x, "center_y_mm": y, "center_z_mm": z, "detection_probability": p}
             for (x, y, z), p in (((21, 20, 30), 0.9), ((12, 35, 30), 0.5), ((40, 40, 40), 0.95))]  # fmt: skip
    _write_csv(pred / "summary.csv", found)
    return hosts, s, pred


def test_visible_and_hidden_nodules_are_told_apart_and_their_hits_counted(
    bench: ModuleType, made_set: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    hosts, s, pred = made_set
    out = tmp_path / "vis"
    assert bench.main(["set", "--set", str(s), "--hosts", str(hosts), "--predictions", str(pred),
                       "--threshold", "0.78", "--out", str(out), "--json", str(tmp_path / "v.json")]) == 0  # fmt: skip
    result = json.loads((tmp_path / "v.json").read_text())
    inside, wall = result["rows"]
    assert inside["dense_overlap"] == 0.0 and 0.35 < wall["dense_overlap"] < 0.65
    assert inside["best_score"] == pytest.approx(0.9) and inside["reported"]
    assert wall["best_score"] == pytest.approx(0.5) and not wall["reported"]
    assert result["summary"] == {
        "visible": {"n": 1, "juxta_dense": 0, "ever_a_candidate": 1, "reported": 1},
        "hidden": {"n": 1, "juxta_dense": 1, "ever_a_candidate": 1, "reported": 0},
    }
    visible = list(csv.DictReader((out / "annotations_visible.csv").open()))
    hidden = list(csv.DictReader((out / "annotations_hidden.csv").open()))
    assert [(float(r["coordX"]), float(r["coordY"])) for r in visible] == [(-20.0, -20.0)]
    assert [(float(r["coordX"]), float(r["coordY"])) for r in hidden] == [(-10.0, -35.0)]


def test_a_set_whose_case_is_not_among_the_hosts_is_named(
    bench: ModuleType, made_set: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, s, _ = made_set
    other = tmp_path / "other"
    other.mkdir()
    nib.save(nib.Nifti1Image(_chest(), np.eye(4)), other / "elsewhere.nii.gz")
    with pytest.raises(ValueError, match="'host' is not among the hosts"):
        bench.main(["set", "--set", str(s), "--hosts", str(other)])


def test_places_centred_on_dense_voxels_hide_more_than_placed_ones(
    bench: ModuleType, dataset: Path, tmp_path: Path
) -> None:
    host = tmp_path / "chest.nii.gz"
    nib.save(nib.Nifti1Image(_chest(), np.eye(4)), host)
    result = bench.places([str(host)], dataset / "datalist.json", [0, 1], draws=40, seed=0)
    dense = result["hosts"]["chest"]["dense"]
    assert dense["centred_over_0.15"] > dense["placed_over_0.15"] + 0.2
    assert dense["centred_median"] > dense["placed_median"]
