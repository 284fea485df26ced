"""The MONAI Model Zoo's checks of a bundle folder, as the project's own script.

Reproduces, in the Zoo CI's order (``ci/verify_bundle.py`` of Project-MONAI/model-zoo), what a submitted bundle
must pass, and adds one check the Zoo does not make (TorchScript outputs equal eager outputs)::

    python -m lung_nodule_mtl.zoo.checks BUNDLE_DIR [--schema meta_schema_20240725.json]

======================  ===========================================================================================
check                   passes when
======================  ===========================================================================================
``required_files``      ``configs/metadata.json`` and ``LICENSE`` exist
``recommended_files``   (warning only) ``models/model.pt`` and ``configs/inference.(json|yaml)`` exist
``file_sizes``          no file is over 25 MB unless ``large_files.(yml|yaml|json)`` lists it with url and hash
``version``             ``metadata.json`` has ``version`` and ``changelog``, and ``version`` is a key of ``changelog``
``metadata_schema``     ``metadata.json`` validates against the schema file given (skipped without one)
``network_io``          on a random input shaped as ``network_data_format.inputs.image``, every output described in
                        ``network_data_format.outputs`` has its ``num_channels`` and ``dtype`` (``pred`` is the
                        network's ``mask`` output when the network returns a dict), and every output is described
``torchscript``         ``ckpt_export`` of ``network_def`` with ``models/model.pt`` succeeds and ``torch.jit.load``
                        reads the result (and ``models/model.ts``, if present)
``torchscript_outputs`` the TorchScript module's outputs equal the eager network's on the same random input
======================  ===========================================================================================

The network checks run on the CPU, in this process, with the weights of ``models/model.pt``.

Why this lives in the runtime package and not in a developer tool: ``lung-nodule-mtl export-bundle`` (a user command,
:mod:`lung_nodule_mtl.zoo.export`) runs the file, size and version checks on what it is about to write and refuses
a bundle that would fail them, and a user who changes the configs or retrains runs the whole list before submitting
to the Zoo; the export also ships the package into the bundle's ``scripts/`` without :mod:`lung_nodule_mtl.zoo`, so
the checks cost an exported bundle nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "ALL_CHECKS",
    "CHECK_FILE_SIZES",
    "CHECK_NETWORK_IO",
    "CHECK_RECOMMENDED_FILES",
    "CHECK_REQUIRED_FILES",
    "CHECK_SCHEMA",
    "CHECK_TORCHSCRIPT",
    "CHECK_TORCHSCRIPT_OUTPUTS",
    "CHECK_VERSION",
    "INFERENCE_CONFIGS",
    "KNOWN_SCHEMA_MD5",
    "LARGE_FILES_NAMES",
    "MAX_FILE_BYTES",
    "WARNING",
    "CheckResult",
    "check_bundle",
    "file_hash",
    "find_inference_config",
    "large_file_entries",
    "main",
]

MAX_FILE_BYTES = 25_000_000
"""Largest file a bundle may hold (25 MB); larger ones go in ``large_files.yml`` and are downloaded."""

LARGE_FILES_NAMES = ("large_files.yml", "large_files.yaml", "large_files.json")
"""Names the Zoo accepts for the list of large files, at the bundle root."""

INFERENCE_CONFIGS = ("configs/inference.json", "configs/inference.yaml", "configs/inference.yml")
"""Where the Zoo looks for the inference config (the first that exists is used)."""

KNOWN_SCHEMA_MD5 = {
    "meta_schema_20240725.json": "06954cad2cc5d3784e72077ac76f0fc8",
    "meta_schema_20220324.json": "662135097106b71067cd1fc657f8720f",
}
"""md5 of the published metadata schemas, keyed by the file name the ``"schema"`` URL ends with."""

WARNING = "warning: "
"""Prefix of the ``detail`` of a result that passes with a warning (or was skipped)."""

REQUIRED_FILES = ("configs/metadata.json", "LICENSE")
MODEL_FILE = "models/model.pt"
TORCHSCRIPT_FILE = "models/model.ts"
METADATA_FILE = "configs/metadata.json"

CHECK_REQUIRED_FILES = "required_files"
CHECK_RECOMMENDED_FILES = "recommended_files"
CHECK_FILE_SIZES = "file_sizes"
CHECK_VERSION = "version"
CHECK_SCHEMA = "metadata_schema"
CHECK_NETWORK_IO = "network_io"
CHECK_TORCHSCRIPT = "torchscript"
CHECK_TORCHSCRIPT_OUTPUTS = "torchscript_outputs"

ALL_CHECKS: tuple[str, ...] = (
    CHECK_REQUIRED_FILES,
    CHECK_RECOMMENDED_FILES,
    CHECK_FILE_SIZES,
    CHECK_VERSION,
    CHECK_SCHEMA,
    CHECK_NETWORK_IO,
    CHECK_TORCHSCRIPT,
    CHECK_TORCHSCRIPT_OUTPUTS,
)
"""Every check, in the order they run."""

_NETWORK_CHECKS = (CHECK_NETWORK_IO, CHECK_TORCHSCRIPT, CHECK_TORCHSCRIPT_OUTPUTS)
_DEFAULT_OUTPUT_KEYS = {"pred": "mask"}  # metadata output name -> key of the network's output dict


class CheckResult(NamedTuple):
    """Outcome of one check.

    Attributes:
        check: name of the check (one of :data:`ALL_CHECKS`).
        ok: ``True`` if it passed (a warning or a skip passes; its ``detail`` starts with :data:`WARNING`).
        detail: what was found, or what is wrong and how to fix it.
    """

    check: str
    ok: bool
    detail: str


def _fail(check: str, e: BaseException) -> CheckResult:
    return CheckResult(check, False, f"{type(e).__name__}: {e}")


def file_hash(path: str | os.PathLike[str], hash_type: str = "md5") -> str:
    """Hex digest of a file (``hash_type``: any :mod:`hashlib` name, e.g. ``md5``, ``sha256``)."""
    try:
        h = hashlib.new(hash_type.lower())
    except ValueError as e:
        raise ValueError(f"hash_type must be a hashlib algorithm such as 'md5' or 'sha256', got {hash_type!r}.") from e
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def large_file_entries(bundle_dir: str | os.PathLike[str]) -> tuple[Path | None, list[dict[str, Any]]]:
    """The ``large_files`` list of a bundle: ``(file, entries)``, ``(None, [])`` when the bundle has none.

    Raises:
        ValueError: if the file is not ``{"large_files": [{"path": ..., "url": ..., ...}, ...]}``.
    """
    root = Path(bundle_dir)
    for name in LARGE_FILES_NAMES:
        path = root / name
        if path.is_file():
            break
    else:
        return None, []
    if path.suffix == ".json":
        content = json.loads(path.read_text(encoding="utf-8"))
    else:
        import yaml

        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = content.get("large_files") if isinstance(content, Mapping) else None
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) and "path" in e for e in entries):
        raise ValueError(f"{path}: expected 'large_files: [{{path, url, hash_val, hash_type}}, ...]', got {content!r}.")
    return path, [dict(e) for e in entries]


def find_inference_config(bundle_dir: str | os.PathLike[str]) -> Path | None:
    """The bundle's inference config (``configs/inference.json`` or ``.yaml``/``.yml``), ``None`` if absent."""
    for rel in INFERENCE_CONFIGS:
        if (Path(bundle_dir) / rel).is_file():
            return Path(bundle_dir) / rel
    return None


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.relative_to(root).parts)


