"""The lung-nodule-mtl command: subcommands call the library, bad input gives one line and exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lung_nodule_mtl import __version__
from lung_nodule_mtl.cli.main import main


def test_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "syn"
    assert main(["synth", "--out", str(out), "--cases", "3", "--seed", "1", "--folds", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"written to {out}" in printed and "nodules" in printed
    datalist = json.loads((out / "datalist.json").read_text())
    n_items = sum(len(datalist[s]) for s in ("training", "validation", "test"))
    assert n_items == len(list((out / "images").glob("*.nii.gz"))) >= 3
    # the same seed again refreshes the folder to the same content
    before = (out / "datalist.json").read_bytes()
    assert main(["synth", "--out", str(out), "--cases", "3", "--seed", "1", "--folds", "2"]) == 0
    assert (out / "datalist.json").read_bytes() == before


def test_synth_scans_with_shape(tmp_path: Path) -> None:
    out = tmp_path / "scans"
    assert main(["synth", "--out", str(out), "--cases", "2", "--mode", "scans", "--scan-shape", "96", "96", "48",
                 "--folds", "2", "--test-fraction", "0"]) == 0  # fmt: skip
    import nibabel as nib

    images = sorted((out / "images").glob("*.nii.gz"))
    assert len(images) == 2 and all(nib.load(i).shape == (96, 96, 48) for i in images)
    assert (out / "annotations.csv").read_text().startswith("seriesuid,coordX,coordY,coordZ,diameter_mm")


def test_synth_one_scan_then_predict_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``synth --cases 1 --mode scans`` (one scan to try ``predict`` on) runs, with a note on the folds."""
    out = tmp_path / "one"
    assert main(["synth", "--out", str(out), "--cases", "1", "--mode", "scans", "--scan-shape", "40", "40", "20"]) == 0
    printed = capsys.readouterr().out
    assert "note: 1 patient(s): too few for folds and a test split" in printed
    from lung_nodule_mtl.io.ct import find_cases, load_ct

    cases = find_cases(out / "images")  # what `predict -i OUT/images` runs on
    assert [case.case_id for case in cases] == ["SYN-0001"] and load_ct(cases[0]).shape == (40, 40, 20)
    datalist = json.loads((out / "datalist.json").read_text())
    assert datalist["validation"] == datalist["test"] == [] and len(datalist["training"]) >= 1
    assert {item["fold"] for item in datalist["training"]} == {0}


def test_bad_input_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no_vois"
    assert main(["prepare-vois", "--vois", str(missing), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and err[0].startswith("lung-nodule-mtl prepare-vois: error:")
    assert main(["synth", "--out", str(tmp_path / "x"), "--cases", "0"]) == 1
    assert "cases" in capsys.readouterr().err


def test_usage_errors() -> None:
    with pytest.raises(SystemExit) as e:
        main(["synth"])  # --out is required
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0


def test_module_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "lung_nodule_mtl", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and __version__ in result.stdout
