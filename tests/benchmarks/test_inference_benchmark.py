"""benchmarks/inference.py on a tiny phantom scan: both pipelines run, and the report holds what it promises."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lung_nodule_mtl.data.synthetic.phantom import PhantomNodule, chest_phantom

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_inference_benchmark_runs_ours_and_stock_side_by_side(tmp_path, load_benchmark) -> None:
    with load_benchmark("inference") as bench:
        image, affine, _ = chest_phantom(
            shape=(150, 120, 40), spacing_mm=(1.6, 1.6, 2.5), nodules=(PhantomNodule((-35.0, 5.0, 0.0), 10.0),)
        )
        scan = tmp_path / "phantom.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), scan)
        out = tmp_path / "result.json"
        argv = ["--scans", str(scan), "--repeats", "1", "--float32", "--work-dir", str(tmp_path / "work")]
        argv += ["--json", str(out)]
        # this checkout as its own reference: the comparison must find the same answer
        assert bench.main([*argv, "--reference", str(REPO), "--reference-label", "same checkout"]) == 0
    result = json.loads(out.read_text())
    assert result["machine"]["usable_cores"] >= 1 and result["device_rate"]["conv3d_fp32"] > 0
    assert result["flops"]["window"] > 1e9  # 48^3 windows of the bundle's network: GFLOPs each
    (scan_result,) = result["results"]
    summary = scan_result["summary"]
    assert set(summary) == {"ours", "ours, overlap 0.5", "ours, float32", "ours, same checkout", "stock"}
    for s in summary.values():
        assert s["wall_s"] > 0 and s["peak_rss_gib"] > 0.1 and s["windows"] > 0
        assert {"read", "resample", "sliding_window", "restore_grid", "write"} <= set(s["stages_s"])
    # the stock pipeline slides over the whole volume at overlap 0.5: more windows than ours at the same overlap
    assert summary["stock"]["windows"] > summary["ours, overlap 0.5"]["windows"] > summary["ours"]["windows"]
    for label in ("ours", "ours, overlap 0.5", "ours, float32"):
        agreement = scan_result["agreement"][label]
        assert "dice_lungs" in agreement and "dice_outputs" in agreement
    # at the stock pipeline's overlap only the precision differs inside the lungs
    dice = scan_result["agreement"]["ours, overlap 0.5"]["dice_lungs"]
    assert dice is None or dice > 0.9
    labels = np.asarray(nib.load(scan_result["runs"]["ours"][0]["labels"]).dataobj)
    assert labels.shape == image.shape

    # against another checkout: the same code gives the same nodules, label maps and mask
    same = scan_result["agreement"]["ours, same checkout"]["vs_ours"]
    assert same["same_nodules"] and same["identical_label_maps"] and same["nodules"] == same["nodules_reference"]
    assert same["dice_outputs"] in (None, 1.0) and same["max_abs_prob_diff_lungs"] in (None, 0.0)
    # and a changed answer is seen: one nodule's probability moved, one voxel of the label map changed
    runs = scan_result["runs"]
    ours_run, ref_run = runs["ours"][0], runs["ours, same checkout"][0]
    ref_labels = Path(ref_run["labels"])
    report_file = next(p for p in ref_labels.parent.glob("*.json"))
    report = json.loads(report_file.read_text())
    assert report["nodules"], "the phantom's nodule is found"
    report["nodules"][0]["detection_probability"] -= 0.05
    report_file.write_text(json.dumps(report))
    changed = np.asarray(nib.load(ref_labels).dataobj).copy()
    changed[0, 0, 0] = 1 - min(int(changed[0, 0, 0]), 1)
    nib.save(nib.Nifti1Image(changed, nib.load(ref_labels).affine), ref_labels)
    maps = sorted((tmp_path / "work").glob("*_maps.npz"))
    moved = bench.compare_outputs(scan, ours_run, ref_run, maps[0], maps[0])
    assert not moved["same_nodules"] and not moved["identical_label_maps"]
