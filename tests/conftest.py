"""Shared fixtures: seeds, the optional real data in ../shared/data, GPU skipping."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LUNG_NODULE_MTL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(0)  # noqa: NPY002 - seeds code that uses the legacy global generator (MONAI transforms)
    torch.manual_seed(0)


SINGLE_THREAD_DIRS = ("networks", "losses")
"""Test folders run on one intra-op thread: on a shared 2-core machine two OpenMP threads competing with other
jobs run 5-10x slower than one (spin-waiting), while the tiny networks there gain little from a second thread."""


@pytest.fixture(autouse=True)
def _single_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    if Path(str(request.node.path)).parent.name not in SINGLE_THREAD_DIRS:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real data (``../shared/data``); the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set LUNG_NODULE_MTL_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny built-in synthetic data set (6 patients, crops, 2 folds, test split), made once per session.

    Read-only for the tests that share it (bundle runs write into their own ``bundle_root``).
    """
    from lung_nodule_mtl.data.synthetic import synthesize_dataset

    out = tmp_path_factory.mktemp("synthetic")
    synthesize_dataset(out, cases=6, seed=0, mode="crops", n_folds=2, test_fraction=0.2)
    return out
