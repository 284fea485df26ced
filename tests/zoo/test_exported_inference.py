"""The exported bundle end to end: trained, exported, then run and checked where the package is not installed.

A tiny model is trained with the project's ``train.yaml`` and exported with :func:`export_bundle`; then, in fresh
empty working folders and in processes that cannot import the installed ``lung_nodule_mtl`` (its editable finder
dropped, ``python -I``, no ``PYTHONPATH``), as on a machine without this repository:

* ``python -m monai.bundle run inferring`` with the exported ``configs/inference.yaml`` writes a prediction per test
  nodule and a mask on each input image's own grid;
* the project's Model Zoo checks script (``lung_nodule_mtl/zoo/checks.py``, run by path as the Zoo CI runs its own
  checker from a checkout) passes every check on the exported folder.

The network is trained with the configs' own ``network_def`` (only patch size, spacing, epochs, batch sizes and
workers are shrunk), so the exported ``models/model.pt`` loads into the exported inference config as it is: the
checks build ``network_def`` without overrides, exactly as the Zoo does.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundle" / "configs"
CHECKS_SCRIPT = REPO / "lung_nodule_mtl" / "zoo" / "checks.py"
MODEL_ZOO = Path(os.environ.get("LUNG_NODULE_MTL_SHARED_DATA", REPO.parent / "shared" / "data")).parent / "model_zoo"
SCHEMA = MODEL_ZOO / "meta_schema_20240725.json"

# Small and fast, with the configs' network (init_filters etc.) left as they are: see the module docstring.
SMALL = {"patch_size": [32, 32, 32], "spacing_mm": [2.0, 2.0, 2.0], "num_workers": 0}
# one epoch, no validation (val_interval > epochs), nothing cached up front: the weights come from the final
# training checkpoint
TRAIN_SMALL = {**SMALL, "batch_size": 2, "epochs": 1, "val_interval": 2, "cache_rate": 0.0}

# Runs a module (``-m``) or a script by path with the installed package hidden; prints where the package came from.
_HIDDEN_RUNNER = r"""
import importlib.util, runpy, sys
# what a machine without this repository sees: drop the editable install's finder
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
assert importlib.util.find_spec("lung_nodule_mtl") is None, "lung_nodule_mtl is importable before the bundle runs"
kind, target, *args = sys.argv[1:]
sys.argv = [target, *args]
try:
    if kind == "-m":
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(target, run_name="__main__")
finally:
    package = sys.modules.get("lung_nodule_mtl")
    print("LUNG_NODULE_MTL_FROM", getattr(package, "__file__", None), flush=True)
