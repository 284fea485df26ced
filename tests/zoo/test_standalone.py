"""lung_nodule_mtl.zoo.standalone: configs rewritten to use the package copy in <bundle_root>/scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import lung_nodule_mtl
from lung_nodule_mtl.zoo.standalone import (
    SCRIPTS_DIR_KEY,
    SCRIPTS_IMPORTS_KEY,
    SCRIPTS_KEY,
    PackageUse,
    find_package_use,
    make_standalone_config,
)

PACKAGE_DIR = Path(lung_nodule_mtl.__file__).resolve().parent


def _standalone(*configs: dict[str, Any]) -> list[dict[str, Any]]:
    use = PackageUse()
    for i, c in enumerate(configs):
        find_package_use(c, f"c{i}.yaml", PACKAGE_DIR, use)
    return [make_standalone_config(c, use, f"c{i}.yaml") for i, c in enumerate(configs)]


def test_target_gets_requires() -> None:
    config_net = {"_target_": "lung_nodule_mtl.networks.LNMSNet", "in_channels": 3}
    (out,) = _standalone(
        {
            "bundle_root": ".",
            "net": config_net,
            "other": {"_target_": "lung_nodule_mtl.engines.TotalLoss", "_requires_": "@net"},
            "monai_only": {"_target_": "SimpleInferer"},
        }
    )
    assert out["net"] == {
        "_target_": "lung_nodule_mtl.networks.LNMSNet",
        "in_channels": 3,
        "_requires_": "@lnm_scripts",
    }
    assert out["other"]["_requires_"] == ["@net", "@lnm_scripts"]
    assert out["monai_only"] == {"_target_": "SimpleInferer"}
    assert list(out)[:4] == ["bundle_root", SCRIPTS_IMPORTS_KEY, SCRIPTS_DIR_KEY, SCRIPTS_KEY]


def test_expressions_and_imports() -> None:
    (out,) = _standalone(
        {
            "imports": ["$import os", "$import lung_nodule_mtl", "$from lung_nodule_mtl.constants import Keys"],
            "bundle_root": ".",
            "a": "$lung_nodule_mtl.data.read_splits(@datalist#file, name='lung_nodule_mtl', lung_nodule_mtl=1)",
            "b": "$[Keys.IMAGE, x.lung_nodule_mtl, @lung_nodule_mtl]",
            "initialize": ["$import lung_nodule_mtl.transforms"],
            "plain": "lung_nodule_mtl is a package",
        }
    )
    assert out["imports"] == ["$import os"]
    assert out["a"] == "$@lnm_scripts.data.read_splits(@datalist#file, name='lung_nodule_mtl', lung_nodule_mtl=1)"
    assert out["b"] == "$[@lnm_scripts.constants.Keys.IMAGE, x.lung_nodule_mtl, @lung_nodule_mtl]"
    assert out["initialize"] == ["$@lnm_scripts.transforms"]
    assert out["plain"] == "lung_nodule_mtl is a package"
    for module in (
        "lung_nodule_mtl",
        "lung_nodule_mtl.data",
        "lung_nodule_mtl.constants",
        "lung_nodule_mtl.transforms",
    ):
        assert repr(module) in out[SCRIPTS_KEY]
    assert "import" not in out[SCRIPTS_KEY]  # MONAI would ast.parse it and fail on the "@" reference


def test_resolves_with_monai(tmp_path: Path) -> None:
    from monai.bundle import ConfigParser

    from lung_nodule_mtl.constants import Keys

    (out,) = _standalone(
        {
            "imports": ["$from lung_nodule_mtl.constants import Keys", "$import lung_nodule_mtl"],
            "bundle_root": str(tmp_path),
            "key": "$Keys.IMAGE",
            "windows": "$lung_nodule_mtl.constants.DEFAULT_WINDOWS",
        }
    )
    parser = ConfigParser(out)
    assert parser.get_parsed_content("key") == Keys.IMAGE
    assert parser.get_parsed_content("windows") == lung_nodule_mtl.constants.DEFAULT_WINDOWS
    assert parser.get_parsed_content(SCRIPTS_DIR_KEY) == str(tmp_path / "scripts")


def test_merged_configs_agree() -> None:
    train, override = _standalone(
        {"imports": ["$import lung_nodule_mtl"], "bundle_root": ".", "x": "$lung_nodule_mtl.data"},
        {"h": {"_target_": "lung_nodule_mtl.reports.NodulePredictionWriter"}},
    )
    assert train[SCRIPTS_KEY] == override[SCRIPTS_KEY]
    assert "'lung_nodule_mtl.data'" in override[SCRIPTS_KEY]


def test_no_package_unchanged() -> None:
    config = {"imports": ["$import os"], "net": {"_target_": "BasicUNet"}, "x": "$os.sep"}
    (out,) = _standalone(config)
    assert out == config


def test_ill_configs() -> None:
    with pytest.raises(ValueError, match="bound both"):
        _standalone({"imports": ["$from lung_nodule_mtl import data", "$import json as data"]})
    with pytest.raises(ValueError, match="relative import"):
        _standalone({"imports": ["$from . import x"]})
    with pytest.raises(ValueError, match="reserved"):
        _standalone({"bundle_root": ".", SCRIPTS_KEY: 1, "x": "$lung_nodule_mtl"})
    with pytest.raises(ValueError, match="'import'"):
        _standalone({"x": "$lung_nodule_mtl.data.importer(@y)"})
    with pytest.raises(ValueError, match="mapping"):
        make_standalone_config([], PackageUse(), "c.yaml")  # type: ignore[arg-type]
