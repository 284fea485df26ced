"""The whole-scan outputs of ``predict`` / ``scan_inferring``: where a case's files go, its ``<case>.json`` report,
its QC figures and the batch's ``summary.csv`` (:mod:`lung_nodule_mtl.inference.batch` runs the batch and writes
them atomically).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from lung_nodule_mtl import __version__
from lung_nodule_mtl.io.geometry import world_to_voxel
from lung_nodule_mtl.reports.html import case_report_html, chest_side
from lung_nodule_mtl.reports.qc import nodule_qc_image, write_nodule_qc
from lung_nodule_mtl.utils.io import atomic_path, atomic_write_csv

if TYPE_CHECKING:
    from lung_nodule_mtl.inference.pipeline import ScanPrediction, ScanPredictor

__all__ = [
    "DISCLAIMER",
    "REPORT_VERSION",
    "SUMMARY_COLUMNS",
    "SUMMARY_FILE",
    "case_outputs",
    "is_complete",
    "lungs_center_ras",
    "nodule_views",
    "scan_report",
    "summary_rows",
    "write_html_report",
    "write_qc_figures",
    "write_summary",
]

REPORT_VERSION = 1
"""Version of the ``<case>.json`` layout."""

SUMMARY_FILE = "summary.csv"
SUMMARY_COLUMNS = (
    "case_id",
    "nodule_id",
    "center_x_mm",
    "center_y_mm",
    "center_z_mm",
    "center_i",
    "center_j",
    "center_k",
    "diameter_mm",
    "volume_mm3",
    "detection_probability",
    "malignancy_probability",
    "malignancy_score",
)
"""Leading columns of ``summary.csv`` (centre in RAS world mm, voxel indices of the input); the attributes follow,
then ``source`` and ``model_version``."""

DISCLAIMER = "Research use only; not a medical device. Not validated for clinical decisions."


def case_outputs(output_dir: str | Path, case_id: str) -> dict[str, Path]:
    """Paths of one case's outputs: ``labels`` (NIfTI) and ``report`` (JSON); QC figures go to ``qc/``."""
    out = Path(output_dir)
    return {
        "labels": out / f"{case_id}_nodules.nii.gz",
        "report": out / f"{case_id}.json",
        "qc": out / "qc",
        "html": out / f"{case_id}_report.html",
        "seg": out / f"{case_id}_seg.dcm",
        "sr": out / f"{case_id}_sr.dcm",
    }


def is_complete(paths: Mapping[str, Path]) -> bool:
    report = paths["report"]
    if not (report.is_file() and paths["labels"].is_file()):
        return False
    try:
        with report.open() as f:
            return isinstance(json.load(f).get("nodules"), list)
    except (OSError, ValueError):
        return False


def scan_report(case: Any, volume: Any, result: ScanPrediction, predictor: ScanPredictor, labels_name: str) -> dict:
    """The ``<case>.json`` report of one scan: input, label map, nodules, lungs, warnings, settings, model, timings."""
    return {
        "report_version": REPORT_VERSION,
        "case_id": case.case_id,
        "input": str(case.path),
        "input_kind": case.kind,
        "input_shape": list(volume.shape),
        "input_spacing_mm": [round(float(s), 6) for s in volume.spacing_mm],
        "label_map": labels_name,
        "coordinate_system": "world mm: RAS (NIfTI, MONAI) and LPS (DICOM, ITK, LUNA16); voxels: the input's (i, j, k)",
        "n_nodules": len(result.nodules),
        "nodules": [n.to_dict() for n in result.nodules],
        "lung_volume_ml": result.lung_volume_ml,
        "warnings": [*volume.warnings, *result.warnings],
        "settings": predictor.settings(),
        "model": {**predictor.model_info, "package_version": __version__},
        "timings_s": result.timings_s,
        "counts": result.counts,
        "disclaimer": DISCLAIMER,
    }