def _check_required_files(root: Path) -> CheckResult:
    missing = [rel for rel in REQUIRED_FILES if not (root / rel).is_file()]
    if missing:
        return CheckResult(CHECK_REQUIRED_FILES, False, f"missing in {root}: {', '.join(missing)}")
    return CheckResult(CHECK_REQUIRED_FILES, True, ", ".join(REQUIRED_FILES))


def _check_recommended_files(root: Path) -> CheckResult:
    missing = [] if (root / MODEL_FILE).is_file() else [MODEL_FILE]
    config = find_inference_config(root)
    if config is None:
        missing.append("configs/inference.(json|yaml)")
    if missing:
        return CheckResult(
            CHECK_RECOMMENDED_FILES, True, f"{WARNING}missing {', '.join(missing)} (the Zoo expects them)"
        )
    return CheckResult(CHECK_RECOMMENDED_FILES, True, f"{MODEL_FILE}, {Path(str(config)).relative_to(root)}")


def _check_file_sizes(root: Path) -> CheckResult:
    try:
        lf_path, entries = large_file_entries(root)
    except (ValueError, OSError) as e:
        return _fail(CHECK_FILE_SIZES, e)
    lf_name = LARGE_FILES_NAMES[0] if lf_path is None else lf_path.name
    listed = {os.path.normpath(str(e["path"])): e for e in entries}
    problems = []
    for entry in entries:
        missing = [k for k in ("url", "hash_val", "hash_type") if not entry.get(k)]
        if missing:
            problems.append(f"{lf_name}: entry {entry['path']!r} lacks {', '.join(missing)}")
    big = []
    for path in _files(root):
        size = path.stat().st_size
        rel = os.path.normpath(str(path.relative_to(root)))
        if size <= MAX_FILE_BYTES:
            continue
        big.append(rel)
        listed_entry = listed.get(rel)
        if listed_entry is None:
            problems.append(
                f"{rel} is {size / 1e6:.1f} MB > {MAX_FILE_BYTES / 1e6:.0f} MB and not listed in "
                f"{LARGE_FILES_NAMES[0]} (list it with url, hash_val, hash_type, and keep it out of the bundle)"
            )
        elif listed_entry.get("hash_val") and listed_entry.get("hash_type"):
            hash_type, expected = str(listed_entry["hash_type"]), str(listed_entry["hash_val"])
            actual = file_hash(path, hash_type)
            if actual != expected.lower():
                problems.append(f"{rel}: {hash_type} is {actual}, {lf_name} says {expected}")
    if problems:
        return CheckResult(CHECK_FILE_SIZES, False, "; ".join(problems))
    note = f"; listed in {lf_name}: {', '.join(big)}" if big else ""
    return CheckResult(CHECK_FILE_SIZES, True, f"no file over {MAX_FILE_BYTES / 1e6:.0f} MB unlisted{note}")


