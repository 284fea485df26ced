"""Export the project's MONAI bundle as a self-contained folder or ``.zip`` for the Model Zoo.

The exported bundle runs without this repository and without the package installed::

    <out>/
        LICENSE
        large_files.yml            (only if bundle/ has one)
        configs/                   train.yaml, evaluate.yaml, inference.yaml, ... rewritten, metadata.json,
                                   logging.conf as they are
        docs/                      as in bundle/docs
        models/model.pt            from bundle/models or the ``ckpt`` given (a plain state dict)
        models/model.ts            from bundle/models, if present and no ``ckpt`` is given
        scripts/__init__.py        puts scripts/ on sys.path for ``import scripts``
        scripts/lung_nodule_mtl/   the package, less cli/ and zoo/

The configs are rewritten by :mod:`lung_nodule_mtl.zoo.standalone` so that every use of ``lung_nodule_mtl``
first puts ``<bundle_root>/scripts`` on ``sys.path``: they then work from any working directory and under
``python -m monai.bundle run``, ``ckpt_export`` and a plain ``ConfigParser``.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lung_nodule_mtl.zoo.checks import (
    CHECK_FILE_SIZES,
    CHECK_REQUIRED_FILES,
    CHECK_VERSION,
    MAX_FILE_BYTES,
    check_bundle,
    file_hash,
    large_file_entries,
)
from lung_nodule_mtl.zoo.standalone import (
    PACKAGE,
    SCRIPTS_DIR,
    PackageUse,
    find_package_use,
    make_standalone_config,
)

__all__ = ["BUNDLE_ENTRIES", "EXCLUDED_SUBPACKAGES", "default_bundle_dir", "export_bundle"]

logger = logging.getLogger(__name__)

BUNDLE_ENTRIES = ("LICENSE", "configs", "docs", "models", "large_files.yml", "large_files.yaml", "large_files.json")
"""What is copied from the bundle folder (run outputs such as ``eval/`` or ``data/`` are left behind)."""

MODEL_FILES = ("model.pt", "model.ts", "malignancy_fusion.json", "candidate_classifier.json")
"""The files of ``models/`` that go in the export (training checkpoints stay behind); all but ``model.pt`` belong to
the bundle's own weights and stay behind when other weights (``ckpt``) are exported."""

EXCLUDED_SUBPACKAGES = ("cli", "zoo", "__main__.py")
"""Parts of the package that are not copied into ``scripts/`` (command line and this exporter)."""

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
_METADATA = "metadata.json"
_STATE_DICT_KEYS = ("model", "network", "state_dict")
_FLOW_LIST_MAX = 6
_YAML_WIDTH = 100_000  # never fold a long expression over several lines

_SCRIPTS_INIT = '''"""Python code of this bundle: a copy of the ``{package}`` package ({version}).

Made by ``lung-nodule-mtl export-bundle``.

The configs put this folder on ``sys.path`` themselves (config items ``lnm_scripts_dir`` and ``lnm_scripts``),
so nothing needs installing. ``import scripts`` (from the bundle root) does the same for interactive use.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
'''

_YAML_HEADER = (
    "# Exported by `lung-nodule-mtl export-bundle` from bundle/configs/{name}: the {package} package is in\n"
    "# scripts/ and the `lnm_scripts` item puts it on sys.path; edit the source, not this file.\n"
)


def default_bundle_dir() -> Path:
    """``bundle/`` of the source checkout this package was imported from."""
    import lung_nodule_mtl

    return Path(lung_nodule_mtl.__file__).resolve().parents[1] / "bundle"


def _package_dir() -> Path:
    import lung_nodule_mtl

    return Path(lung_nodule_mtl.__file__).resolve().parent


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _write_checkpoint(ckpt: Path, dest: Path) -> None:
    """Copy ``ckpt`` to ``dest`` as a plain state dict (extracting ``model``/``network`` from a nested checkpoint)."""
    import torch

    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt {str(ckpt)!r} not found.")
    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    if _is_state_dict(obj):
        shutil.copyfile(ckpt, dest)
        return
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            if _is_state_dict(obj.get(key)):
                torch.save(obj[key], dest)
                return
    keys = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(
        f"ckpt {str(ckpt)!r} must be a network state dict or a checkpoint holding one under "
        f"{list(_STATE_DICT_KEYS)}, got {keys}."
    )


