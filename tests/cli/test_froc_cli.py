"""lung-nodule-mtl evaluate-froc: a predictions folder or table against LUNA16 tables, a printed table, JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from lung_nodule_mtl.cli.froc import register

SUMMARY_HEADER = (
    "case_id,nodule_id,center_x_mm,center_y_mm,center_z_mm,diameter_mm,detection_probability,malignancy_probability"
)


def run(argv: list[str]) -> int:
    """Parse with a parser built as ``lung-nodule-mtl``'s (sub-parsers + register) and run the command."""
    parser = argparse.ArgumentParser(prog="lung-nodule-mtl")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def luna(tmp_path: Path) -> Path:
    """LUNA16-style tables (LPS): scan A has 2 nodules, B one, C none; an excluded finding in C."""
    d = tmp_path / "luna16"
    d.mkdir()
    (d / "annotations.csv").write_text(
        "seriesuid,coordX,coordY,coordZ,diameter_mm\nA,10,20,30,8\nA,-40,-50,60,6\nB,0,0,0,10\n"
    )
    (d / "annotations_excluded.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\nC,5,5,5,-1\n")
    return d


@pytest.fixture
def predictions(tmp_path: Path) -> Path:
    """A predict output folder (RAS): scans A, B, C, D each with <case>.json; D has no detection."""
    d = tmp_path / "pred"
    d.mkdir()
    (d / "summary.csv").write_text(
        f"{SUMMARY_HEADER}\n"
        "A,1,-10,-20,30,7,0.9,0.2\n"  # A's first nodule
        "A,2,100,100,100,5,0.8,0.1\n"  # false positive
        "B,1,1,1,1,9,0.6,0.7\n"  # B's nodule
        "C,1,-5,-5,5,3,0.95,0.5\n"  # on C's excluded finding: ignored
    )
    for case in "ABCD":
        (d / f"{case}.json").write_text(json.dumps({"case_id": case, "nodules": []}))
    (d / ".E.json.tmp.json").write_text("{}")  # an unfinished atomic write is not a scan
    return d


