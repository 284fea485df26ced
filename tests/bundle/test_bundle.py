"""The MONAI Bundle end to end: training, evaluating, inferring, resume and 2-process DDP, on synthetic data."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundle" / "configs"
TRAIN = str(CONFIGS / "train.yaml")
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")

# A tiny, fast variant: 32³ crops at 2 mm, 4 base filters, 1 epoch, no worker processes.
TINY = {
    "patch_size": [32, 32, 32],
    "spacing_mm": [2.0, 2.0, 2.0],
    "network_def#init_filters": 4,
    "batch_size": 2,
    "val_batch_size": 2,
    "num_workers": 0,
    "epochs": 1,
}


def _cli_overrides(overrides: dict) -> list[str]:
    return [arg for k, v in overrides.items() for arg in (f"--{k}", json.dumps(v) if isinstance(v, list) else str(v))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    """A bundle root after one epoch of ``training``."""
    from monai.bundle import run

    root = tmp_path_factory.mktemp("bundle_root")
    run("training", config_file=TRAIN, meta_file=META, bundle_root=str(root), dataset_dir=str(dataset), **TINY)
    return root


def test_training(trained: Path) -> None:
    models = trained / "models"
    assert (models / "model.pt").is_file()  # best key metric
    assert (models / "model_final.pt").is_file()
    assert (models / "checkpoint_epoch=1.pt").is_file()
    state = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("encoder") for k in state)  # a plain state dict of the network
    assert list((trained / "eval").glob("events.out.tfevents.*"))  # TensorBoard logs


RELEASED_DICE_FLOOR = 0.4
"""Mean Dice of the released weights (bundle/models/model.pt, trained on LIDC-IDRI) on the synthetic validation
nodules through ``evaluating``: measured 0.61 (per nodule 0.47-0.86); random weights give 0.008, and so does the
one-epoch model of ``trained`` (0.003: it marks the whole crop)."""


def test_evaluating(trained: Path, dataset: Path, tmp_path: Path) -> None:
    from monai.bundle import run

    def evaluate(out: Path, **overrides) -> tuple[dict, list[dict]]:
        run(
            "evaluating",
            config_file=[TRAIN, str(CONFIGS / "evaluate.yaml")],
            meta_file=META,
            bundle_root=str(trained),
            dataset_dir=str(dataset),
            output_dir=str(out),
            **overrides,
        )
        return json.loads((out / "metrics.json").read_text()), list(csv.DictReader(open(out / "per_nodule.csv")))

    metrics, rows = evaluate(trained / "evaluation", **TINY)
    validation = json.loads((dataset / "datalist.json").read_text())["validation"]
    assert metrics["n_nodules"] == len(validation)
    # the summary is the per-nodule scores' mean (the one-epoch model's Dice is near 0: nothing to bound)
    assert metrics["segmentation"]["dice"]["mean"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]))
    assert {"auc", "accuracy", "sensitivity", "specificity", "indeterminate", "diameter_baseline_auc"} <= set(
        metrics["malignancy"]
    )
    assert set(metrics["attributes"]) == {
        "subtlety",
        "internal_structure",
        "calcification",
        "sphericity",
        "margin",
        "lobulation",
        "spiculation",
        "texture",
    }
    assert sorted(r["case_id"] for r in rows) == sorted(i["case_id"] for i in validation)

    # the same workflow with weights that do segment (the released ones, at their own patch, spacing and width):
    # a wrong crop, window, orientation, label alignment or Dice in the pipeline brings this near 0
    released, _ = evaluate(
        tmp_path / "released",
        ckpt_file=str(REPO / "bundle" / "models" / "model.pt"),
        num_workers=0,
        **{"network_def#heads": "$list(lung_nodule_mtl.networks.DEFAULT_HEADS) + ['nodule']"},
    )
    assert released["n_nodules"] == len(validation)
    assert released["segmentation"]["dice"]["mean"] > RELEASED_DICE_FLOOR


def test_inferring(trained: Path, dataset: Path) -> None:
    from monai.bundle import run

    out = trained / "predictions"
    run(
        "inferring",
        config_file=str(CONFIGS / "inference.yaml"),
        meta_file=META,
        bundle_root=str(trained),
        dataset_dir=str(dataset),
        output_dir=str(out),
        patch_size=TINY["patch_size"],
        spacing_mm=TINY["spacing_mm"],
        num_workers=0,
        # inference.yaml builds the released network (with the detection head); these weights come from train.yaml
        **{"network_def#init_filters": 4, "network_def#heads": "$list(lung_nodule_mtl.networks.DEFAULT_HEADS)"},
    )
    test_items = json.loads((dataset / "datalist.json").read_text())["test"]
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert sorted(r["case_id"] for r in rows) == sorted(i["case_id"] for i in test_items)
    for item in test_items:
        image = nib.load(dataset / item["image"])
        mask = nib.load(out / f"{item['case_id']}_mask.nii.gz")
        assert mask.shape == image.shape  # back on the original grid ...
        np.testing.assert_allclose(mask.affine, image.affine, atol=1e-4)  # ... with its affine
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    row = rows[0]
    assert 0.0 <= float(row["malignancy_prob"]) <= 1.0 and 1.0 <= float(row["malignancy_score"]) <= 5.0
    assert 1 <= int(row["calcification"]) <= 6
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporary files


@pytest.mark.slow
def test_resume_after_kill(tmp_path: Path, dataset: Path) -> None:
    """Kill training after its first epoch's checkpoint, run it again: it continues from epoch 1."""
    root = tmp_path / "root"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", TRAIN, "--meta_file", META]
    cmd += ["--logging_file", LOGGING, "--bundle_root", str(root), "--dataset_dir", str(dataset)]
    cmd += _cli_overrides({**TINY, "epochs": 2})
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = root / "models" / "checkpoint_epoch=1.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "training never wrote its first checkpoint"
    assert not (root / "models" / "checkpoint_epoch=2.pt").exists()

    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    log = result.stdout + result.stderr
    assert "resuming training from" in log and "checkpoint_epoch=" in log
    assert "Epoch[1]" not in log.replace("Epoch[1] Metrics", "")  # epoch 1 was not trained again
    assert (root / "models" / "checkpoint_epoch=2.pt").is_file()


