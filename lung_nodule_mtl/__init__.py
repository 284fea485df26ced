"""lung_nodule_mtl: lung nodule segmentation, malignancy and LIDC-IDRI attributes from chest CT, with MONAI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lung_nodule_mtl")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