def _load_metadata(root: Path) -> dict[str, Any]:
    path = root / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def _check_version(root: Path) -> CheckResult:
    try:
        meta = _load_metadata(root)
    except (OSError, ValueError) as e:
        return _fail(CHECK_VERSION, e)
    missing = [k for k in ("version", "changelog") if k not in meta]
    if missing:
        return CheckResult(CHECK_VERSION, False, f"{METADATA_FILE} lacks {', '.join(missing)}")
    version, changelog = meta["version"], meta["changelog"]
    if not isinstance(changelog, Mapping) or version not in changelog:
        keys = list(changelog) if isinstance(changelog, Mapping) else changelog
        return CheckResult(CHECK_VERSION, False, f"version {version!r} is not a key of changelog {keys!r}")
    return CheckResult(CHECK_VERSION, True, f"version {version} in changelog")


def _check_schema(root: Path, schema_path: str | os.PathLike[str] | None) -> CheckResult:
    if schema_path is None:
        return CheckResult(CHECK_SCHEMA, True, f"{WARNING}skipped: no schema file given (--schema)")
    schema = Path(schema_path)
    try:
        meta = _load_metadata(root)
        if not schema.is_file():
            raise FileNotFoundError(f"schema file {schema} not found")
        url = str(meta.get("schema", ""))
        expected_md5 = KNOWN_SCHEMA_MD5.get(url.rsplit("/", 1)[-1])
        if expected_md5 is not None and file_hash(schema) != expected_md5:
            return CheckResult(
                CHECK_SCHEMA,
                False,
                f"{schema} is not the schema {METADATA_FILE} names ({url}): md5 {file_hash(schema)}, "
                f"expected {expected_md5}",
            )
        from monai.bundle import verify_metadata

        verify_metadata(meta_file=str(root / METADATA_FILE), filepath=str(schema), hash_val=expected_md5)
    except Exception as e:
        return _fail(CHECK_SCHEMA, e)
    return CheckResult(CHECK_SCHEMA, True, f"valid against {schema.name}")