@pytest.mark.slow
def test_ddp_gloo_two_ranks(tmp_path: Path, dataset: Path) -> None:
    """torchrun, 2 CPU processes, gloo: the ranks see different samples and end with identical weights."""
    probe = tmp_path / "probe"
    probe.mkdir()
    probe_config = tmp_path / "probe.yaml"
    shutil.copy(Path(__file__).with_name("ddp_probe.yaml"), probe_config)
    configs = json.dumps([TRAIN, str(CONFIGS / "multi_gpu_train.yaml"), str(probe_config)])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    cmd += ["-m", "monai.bundle", "run", "training", "--config_file", configs, "--meta_file", META]
    cmd += ["--bundle_root", str(tmp_path / "root"), "--dataset_dir", str(dataset), "--probe_dir", str(probe)]
    cmd += _cli_overrides({**TINY, "epochs": 2, "cache_rate": 0.0})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    # one line per iteration: at every step the two ranks trained on different nodules, and together on all
    steps = [[set(line.split()) for line in (probe / f"seen_{r}.txt").read_text().splitlines()] for r in (0, 1)]
    assert len(steps[0]) == len(steps[1]) >= 2
    training = {i["case_id"] for i in json.loads((dataset / "datalist.json").read_text())["training"]}
    for a, b in zip(*steps, strict=True):
        assert a and b and not a & b
    per_epoch = len(steps[0]) // 2
    assert set().union(*steps[0][:per_epoch], *steps[1][:per_epoch]) == training
    w0 = torch.load(probe / "weights_0.pt", weights_only=True)
    w1 = torch.load(probe / "weights_1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], msg=f"{k} differs between ranks")
    initial = torch.load(probe / "initial_0.pt", weights_only=True)
    assert any(not torch.equal(initial[k], w0[k]) for k in w0)  # and training did change them
    checkpoints = sorted(p.name for p in (tmp_path / "root" / "models").glob("checkpoint_epoch=*.pt"))
    assert checkpoints == ["checkpoint_epoch=2.pt"]  # written once, by rank 0


def test_inference_matches_training_config() -> None:
    """inference.yaml must build the network the release recipe (train.yaml + train_scans.yaml) trains, and
    crop/window the same way."""
    from monai.bundle import ConfigParser

    train, infer = ConfigParser(), ConfigParser()
    train.read_config([TRAIN, str(CONFIGS / "train_scans.yaml")])
    infer.read_config(str(CONFIGS / "inference.yaml"))
    for key in ("network_def", "patch_size", "spacing_mm", "windows"):
        assert train[key] == infer[key], key
    assert "nodule" in infer.get_parsed_content("network_def").heads
    for parser in (train, infer):
        for key in ("bundle_root", "device", "network_def", "network", "dataset_dir", "output_dir"):
            assert key in parser.config, key
    assert {"training", "run", "train", "validate", "val_interval", "epochs"} <= set(train.config)
    assert {"inferring", "run", "inferer", "preprocessing", "postprocessing"} <= set(infer.config)


def _samples(chain, items: list[dict], seed: int) -> list[dict]:
    chain.set_random_state(seed=seed)
    return [chain(dict(item)) for item in items for _ in range(2)]


def test_config_chains_are_the_python_chains(dataset: Path) -> None:
    """train.yaml lists its chains transform by transform; with the same seed they give exactly the samples of
    lung_nodule_mtl.transforms.chains' functions (what the release recipe and the ablations ran), so the listing
    changed nothing. Different seeds give different training samples (the augmentation is live)."""
    from monai.bundle import ConfigParser

    from lung_nodule_mtl.data import load_datalist
    from lung_nodule_mtl.transforms import get_train_transforms, get_val_transforms

    parser = ConfigParser()
    parser.read_config(TRAIN)
    # the per-sample path (device_augmentation false) is the Python chain exactly
    overrides = {"dataset_dir": str(dataset), "max_shift_mm": 6.0, "patch_size": [24, 24, 24]}
    parser.update({**overrides, "device_augmentation": False})
    settings = {k: parser.get_parsed_content(k) for k in ("patch_size", "spacing_mm", "windows", "indeterminate")}
    items = load_datalist(dataset / "datalist.json", "training")[:2]
    python_train = get_train_transforms(
        roi_size=settings["patch_size"],
        spacing_mm=settings["spacing_mm"],
        windows=settings["windows"],
        max_shift_mm=6.0,
        indeterminate=settings["indeterminate"],
    )
    python_val = get_val_transforms(
        roi_size=settings["patch_size"],
        spacing_mm=settings["spacing_mm"],
        windows=settings["windows"],
        indeterminate=settings["indeterminate"],
    )
    for config_id, python_chain in (("train#preprocessing", python_train), ("validate#preprocessing", python_val)):
        config_chain = parser.get_parsed_content(config_id, instantiate=True)
        got, expected = _samples(config_chain, items, 7), _samples(python_chain, items, 7)
        for a, b in zip(got, expected, strict=True):
            assert set(a) == set(b), config_id
            for key in a:
                if isinstance(a[key], torch.Tensor):
                    torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{config_id} {key}")
                else:
                    assert a[key] == b[key], (config_id, key)
    train_chain = parser.get_parsed_content("train#preprocessing")
    seed7, seed8 = _samples(train_chain, items, 7), _samples(train_chain, items, 8)
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(seed7, seed8, strict=True))
    assert parser.get_parsed_content("train#prepare_batch").augmentation is None


