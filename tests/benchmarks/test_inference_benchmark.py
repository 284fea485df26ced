"""benchmarks/inference.py on a tiny phantom scan: both pipelines run, and the report holds what it promises."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lung_nodule_mtl.data.synthetic.phantom import PhantomNodule, chest_phantom

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "inference.py"


@pytest.mark.slow
def test_inference_benchmark_runs_ours_and_stock_side_by_side(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("lnm_inference_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    try:
        spec.loader.exec_module(bench)
        image, affine, _ = chest_phantom(
            shape=(150, 120, 40), spacing_mm=(1.6, 1.6, 2.5), nodules=(PhantomNodule((-35.0, 5.0, 0.0), 10.0),)
        )
        scan = tmp_path / "phantom.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), scan)
        out = tmp_path / "result.json"
        argv = ["--scans", str(scan), "--repeats", "1", "--work-dir", str(tmp_path / "work"), "--json", str(out)]
        assert bench.main(argv) == 0
    finally:
        sys.modules.pop(spec.name, None)
    result = json.loads(out.read_text())
    assert result["machine"]["usable_cores"] >= 1 and result["device_rate"]["conv3d_fp32"] > 0
    assert result["flops"]["window"] > 1e9  # 48^3 windows of the bundle's network: GFLOPs each
    (scan_result,) = result["results"]
    summary = scan_result["summary"]
    assert set(summary) == {"ours", "ours, overlap 0.5", "stock"}
    for s in summary.values():
        assert s["wall_s"] > 0 and s["peak_rss_gib"] > 0.1 and s["windows"] > 0
        assert {"read", "resample", "sliding_window", "restore_grid", "write"} <= set(s["stages_s"])
    # the stock pipeline slides over the whole volume at overlap 0.5: more windows than ours at the same overlap
    assert summary["stock"]["windows"] > summary["ours, overlap 0.5"]["windows"] > summary["ours"]["windows"]
    for label in ("ours", "ours, overlap 0.5"):
        agreement = scan_result["agreement"][label]
        assert "dice_lungs" in agreement and "dice_outputs" in agreement
    # at the stock pipeline's overlap only the precision differs inside the lungs
    dice = scan_result["agreement"]["ours, overlap 0.5"]["dice_lungs"]
    assert dice is None or dice > 0.9
    labels = np.asarray(nib.load(scan_result["runs"]["ours"][0]["labels"]).dataobj)
    assert labels.shape == image.shape
