"""lung_nodule_mtl.zoo.checks: the Model Zoo's checks pass on a good tiny bundle and fail on each defect."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lung_nodule_mtl.zoo.checks import (
    ALL_CHECKS,
    CHECK_FILE_SIZES,
    CHECK_NETWORK_IO,
    CHECK_RECOMMENDED_FILES,
    CHECK_REQUIRED_FILES,
    CHECK_SCHEMA,
    CHECK_TORCHSCRIPT,
    CHECK_TORCHSCRIPT_OUTPUTS,
    CHECK_VERSION,
    MAX_FILE_BYTES,
    WARNING,
    check_bundle,
    file_hash,
    main,
)

CHEAP = (CHECK_REQUIRED_FILES, CHECK_RECOMMENDED_FILES, CHECK_FILE_SIZES, CHECK_VERSION)
NETWORK = (CHECK_NETWORK_IO, CHECK_TORCHSCRIPT, CHECK_TORCHSCRIPT_OUTPUTS)
OVER_LIMIT = 26 * 1024**2  # 26 MiB: over 25 MB by either definition


def _by_name(results: list[Any]) -> dict[str, Any]:
    return {r.check: r for r in results}


def _sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: instant, no disk used
    return path


def test_all_pass(make_bundle: Callable[..., Path]) -> None:
    results = check_bundle(make_bundle())
    assert [r.check for r in results] == list(ALL_CHECKS)
    failed = [r for r in results if not r.ok]
    assert not failed, failed
    by = _by_name(results)
    assert by[CHECK_SCHEMA].detail.startswith(WARNING)  # no schema given: skipped with a warning
    assert not by[CHECK_TORCHSCRIPT_OUTPUTS].detail.startswith(WARNING)


def test_schema_pass_and_fail(make_bundle: Callable[..., Path], zoo_schema: Path, tmp_path: Path) -> None:
    bundle = make_bundle()
    (result,) = check_bundle(bundle, zoo_schema, checks=[CHECK_SCHEMA])
    assert result.ok and not result.detail.startswith(WARNING), result
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["task"]
    meta_path.write_text(json.dumps(meta))
    (result,) = check_bundle(bundle, zoo_schema, checks=[CHECK_SCHEMA])
    assert not result.ok and "task" in result.detail


def test_schema_wrong_file(make_bundle: Callable[..., Path], zoo_schema: Path) -> None:
    other = zoo_schema.with_name("meta_schema_20220324.json")
    if not other.is_file():
        pytest.skip(f"{other} not found")
    (result,) = check_bundle(make_bundle(), other, checks=[CHECK_SCHEMA])
    assert not result.ok and "md5" in result.detail


def _no_license(b: Path) -> None:
    (b / "LICENSE").unlink()


def _no_metadata(b: Path) -> None:
    (b / "configs" / "metadata.json").unlink()


def _version_not_in_changelog(b: Path) -> None:
    path = b / "configs" / "metadata.json"
    meta = json.loads(path.read_text())
    meta["version"] = "9.9.9"
    path.write_text(json.dumps(meta))


def _no_changelog(b: Path) -> None:
    path = b / "configs" / "metadata.json"
    meta = json.loads(path.read_text())
    del meta["changelog"]
    path.write_text(json.dumps(meta))


def _big_unlisted(b: Path) -> None:
    _sparse(b / "models" / "extra.bin", OVER_LIMIT)


def _big_wrong_hash(b: Path) -> None:
    _sparse(b / "models" / "extra.bin", OVER_LIMIT)
    entry = {"path": "models/extra.bin", "url": "https://example.org/extra.bin", "hash_val": "0" * 32}
    (b / "large_files.yml").write_text(json.dumps({"large_files": [entry | {"hash_type": "md5"}]}))


def _big_listed_without_hash(b: Path) -> None:
    _sparse(b / "models" / "extra.bin", OVER_LIMIT)
    (b / "large_files.yml").write_text("large_files:\n  - path: models/extra.bin\n    url: https://example.org/x\n")


@pytest.mark.parametrize(
    ("breakage", "check", "needle"),
    [
        (_no_license, CHECK_REQUIRED_FILES, "LICENSE"),
        (_no_metadata, CHECK_REQUIRED_FILES, "metadata.json"),
        (_version_not_in_changelog, CHECK_VERSION, "9.9.9"),
        (_no_changelog, CHECK_VERSION, "changelog"),
        (_big_unlisted, CHECK_FILE_SIZES, "models/extra.bin"),
        (_big_wrong_hash, CHECK_FILE_SIZES, "md5"),
        (_big_listed_without_hash, CHECK_FILE_SIZES, "hash_val"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_each_check_fails(
    make_bundle: Callable[..., Path], breakage: Callable[[Path], None], check: str, needle: str
) -> None:
    bundle = make_bundle(weights=False)
    before = _by_name(check_bundle(bundle, checks=CHEAP))
    assert before[check].ok
    breakage(bundle)
    result = _by_name(check_bundle(bundle, checks=CHEAP))[check]
    assert not result.ok and needle in result.detail, result


def test_big_file_listed_passes(make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle(weights=False)
    big = _sparse(bundle / "models" / "extra.bin", OVER_LIMIT)
    assert big.stat().st_size > MAX_FILE_BYTES
    entry = {"path": "models/extra.bin", "url": "https://example.org/x", "hash_val": file_hash(big), "hash_type": "md5"}
    (bundle / "large_files.yml").write_text(json.dumps({"large_files": [entry]}))
    (result,) = check_bundle(bundle, checks=[CHECK_FILE_SIZES])
    assert result.ok and "models/extra.bin" in result.detail


def test_missing_weights_warns_and_skips(make_bundle: Callable[..., Path]) -> None:
    results = _by_name(check_bundle(make_bundle(weights=False)))
    assert all(r.ok for r in results.values())
    for name in (CHECK_RECOMMENDED_FILES, CHECK_NETWORK_IO, CHECK_TORCHSCRIPT, CHECK_TORCHSCRIPT_OUTPUTS):
        assert results[name].detail.startswith(WARNING) and "models/model.pt" in results[name].detail


def test_network_io_mismatch(make_bundle: Callable[..., Path], tiny_metadata: Callable[..., dict]) -> None:
    meta = tiny_metadata()
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 3
    (result,) = check_bundle(make_bundle(metadata=meta), checks=[CHECK_NETWORK_IO])
    assert not result.ok and "num_channels 3" in result.detail


def test_weights_not_matching_network(make_bundle: Callable[..., Path], tiny_unet: dict) -> None:
    bundle = make_bundle(network_def=tiny_unet | {"features": [4, 4, 4, 4, 4, 4]})
    shutil.copyfile(make_bundle("other").joinpath("models", "model.pt"), bundle / "models" / "model.pt")
    results = check_bundle(bundle, checks=[CHECK_NETWORK_IO, CHECK_TORCHSCRIPT])
    assert all(not r.ok and "state_dict" in r.detail for r in results), results


_SCRIPT_DIFFERS = '''
import torch


class Net(torch.nn.Module):
    """A 1x1x1 convolution that adds 1 when scripted: eager and TorchScript outputs differ."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self.conv(x) + 1.0
        return self.conv(x)
