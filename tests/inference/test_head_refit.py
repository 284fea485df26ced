"""Refitting the detection head on annotated scans: the samples, the fit, the weights written (nothing else moves)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from lung_nodule_mtl.constants import OutputKeys
from lung_nodule_mtl.data.nodule_table import NoduleRecord
from lung_nodule_mtl.inference import ScanPredictor
from lung_nodule_mtl.inference.fusion import FUSION_FILE, fusion_beside, weights_fingerprint
from lung_nodule_mtl.inference.head_refit import (
    HEAD_PREFIX,
    HeadSamples,
    collect_head_samples,
    fit_detection_head,
    head_scores,
    write_refit_checkpoint,
)


class NeckNet(nn.Module):
    """Stand-in multi-task network with a neck and a detection head: the mask is positive above -410 HU in the lung
    window (as the inference tests' ThresholdNet); the neck sees the crop's foreground share, that of its central
    8 voxels (a compact blob at the centre, a nodule, and a vessel's cross-section differ there) and that of the
    crop's first half along the first axis (so the mirror images differ)."""

    def __init__(self) -> None:
        super().__init__()
        self.neck = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        with torch.no_grad():  # a fixed, informative neck: each share, and the centre's complement
            self.neck[0].weight.copy_(torch.tensor([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0], [0, -10.0, 0]]))
            self.neck[0].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 10.0]))
        self.heads = nn.ModuleDict(
            {str(OutputKeys.NODULE): nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Dropout(0.0), nn.Linear(3, 1))}
        )
        self.calls = 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        mask = 40.0 * (x[:, :1] - 0.42)
        fg = (mask > 0).float()
        h, w, d = (s // 2 for s in fg.shape[2:])
        centre = fg[:, 0, h - 4 : h + 4, w - 4 : w + 4, d - 4 : d + 4].mean(dim=(1, 2, 3))
        first = fg[:, 0, :h].mean(dim=(1, 2, 3))
        z = self.neck(torch.stack([10.0 * fg.mean(dim=(1, 2, 3, 4)), centre, first], dim=1))
        return {str(OutputKeys.MASK): mask, str(OutputKeys.NODULE): self.heads[str(OutputKeys.NODULE)](z)}


@pytest.fixture(scope="module")
def scan(vessel_phantom) -> tuple[MetaTensor, list[NoduleRecord]]:
    return vessel_phantom


def _predictor(net: nn.Module | None = None) -> ScanPredictor:
    torch.manual_seed(0)
    return ScanPredictor(net or NeckNet(), patch_size=(32, 32, 32), max_diameter_mm=40.0, device="cpu")


@pytest.fixture(scope="module")
def samples(scan) -> HeadSamples:
    image, records = scan
    return collect_head_samples(_predictor(), image, "phantom", records, jitter=2, seed=3)


def test_samples_are_the_candidates_and_the_annotated_centres(scan, samples) -> None:
    _, records = scan
    kinds = samples.kinds.tolist()
    assert kinds.count("annotation") == 2 * 3  # each nodule's centre and 2 jittered copies
    assert samples.features.shape == (len(samples), 8, 4)
    assert samples.case_ids.tolist() == ["phantom"] * len(samples)
    ann = samples.kinds == "annotation"
    assert samples.labels[ann].tolist() == [1.0] * 6
    for k, record in enumerate(records):  # the copies stay within 2 mm and a quarter of the diameter
        rows = samples.centres_ras[ann][3 * k : 3 * k + 3]
        moved = np.linalg.norm(rows - np.asarray(record.center_ras_mm), axis=1)
        assert moved[0] == 0.0 and np.all((moved[1:] >= 0.5 - 1e-9) & (moved[1:] <= min(2.0, record.diameter_mm / 4)))
    cand = samples.kinds == "candidate"
    centres = samples.centres_ras[cand]
    inside = [np.linalg.norm(centres - np.asarray(r.center_ras_mm), axis=1) < r.diameter_mm / 2 for r in records]
    assert all(hit.any() for hit in inside)  # both nodules are candidates of the mask, labelled nodules
    assert samples.labels[cand].tolist() == np.logical_or(*inside).astype(float).tolist()
    assert (samples.labels[cand] == 0).sum() >= 1  # the vessel: a negative
    # the identity image first: its features are those of one pass of the network on the crop
    assert not np.allclose(samples.features[:, 0], samples.features[:, 1:].mean(axis=1))


def test_excluded_findings_and_the_diameter_floor(scan, samples) -> None:
    image, records = scan
    fewer = collect_head_samples(_predictor(), image, "phantom", records[:1], excluded=records[1:], jitter=0)
    cand = fewer.kinds == "candidate"
    near = np.linalg.norm(fewer.centres_ras[cand] - np.asarray(records[1].center_ras_mm), axis=1)
    assert not (near < records[1].diameter_mm / 2).any()  # the excluded nodule's candidate is left out, not a negative
    assert (fewer.kinds == "annotation").sum() == 1
    n_default = (samples.kinds == "candidate").sum()
    small_too = collect_head_samples(_predictor(), image, "phantom", records, jitter=0, min_diameter_mm=0.5)
    assert (small_too.kinds == "candidate").sum() >= n_default
    assert small_too.diameters_mm[small_too.kinds == "candidate"].min() < 3.0 or (
        (small_too.kinds == "candidate").sum() == n_default
    )
    with pytest.raises(ValueError, match="jitter"):
        collect_head_samples(_predictor(), image, "phantom", records, jitter=-1)


def test_a_network_without_detection_head_is_refused(scan, threshold_net) -> None:
    image, records = scan
    with pytest.raises(ValueError, match="no detection head"):
        collect_head_samples(_predictor(threshold_net()), image, "phantom", records)


def test_fit_separates_the_training_crops_and_leaves_the_given_head_alone(samples, tmp_path) -> None:
    head = NeckNet().heads[str(OutputKeys.NODULE)]
    with torch.no_grad():  # start from a head that ranks the vessel above the nodules
        if head_scores(head, samples.features)[samples.labels == 1].mean() > head_scores(head, samples.features).mean():
            head[3].weight.neg_()
            head[3].bias.neg_()
    original = {k: v.clone() for k, v in head.state_dict().items()}
    trained, summary = fit_detection_head(head, samples, epochs=150, learning_rate=0.05, seed=0)
    assert all(torch.equal(v, head.state_dict()[k]) for k, v in original.items())
    assert summary["positive_crops"] == int(samples.labels.sum())
    assert summary["negative_crops"] == len(samples) - summary["positive_crops"]
    assert summary["training_crop_auc_before"] < 0.5 and summary["training_crop_auc_after"] >= 0.95
    scores = head_scores(trained, samples.features)
    assert scores[samples.labels == 1].mean() > scores[samples.labels == 0].mean() + 0.3
    one_pass = head_scores(trained, samples.features, mirror_above=None)
    always = head_scores(trained, samples.features, mirror_above=0.0)
    gated = head_scores(trained, samples.features, mirror_above=0.5)
    assert np.allclose(gated, np.where(one_pass >= 0.5, always, one_pass))
    # the same seed, the same head; save / load keeps the samples
    again, _ = fit_detection_head(head, samples, epochs=150, learning_rate=0.05, seed=0)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in trained.state_dict().items())
    samples.save(tmp_path / "s.npz")
    back = HeadSamples.load(tmp_path / "s.npz")
    assert np.array_equal(back.features, samples.features) and back.kinds.tolist() == samples.kinds.tolist()
    with pytest.raises(ValueError, match="nodules and non-nodules"):
        only = HeadSamples.concatenate([back])
        only.labels[:] = 1.0
        fit_detection_head(head, only)


