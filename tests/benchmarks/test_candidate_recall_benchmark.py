"""benchmarks/candidate_recall.py on a phantom with two nodules and a stand-in network that segments dense tissue
in the lungs: both nodules are candidates on every grid, counted per grid and written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType

import nibabel as nib
import pytest
import torch

from lung_nodule_mtl.constants import OutputKeys
from lung_nodule_mtl.data.synthetic.phantom import PhantomNodule, chest_phantom
from lung_nodule_mtl.inference import ScanPredictor

NODULES = (PhantomNodule((-40.0, 10.0, 5.0), 12.0), PhantomNodule((35.0, -5.0, -20.0), 7.0))


class DenseTissueNet(torch.nn.Module):
    """The mask is positive above -410 HU in the lung window (the inference tests' stand-in), nothing else."""

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        return 40.0 * (x[:, :1] - 0.42)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {str(OutputKeys.MASK): self.segment(x)}


@pytest.fixture
def bench(load_benchmark) -> Iterator[ModuleType]:
    with load_benchmark("candidate_recall") as module:
        yield module


def test_counts_the_nodules_each_grid_makes_candidates(bench, tmp_path, monkeypatch, capsys) -> None:
    from lung_nodule_mtl.inference import bundle

    image, affine, _ = chest_phantom(shape=(150, 120, 48), spacing_mm=(0.9, 0.9, 2.5), nodules=NODULES, lps=True)
    (tmp_path / "scans").mkdir()
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "scans" / "p.nii.gz")
    rows = [f"p,{-n.center_ras_mm[0]},{-n.center_ras_mm[1]},{n.center_ras_mm[2]},{n.diameter_mm}" for n in NODULES]
    table = tmp_path / "annotations.csv"
    table.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n" + "\n".join(rows) + "\n", encoding="utf-8")

    def fake_loader(bundle_dir, overrides):
        net = DenseTissueNet()
        return ScanPredictor(net, patch_size=(32, 32, 32), max_diameter_mm=40.0, device="cpu"), None

    monkeypatch.setattr(bundle, "load_scan_predictor", fake_loader)
    out = tmp_path / "recall.json"
    args = ["--images", str(tmp_path / "scans"), "--annotations", str(table), "--overlaps", "0.25", "0.5"]
    assert bench.main([*args, "--shifted", "--out", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["nodules"] == 2
    names = [f"overlap {o}{s}" for o in ("0.25", "0.5") for s in ("", ", shifted", ", both")]
    assert sorted(result["grids"]) == sorted(names)
    for name in names:
        assert result["grids"][name]["found"] == 2  # a threshold on HU finds both wherever the windows fall
        assert result["grids"][name]["candidates"] >= 2
    assert result["per_scan"][0]["case"] == "p"
    assert result["grids"]["overlap 0.5"]["seconds"] > 0
    assert "overlap 0.25, both" in capsys.readouterr().out
