"""The repository's own bundle, with its committed demo weights, passes the Model Zoo checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from lung_nodule_mtl.zoo.checks import check_bundle

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO.parent / "shared" / "model_zoo" / "meta_schema_20240725.json"


@pytest.mark.slow
def test_repo_bundle_passes_zoo_checks() -> None:
    results = check_bundle(REPO / "bundle", schema_path=SCHEMA if SCHEMA.is_file() else None)
    failed = [r for r in results if not r.ok]
    assert not failed, failed
    passed = {r.check for r in results if r.ok and not r.detail.startswith(("warning", "skip"))}
    assert {"required_files", "file_sizes", "version", "network_io", "torchscript", "torchscript_outputs"} <= passed
    assert (REPO / "bundle" / "models" / "model.pt").stat().st_size < 25_000_000