def test_refit_weights_change_only_the_head_and_keep_the_fusion(samples, tmp_path) -> None:
    net = NeckNet()
    src = tmp_path / "models" / "model.pt"
    src.parent.mkdir()
    torch.save(net.state_dict(), src)
    fusion = {"kind": "test", "fitted_on": {"weights": weights_fingerprint(src)}, "malignancy": None}
    (src.parent / FUSION_FILE).write_text(json.dumps(fusion), encoding="utf-8")
    trained, _ = fit_detection_head(net.heads[str(OutputKeys.NODULE)], samples, epochs=20, learning_rate=0.05)
    out = tmp_path / "refit" / "model.pt"
    result = write_refit_checkpoint(src, trained, out)
    before = torch.load(src, weights_only=True)
    after = torch.load(out, weights_only=True)
    assert sorted(before) == sorted(after)
    for k in before:
        if k.startswith(HEAD_PREFIX):
            assert torch.equal(after[k], trained.state_dict()[k[len(HEAD_PREFIX) :]])
        else:
            assert torch.equal(after[k], before[k])
    assert result["tensors_replaced"] and all(k.startswith(HEAD_PREFIX) for k in result["tensors_replaced"])
    moved = json.loads((out.parent / FUSION_FILE).read_text(encoding="utf-8"))
    assert moved["fitted_on"]["weights"] == weights_fingerprint(out)
    assert moved["fitted_on"]["weights_before_head_refit"] == weights_fingerprint(src)
    assert fusion_beside(out) == str(out.parent / FUSION_FILE)  # used with the new weights, without a warning
    # the weights a refit comes from, and their fusion, are never overwritten
    with pytest.raises(ValueError, match="must not overwrite"):
        write_refit_checkpoint(src, trained, src)
    with pytest.raises(ValueError, match="another folder"):
        write_refit_checkpoint(src, trained, src.parent / "other.pt")
    assert json.loads((src.parent / FUSION_FILE).read_text(encoding="utf-8")) == fusion
    # a nested checkpoint ({"model": state}) stays nested
    nested = tmp_path / "nested" / "model.pt"
    nested.parent.mkdir()
    torch.save({"model": net.state_dict(), "epoch": 3}, nested)
    write_refit_checkpoint(nested, trained, tmp_path / "nested_out" / "model.pt")
    kept = torch.load(tmp_path / "nested_out" / "model.pt", weights_only=True)
    assert kept["epoch"] == 3 and set(kept["model"]) == set(before)
    wider = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Dropout(0.0), nn.Linear(5, 1))
    with pytest.raises(ValueError, match="shape"):
        write_refit_checkpoint(src, wider, tmp_path / "bad" / "model.pt")


