"""MONAI Model Zoo: the Zoo's checks of a bundle, and export of the project's bundle as a self-contained folder.

Names are imported on first use, so ``python -m lung_nodule_mtl.zoo.checks`` runs the module only once.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ALL_CHECKS": "checks",
    "CheckResult": "checks",
    "check_bundle": "checks",
    "export_bundle": "export",
    "make_standalone_config": "standalone",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