def write_qc_figures(
    stack: contextlib.ExitStack,
    output_dir: Path,
    case_id: str,
    result: ScanPrediction,
    views: Mapping[int, NDArray[np.uint8]] | None = None,
) -> list[str]:
    """Write ``qc/<case>_nodule<k>.png`` per nodule (:func:`~lung_nodule_mtl.reports.qc.nodule_qc_image` with a
    title), each under a temporary name renamed when ``stack`` closes; the paths relative to ``output_dir``.
    ``views``: the panels when already drawn (:func:`nodule_views`)."""
    views = nodule_views(result) if views is None else views
    figures = []
    for n in result.nodules:
        png = case_outputs(output_dir, case_id)["qc"] / f"{case_id}_nodule{n.label}.png"
        image = views[n.label]
        malignancy = "n/a" if n.malignancy_probability is None else f"{n.malignancy_probability:.2f}"
        diameter = "n/a" if n.diameter_mm is None else f"{n.diameter_mm:.1f} mm"
        title = f"{case_id} nodule {n.label}: {diameter}, malignancy {malignancy} (axial|coronal|sagittal)"
        write_nodule_qc(stack.enter_context(atomic_path(png)), image, title)
        figures.append(str(png.relative_to(output_dir)))
    return figures


def nodule_views(result: ScanPrediction) -> dict[int, NDArray[np.uint8]]:
    """Per nodule label, its axial | coronal | sagittal panels with the outlines (the isotropic image must be kept)."""
    assert result.isotropic_image is not None and result.isotropic_labels is not None
    hu = np.asarray(result.isotropic_image[0])
    iso_affine = np.asarray(result.isotropic_image.affine, dtype=np.float64)
    return {
        n.label: nodule_qc_image(
            hu, result.isotropic_labels, world_to_voxel(iso_affine, np.asarray(n.center_world_mm_ras)), n.label
        )
        for n in result.nodules
    }


def lungs_center_ras(result: ScanPrediction) -> list[float] | None:
    """The centre of mass of the lung mask, RAS mm (``None`` when no lungs were found)."""
    return result.lungs_center_ras


def write_html_report(
    stack: contextlib.ExitStack,
    output_dir: Path,
    report: Mapping[str, Any],
    result: ScanPrediction,
    views: Mapping[int, NDArray[np.uint8]] | None = None,
) -> None:
    """``<case>_report.html`` (:mod:`~lung_nodule_mtl.reports.html`) under a temporary name renamed when ``stack``
    closes. ``views``: the panels when already drawn (:func:`nodule_views`)."""
    lungs = lungs_center_ras(result)
    if views is None:
        kept = result.isotropic_image is not None and result.isotropic_labels is not None
        views = nodule_views(result) if kept else {}
    sides = {n.label: chest_side(n.center_world_mm_ras, lungs) for n in result.nodules}
    path = stack.enter_context(atomic_path(case_outputs(output_dir, str(report["case_id"]))["html"]))
    path.write_text(case_report_html(report, views, sides), encoding="utf-8")


def summary_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``summary.csv`` rows of one ``<case>.json`` report: one per nodule, :data:`SUMMARY_COLUMNS` first."""
    rows = []
    for n in report.get("nodules", []):
        centre, vox = n["center_world_mm_ras"], n["center_voxel"]
        row: dict[str, Any] = {
            "case_id": report["case_id"],
            "nodule_id": n["label"],
            "center_x_mm": centre[0],
            "center_y_mm": centre[1],
            "center_z_mm": centre[2],
            "center_i": vox[0],
            "center_j": vox[1],
            "center_k": vox[2],
            "diameter_mm": n.get("diameter_mm"),
            "volume_mm3": n.get("volume_mm3"),
            "detection_probability": n.get("detection_probability"),
            "malignancy_probability": n.get("malignancy_probability"),
            "malignancy_score": n.get("malignancy_score"),
        }
        row.update(n.get("attributes", {}))
        if n.get("malignancy_probability_network") is not None:  # the probability above is the fusion's
            row["malignancy_probability_network"] = n["malignancy_probability_network"]
        # the network's own ratings of the attributes the fusion rates
        row.update({f"{name}_network": v for name, v in (n.get("attributes_network") or {}).items()})
        row["source"] = n.get("source")
        row["model_version"] = report.get("model", {}).get("package_version")
        rows.append(row)
    return rows


def write_summary(output_dir: str | Path, case_ids: Sequence[str]) -> Path:
    """(Re)write ``summary.csv`` from the complete reports of ``case_ids`` in ``output_dir`` (sorted by case)."""
    out = Path(output_dir)
    rows: list[dict[str, Any]] = []
    for case_id in sorted(case_ids):
        paths = case_outputs(out, case_id)
        if is_complete(paths):
            with paths["report"].open() as f:
                rows += summary_rows(json.load(f))
    return atomic_write_csv(rows, out / SUMMARY_FILE, first_fields=SUMMARY_COLUMNS)
