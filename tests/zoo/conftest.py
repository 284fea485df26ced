"""Fixtures of the Model Zoo tests: the metadata schema from ../shared/model_zoo and tiny fake bundles."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundle"
METADATA = BUNDLE / "configs" / "metadata.json"
MODEL_ZOO = (
    Path(os.environ.get("LUNG_NODULE_MTL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).parent / "model_zoo"
)
SCHEMA_NAME = "meta_schema_20240725.json"
SCHEMA_MD5 = "06954cad2cc5d3784e72077ac76f0fc8"

TINY_UNET = {
    "_target_": "monai.networks.nets.BasicUNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "features": [2, 2, 2, 2, 2, 2],
}
"""A BasicUNet small enough to script and run on 32³ in well under a second."""


@pytest.fixture(scope="session")
def zoo_schema() -> Path:
    """``meta_schema_20240725.json`` from ``../shared/model_zoo``; the test is skipped when it is absent."""
    path = MODEL_ZOO / SCHEMA_NAME
    if not path.is_file():
        pytest.skip(f"Model Zoo metadata schema not found at {path} (these machines cannot download it)")
    return path


def _tiny_metadata(**network_data_format: Any) -> dict[str, Any]:
    """The real ``metadata.json`` with ``network_data_format`` replaced (default: TINY_UNET on 1×32³)."""
    meta = json.loads(METADATA.read_text(encoding="utf-8"))
    meta["network_data_format"] = network_data_format or {
        "inputs": {
            "image": {
                "type": "image",
                "format": "hounsfield",
                "num_channels": 1,
                "spatial_shape": [32, 32, 32],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": True,
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 2,
                "spatial_shape": [32, 32, 32],
                "dtype": "float32",
                "value_range": [],
            }
        },
    }
    return meta


def _write_bundle(
    root: Path, network_def: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None, weights: bool = True
) -> Path:
    """Write a minimal bundle: metadata.json, LICENSE, inference.json (``network_def``) and models/model.pt."""
    net_cfg = TINY_UNET if network_def is None else network_def
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata or _tiny_metadata(), indent=4))
    shutil.copyfile(BUNDLE / "LICENSE", root / "LICENSE")
    inference = {"imports": ["$import torch"], "bundle_root": ".", "device": "$torch.device('cpu')"}
    inference |= {
        "network_def": net_cfg,
        "network": "$@network_def.to(@device)",
        "inferer": {"_target_": "SimpleInferer"},
    }
    (root / "configs" / "inference.json").write_text(json.dumps(inference, indent=4))
    if weights:
        from monai.bundle import ConfigParser

        (root / "models").mkdir(exist_ok=True)
        torch.manual_seed(0)
        net = ConfigParser({"network_def": net_cfg}).get_parsed_content("network_def")
        torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Path]:
    """Factory of tiny bundles in ``tmp_path`` (see :func:`_write_bundle`)."""

    def _make(name: str = "tiny_bundle", **kwargs: Any) -> Path:
        return _write_bundle(tmp_path / name, **kwargs)

    return _make


@pytest.fixture
def tiny_metadata() -> Callable[..., dict[str, Any]]:
    """Factory: the real metadata with ``network_data_format`` replaced (default: the tiny UNet's, 1×32³)."""
    return _tiny_metadata


@pytest.fixture
def tiny_unet() -> dict[str, Any]:
    """``network_def`` of a BasicUNet small enough to script and run on 32³ in well under a second."""
    return dict(TINY_UNET)
