"""Datalists, the built-in synthetic chest CT, and converters of real data sets."""

import importlib
from typing import Any

from lung_nodule_mtl.data.caching import cached_dataset
from lung_nodule_mtl.data.datalist import (
    build_datalist,
    load_datalist,
    patient_folds,
    read_splits,
    select_fold,
    validate_item,
    write_datalist,
)
from lung_nodule_mtl.data.default import datalist_path, ensure_synthetic_data, resolve_datalist
from lung_nodule_mtl.data.lidc_idri.convert import prepare_lidc
from lung_nodule_mtl.data.lidc_idri.reading import parse_lidc_xml
from lung_nodule_mtl.data.luna16 import Luna16Result, find_luna16_scans, prepare_luna16, sphere_mask
from lung_nodule_mtl.data.nodule_table import NoduleRecord, read_nodule_table

_LAZY_MODULES = ("insertion", "scans")
"""Submodules reachable as attributes (bundle configs: ``$lung_nodule_mtl.data.scans.read_scan_splits(...)``), imported
on first use: they build training datasets with torch and MONAI, which the converters above do not need."""


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Luna16Result",
    "NoduleRecord",
    "build_datalist",
    "cached_dataset",
    "datalist_path",
    "ensure_synthetic_data",
    "find_luna16_scans",
    "load_datalist",
    "parse_lidc_xml",
    "patient_folds",
    "prepare_lidc",
    "prepare_luna16",
    "read_nodule_table",
    "read_splits",
    "resolve_datalist",
    "select_fold",
    "sphere_mask",
    "validate_item",
    "write_datalist",
]
