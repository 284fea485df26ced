"""lung_nodule_mtl.zoo.export: a self-contained bundle, written atomically, that runs without the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lung_nodule_mtl.cli.main import main as cli_main
from lung_nodule_mtl.zoo.checks import MAX_FILE_BYTES, file_hash
from lung_nodule_mtl.zoo.export import export_bundle

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundle"
INFERENCE = BUNDLE / "configs" / "inference.yaml"
OVER_LIMIT = 26 * 1024**2


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _real_bundle_ready() -> None:
    if not INFERENCE.is_file():
        pytest.skip("bundle/configs/inference.yaml is not written yet")
    try:
        from lung_nodule_mtl.networks import LNMSNet  # noqa: F401
    except ImportError as e:
        pytest.skip(f"lung_nodule_mtl.networks.LNMSNet is not available yet: {e}")


@pytest.fixture(scope="module")
def real_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights of the real inference config's ``network_def``, nested as a training checkpoint saves them."""
    _real_bundle_ready()
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint_epoch=1.pt"
    torch.save({"model": net.state_dict(), "epoch": torch.tensor(1)}, path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, real_ckpt: Path) -> Path:
    return export_bundle(tmp_path_factory.mktemp("export") / "lung_nodule_ct_mtl", BUNDLE, ckpt=real_ckpt)