def test_predictions_dir_cases(predictions: Path, luna: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = predictions / "froc.json"  # written into the folder: not taken for a scan, on a rerun either
    for _ in range(2):
        argv = ["evaluate-froc", "--predictions", str(predictions), "--annotations", str(luna / "annotations.csv"),
                "--excluded", str(luna / "annotations_excluded.csv"), "--cases-from-predictions-dir",
                "--out", str(out)]  # fmt: skip
        assert run(argv) == 0
    printed = capsys.readouterr().out
    assert "scans               4 (the <case>.json files of the predictions folder)" in printed
    assert "1 false positives, ignored 1 on excluded findings and 0 double hits" in printed
    # 3 nodules; 0.9 hit, 0.8 FP (0.25 FP/scan), 0.6 hit: 1/3 below 0.25 FP/scan, 2/3 from there on
    assert "    0.125        0.333" in printed and "     0.25        0.667" in printed
    assert f"      CPM  {(1 / 3 + 6 * 2 / 3) / 7:11.3f}" in printed
    result = json.loads(out.read_text())
    assert (result["n_scans"], result["n_annotations"], result["n_detected"]) == (4, 3, 2)
    assert result["sensitivity"]["0.125"] == pytest.approx(1 / 3) and result["sensitivity"]["8"] == pytest.approx(2 / 3)
    assert result["inputs"]["scans_from"] == "predictions_dir"
    assert result["inputs"]["predictions"] == str(predictions / "summary.csv")
    assert result["curve"]["thresholds"][0] is None
    assert "operating_point" not in result
    # --operating-point: 0.9 hit (0 FP/scan), 0.8 false positive, 0.6 hit: with at most 0.25 FP/scan both hits count
    argv += ["--operating-point", "0.25"]
    assert run(argv) == 0
    assert "--threshold 0.600: sensitivity 0.667 at 0.25 false positives per scan" in capsys.readouterr().out
    assert json.loads(out.read_text())["operating_point"]["threshold"] == pytest.approx(0.6)  # nothing below 0.6
    assert run([*argv[:-1], "0.1"]) == 0  # only the 0.9 hit within 0.1 FP/scan: half-way to 0.8
    assert "--threshold 0.850: sensitivity 0.333 at 0.00 false positives" in capsys.readouterr().out


def test_scans_of_the_tables(predictions: Path, luna: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # without the flag: every case of the three tables (A, B, C), D is not seen; the CSV given directly
    argv = ["evaluate-froc", "--predictions", str(predictions / "summary.csv"),
            "--annotations", str(luna / "annotations.csv"),
            "--excluded", str(luna / "annotations_excluded.csv")]  # fmt: skip
    assert run(argv) == 0
    printed = capsys.readouterr().out
    assert "scans               3 (every case of the tables)" in printed
    assert "written to" not in printed


def test_bootstrap(predictions: Path, luna: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res" / "froc.json"
    argv = ["evaluate-froc", "--predictions", str(predictions), "--annotations", str(luna / "annotations.csv"),
            "--bootstrap", "200", "--seed", "1", "--out", str(out)]  # fmt: skip
    assert run(argv) == 0
    assert "95% CI (" in capsys.readouterr().out
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    boot = json.loads(text)["bootstrap"]
    assert boot["n_samples"] == 200 and boot["seed"] == 1 and boot["cpm"]["ci_low"] <= boot["cpm"]["ci_high"]


def test_luna16_submission(luna: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sub = tmp_path / "submission.csv"  # LPS, the score in 'probability'
    sub.write_text("seriesuid,coordX,coordY,coordZ,probability\nA,10,20,30,0.7\nA,-40,-50,60,0.7\nB,1,1,1,0.7\n")
    assert run(["evaluate-froc", "--predictions", str(sub), "--annotations", str(luna / "annotations.csv")]) == 0
    assert f"      CPM  {1:11.3f}" in capsys.readouterr().out


def test_prediction_dir_cases(predictions: Path, caplog: pytest.LogCaptureFixture) -> None:
    from lung_nodule_mtl.metrics.froc import prediction_dir_cases

    (predictions / "settings.json").write_text('{"threshold": 0.5}')  # JSON, but not a report
    (predictions / "broken.json").write_text("{")
    (predictions / "E.json").write_text('{"nodules": []}')  # no case_id: the stem
    (predictions / "qc").mkdir()
    (predictions / "qc" / "F.json").write_text('{"case_id": "F", "nodules": []}')  # not at the top level
    assert prediction_dir_cases(predictions) == ["A", "B", "C", "D", "E"]
    assert "broken.json: not a readable JSON report, skipped" in caplog.text
    with pytest.raises(ValueError, match=r"no <case>\.json reports"):
        prediction_dir_cases(predictions.parent)
    with pytest.raises(FileNotFoundError, match="predictions folder not found"):
        prediction_dir_cases(predictions / "nowhere")


def test_bad_input(predictions: Path, luna: Path, tmp_path: Path) -> None:
    ann = str(luna / "annotations.csv")
    with pytest.raises(ValueError, match="needs a predictions folder"):
        run(["evaluate-froc", "--predictions", str(predictions / "summary.csv"), "--annotations", ann,
             "--cases-from-predictions-dir"])  # fmt: skip
    (predictions / "D.json").unlink()
    (predictions / "B.json").unlink()
    with pytest.raises(ValueError, match=r"detections of 1 cases without a <case>\.json .* e\.g\. 'B'"):
        run(["evaluate-froc", "--predictions", str(predictions), "--annotations", ann, "--cases-from-predictions-dir"])
    with pytest.raises(FileNotFoundError, match=r"no summary\.csv"):
        run(["evaluate-froc", "--predictions", str(tmp_path), "--annotations", ann])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run(["evaluate-froc", "--predictions", str(tmp_path / "nowhere"), "--annotations", ann])
    no_score = tmp_path / "no_score.csv"
    no_score.write_text("case_id,center_x_mm,center_y_mm,center_z_mm\nA,1,2,3\n")
    with pytest.raises(ValueError, match=r"no_score\.csv line 2: no detection score"):
        run(["evaluate-froc", "--predictions", str(no_score), "--annotations", ann])
    with pytest.raises(ValueError, match="--bootstrap must be >= 0"):
        run(["evaluate-froc", "--predictions", str(no_score), "--annotations", ann, "--bootstrap", "-1"])
    with pytest.raises(SystemExit) as e:
        run(["evaluate-froc", "--annotations", ann])  # --predictions is required
    assert e.value.code == 2


def test_main_entry_point(predictions: Path, luna: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through ``lung-nodule-mtl`` itself, once cli/main.py registers the subcommand."""
    from lung_nodule_mtl.cli.main import build_parser, main

    if "evaluate-froc" not in build_parser().format_help():
        pytest.skip("evaluate-froc is not registered in lung_nodule_mtl.cli.main yet")
    ann = str(luna / "annotations.csv")
    assert main(["evaluate-froc", "--predictions", str(predictions), "--annotations", ann]) == 0
    assert "CPM" in capsys.readouterr().out
    missing = predictions / "nothing.csv"
    assert main(["evaluate-froc", "--predictions", str(missing), "--annotations", ann]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lung-nodule-mtl evaluate-froc: error:") and str(missing) in err[0]


def test_mine_negatives_writes_the_false_positives_as_a_candidates_table(
    predictions: Path, luna: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lung_nodule_mtl.data.scans import read_negatives

    (predictions / "summary.csv").write_text(
        (predictions / "summary.csv").read_text()
        + "D,1,3,4,5,6,0.3,0.1\n"  # D: read (its <case>.json), no nodules: a false positive
        + "E,1,0,0,0,6,0.99,0.1\n"  # E: neither annotated nor a case of the folder: left out
    )
    out = tmp_path / "neg" / "negatives.csv"
    out.parent.mkdir()
    argv = ["mine-negatives", "--predictions", str(predictions), "--annotations", str(luna / "annotations.csv"),
            "--excluded", str(luna / "annotations_excluded.csv"), "--out", str(out)]  # fmt: skip
    assert run(argv) == 0
    assert "2 false positives of 4 scans" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    # LUNA16 candidates layout, LPS: the RAS centres (100, 100, 100) and (3, 4, 5) with x and y negated
    assert lines == [
        "seriesuid,coordX,coordY,coordZ,class,probability",
        "A,-100.0,-100.0,100.0,0,0.8",
        "D,-3.0,-4.0,5.0,0,0.3",
    ]
    assert read_negatives(out) == {"A": [[100.0, 100.0, 100.0]], "D": [[3.0, 4.0, 5.0]]}  # back to RAS
    assert not list(out.parent.glob("*.tmp*"))  # written atomically

    assert run([*argv[:-2], "--min-probability", "0.5", "--out", str(out)]) == 0
    assert out.read_text().splitlines()[1:] == ["A,-100.0,-100.0,100.0,0,0.8"]
    with pytest.raises(ValueError, match="min-probability"):
        run([*argv, "--min-probability", "1.5"])
