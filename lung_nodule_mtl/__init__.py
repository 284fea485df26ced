"""lung_nodule_mtl: lung nodule segmentation, malignancy and LIDC-IDRI attributes from chest CT, with MONAI.

Submodules are imported on first attribute access, so ``import lung_nodule_mtl`` stays light and a
bundle config needs only ``$import lung_nodule_mtl`` to use ``$lung_nodule_mtl.data.resolve_datalist(...)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lung_nodule_mtl._version import __version__

_SUBMODULES = frozenset(
    {
        "cli",
        "constants",
        "data",
        "engines",
        "inference",
        "io",
        "losses",
        "metrics",
        "networks",
        "reports",
        "transforms",
        "utils",
    }
)

__all__ = ["__version__", *sorted(_SUBMODULES)]


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