def test_the_command_refits_from_annotated_scans_and_reuses_their_samples(scan, tmp_path, monkeypatch, capsys) -> None:
    import nibabel as nib

    from lung_nodule_mtl.cli.main import main
    from lung_nodule_mtl.inference import bundle

    image, records = scan
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("a", "b"):  # two scans; b is taken as free of nodules (no rows)
        nib.save(nib.Nifti1Image(image[0].numpy().astype(np.int16), image.affine.numpy()), scans / f"{name}.nii.gz")
    table = tmp_path / "annotations.csv"
    rows = [f"a,{-r.center_ras_mm[0]},{-r.center_ras_mm[1]},{r.center_ras_mm[2]},{r.diameter_mm}" for r in records]
    table.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n" + "\n".join(rows) + "\n", encoding="utf-8")
    net = NeckNet()
    weights = tmp_path / "models" / "model.pt"
    weights.parent.mkdir()
    torch.save(net.state_dict(), weights)

    class Parsed:
        def get_parsed_content(self, key: str) -> str:
            assert key == "ckpt_file"
            return str(weights)

    built: list[dict] = []

    def fake_loader(bundle_dir, overrides):  # the bundle's predictor, around the stand-in network
        built.append(dict(overrides))
        return _predictor(net), Parsed()

    monkeypatch.setattr(bundle, "load_scan_predictor", fake_loader)
    out = tmp_path / "refit"
    args = ["refit-detection-head", "--scans", str(scans), "--annotations", str(table), "--out", str(out)]
    assert main([*args, "--device", "cpu", "--epochs", "30", "--lr", "0.05"]) == 0
    assert built == [{"device_name": "cpu"}]
    summary = json.loads((out / "head_refit.json").read_text(encoding="utf-8"))
    assert summary["n_scans"] == 2 and summary["n_scans_without_annotations"] == 1
    a = HeadSamples.load(out / "samples" / "a.npz")
    assert (a.kinds == "annotation").sum() == 2 * 3  # a's two nodules and 2 moved copies of each
    assert summary["positive_crops"] == 6 + int(a.labels[a.kinds == "candidate"].sum()) > 6  # + their candidates
    assert summary["weights_before"] == weights_fingerprint(weights)
    assert summary["weights"] == weights_fingerprint(out / "model.pt")
    assert sorted(p.name for p in (out / "samples").glob("*.npz")) == ["a.npz", "b.npz"]
    b = HeadSamples.load(out / "samples" / "b.npz")
    assert (b.kinds == "annotation").sum() == 0 and b.labels.sum() == 0 and len(b) > 0
    assert "Detection head refit" in capsys.readouterr().out
    calls = net.calls
    assert main([*args, "--device", "cpu", "--epochs", "5"]) == 0  # the cached samples: no forward pass
    assert net.calls == calls
    assert main([*args, "--device", "cpu", "--epochs", "5", "--jitter", "1"]) == 0  # other samples: computed again
    assert net.calls > calls
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\nzz,0,0,0,5\n", encoding="utf-8")
    assert main(["refit-detection-head", "--scans", str(scans), "--annotations", str(wrong), "--out", str(out)]) == 1
    assert "none of its case ids (zz" in capsys.readouterr().err