def _as_dict(output: Any) -> dict[str, Any]:
    """A network's output as ``{name: tensor}`` (a tensor is ``{"pred": t}``, a sequence ``{"0": t0, ...}``)."""
    import torch

    if isinstance(output, torch.Tensor):
        return {"pred": output}
    if isinstance(output, Mapping):
        return {str(k): v for k, v in output.items()}
    if isinstance(output, (list, tuple)):
        return {str(i): v for i, v in enumerate(output)}
    raise TypeError(f"network output must be a tensor, a dict or a sequence of tensors, got {type(output).__name__}")


def _compare_io(meta: Mapping[str, Any], output: Any, output_keys: Mapping[str, str]) -> CheckResult:
    import torch
    from monai.utils import get_equivalent_dtype

    described = meta.get("network_data_format", {}).get("outputs", {})
    if not described:
        return CheckResult(CHECK_NETWORK_IO, False, f"{METADATA_FILE}: network_data_format.outputs is empty")
    if isinstance(output, torch.Tensor):
        described = {"pred": described["pred"]} if "pred" in described else {}
        if not described:
            return CheckResult(CHECK_NETWORK_IO, False, "the network returns one tensor but outputs.pred is missing")
    outs = _as_dict(output)
    problems, used = [], set()
    for name, spec in described.items():
        key = name if name in outs else output_keys.get(name, name)
        if key not in outs:
            problems.append(f"outputs.{name}: no such network output (has {sorted(outs)})")
            continue
        used.add(key)
        t = outs[key]
        if not isinstance(t, torch.Tensor):
            problems.append(f"outputs.{name}: network output {key!r} is a {type(t).__name__}, not a tensor")
            continue
        channels = spec.get("num_channels")
        if t.dim() < 2 or t.shape[1] != channels:
            problems.append(
                f"outputs.{name}: num_channels {channels}, network output {key!r} has shape {list(t.shape)}"
            )
        dtype = get_equivalent_dtype(spec.get("dtype", "float32"), torch.Tensor)
        if t.dtype != dtype:
            problems.append(f"outputs.{name}: dtype {dtype}, network output {key!r} is {t.dtype}")
        spatial = spec.get("spatial_shape")
        if isinstance(spatial, list) and t.dim() != 2 + len(spatial):
            problems.append(
                f"outputs.{name}: spatial_shape {spatial} means {2 + len(spatial)} dims, got shape {list(t.shape)}"
            )
    undescribed = sorted(set(outs) - used)
    if undescribed:
        problems.append(f"network outputs not described in network_data_format.outputs: {undescribed}")
    if problems:
        return CheckResult(CHECK_NETWORK_IO, False, "; ".join(problems))
    return CheckResult(CHECK_NETWORK_IO, True, f"{len(described)} output(s) match: {', '.join(described)}")


def _max_difference(eager: Any, scripted: Any, atol: float, rtol: float) -> tuple[bool, str]:
    import torch

    a, b = _as_dict(eager), _as_dict(scripted)
    if set(a) != set(b):
        return False, f"outputs differ in keys: eager {sorted(a)}, TorchScript {sorted(b)}"
    worst, bad = 0.0, []
    for k in sorted(a):
        if a[k].shape != b[k].shape:
            bad.append(f"{k}: shape {list(a[k].shape)} vs {list(b[k].shape)}")
            continue
        diff = (a[k].float() - b[k].float()).abs().max().item() if a[k].numel() else 0.0
        worst = max(worst, diff)
        if not torch.allclose(a[k], b[k], atol=atol, rtol=rtol, equal_nan=True):
            bad.append(f"{k}: max |diff| {diff:.3g}")
    if bad:
        return False, f"TorchScript outputs differ from eager (atol {atol}, rtol {rtol}): {'; '.join(bad)}"
    return True, f"{len(a)} output(s) equal within atol {atol}, rtol {rtol} (max |diff| {worst:.3g})"


