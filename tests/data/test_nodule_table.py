"""Nodule tables: LUNA16 annotations and candidates (LPS) and the project's predictions (RAS), one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lung_nodule_mtl.data.nodule_table import NODULE_TABLE_FORMATS, NoduleRecord, NoduleTableError, read_nodule_table

LUNA_HEADER = "seriesuid,coordX,coordY,coordZ,diameter_mm"


def write(tmp_path: Path, text: str, name: str = "table.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_luna16_annotations_lps_to_ras(tmp_path: Path) -> None:
    # CRLF line ends and a byte-order mark, as some LUNA16 copies have
    rows = ["1.2.3,-128.5,-175.25,-298.4,5.65", "", "4.5.6,103.75,-211.9,-227.1,4.2", "1.2.3,1,2,3,10"]
    text = "\ufeff" + "\r\n".join([LUNA_HEADER, *rows]) + "\r\n"
    table = read_nodule_table(write(tmp_path, text))
    assert list(table) == ["1.2.3", "4.5.6"]
    first = table["1.2.3"][0]
    assert first == NoduleRecord(case_id="1.2.3", center_ras_mm=(128.5, 175.25, -298.4), diameter_mm=5.65, row=2)
    assert table["4.5.6"][0].row == 4  # line numbers count blank lines and the header
    assert table["1.2.3"][1].center_ras_mm == (-1.0, -2.0, 3.0)
    assert all(r.probability is None and r.nodule_id is None and r.label is None for r in table["1.2.3"])


def test_excluded_unknown_diameter(tmp_path: Path) -> None:
    text = f"{LUNA_HEADER}\n1.2.3,-131.9,-155.1,-317.8,-1\n1.2.3,80.8,-109.3,-123.4,4.7\n"
    recs = read_nodule_table(write(tmp_path, text, "annotations_excluded.csv"))["1.2.3"]
    assert [r.diameter_mm for r in recs] == [None, 4.7]


def test_luna16_candidates_and_submission(tmp_path: Path) -> None:
    sub = read_nodule_table(write(tmp_path, "seriesuid,coordX,coordY,coordZ,probability\n1.2,1,2,3,0.25\n"))
    assert sub["1.2"][0].probability == 0.25 and sub["1.2"][0].diameter_mm is None
    assert sub["1.2"][0].center_ras_mm == (-1.0, -2.0, 3.0)
    cands = read_nodule_table(write(tmp_path, "seriesuid,coordX,coordY,coordZ,class\n1.2,1,2,3,1\n1.2,4,5,6,0\n"))
    assert [(r.label, r.probability) for r in cands["1.2"]] == [(1, None), (0, None)]


def test_predictions_summary_ras(tmp_path: Path) -> None:
    text = (
        "case_id,nodule_id,center_x_mm,center_y_mm,center_z_mm,diameter_mm,volume_mm3,detection_probability,"
        "malignancy_probability,mask\n"
        "SYN-0001,1,10.5,-20,30,6.2,125.0,0.93,0.4,SYN-0001_1.nii.gz\n"
        "SYN-0001,2,1,2,3,,,0.12,,\n"
        "SYN-0002,1,-1,-2,-3,4,33.5,0.5,0.9,SYN-0002_1.nii.gz\n"
    )
    table = read_nodule_table(write(tmp_path, text, "summary.csv"))
    assert table["SYN-0001"][0] == NoduleRecord(
        case_id="SYN-0001", center_ras_mm=(10.5, -20.0, 30.0), diameter_mm=6.2, probability=0.93, row=2, nodule_id="1"
    )
    assert (table["SYN-0001"][1].diameter_mm, table["SYN-0001"][1].probability) == (None, 0.12)
    assert table["SYN-0002"][0].center_ras_mm == (-1.0, -2.0, -3.0)
    minimal = read_nodule_table(write(tmp_path, "case_id,center_x_mm,center_y_mm,center_z_mm\na,1,2,3\n"))
    assert minimal == {"a": [NoduleRecord(case_id="a", center_ras_mm=(1.0, 2.0, 3.0), row=2)]}


def test_header_only_is_empty(tmp_path: Path) -> None:
    assert read_nodule_table(write(tmp_path, f"{LUNA_HEADER}\n")) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{LUNA_HEADER}\n1.2,1,2,3,4\n1.2,1,abc,3,4\n", "table.csv line 3: coordY 'abc' is not a number."),
        (f"{LUNA_HEADER}\n1.2,1,2,nan,4\n", "table.csv line 2: coordZ 'nan' is not a finite number."),
        (f"{LUNA_HEADER}\n1.2,1,2,3,inf\n", "table.csv line 2: diameter_mm 'inf' is not a finite number."),
        (f"{LUNA_HEADER}\n1.2,1,2,3,-2\n", "table.csv line 2: diameter_mm '-2' is negative (only -1, 'unknown', is"),
        (f"{LUNA_HEADER}\n,1,2,3,4\n", "table.csv line 2: seriesuid is empty."),
        (f"{LUNA_HEADER}\n1.2,1,2,3\n", "table.csv line 2: expected 5 fields as in the header, got 4."),
        (f"{LUNA_HEADER}\n1.2,1,2,3,4,5\n", "table.csv line 2: expected 5 fields"),
        ("seriesuid,coordX,coordY,coordZ,probability\n1.2,1,2,3,high\n", "line 2: probability 'high' is not a"),
        ("seriesuid,coordX,coordY,coordZ,class\n1.2,1,2,3,2\n", "line 2: class '2' is not 0 or 1."),
        ("case_id,center_x_mm,center_y_mm,center_z_mm,detection_probability\na,1,2,3,x\n", "detection_probability 'x'"),
        ("seriesuid,coordX,coordY,coordZ\n1.2,1,2,3\n", "line 1: a LUNA16 table needs diameter_mm"),
        ("seriesuid,coordX,coordX,coordZ,diameter_mm\n", "line 1: column 'coordX' appears twice."),
        ("", "table.csv is empty: expected a header line"),
        ("\n\n", "table.csv is empty"),
    ],
)
def test_ill_table(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(NoduleTableError) as e:
        read_nodule_table(write(tmp_path, text))
    msg = str(e.value)
    assert message in msg and "\n" not in msg and str(tmp_path / "table.csv") in msg
    assert isinstance(e.value, ValueError)


def test_unknown_header_lists_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="line 1: unknown header 'id,x,y,z'; accepted columns: ") as e:
        read_nodule_table(write(tmp_path, "id,x,y,z\n1,2,3,4\n"))
    assert all(columns in str(e.value) for columns in NODULE_TABLE_FORMATS.values())


def test_not_a_table(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no_such\.csv"):
        read_nodule_table(tmp_path / "no_such.csv")
    with pytest.raises(NoduleTableError, match="is a folder"):
        read_nodule_table(tmp_path)
    with pytest.raises(NoduleTableError, match="not a UTF-8 text file"):
        read_nodule_table(write(tmp_path, f"{LUNA_HEADER}\nsérie,1,2,3,4\n", encoding="latin-1"))


def test_synthetic_scans_annotations(tmp_path: Path) -> None:
    """The synthetic whole scans' LUNA16 table: seriesuid = image file stem, centres inside the nodule masks."""
    from lung_nodule_mtl.data.synthetic import synthesize_dataset

    out = tmp_path / "scans"
    synthesize_dataset(out, cases=2, mode="scans", n_folds=2, test_fraction=0.0, scan_shape=(96, 96, 48))
    table = read_nodule_table(out / "annotations.csv")
    assert sorted(table) == sorted(p.name.removesuffix(".nii.gz") for p in (out / "images").glob("*.nii.gz"))
    datalist = json.loads((out / "datalist.json").read_text())
    items = [i for split in ("training", "validation", "test") for i in datalist.get(split, [])]
    assert sum(len(v) for v in table.values()) == len(items)
    centres = {(i["seriesuid"], round(i["diameter_mm"], 3)): i["center_world_mm"] for i in items}
    for case, records in table.items():
        label = nib.load(out / "labels" / f"{case}.nii.gz")
        mask, inverse = np.asarray(label.dataobj), np.linalg.inv(label.affine)
        for r in records:
            assert r.diameter_mm is not None
            np.testing.assert_allclose(r.center_ras_mm, centres[(case, round(r.diameter_mm, 3))], atol=1e-3)
            ijk = np.rint(inverse @ [*r.center_ras_mm, 1.0])[:3].astype(int)
            assert mask[tuple(ijk)] == 1


@pytest.mark.real_data
def test_real_luna16_tables(shared_data: Path) -> None:
    folder = shared_data / "luna16"
    if not (folder / "annotations.csv").is_file():
        pytest.skip(f"LUNA16 annotation tables not found in {folder}")
    ann = read_nodule_table(folder / "annotations.csv")
    assert (len(ann), sum(len(v) for v in ann.values())) == (601, 1186)
    assert all(r.diameter_mm is not None and r.diameter_mm > 0 for v in ann.values() for r in v)
    excl = read_nodule_table(folder / "annotations_excluded.csv")
    records = [r for v in excl.values() for r in v]
    assert (len(excl), len(records)) == (888, 35192)
    assert sum(r.diameter_mm is None for r in records) == 30513
    # the two tables cover the 888 LUNA16 scans
    assert set(ann) <= set(excl) and len(set(ann) | set(excl)) == 888