def test_device_augmentation_is_the_default_and_moves_the_augmentation_to_the_batch(dataset: Path) -> None:
    """By default the workers stop at the windowed crop and the trainer's prepare_batch augments the batch with the
    same list (train.yaml's ``augmentation``); validation is never augmented."""
    from monai.bundle import ConfigParser
    from monai.transforms import Identityd, RandAffined, RandFlipd

    from lung_nodule_mtl.transforms import BatchAugmentation

    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update({"dataset_dir": str(dataset)})
    chain = parser.get_parsed_content("train#preprocessing").flatten().transforms
    assert any(isinstance(t, Identityd) for t in chain)
    assert not any(isinstance(t, (RandFlipd, RandAffined)) for t in chain)
    augmentation = parser.get_parsed_content("train#prepare_batch").augmentation
    assert isinstance(augmentation, BatchAugmentation)
    assert augmentation.names == [type(t).__name__ for t in parser.get_parsed_content("augmentation").transforms]
    assert parser.get_parsed_content("validate#evaluator").prepare_batch.augmentation is None


@pytest.mark.parametrize("config", ["train.yaml", "train_scans.yaml"])
def test_hardware_knobs_channels_last_compile_and_amp_type(dataset: Path, config: str) -> None:
    """channels_last (default on) puts the trainer's network in channels_last_3d, `--channels_last false` does not;
    `compile` hands the trainer a compiled network (compiled lazily, at its first step) and checkpoints the plain
    one; `amp_dtype` is the engines' autocast type on CUDA."""
    from monai.bundle import ConfigParser

    def parsed(**overrides: object) -> ConfigParser:
        parser = ConfigParser()
        files = [TRAIN] + ([str(CONFIGS / config)] if config != "train.yaml" else [])
        parser.read_config(files)
        parser.update({"dataset_dir": str(dataset), "cache_rate": 0.0, "num_workers": 0, **TINY, **overrides})
        return parser

    def convs(network: torch.nn.Module) -> list[torch.Tensor]:
        return [m.weight for m in network.modules() if isinstance(m, torch.nn.Conv3d)]

    default = parsed().get_parsed_content("network")
    assert convs(default) and all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in convs(default))
    assert not all(w.is_contiguous() for w in convs(default))
    plain = parsed(channels_last="false").get_parsed_content("network")
    assert all(w.is_contiguous() for w in convs(plain))
    if config != "train.yaml":  # its trainer needs whole scans; the engines are train.yaml's
        return

    compiled = parsed(compile="true", amp_dtype="bfloat16")
    trainer = compiled.get_parsed_content("train#trainer")
    assert type(trainer.network).__name__ == "CompiledNetwork"
    assert trainer.network.network is compiled.get_parsed_content("network")
    assert trainer.amp_kwargs["dtype"] == torch.bfloat16
    saver = next(h for h in compiled.get_parsed_content("validate#handlers") if hasattr(h, "save_dict"))
    assert saver.save_dict["model"] is compiled.get_parsed_content("network")  # the plain module's state dict
    assert parsed(amp_dtype="float16").get_parsed_content("validate#evaluator").amp_kwargs["dtype"] == torch.float16
    plain_trainer = parsed()
    assert plain_trainer.get_parsed_content("train#trainer").network is plain_trainer.get_parsed_content("network")
    with pytest.raises(Exception, match="amp_dtype"):
        parsed(amp_dtype="float8").get_parsed_content("train#trainer")