def _copy_package(dest: Path) -> None:
    """Copy the package (less :data:`EXCLUDED_SUBPACKAGES`) to ``dest`` and check nothing copied needs the rest."""
    src = _package_dir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")

    def _ignore(folder: str, names: list[str]) -> set[str]:
        skipped = set(ignore(folder, names))
        if Path(folder).resolve() == src:
            skipped |= set(EXCLUDED_SUBPACKAGES)
        return skipped

    shutil.copytree(src, dest, ignore=_ignore)
    excluded = tuple(f"{PACKAGE}.{p}" for p in EXCLUDED_SUBPACKAGES if not p.endswith(".py"))
    for path in sorted(dest.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            bad = [n for n in names if n in excluded or n.startswith(tuple(e + "." for e in excluded))]
            if bad:
                raise ValueError(
                    f"{src / path.relative_to(dest)} imports {bad[0]}, which the exported bundle leaves out "
                    f"(excluded: {list(EXCLUDED_SUBPACKAGES)}); move the code it needs elsewhere in the package."
                )


def _config_dumper() -> type:
    import yaml

    class ConfigDumper(yaml.SafeDumper):
        """Block style, except short lists of scalars (``[64, 64, 64]``), as the configs are written by hand."""

    def _list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
        short = len(data) <= _FLOW_LIST_MAX and all(isinstance(v, (int, float, str, bool)) for v in data)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=short and bool(data))

    ConfigDumper.add_representer(list, _list)
    return ConfigDumper


def _load_config(path: Path) -> Any:
    from monai.bundle import ConfigParser

    return ConfigParser.load_config_file(path)


def _leading_comments(text: str, name: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.replace("bundle/configs/", "configs/") + "\n")
    header = _YAML_HEADER.format(name=name, package=PACKAGE)
    return header + ("#\n" + "".join(lines) if lines else "")


