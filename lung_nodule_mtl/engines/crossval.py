"""Patient-level k-fold cross-validation and ablations, run with the bundle's own commands.

Every run is the bundle's ``training`` then ``evaluating`` in a child process (exactly the commands a
user would type, with ``--val_fold k``), so the figures are those of the released recipe and nothing
here re-implements training or scoring. The layout is ``<out>/<config>/fold<k>/`` (a bundle root:
``models/``, ``evaluation/metrics.json``, ``evaluation/per_nodule.csv``, ``train.log``, ``eval.log`` and
``run.json``).

No checkpoint or threshold is chosen on the reported fold: training does not validate at all
(``val_interval`` beyond the last epoch), the final epoch's weights (``model_final.pt``) are evaluated on
fold ``k`` once, and the malignancy threshold is the evaluator's fixed one (0.5).

Runs are resumable: a fold whose ``evaluation/metrics.json`` exists is skipped, one with
``models/model_final.pt`` is only evaluated, any other resumes training from its newest checkpoint
(the bundle's ``resume``). :func:`lung_nodule_mtl.reports.crossval.summarise_cross_validation` reads whatever
folds have finished.

::

    lung-nodule-mtl cross-validate --dataset-dir data/lidc_vois --out runs/cv --jobs 2 \\
        --set epochs=4 --set patch_size=[32,32,32]
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lung_nodule_mtl import __version__
from lung_nodule_mtl.constants import DEFAULT_WINDOWS
from lung_nodule_mtl.data.datalist import read_splits, select_fold
from lung_nodule_mtl.utils.io import atomic_write_json, json_safe

__all__ = [
    "ABLATIONS",
    "CrossValidationRun",
    "plan_cross_validation",
    "run_cross_validation",
]

logger = logging.getLogger(__name__)

BUNDLE_CONFIGS = Path(__file__).resolve().parents[2] / "bundle" / "configs"

_LUNG_WINDOW_ONLY = {"lung": list(DEFAULT_WINDOWS["lung"])}

# The seeds' ablations as overrides of bundle/configs/train.yaml (the network's own switches; see LNMSNet).
ABLATIONS: dict[str, dict[str, Any]] = {
    "multitask": {},
    "segmentation_only": {"network_def#heads": []},
    "classification_only": {"network_def#segmentation": False, "network_def#feature_combination": False},
    "single_window": {"windows": _LUNG_WINDOW_ONLY},
    "no_msconv": {"network_def#msconv": False},
    "no_feature_combination": {"network_def#feature_combination": False},
    # the Chongqing seed's baseline: one window, segmentation only
    "single_window_segmentation_only": {"windows": _LUNG_WINDOW_ONLY, "network_def#heads": []},
}

ABLATION_DESCRIPTIONS: dict[str, str] = {
    "multitask": "multi-task, three windows, MSConv, feature combination (the bundle's network)",
    "segmentation_only": "single-task segmentation (no heads)",
    "classification_only": "single-task classification (no decoder, no feature combination)",
    "single_window": "one lung window as input instead of three",
    "no_msconv": "plain convolutions instead of MSConv",
    "no_feature_combination": "heads on the encoding only (no pooling under the mask)",
    "single_window_segmentation_only": "one lung window, segmentation only (single-channel single-task)",
}

# training never validates, so nothing can be selected on the reported fold
NO_VALIDATION_INTERVAL = 1_000_000


def _cli_value(value: Any) -> str:
    """A config value as ``python -m monai.bundle run`` reads it from the command line.

    That command parses arguments with Python Fire: Python literals, so ``False`` (``false`` stays a string,
    which LNMSNet rejects).
    """
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)


@dataclass
class CrossValidationRun:
    """One configuration on one fold: its bundle root and the two bundle commands."""

    config: str
    fold: int
    root: Path
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics_file(self) -> Path:
        return self.root / "evaluation" / "metrics.json"

    @property
    def final_weights(self) -> Path:
        return self.root / "models" / "model_final.pt"

    def _args(self, dataset_dir: Path) -> list[str]:
        args = ["--bundle_root", str(self.root), "--dataset_dir", str(dataset_dir), "--val_fold", str(self.fold)]
        for key, value in self.overrides.items():
            args += [f"--{key}", _cli_value(value)]
        return args

    def training_command(self, dataset_dir: Path, configs: Path = BUNDLE_CONFIGS) -> list[str]:
        return [
            sys.executable, "-m", "monai.bundle", "run", "training",
            "--meta_file", str(configs / "metadata.json"),
            "--config_file", str(configs / "train.yaml"),
            "--logging_file", str(configs / "logging.conf"),
            *self._args(dataset_dir),
            "--val_interval", str(NO_VALIDATION_INTERVAL),
        ]  # fmt: skip

    def evaluating_command(self, dataset_dir: Path, configs: Path = BUNDLE_CONFIGS) -> list[str]:
        return [
            sys.executable, "-m", "monai.bundle", "run", "evaluating",
            "--meta_file", str(configs / "metadata.json"),
            "--config_file", json.dumps([str(configs / "train.yaml"), str(configs / "evaluate.yaml")]),
            "--logging_file", str(configs / "logging.conf"),
            *self._args(dataset_dir),
            "--ckpt_file", str(self.final_weights),
            "--output_dir", str(self.metrics_file.parent),
        ]  # fmt: skip


def plan_cross_validation(
    out_dir: str | os.PathLike[str],
    configs: Sequence[str] = tuple(ABLATIONS),
    folds: Sequence[int] = range(5),
    overrides: Mapping[str, Any] | None = None,
) -> list[CrossValidationRun]:
    """The runs of ``configs`` x ``folds``, fold-major so that every configuration gets its first folds early.

    Args:
        out_dir: the study's folder; run ``(c, k)`` lives in ``<out_dir>/<c>/fold<k>``.
        configs: names from :data:`ABLATIONS`.
        folds: the folds to report (each trained on all the others).
        overrides: ``train.yaml`` overrides common to every run (``epochs``, ``patch_size``, ...); an
            ablation's own switches are applied after them.
    """
    unknown = [c for c in configs if c not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown configuration(s) {unknown}; choose from {list(ABLATIONS)}.")
    if not configs or not folds:
        raise ValueError("at least one configuration and one fold are needed.")
    if any(int(k) < 0 for k in folds) or len(set(folds)) != len(folds):
        raise ValueError(f"folds must be distinct non-negative integers, got {list(folds)}.")
    forbidden = {"bundle_root", "dataset_dir", "val_fold", "val_interval", "ckpt_file", "output_dir"}
    clash = sorted(forbidden & set(overrides or {}))
    if clash:
        raise ValueError(f"overrides {clash} are set by the cross-validation itself.")
    out = Path(out_dir)
    return [
        CrossValidationRun(c, int(k), out / c / f"fold{int(k)}", {**dict(overrides or {}), **ABLATIONS[c]})
        for k in folds
        for c in configs
    ]


def _run_logged(command: list[str], log: Path, env: Mapping[str, str]) -> int:
    with open(log, "a") as f:
        f.write(f"$ {' '.join(command)}\n")
        f.flush()
        return subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=dict(env), check=False).returncode


def _execute(run: CrossValidationRun, dataset_dir: Path, threads: int | None, gpu: int | None = None) -> dict[str, Any]:
    if run.metrics_file.is_file():
        return {"config": run.config, "fold": run.fold, "status": "done before"}
    run.root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)  # the run sees that one GPU as cuda:0 (train.yaml's device)
    record: dict[str, Any] = {
        "config": run.config,
        "fold": run.fold,
        "overrides": run.overrides,
        "dataset_dir": str(dataset_dir),
        "package_version": __version__,
        "threads": threads,
        "gpu": gpu,
        "training_command": run.training_command(dataset_dir),
        "evaluating_command": run.evaluating_command(dataset_dir),
    }
    start = time.perf_counter()
    if not run.final_weights.is_file():
        code = _run_logged(record["training_command"], run.root / "train.log", env)
        record["training_s"] = time.perf_counter() - start
        if code != 0 or not run.final_weights.is_file():
            record["status"] = f"training failed (exit {code}); see {run.root / 'train.log'}"
            atomic_write_json(json_safe(record), run.root / "run.json")
            return record
    evaluation_start = time.perf_counter()
    code = _run_logged(record["evaluating_command"], run.root / "eval.log", env)
    record["evaluating_s"] = time.perf_counter() - evaluation_start
    ok = code == 0 and run.metrics_file.is_file()
    record["status"] = "done" if ok else f"evaluating failed (exit {code}); see {run.root / 'eval.log'}"
    atomic_write_json(json_safe(record), run.root / "run.json")
    return record


def run_cross_validation(
    dataset_dir: str | os.PathLike[str],
    runs: Sequence[CrossValidationRun],
    jobs: int = 1,
    threads: int | None = None,
    gpus: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate every run (skipping finished ones), ``jobs`` at a time.

    Args:
        dataset_dir: a folder with ``datalist.json`` whose items carry patient-level ``fold`` numbers
            (``lung-nodule-mtl prepare-vois`` / ``prepare-lidc``).
        runs: from :func:`plan_cross_validation`.
        jobs: runs at the same time.
        threads: ``OMP_NUM_THREADS`` of each run (``None``: inherited). ``jobs * threads`` should not
            exceed the cores.
        gpus: GPU indices the runs share (``CUDA_VISIBLE_DEVICES`` of each run): the ``jobs`` slots are dealt
            round-robin over them, so ``jobs=5, gpus=[0]`` trains five folds at once on one GPU (when its memory
            holds five runs) and ``jobs=4, gpus=[0, 1]`` two per GPU. ``None``: each run sees what this process
            sees (train.yaml then takes ``cuda:0``).

    Returns:
        One record per run (``status`` "done", "done before" or why it failed). A failed run does not
        stop the others.
    """
    dataset = Path(dataset_dir)
    datalist = dataset / "datalist.json"
    if not datalist.is_file():
        raise FileNotFoundError(f"{datalist} not found: --dataset-dir must hold the datalist.json of prepare-vois.")
    splits = read_splits(datalist)  # validated once here, not 2 x len(runs) times in the children
    for fold in sorted({r.fold for r in runs}):
        try:
            select_fold(splits, fold)  # raises for a fold the datalist does not have
        except ValueError as error:
            raise ValueError(f"{datalist}: {error}") from error
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}.")
    if gpus is not None and (not gpus or any(int(g) < 0 for g in gpus)):
        raise ValueError(f"gpus must be None or a non-empty list of GPU indices >= 0, got {list(gpus)!r}.")
    # one token per job slot, naming the GPU of whichever run holds it (None: no GPU assignment)
    slots: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    for k in range(jobs):
        slots.put(None if gpus is None else int(gpus[k % len(gpus)]))

    def execute(run: CrossValidationRun) -> dict[str, Any]:
        gpu = slots.get()
        try:
            return _execute(run, dataset, threads, gpu)
        finally:
            slots.put(gpu)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        records = list(pool.map(execute, runs))
    for record in records:
        logger.info("%s fold %d: %s", record["config"], record["fold"], record["status"])
    return records