"""


def _cli(overrides: dict) -> list[str]:
    return [arg for k, v in overrides.items() for arg in (f"--{k}", json.dumps(v) if isinstance(v, list) else str(v))]


def _run_hidden(kind: str, target: str, args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, Path | None]:
    """Run ``target`` (``kind``: ``-m`` for a module, ``path`` for a script) in ``cwd`` without the package."""
    cwd.mkdir(parents=True, exist_ok=False)  # a fresh, empty working folder
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _HIDDEN_RUNNER, kind, target, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",  # tqdm's bars are UTF-8 whatever the locale
        errors="replace",
        timeout=300,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("LUNG_NODULE_MTL_FROM ")]
    source = lines[-1].split(" ", 1)[1] if lines else "None"
    return proc, None if source == "None" else Path(source)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    """The bundle exported with the weights of one epoch of ``training`` on the synthetic set.

    ``model_final.pt`` is the nested checkpoint (network, optimiser, scheduler, trainer) saved at the end of training;
    :func:`export_bundle` ships its ``model`` entry as the plain state dict ``models/model.pt``.
    """
    from monai.bundle import run

    from lung_nodule_mtl.zoo import export_bundle

    root = tmp_path_factory.mktemp("bundle_root")
    run(
        "training",
        config_file=str(CONFIGS / "train.yaml"),
        meta_file=str(CONFIGS / "metadata.json"),
        bundle_root=str(root),
        dataset_dir=str(dataset),
        **TRAIN_SMALL,
        # the released network (inference.yaml): the default heads and the detection head
        **{"network_def#heads": "$list(lung_nodule_mtl.networks.DEFAULT_HEADS) + ['nodule']"},
    )
    out = tmp_path_factory.mktemp("export") / "lung_nodule_ct_mtl"
    return export_bundle(out, REPO / "bundle", ckpt=root / "models" / "model_final.pt")


@pytest.mark.slow
def test_inference_without_package(exported: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "predictions"
    args = ["run", "inferring", "--config_file", str(exported / "configs" / "inference.yaml")]
    args += ["--meta_file", str(exported / "configs" / "metadata.json")]
    args += ["--bundle_root", str(exported), "--dataset_dir", str(dataset), "--output_dir", str(out), *_cli(SMALL)]
    proc, package = _run_hidden("-m", "monai.bundle", args, tmp_path / "cwd")

    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert package is not None and package.is_relative_to(exported / "scripts"), package
    assert not any((tmp_path / "cwd").iterdir())  # nothing written to the working folder
    test_items = json.loads((dataset / "datalist.json").read_text())["test"]
    assert test_items
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["case_id"] for r in rows) == sorted(i["case_id"] for i in test_items)
    for item in test_items:
        image = nib.load(dataset / item["image"])
        mask = nib.load(out / f"{item['case_id']}_mask.nii.gz")
        assert mask.shape == image.shape, item["case_id"]
        np.testing.assert_allclose(mask.affine, image.affine, atol=1e-4, err_msg=item["case_id"])
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}


@pytest.mark.slow
def test_zoo_checks_script(exported: Path, tmp_path: Path) -> None:
    args = [str(exported)]
    if SCHEMA.is_file():
        args += ["--schema", str(SCHEMA)]  # without it metadata_schema is a skip (a warning), not a failure
    proc, package = _run_hidden("path", str(CHECKS_SCRIPT), args, tmp_path / "cwd")

    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report[-6000:]
    statuses = {ln.split()[1]: ln.split()[0] for ln in proc.stdout.splitlines() if ln[:4] in ("PASS", "WARN", "FAIL")}
    assert set(statuses) == {
        "required_files",
        "recommended_files",
        "file_sizes",
        "version",
        "metadata_schema",
        "network_io",
        "torchscript",
        "torchscript_outputs",
    }, report[-6000:]
    assert "FAIL" not in statuses.values(), report[-6000:]
    for check in ("network_io", "torchscript", "torchscript_outputs"):
        assert statuses[check] == "PASS", report[-6000:]  # run, not skipped
    if SCHEMA.is_file():
        assert statuses["metadata_schema"] == "PASS", report[-6000:]
    # the network checks imported the package from the bundle's scripts/, not from this repository
    assert package is not None and package.is_relative_to(exported / "scripts"), package


@pytest.mark.slow
def test_scan_inference_without_package(exported: Path, tmp_path: Path) -> None:
    """Whole-scan inference (``scan_inferring``) of the exported bundle on a phantom scan, the package hidden."""
    from lung_nodule_mtl.data.synthetic.phantom import chest_phantom

    scans = tmp_path / "scans"
    scans.mkdir()
    image, affine, _ = chest_phantom()
    nib.save(nib.Nifti1Image(image, affine), scans / "phantom.nii.gz")
    out = tmp_path / "scan_predictions"
    configs = [str(exported / "configs" / name) for name in ("inference.yaml", "scan_inference.yaml")]
    args = ["run", "scan_inferring", "--config_file", json.dumps(configs)]
    args += ["--meta_file", str(exported / "configs" / "metadata.json"), "--bundle_root", str(exported)]
    args += ["--input_path", str(scans), "--output_dir", str(out), "--progress", "false", *_cli(SMALL)]
    proc, package = _run_hidden("-m", "monai.bundle", args, tmp_path / "cwd")

    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert package is not None and package.is_relative_to(exported / "scripts"), package
    report = json.loads((out / "phantom.json").read_text())
    assert report["model"]["weights_sha256"] and report["settings"]["patch_size"] == SMALL["patch_size"]
    labels = nib.load(out / "phantom_nodules.nii.gz")
    assert labels.shape == image.shape
    np.testing.assert_allclose(labels.affine, affine, atol=1e-4)
    assert (out / "summary.csv").is_file()