def _rewrite_configs(src_configs: Path, dest_configs: Path) -> list[str]:
    """Write the rewritten configs of ``src_configs`` into ``dest_configs``; returns the names rewritten."""
    import yaml

    paths = sorted(p for p in src_configs.iterdir() if p.suffix in CONFIG_SUFFIXES and p.name != _METADATA)
    loaded = {p: _load_config(p) for p in paths}
    use = PackageUse()
    for path, config in loaded.items():
        if isinstance(config, Mapping):
            find_package_use(config, path.name, _package_dir(), use)
    rewritten = []
    for path, config in loaded.items():
        new = make_standalone_config(config, use, path.name)
        if new == config:
            continue
        dest = dest_configs / path.name
        if path.suffix == ".json":
            dest.write_text(json.dumps(new, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
        else:
            body = yaml.dump(new, Dumper=_config_dumper(), sort_keys=False, allow_unicode=True, width=_YAML_WIDTH)
            dest.write_text(_leading_comments(path.read_text(encoding="utf-8"), path.name) + body, encoding="utf-8")
        rewritten.append(path.name)
    return rewritten


def _copy_bundle(bundle: Path, staging: Path, with_own_files: bool) -> None:
    for name in BUNDLE_ENTRIES:
        src = bundle / name
        if not src.exists():
            continue
        if name == "models":
            (staging / name).mkdir()
            for model in MODEL_FILES:
                if (src / model).is_file() and (model == "model.pt" or with_own_files):
                    shutil.copy2(src / model, staging / name / model)
        elif src.is_dir():
            shutil.copytree(src, staging / name, ignore=shutil.ignore_patterns("__pycache__", ".*"))
        else:
            shutil.copy2(src, staging / name)


def _drop_large_files(staging: Path) -> list[str]:
    """Remove files over :data:`MAX_FILE_BYTES` listed (with a matching hash) in ``large_files``; returns them.

    Raises:
        ValueError: for a large file that is not listed, or whose hash differs from the listed one.
    """
    lf_path, entries = large_file_entries(staging)
    lf_name = "large_files.yml" if lf_path is None else lf_path.name
    listed = {os.path.normpath(str(e["path"])): e for e in entries}
    dropped = []
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        size = path.stat().st_size
        if size <= MAX_FILE_BYTES:
            continue
        rel = os.path.normpath(str(path.relative_to(staging)))
        entry = listed.get(rel)
        if entry is None or not entry.get("url") or not entry.get("hash_val"):
            raise ValueError(
                f"{rel} is {size / 1e6:.1f} MB, over the Model Zoo's {MAX_FILE_BYTES / 1e6:.0f} MB: upload it and "
                f"list it in bundle/large_files.yml as 'large_files: [{{path: {rel}, url: <download URL>, "
                f"hash_val: {file_hash(path)}, hash_type: md5}}]'."
            )
        hash_type = str(entry.get("hash_type", "md5"))
        actual = file_hash(path, hash_type)
        if actual != str(entry["hash_val"]).lower():
            raise ValueError(
                f"{rel}: {hash_type} is {actual} but {lf_name} lists {entry['hash_val']}; upload the new file "
                "and update the entry."
            )
        path.unlink()
        dropped.append(rel)
    return dropped


def _zip_folder(folder: Path, zip_path: Path) -> None:
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, Path(folder.name) / path.relative_to(folder))


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def export_bundle(
    out: str | os.PathLike[str],
    bundle_dir: str | os.PathLike[str] | None = None,
    ckpt: str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a self-contained copy of the bundle (folder, or ``.zip`` when ``out`` ends in ``.zip``).

    The bundle is built in a temporary folder beside ``out`` and renamed onto it only once complete, so ``out``
    is never left half-written; an existing ``out`` is replaced only with ``overwrite=True``.

    Args:
        out: destination folder, or ``<name>.zip`` (the archive then holds one folder ``<name>/``).
        bundle_dir: the bundle to export; ``bundle/`` of this source checkout when ``None``.
        ckpt: weights to ship as ``models/model.pt`` instead of ``bundle_dir/models/model.pt``: a state dict or a
            checkpoint holding one under ``model``/``network``/``state_dict`` (it is saved as a plain state dict,
            as ``ckpt_export`` and ``CheckpointLoader`` expect). ``models/model.ts`` is then left out (stale).
        overwrite: replace an existing non-empty ``out``.

    Returns:
        The path of the exported folder or archive.

    Raises:
        FileNotFoundError: if ``bundle_dir``, its ``configs/metadata.json`` or ``LICENSE``, or ``ckpt`` is missing.
        ValueError: if ``out`` exists, is not empty and ``overwrite`` is false; if ``out`` is inside
            ``bundle_dir`` (or the reverse); if a file over 25 MB is not listed in ``large_files.yml`` with its
            hash; if a config cannot be rewritten; or if the result fails the Zoo's file, size or version checks.
    """
    bundle = Path(default_bundle_dir() if bundle_dir is None else bundle_dir).resolve()
    if not bundle.is_dir():
        raise FileNotFoundError(f"bundle_dir {str(bundle)!r} is not a folder (pass the bundle to export).")
    for rel in ("configs/metadata.json", "LICENSE"):
        if not (bundle / rel).is_file():
            raise FileNotFoundError(f"bundle_dir {str(bundle)!r} has no {rel}, which the Model Zoo requires.")
    out_path = Path(out).resolve()
    as_zip = out_path.suffix.lower() == ".zip"
    if _is_within(out_path, bundle) or _is_within(bundle, out_path):
        raise ValueError(f"out {str(out_path)!r} must be outside bundle_dir {str(bundle)!r} and not contain it.")
    if out_path.exists():
        if as_zip and not out_path.is_file():
            raise ValueError(f"out {str(out_path)!r} ends in .zip but is a folder.")
        if not as_zip and not out_path.is_dir():
            raise ValueError(f"out {str(out_path)!r} is a file; give a folder or a path ending in .zip.")
        non_empty = as_zip or any(out_path.iterdir())
        if non_empty and not overwrite:
            raise ValueError(f"out {str(out_path)!r} exists and is not empty; pass overwrite=True to replace it.")
    name = out_path.stem if as_zip else out_path.name
    out_path.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent))
    try:
        staging = tmp / name
        staging.mkdir()
        _copy_bundle(bundle, staging, with_own_files=ckpt is None)
        if ckpt is not None:
            (staging / "models").mkdir(exist_ok=True)
            _write_checkpoint(Path(ckpt), staging / "models" / "model.pt")
        if (staging / SCRIPTS_DIR / "__init__.py").exists() or (staging / SCRIPTS_DIR / PACKAGE).exists():
            raise ValueError(f"bundle_dir {str(bundle)!r} already has {SCRIPTS_DIR}/: the export writes it.")
        _copy_package(staging / SCRIPTS_DIR / PACKAGE)
        from lung_nodule_mtl import __version__

        (staging / SCRIPTS_DIR / "__init__.py").write_text(
            _SCRIPTS_INIT.format(package=PACKAGE, version=__version__), encoding="utf-8"
        )
        if (bundle / "configs").is_dir():
            rewritten = _rewrite_configs(bundle / "configs", staging / "configs")
            logger.info("configs rewritten to use scripts/%s: %s", PACKAGE, ", ".join(rewritten) or "none")
        dropped = _drop_large_files(staging)
        if dropped:
            logger.info("left out large files listed in large_files.yml: %s", ", ".join(dropped))
        failed = [
            r for r in check_bundle(staging, checks=(CHECK_REQUIRED_FILES, CHECK_FILE_SIZES, CHECK_VERSION)) if not r.ok
        ]
        if failed:
            raise ValueError(
                f"the exported bundle fails the Model Zoo checks: {'; '.join(f'{r.check}: {r.detail}' for r in failed)}"
            )
        if as_zip:
            built = tmp / f"{name}.zip"
            _zip_folder(staging, built)
            os.replace(built, out_path)
        else:
            old = tmp / ".previous"
            if out_path.exists():
                os.replace(out_path, old)
            try:
                os.replace(staging, out_path)
            except BaseException:
                if old.exists():
                    os.replace(old, out_path)
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    logger.info("exported bundle %s to %s", bundle, out_path)
    return out_path
