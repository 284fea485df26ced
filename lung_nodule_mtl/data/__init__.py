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
from lung_nodule_mtl.data.luna16 import Luna16Result, find_luna16_scans, prepare_luna16, sphere_mask
from lung_nodule_mtl.data.nodule_table import NoduleRecord, read_nodule_table

__all__ = [
    "Luna16Result",
    "NoduleRecord",
    "build_datalist",
    "find_luna16_scans",
    "load_datalist",
    "patient_folds",
    "prepare_luna16",
    "read_nodule_table",
    "read_splits",
    "resolve_datalist",
    "select_fold",
    "sphere_mask",
    "validate_item",
    "write_datalist",
]
