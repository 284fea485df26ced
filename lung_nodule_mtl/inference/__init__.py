"""Whole-scan inference: read CT, find the lungs, sliding-window segmentation, per-nodule heads, reports."""

from lung_nodule_mtl.inference.batch import BatchResult, case_outputs, predict_batch, write_summary  # (reports.scan)
from lung_nodule_mtl.inference.bundle import find_bundle, load_scan_predictor, model_info
from lung_nodule_mtl.inference.pipeline import (
    NodulePrediction,
    ScanPrediction,
    ScanPredictor,
    autocast_dtype,
    resolve_device,
)
from lung_nodule_mtl.io.ct import Case, CTVolume, InputError, find_cases, load_ct, write_label_map
from lung_nodule_mtl.transforms.lung import bounding_box, lung_mask

__all__ = [
    "BatchResult",
    "CTVolume",
    "Case",
    "InputError",
    "NodulePrediction",
    "ScanPrediction",
    "ScanPredictor",
    "autocast_dtype",
    "bounding_box",
    "case_outputs",
    "find_bundle",
    "find_cases",
    "load_ct",
    "load_scan_predictor",
    "lung_mask",
    "model_info",
    "predict_batch",
    "resolve_device",
    "write_label_map",
    "write_summary",
]