def test_train_scans_keeps_only_the_batch_keys(dataset: Path) -> None:
    from monai.bundle import ConfigParser

    from lung_nodule_mtl.data import load_datalist
    from lung_nodule_mtl.transforms import TRAIN_KEYS

    parser = ConfigParser()
    parser.read_config([TRAIN, str(CONFIGS / "train_scans.yaml")])
    parser.update({"dataset_dir": str(dataset), "patch_size": [16, 16, 16]})
    sample = parser.get_parsed_content("train#preprocessing")(load_datalist(dataset / "datalist.json", "training")[0])
    assert set(sample) == set(TRAIN_KEYS)


def test_parsing_writes_nothing_and_initialize_makes_the_synthetic_data(tmp_path: Path) -> None:
    """No side effect while a config is parsed or resolved: the built-in synthetic data is made by ``initialize``."""
    from monai.bundle import ConfigParser

    scans = ConfigParser()
    scans.read_config([TRAIN, str(CONFIGS / "train_scans.yaml")])
    scans.update({"bundle_root": str(tmp_path)})
    assert Path(scans.get_parsed_content("scan_datalist_file")).parent == tmp_path / "data" / "synthetic_scans"
    assert len(scans.get_parsed_content("prepare_data", lazy=False, instantiate=False, eval_expr=False)) == 2
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update({"bundle_root": str(tmp_path), "synthetic_cases": 6})
    crops = Path(parser.get_parsed_content("datalist_file"))
    assert crops.parent == tmp_path / "data" / "synthetic"
    assert not any(tmp_path.iterdir())  # resolved, nothing written
    parser.get_parsed_content("initialize")
    assert len(json.loads(crops.read_text())["training"]) > 0