def _network_checks(
    root: Path,
    wanted: Sequence[str],
    net_id: str,
    output_keys: Mapping[str, str],
    atol: float,
    rtol: float,
    seed: int,
) -> list[CheckResult]:
    import torch
    from monai.bundle import ConfigParser, ckpt_export
    from monai.bundle.scripts import _get_fake_spatial_shape
    from monai.utils import get_equivalent_dtype

    results: dict[str, CheckResult] = {}
    config = find_inference_config(root)
    ckpt = root / MODEL_FILE
    missing = ([] if config is not None else ["configs/inference.(json|yaml)"]) + (
        [] if ckpt.is_file() else [MODEL_FILE]
    )
    if missing:
        skip = f"{WARNING}skipped: missing {', '.join(missing)}"
        return [CheckResult(c, True, skip) for c in wanted]
    try:
        meta = _load_metadata(root)
        image = meta["network_data_format"]["inputs"]["image"]
        shape = (1, int(image["num_channels"]), *_get_fake_spatial_shape(tuple(image["spatial_shape"])))
        dtype = get_equivalent_dtype(image.get("dtype", "float32"), torch.Tensor)
        x = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)

        parser = ConfigParser()
        parser.read_config(str(config))
        parser.read_meta(str(root / METADATA_FILE))
        parser["bundle_root"] = str(root)
        net = parser.get_parsed_content(net_id)
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        net = net.cpu().eval()
        with torch.no_grad():
            eager = net(x)
    except Exception as e:
        return [_fail(c, e) for c in wanted]

    if CHECK_NETWORK_IO in wanted:
        try:
            results[CHECK_NETWORK_IO] = _compare_io(meta, eager, output_keys)
        except Exception as e:
            results[CHECK_NETWORK_IO] = _fail(CHECK_NETWORK_IO, e)

    if CHECK_TORCHSCRIPT in wanted or CHECK_TORCHSCRIPT_OUTPUTS in wanted:
        with tempfile.TemporaryDirectory(prefix="zoo_check_") as tmp:
            ts_path = Path(tmp) / "verify_model.ts"
            try:
                ckpt_export(
                    net_id=net_id,
                    filepath=str(ts_path),
                    ckpt_file=str(ckpt),
                    meta_file=str(root / METADATA_FILE),
                    config_file=str(config),
                    bundle_root=str(root),
                )
                scripted = torch.jit.load(str(ts_path), map_location="cpu")
                detail = f"ckpt_export of {net_id!r} with {MODEL_FILE} and torch.jit.load succeeded"
                if (root / TORCHSCRIPT_FILE).is_file():
                    torch.jit.load(str(root / TORCHSCRIPT_FILE), map_location="cpu")
                    detail += f"; {TORCHSCRIPT_FILE} loads"
                results[CHECK_TORCHSCRIPT] = CheckResult(CHECK_TORCHSCRIPT, True, detail)
            except Exception as e:
                results[CHECK_TORCHSCRIPT] = _fail(CHECK_TORCHSCRIPT, e)
                scripted = None
            if scripted is None:
                results[CHECK_TORCHSCRIPT_OUTPUTS] = CheckResult(
                    CHECK_TORCHSCRIPT_OUTPUTS, False, "not run: the TorchScript export failed"
                )
            else:
                try:
                    with torch.no_grad():
                        ok, detail = _max_difference(eager, scripted.eval()(x), atol, rtol)
                    results[CHECK_TORCHSCRIPT_OUTPUTS] = CheckResult(CHECK_TORCHSCRIPT_OUTPUTS, ok, detail)
                except Exception as e:
                    results[CHECK_TORCHSCRIPT_OUTPUTS] = _fail(CHECK_TORCHSCRIPT_OUTPUTS, e)
    return [results[c] for c in wanted]


