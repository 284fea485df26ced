"""bundle/configs/metadata.json: valid against the Model Zoo schema, truthful versions, consistent with the network."""

from __future__ import annotations

import json
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, DEFAULT_WINDOWS, Keys

METADATA = Path(__file__).resolve().parents[2] / "bundle" / "configs" / "metadata.json"
META = json.loads(METADATA.read_text(encoding="utf-8"))
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
SCHEMA_MD5 = "06954cad2cc5d3784e72077ac76f0fc8"

# (key path in metadata.json, distribution name as importlib.metadata knows it)
STATED_VERSIONS = [
    (("monai_version",), "monai"),
    (("pytorch_version",), "torch"),
    (("numpy_version",), "numpy"),
    *((("required_packages_version", name), name) for name in META["required_packages_version"]),
]


def _major_minor(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("+")[0].split(".")[:2])


def test_schema_valid(zoo_schema: Path, tmp_path: Path) -> None:
    from monai.bundle import verify_metadata

    schema = shutil.copyfile(zoo_schema, tmp_path / zoo_schema.name)  # verify_metadata may write beside it
    verify_metadata(meta_file=str(METADATA), filepath=str(schema), hash_val=SCHEMA_MD5, hash_type="md5")


def test_schema_rejects_missing_required(zoo_schema: Path, tmp_path: Path) -> None:
    from monai.bundle import verify_metadata

    broken = {k: v for k, v in META.items() if k != "network_data_format"}
    (tmp_path / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(zoo_schema), hash_val=SCHEMA_MD5)


def test_schema_url_and_version() -> None:
    assert META["schema"] == SCHEMA_URL
    assert META["version"] in META["changelog"]
    assert META["data_type"] == "nibabel"


@pytest.mark.parametrize(("key", "dist"), STATED_VERSIONS, ids=[d for _, d in STATED_VERSIONS])
def test_versions_match_installed(key: tuple[str, ...], dist: str) -> None:
    stated = META
    for k in key:
        stated = stated[k]
    try:
        installed = version(dist)
    except PackageNotFoundError:
        pytest.fail(f"metadata.json states {dist} {stated}, but {dist} is not installed")
    assert _major_minor(stated) == _major_minor(installed), f"{dist}: metadata.json {stated}, installed {installed}"


def test_required_packages_stated() -> None:
    required = {"nibabel", "itk", "SimpleITK", "pytorch-ignite", "pyyaml", "scipy"}
    assert required <= set(META["required_packages_version"])


def test_io_matches_network_heads() -> None:
    fmt = META["network_data_format"]
    image = fmt["inputs"]["image"]
    assert image["num_channels"] == len(DEFAULT_WINDOWS) == len(image["channel_def"])
    assert image["spatial_shape"] == [48, 48, 48] and image["value_range"] == [0, 1]
    outputs = fmt["outputs"]
    expected = {"pred": 1, str(Keys.NODULE): 1, str(Keys.MALIGNANCY): 1, str(Keys.MALIGNANCY_SCORE): 1}
    expected |= {str(k): n for k, n in ATTRIBUTE_CLASSES.items()}
    assert {name: spec["num_channels"] for name, spec in outputs.items()} == expected
    for name, spec in outputs.items():
        assert spec["dtype"] == "float32", name
        if "channel_def" in spec:
            assert len(spec["channel_def"]) == spec["num_channels"], name