'''


def test_torchscript_outputs_differ(
    make_bundle: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"zoo_check_net_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(_SCRIPT_DIFFERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        bundle = make_bundle(network_def={"_target_": f"{module}.Net"})
        results = _by_name(check_bundle(bundle, checks=[CHECK_TORCHSCRIPT, CHECK_TORCHSCRIPT_OUTPUTS]))
    finally:
        sys.modules.pop(module, None)
    assert results[CHECK_TORCHSCRIPT].ok, results
    assert not results[CHECK_TORCHSCRIPT_OUTPUTS].ok and "pred" in results[CHECK_TORCHSCRIPT_OUTPUTS].detail


def test_dict_output_network(make_bundle: Callable[..., Path], tiny_metadata: Callable[..., dict]) -> None:
    """LNMSNet (tiny) returns a dict: ``pred`` is its ``mask``, every head is described and scripts identically."""
    networks = pytest.importorskip("lung_nodule_mtl.networks", reason="lung_nodule_mtl.networks not importable")
    DEFAULT_HEADS = networks.DEFAULT_HEADS
    real = json.loads((Path(__file__).resolve().parents[2] / "bundle/configs/metadata.json").read_text())
    fmt = real["network_data_format"]
    fmt["inputs"]["image"]["spatial_shape"] = [16, 16, 16]
    fmt["outputs"]["pred"]["spatial_shape"] = [16, 16, 16]
    heads = [*DEFAULT_HEADS, "nodule"]  # the released network: the default heads and the detection head
    net = {"_target_": "lung_nodule_mtl.networks.LNMSNet", "in_channels": 3, "init_filters": 2, "blocks": [1, 1]}
    net["heads"] = heads
    results = check_bundle(make_bundle(network_def=net, metadata=tiny_metadata(**fmt)), checks=[*CHEAP, *NETWORK])
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    by = _by_name(results)
    assert "12 output(s)" in by[CHECK_NETWORK_IO].detail and "12 output(s)" in by[CHECK_TORCHSCRIPT_OUTPUTS].detail

    del fmt["outputs"]["texture"]  # an undescribed output fails network_io
    bundle = make_bundle("undescribed", network_def=net, metadata=tiny_metadata(**fmt), weights=False)
    shutil.copytree(make_bundle("weights", network_def=net) / "models", bundle / "models")
    (result,) = check_bundle(bundle, checks=[CHECK_NETWORK_IO])
    assert not result.ok and "texture" in result.detail


def test_ill_args(tmp_path: Path, make_bundle: Callable[..., Path]) -> None:
    with pytest.raises(FileNotFoundError, match="bundle_dir"):
        check_bundle(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown"):
        check_bundle(make_bundle(weights=False), checks=["licence"])
    with pytest.raises(ValueError, match="atol"):
        check_bundle(make_bundle(weights=False), atol=-1.0)


def test_main_exit_status(make_bundle: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle(weights=False)
    assert main([str(bundle), "--check", CHECK_VERSION, "--check", CHECK_REQUIRED_FILES]) == 0
    assert "PASS" in capsys.readouterr().out
    (bundle / "LICENSE").unlink()
    assert main([str(bundle), "--check", CHECK_REQUIRED_FILES]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert main([str(bundle.parent / "missing")]) == 1


def test_module_runs_as_script(make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle(weights=False)
    cmd = [sys.executable, "-m", "lung_nodule_mtl.zoo.checks", str(bundle), "--check", CHECK_VERSION]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "1/1 checks passed" in proc.stdout