def test_layout(exported: Path) -> None:
    for rel in ("LICENSE", "configs/metadata.json", "configs/inference.yaml", "docs/data_license.txt"):
        assert (exported / rel).is_file(), rel
    assert (exported / "configs/metadata.json").read_bytes() == (BUNDLE / "configs/metadata.json").read_bytes()
    assert (exported / "LICENSE").read_bytes() == (BUNDLE / "LICENSE").read_bytes()
    package = exported / "scripts" / "lung_nodule_mtl"
    assert (exported / "scripts" / "__init__.py").is_file() and (package / "networks" / "lnmsnet.py").is_file()
    for left_out in ("cli", "zoo", "__main__.py"):
        assert not (package / left_out).exists(), left_out
    assert not list(exported.rglob("__pycache__"))
    assert all(p.stat().st_size <= MAX_FILE_BYTES for p in exported.rglob("*") if p.is_file())
    state = torch.load(exported / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # the nested checkpoint became a state dict
    assert not _leftovers(exported.parent)


def test_configs_rewritten(exported: Path) -> None:
    from monai.bundle import ConfigParser

    for path in sorted((exported / "configs").glob("*.yaml")):
        text = path.read_text()
        assert "$import lung_nodule_mtl" not in text, path.name
        config = ConfigParser.load_config_file(path)
        if "lung_nodule_mtl" in json.dumps({k: v for k, v in config.items() if k != "lnm_scripts"}):
            assert "lnm_scripts" in config, path.name


_STANDALONE = r"""
import importlib.util, json, sys
# what a machine without this repository sees: drop the editable install's finder
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
assert importlib.util.find_spec("lung_nodule_mtl") is None, "lung_nodule_mtl is importable before the bundle runs"
import torch
from monai.bundle import ConfigParser, ckpt_export

bundle, ts_path = sys.argv[1], sys.argv[2]
parser = ConfigParser()
parser.read_config(bundle + "/configs/inference.yaml")
parser.read_meta(bundle + "/configs/metadata.json")
parser["bundle_root"] = bundle
net = parser.get_parsed_content("network_def")
net.load_state_dict(torch.load(bundle + "/models/model.pt", map_location="cpu", weights_only=True))
import lung_nodule_mtl

# the Model Zoo CI's export step (ci/verify_bundle.py): in-process, bundle_root given, cwd elsewhere
ckpt_export(
    net_id="network_def", filepath=ts_path, ckpt_file=bundle + "/models/model.pt",
    meta_file=bundle + "/configs/metadata.json", config_file=bundle + "/configs/inference.yaml", bundle_root=bundle,
)
torch.jit.load(ts_path)
print(json.dumps({"package": lung_nodule_mtl.__file__, "network": type(net).__module__, "sys_path": sys.path}))
"""


def test_runs_without_repository(exported: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _STANDALONE, str(exported), str(tmp_path / "verify_model.ts")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(info["package"]).is_relative_to(exported / "scripts")
    assert info["network"] == "lung_nodule_mtl.networks.lnmsnet"
    assert str(REPO) not in info["sys_path"]
    assert (tmp_path / "verify_model.ts").is_file()


def test_zip(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    out = export_bundle(tmp_path / "dist" / "tiny_v0.1.0.zip", make_bundle())
    assert out == tmp_path / "dist" / "tiny_v0.1.0.zip"
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
    for rel in ("configs/metadata.json", "configs/inference.json", "LICENSE", "models/model.pt", "scripts/__init__.py"):
        assert f"tiny_v0.1.0/{rel}" in names, rel
    assert not _leftovers(out.parent)


def test_refuses_then_overwrites(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    bundle, out = make_bundle(), tmp_path / "out"
    (out / "old").mkdir(parents=True)
    with pytest.raises(ValueError, match="overwrite"):
        export_bundle(out, bundle)
    assert (out / "old").is_dir()
    export_bundle(out, bundle, overwrite=True)
    assert not (out / "old").exists() and (out / "configs" / "metadata.json").is_file()
    (tmp_path / "empty").mkdir()
    export_bundle(tmp_path / "empty", bundle)  # an empty folder is not overwritten, it is filled
    assert not _leftovers(tmp_path)


def test_unlisted_large_file_leaves_nothing(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    bundle = make_bundle()
    with open(bundle / "models" / "model.ts", "wb") as f:
        f.truncate(OVER_LIMIT)
    out = tmp_path / "dist" / "out"
    with pytest.raises(ValueError, match=r"models/model\.ts.*large_files\.yml"):
        export_bundle(out, bundle)
    assert not out.exists() and not _leftovers(out.parent)


def test_listed_large_file_left_out(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    bundle = make_bundle()
    big = bundle / "models" / "model.ts"
    with open(big, "wb") as f:
        f.truncate(OVER_LIMIT)
    entry = {"path": "models/model.ts", "url": "https://example.org/model.ts", "hash_val": file_hash(big)}
    (bundle / "large_files.yml").write_text(json.dumps({"large_files": [entry | {"hash_type": "md5"}]}))
    out = export_bundle(tmp_path / "out", bundle)
    assert not (out / "models" / "model.ts").exists() and (out / "large_files.yml").is_file()


def test_ill_args(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    bundle = make_bundle()
    with pytest.raises(ValueError, match="outside"):
        export_bundle(bundle / "export", bundle)
    with pytest.raises(FileNotFoundError, match="bundle_dir"):
        export_bundle(tmp_path / "out", tmp_path / "missing")
    (bundle / "LICENSE").unlink()
    with pytest.raises(FileNotFoundError, match="LICENSE"):
        export_bundle(tmp_path / "out", bundle)
    with pytest.raises(FileNotFoundError, match="ckpt"):
        export_bundle(tmp_path / "out", make_bundle("other"), ckpt=tmp_path / "none.pt")
    torch.save({"optimizer": {"lr": 1.0}}, tmp_path / "opt.pt")
    with pytest.raises(ValueError, match="state dict"):
        export_bundle(tmp_path / "out", make_bundle("third"), ckpt=tmp_path / "opt.pt")
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_cli(make_bundle: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle, out = make_bundle(), tmp_path / "cli_out"
    assert cli_main(["export-bundle", "--out", str(out), "--bundle", str(bundle)]) == 0
    assert "written to" in capsys.readouterr().out
    assert cli_main(["export-bundle", "--out", str(out), "--bundle", str(bundle)]) == 1
    assert "overwrite" in capsys.readouterr().err
    assert cli_main(["export-bundle", "--out", str(out), "--bundle", str(bundle), "--overwrite"]) == 0


def test_the_malignancy_fusion_goes_with_its_own_weights_only(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    bundle = make_bundle()
    (bundle / "models" / "malignancy_fusion.json").write_text('{"kind": "malignancy_fusion"}')
    (bundle / "models" / "checkpoint_epoch=3.pt").write_bytes(b"")  # training leftovers stay behind
    own = export_bundle(tmp_path / "own", bundle)
    assert (own / "models" / "malignancy_fusion.json").read_text() == '{"kind": "malignancy_fusion"}'
    assert not (own / "models" / "checkpoint_epoch=3.pt").exists()
    other_weights = tmp_path / "other.pt"
    torch.save(torch.load(bundle / "models" / "model.pt", weights_only=True), other_weights)
    second = make_bundle("second")
    (second / "models" / "malignancy_fusion.json").write_text('{"kind": "malignancy_fusion"}')
    other = export_bundle(tmp_path / "other", second, ckpt=other_weights)
    assert (other / "models" / "model.pt").is_file() and not (other / "models" / "malignancy_fusion.json").exists()
