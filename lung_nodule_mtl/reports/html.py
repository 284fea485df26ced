"""One self-contained HTML page per scan for a radiologist: ``predict --report`` writes ``<case>_report.html``.

The page holds, from the case's ``<case>.json`` report (:func:`~lung_nodule_mtl.reports.scan.scan_report`): the case,
the input and the model (bundle name, version, weights digest); per nodule its location (RAS and LPS world mm, the
input's voxel, the side of the chest), size (equivalent diameter, volume), detection and malignancy probability, the
eight LIDC-IDRI attributes in the readers' words (:data:`~lung_nodule_mtl.constants.ATTRIBUTE_WORDS`) and the axial,
coronal and sagittal views with the mask outlined (:func:`~lung_nodule_mtl.reports.qc.nodule_qc_image`, embedded as
PNG data URIs: the file needs nothing beside it); and what the model was trained on and its measured limits. Nothing
is fetched: no script, no external style sheet, no font.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, ATTRIBUTE_WORDS
from lung_nodule_mtl.utils.io import atomic_write

__all__ = ["LIMITS", "case_report_html", "chest_side", "png_data_uri", "write_case_report_html"]

LIMITS = (
    "Research use only, not for diagnosis. The network was trained on nodule-centred crops of LIDC-IDRI (CC BY 3.0; "
    "readers' masks and ratings) and on synthetic chest CT with real LIDC-IDRI nodules inserted; it has seen few real "
    "whole scans. Measured on held-out data (bundle/docs/README.md has the figures and commands): on whole scans it "
    "finds most solid nodules above about 8 mm but reports false positives (vessels, pleura); its malignancy "
    "probability follows nodule size and adds nothing measurable to it on LIDC-IDRI, and it is not calibrated "
    "(a probability of 0.8 is not an 80% risk); the attributes agree with the readers' majority rating about as "
    "often as always answering the most common rating."
)
"""What the model was trained on and its measured limits, shown on every page."""

_STYLE = """
body{font-family:sans-serif;margin:24px;color:#111;background:#fff}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #bbb;padding:3px 8px;text-align:left;font-size:13px}
.limits{background:#fff4e0;border:1px solid #e0a040;padding:8px 12px;font-size:13px}
.nodule{border-top:2px solid #444;margin-top:18px;padding-top:6px}
img{image-rendering:pixelated;max-width:100%}
"""


def png_data_uri(rgb: NDArray[np.uint8]) -> str:
    """An ``(rows, cols, 3)`` uint8 image as a ``data:image/png;base64,...`` URI."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def chest_side(center_ras: Sequence[float], lungs_center_ras: Sequence[float] | None) -> str | None:
    """``"right"`` or ``"left"`` (the patient's) for a point against the centre of the lungs, RAS mm (x grows to the
    patient's right); ``None`` without the lungs' centre."""
    if lungs_center_ras is None:
        return None
    return "right" if float(center_ras[0]) > float(lungs_center_ras[0]) else "left"


def _fmt(value: Any, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{float(value):.{digits}f}{unit}"


def _attribute_rows(attributes: Mapping[str, int]) -> str:
    rows = []
    for name, n in ATTRIBUTE_CLASSES.items():
        rating = attributes.get(str(name))
        words = "n/a" if rating is None or not 1 <= int(rating) <= n else ATTRIBUTE_WORDS[name][int(rating) - 1]
        shown = "" if rating is None else f" ({int(rating)} of {n})"
        rows.append(f"<tr><td>{html.escape(str(name).replace('_', ' '))}</td><td>{html.escape(words)}{shown}</td></tr>")
    return "".join(rows)


def case_report_html(
    report: Mapping[str, Any],
    views: Mapping[int, NDArray[np.uint8]] | None = None,
    sides: Mapping[int, str | None] | None = None,
) -> str:
    """The page of one case.

    Args:
        report: the case's ``<case>.json`` content.
        views: per nodule label, its axial | coronal | sagittal RGB panels (none: the page says so).
        sides: per nodule label, ``"right"`` / ``"left"`` (:func:`chest_side`).

    Returns:
        The HTML text (UTF-8, no external resource).
    """
    views, sides = views or {}, sides or {}
    model = report.get("model", {})
    e = html.escape
    head = (
        f"<tr><th>case</th><td>{e(str(report.get('case_id')))}</td></tr>"
        f"<tr><th>input</th><td>{e(str(report.get('input')))} ({e(str(report.get('input_kind')))}, "
        f"{' x '.join(str(s) for s in report.get('input_shape', []))} voxels)</td></tr>"
        f"<tr><th>model</th><td>{e(str(model.get('bundle_name')))} {e(str(model.get('bundle_version')))}, "
        f"package {e(str(model.get('package_version')))}, weights {e(str(model.get('weights')))} "
        f"sha256 {e(str(model.get('weights_sha256', ''))[:12])}</td></tr>"
        f"<tr><th>nodules reported</th><td>{len(report.get('nodules', []))}</td></tr>"
        f"<tr><th>lung volume</th><td>{_fmt(report.get('lung_volume_ml'), 0, ' ml')}</td></tr>"
    )
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Lung nodules: {e(str(report.get('case_id')))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Lung nodules: {e(str(report.get('case_id')))}</h1>",
        f"<p class='limits'>{e(LIMITS)}</p>",
        f"<table>{head}</table>",
    ]
    for warning in report.get("warnings", []):
        parts.append(f"<p>Warning: {e(str(warning))}</p>")
    if not report.get("nodules"):
        parts.append("<p>No nodule above the operating point.</p>")
    for n in report.get("nodules", []):
        label = int(n["label"])
        ras, lps, vox = n.get("center_world_mm_ras", []), n.get("center_world_mm_lps", []), n.get("center_voxel", [])
        side = sides.get(label)
        rows = (
            f"<tr><th>location</th><td>{'' if side is None else e(side) + ' lung; '}"
            f"RAS ({', '.join(_fmt(v, 1) for v in ras)}) mm, LPS ({', '.join(_fmt(v, 1) for v in lps)}) mm, "
            f"voxel ({', '.join(str(v) for v in vox)})</td></tr>"
            f"<tr><th>size</th><td>{_fmt(n.get('diameter_mm'), 1, ' mm')} equivalent diameter, "
            f"{_fmt(n.get('volume_mm3'), 0, ' mm³')}</td></tr>"
            f"<tr><th>detection probability</th><td>{_fmt(n.get('detection_probability'))}</td></tr>"
            f"<tr><th>malignancy probability</th><td>{_fmt(n.get('malignancy_probability'))} "
            "(not calibrated)</td></tr>"
            f"<tr><th>malignancy score</th><td>{_fmt(n.get('malignancy_score'), 1)} on the readers' 1-5 scale</td></tr>"
        )
        parts.append(f"<div class='nodule'><h2>Nodule {label}</h2><table>{rows}</table>")
        attributes = _attribute_rows(n.get("attributes", {}))
        parts.append(f"<table><tr><th>attribute</th><th>in the readers' words</th></tr>{attributes}</table>")
        if label in views:
            parts.append(
                f"<p><img alt='nodule {label}: axial, coronal, sagittal' src='{png_data_uri(views[label])}'><br>"
                "axial | coronal | sagittal; red: this nodule's mask outline, yellow: other nodules</p>"
            )
        else:
            parts.append("<p>(no views: the isotropic image was not kept)</p>")
        parts.append("</div>")
    parts.append(f"<p><small>{e(str(report.get('disclaimer', '')))}</small></p></body></html>")
    return "".join(parts)


def write_case_report_html(
    path: str | os.PathLike[str],
    report: Mapping[str, Any],
    views: Mapping[int, NDArray[np.uint8]] | None = None,
    sides: Mapping[int, str | None] | None = None,
) -> Path:
    """Write :func:`case_report_html` to ``path`` atomically; returns ``path``."""
    text = case_report_html(report, views, sides)
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)