def test_training_is_deterministic(tmp_path: Path, dataset: Path) -> None:
    """The same seed on CPU gives the same weights, a different seed different ones."""
    from monai.bundle import run

    def train(name: str, seed: int) -> dict[str, torch.Tensor]:
        root = tmp_path / name
        run("training", config_file=TRAIN, meta_file=META, bundle_root=str(root), dataset_dir=str(dataset),
            seed=seed, **TINY)  # fmt: skip
        return torch.load(root / "models" / "model_final.pt", map_location="cpu", weights_only=True)["model"]

    a, b, c = train("a", 0), train("b", 0), train("c", 1)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_evaluate_mirror_tta_knob(dataset: Path) -> None:
    """evaluate.yaml's mirror_tta (as predict's): the evaluator's inferer mirrors each crop when on, plain when off."""
    from monai.bundle import ConfigParser
    from monai.inferers import SimpleInferer

    from lung_nodule_mtl.engines import MirrorInferer

    def evaluator_inferer(**overrides: object) -> object:
        parser = ConfigParser()
        parser.read_config([TRAIN, str(CONFIGS / "evaluate.yaml")])
        parser.update({"dataset_dir": str(dataset), "cache_rate": 0.0, "num_workers": 0, **TINY, **overrides})
        return parser.get_parsed_content("validate#evaluator").inferer

    assert isinstance(evaluator_inferer(), MirrorInferer)  # the default, as predict's
    assert isinstance(evaluator_inferer(mirror_tta="true"), MirrorInferer)
    assert type(evaluator_inferer(mirror_tta="false")) is SimpleInferer


def test_training_chains_cache_their_deterministic_head(dataset: Path) -> None:
    """The bundle's crop chains, as the datasets hold them, reach their first random transform only after loading
    and resampling: that head is what CacheDataset / PersistentDataset keep (nested Compose blocks once left nothing
    cached)."""
    from monai.bundle import ConfigParser
    from monai.transforms import Spacingd, Transform
    from monai.transforms.traits import RandomizableTrait

    parser = ConfigParser()
    parser.read_config([TRAIN])
    parser.update({"dataset_dir": str(dataset), "cache_rate": 0.0, "num_workers": 0, **TINY})
    for key in ("train#dataset", "validate#dataset"):
        chain = parser.get_parsed_content(key).transform
        first_random = chain.get_index_of_first(
            lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform)
        )
        head = chain.transforms if first_random is None else chain.transforms[:first_random]
        assert any(isinstance(t, Spacingd) for t in head), (key, [type(t).__name__ for t in chain.transforms])