def check_bundle(
    bundle_dir: str | os.PathLike[str],
    schema_path: str | os.PathLike[str] | None = None,
    *,
    checks: Sequence[str] | None = None,
    net_id: str = "network_def",
    output_keys: Mapping[str, str] | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int = 0,
) -> list[CheckResult]:
    """Run the Model Zoo's checks on a bundle folder (see the module docstring for what each one checks).

    Args:
        bundle_dir: the bundle root (holding ``configs/``, ``models/``, ``LICENSE``).
        schema_path: local copy of the metadata schema the ``"schema"`` URL names (the Zoo downloads it; these
            machines cannot); without it ``metadata_schema`` is skipped with a warning.
        checks: names of the checks to run (a subset of :data:`ALL_CHECKS`, run in that order); all when ``None``.
        net_id: id of the network in the inference config.
        output_keys: metadata output name → key of the network's output dict, used when the name itself is not a
            key (default ``{"pred": "mask"}``).
        atol: absolute tolerance of the TorchScript-vs-eager comparison.
        rtol: relative tolerance of the TorchScript-vs-eager comparison.
        seed: seed of the random input.

    Returns:
        One :class:`CheckResult` ``(check, ok, detail)`` per check run, in :data:`ALL_CHECKS` order.

    Raises:
        FileNotFoundError: if ``bundle_dir`` is not a folder.
        ValueError: for an unknown check name or a negative tolerance.
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"bundle_dir {str(root)!r} is not a folder.")
    wanted = list(ALL_CHECKS) if checks is None else list(checks)
    unknown = sorted(set(wanted) - set(ALL_CHECKS))
    if unknown:
        raise ValueError(f"checks must be among {list(ALL_CHECKS)}, got unknown {unknown}.")
    if not (math.isfinite(atol) and atol >= 0 and math.isfinite(rtol) and rtol >= 0):
        raise ValueError(f"atol and rtol must be finite and >= 0, got atol={atol!r}, rtol={rtol!r}.")
    ordered = [c for c in ALL_CHECKS if c in wanted]
    keys = dict(_DEFAULT_OUTPUT_KEYS if output_keys is None else output_keys)

    results: list[CheckResult] = []
    for check in ordered:
        if check == CHECK_REQUIRED_FILES:
            results.append(_check_required_files(root))
        elif check == CHECK_RECOMMENDED_FILES:
            results.append(_check_recommended_files(root))
        elif check == CHECK_FILE_SIZES:
            results.append(_check_file_sizes(root))
        elif check == CHECK_VERSION:
            results.append(_check_version(root))
        elif check == CHECK_SCHEMA:
            results.append(_check_schema(root, schema_path))
    network = [c for c in ordered if c in _NETWORK_CHECKS]
    if network:
        results += _network_checks(root, network, net_id, keys, atol, rtol, seed)
    return results


def _status(result: CheckResult) -> str:
    if not result.ok:
        return "FAIL"
    return "WARN" if result.detail.startswith(WARNING) else "PASS"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lung_nodule_mtl.zoo.checks BUNDLE_DIR [--schema PATH]``: 0 if every check passes, else 1."""
    parser = argparse.ArgumentParser(
        prog="python -m lung_nodule_mtl.zoo.checks",
        description="Run the MONAI Model Zoo's checks on a bundle folder (files, sizes, version, metadata schema, "
        "network outputs, TorchScript export).",
    )
    parser.add_argument("bundle_dir", help="bundle root folder (configs/, models/, LICENSE)")
    parser.add_argument("--schema", default=None, help="local copy of the metadata schema named in metadata.json")
    parser.add_argument(
        "--check", action="append", choices=ALL_CHECKS, default=None, help="run only this check (repeatable)"
    )
    args = parser.parse_args(argv)
    try:
        results = check_bundle(args.bundle_dir, args.schema, checks=args.check)
    except (FileNotFoundError, ValueError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    width = max(len(r.check) for r in results)
    for r in results:
        print(f"{_status(r)}  {r.check:<{width}}  {r.detail}")
    failed = [r.check for r in results if not r.ok]
    print(
        f"{len(results) - len(failed)}/{len(results)} checks passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
