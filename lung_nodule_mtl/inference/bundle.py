"""Build the whole-scan predictor from a MONAI bundle (``configs/inference.yaml`` + ``configs/scan_inference.yaml``).

``lung-nodule-mtl predict`` and ``python -m monai.bundle run scan_inferring`` read the same configs through
MONAI's :class:`~monai.bundle.ConfigParser`, so the network, patch, spacing, windows and weights are defined once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["BUNDLE_ENV", "SCAN_CONFIGS", "find_bundle", "load_scan_predictor", "model_info"]

BUNDLE_ENV = "LUNG_NODULE_MTL_BUNDLE"
"""Environment variable naming the bundle folder (set in the container)."""
SCAN_CONFIGS = ("inference.yaml", "scan_inference.yaml")


def find_bundle(bundle_dir: str | os.PathLike[str] | None = None) -> Path:
    """The bundle folder: ``bundle_dir``, else ``$LUNG_NODULE_MTL_BUNDLE``, else ``bundle/`` of this source checkout.

    Raises:
        FileNotFoundError: none of them holds ``configs/metadata.json``.
    """
    candidates = [bundle_dir] if bundle_dir is not None else []
    if bundle_dir is None and os.environ.get(BUNDLE_ENV):
        candidates.append(os.environ[BUNDLE_ENV])
    if bundle_dir is None:
        candidates.append(Path(__file__).resolve().parents[2] / "bundle")
    for c in candidates:
        path = Path(c)  # type: ignore[arg-type]
        if (path / "configs" / "metadata.json").is_file():
            return path
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no MONAI bundle (configs/metadata.json) found at {tried}; pass --bundle DIR.")


def model_info(ckpt_file: str | os.PathLike[str], meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Provenance for every report: the bundle's name and version and the weights file's SHA-256."""
    from lung_nodule_mtl.utils.io import file_sha256

    path = Path(ckpt_file)
    meta = dict(meta or {})
    return {
        "bundle_name": meta.get("name"),
        "bundle_version": meta.get("version"),
        "weights": path.name,
        "weights_sha256": file_sha256(path),
    }


def load_scan_predictor(
    bundle_dir: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None
) -> tuple[Any, Any]:
    """Parse the bundle's scan-inference configs and build ``scan_predictor``.

    Args:
        bundle_dir: see :func:`find_bundle`.
        overrides: config ids → values (e.g. ``{"ckpt_file": ..., "device_name": "cpu", "sw_overlap": 0.5}``).

    Returns:
        ``(predictor, parser)``: the :class:`~lung_nodule_mtl.inference.ScanPredictor` and the
        :class:`~monai.bundle.ConfigParser` (for the other settings, e.g. ``output_dir``).

    Raises:
        FileNotFoundError: no bundle, a missing config or weights file.
    """
    from monai.bundle import ConfigParser

    from lung_nodule_mtl.inference.pipeline import resolve_device

    bundle = find_bundle(bundle_dir)
    configs = [bundle / "configs" / name for name in SCAN_CONFIGS]
    for path in configs:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing bundle config.")
    parser = ConfigParser()
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser.read_config([str(p) for p in configs])
    parser["bundle_root"] = str(bundle)
    for key, value in (overrides or {}).items():
        parser[key] = value
    ckpt = Path(str(parser.get_parsed_content("ckpt_file")))
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: weights file not found (pass --checkpoint or --bundle).")
    resolve_device(parser.get_parsed_content("device_name"))  # a clear error before building anything
    try:
        predictor = parser.get_parsed_content("scan_predictor")
    except RuntimeError as e:  # MONAI wraps the component's own error: surface a bad value as itself
        cause = e.__cause__
        if isinstance(cause, ValueError | FileNotFoundError):
            raise cause from None
        raise
    return predictor, parser
