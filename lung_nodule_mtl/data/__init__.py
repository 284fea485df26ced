"""Datalists, the built-in synthetic chest CT, and converters of real data sets."""

from lung_nodule_mtl.data.datalist import (
    build_datalist,
    load_datalist,
    patient_folds,
    read_splits,
    select_fold,
    validate_item,
    write_datalist,
)
from lung_nodule_mtl.data.default import resolve_datalist
from lung_nodule_mtl.data.nodule_table import NoduleRecord, read_nodule_table

__all__ = [
    "NoduleRecord",
    "build_datalist",
    "load_datalist",
    "patient_folds",
    "read_nodule_table",
    "read_splits",
    "resolve_datalist",
    "select_fold",
    "validate_item",
    "write_datalist",
]
