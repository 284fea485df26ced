"""train_scans.yaml end to end on synthetic whole scans: training with pasted real-style nodules and negatives, then
whole-scan inference with the weights it wrote (the detection head scores the candidates)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundle" / "configs"
META = str(CONFIGS / "metadata.json")

TINY = {
    "patch_size": [32, 32, 32],
    "spacing_mm": [2.0, 2.0, 2.0],
    "network_def#init_filters": 4,
    "batch_size": 4,
    "num_workers": 0,
    "epochs": 2,
    "val_interval": 100,
    "scan_windows_per_epoch": 16,
}


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lung_nodule_mtl.data.synthetic import synthesize_dataset

    out = tmp_path_factory.mktemp("scans")
    synthesize_dataset(out, cases=2, seed=5, mode="scans", n_folds=2, test_fraction=0.0, scan_shape=(96, 96, 40))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, dataset: Path, scans: Path) -> Path:
    from monai.bundle import run

    root = tmp_path_factory.mktemp("scan_bundle_root")
    run(
        "training",
        config_file=[str(CONFIGS / "train.yaml"), str(CONFIGS / "train_scans.yaml")],
        meta_file=META,
        bundle_root=str(root),
        dataset_dir=str(dataset),
        scan_datalist=str(scans),
        **TINY,
    )
    return root


def test_training_on_scans_trains_the_detection_head(trained: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    state = torch.load(trained / "models" / "model_final.pt", map_location="cpu", weights_only=True)
    state = state.get("model", state)
    assert any(k.startswith("heads.nodule.") for k in state)
    events = EventAccumulator(str(trained / "eval"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train_nodule", "train_segmentation", "train_malignancy"} <= tags
    detection = [e.value for e in events.Scalars("train_nodule")]
    assert len(detection) == 2 and all(0.0 < v < 5.0 for v in detection)  # windows with 0/1 labels were drawn


def test_scan_inferring_with_the_trained_weights(trained: Path, scans: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    image = sorted((scans / "images").glob("*.nii.gz"))[0]
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "scan_inferring",
        "--config_file", json.dumps([str(CONFIGS / "inference.yaml"), str(CONFIGS / "scan_inference.yaml")]),
        "--meta_file", META, "--bundle_root", str(trained),
        "--ckpt_file", str(trained / "models" / "model_final.pt"),
        "--input_path", str(image), "--output_dir", str(out),
        "--patch_size", "[32,32,32]", "--spacing_mm", "[2.0,2.0,2.0]", "--network_def#init_filters", "4",
        "--detection_threshold", "0.0", "--progress", "false", "--device_name", "cpu",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / f"{image.name.split('.')[0]}.json").read_text())
    assert report["settings"]["detection_score"] == "nodule head"
    scores = [n["detection_probability"] for n in report["nodules"]]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)


def test_scan_chains_listed_in_the_config_are_the_python_chains(dataset: Path, scans: Path) -> None:
    """train_scans.yaml lists its two whole-scan chains transform by transform; with one seed they give exactly the
    windows of get_scan_train_transforms (what the released weights were trained with)."""
    from monai.bundle import ConfigParser

    from lung_nodule_mtl.data.scans import join_lists, scan_items
    from lung_nodule_mtl.transforms import TRAIN_KEYS, get_scan_train_transforms

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.yaml"), str(CONFIGS / "train_scans.yaml")])
    # the per-sample path (device_augmentation false) is the Python chain exactly
    parser.update({"dataset_dir": str(dataset), "scan_datalist": str(scans), **TINY, "device_augmentation": False})
    p = {k: parser.get_parsed_content(k) for k in ("patch_size", "spacing_mm", "windows", "indeterminate", "bank")}
    common = {"roi_size": p["patch_size"], "spacing_mm": p["spacing_mm"], "windows": p["windows"]}
    scan_chain = get_scan_train_transforms(
        **common,
        bank=p["bank"],
        fractions=parser.get_parsed_content("window_fractions"),
        insert_prob=parser.get_parsed_content("insert_prob"),
        max_shift_mm=parser.get_parsed_content("max_shift_mm"),
        anywhere_shift_mm=parser.get_parsed_content("anywhere_shift_mm"),
        indeterminate=p["indeterminate"],
        select_keys=TRAIN_KEYS,
    )
    voi_chain = get_scan_train_transforms(
        **common,
        bank=None,
        fractions=parser.get_parsed_content("voi_window_fractions"),
        max_shift_mm=parser.get_parsed_content("max_shift_mm"),
        negative_clearance_mm=parser.get_parsed_content("voi_clearance_mm"),
        indeterminate=p["indeterminate"],
        select_keys=TRAIN_KEYS,
    )
    scan_data = join_lists(parser.get_parsed_content("scan_splits"), ["training", "validation"])[:2]
    voi_data = scan_items(parser.get_parsed_content("datalist_splits")["training"])[:2]
    for config_id, python_chain, data in (
        ("train#scan_preprocessing", scan_chain, scan_data),
        ("train#voi_window_preprocessing", voi_chain, voi_data),
    ):
        config_chain = parser.get_parsed_content(config_id)
        samples = []
        for chain in (config_chain, python_chain):
            chain.set_random_state(seed=3)
            samples.append([chain(dict(item)) for item in data for _ in range(3)])
        for a, b in zip(*samples, strict=True):
            assert set(a) == set(b) == set(TRAIN_KEYS), config_id
            for key in a:
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{config_id} {key}")
