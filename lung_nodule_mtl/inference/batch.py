"""Batch inference over a folder of scans: ``lung-nodule-mtl predict`` and the bundle's ``scan_inferring``.

For every case found in the input (:func:`~lung_nodule_mtl.io.ct.find_cases`) the outputs are

* ``<case>_nodules.nii.gz``: the nodule label map on exactly the input's grid and affine;
* ``<case>.json``: the per-nodule report (centre in world mm and voxels, diameter, volume, detection
  and malignancy probability, score, attributes), the settings and the model's provenance;
* with ``qc=True``, ``qc/<case>_nodule<k>.png`` per nodule;
* for a DICOM series input (unless ``dicom=False``), ``<case>_seg.dcm``: the nodules as a DICOM Segmentation in
  the source study, frames on the source slices, and ``<case>_sr.dcm``: a TID 1500 Measurement Report (size,
  malignancy probability, the eight characteristics per nodule, each referencing its segment)
  (:mod:`lung_nodule_mtl.reports.dicom`);
* with ``html_report=True``, ``<case>_report.html``: one self-contained page for a radiologist
  (:mod:`lung_nodule_mtl.reports.html`);

and, for the batch, ``summary.csv`` (one row per nodule of every complete case of the input). Their layout lives
in :mod:`lung_nodule_mtl.reports.scan`; this module runs the batch.

A case's files are all written under temporary names and renamed only when all of them succeeded,
the report last: a case whose ``<case>.json`` exists is complete. A re-run skips complete cases
(``overwrite=True`` redoes them), so a batch killed half-way finishes on the next run with the same
results as an uninterrupted run. A case that fails (bad input, a nodule centre outside the image, ...)
is logged as one line naming the file and the reason, leaves no file, and the batch goes on; the
result lists it and the command's exit status is non-zero. The input is only read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lung_nodule_mtl.inference.pipeline import ScanPrediction, ScanPredictor
from lung_nodule_mtl.reports.html import chest_side
from lung_nodule_mtl.reports.scan import (
    REPORT_VERSION,
    SUMMARY_COLUMNS,
    case_outputs,
    is_complete,
    lungs_center_ras,
    nodule_views,
    scan_report,
    write_html_report,
    write_qc_figures,
    write_summary,
)
from lung_nodule_mtl.utils.flags import as_bool
from lung_nodule_mtl.utils.io import atomic_path, json_safe

__all__ = [
    "REPORT_VERSION",
    "SUMMARY_COLUMNS",
    "BatchResult",
    "case_outputs",
    "predict_batch",
    "write_summary",
]

logger = logging.getLogger("lung_nodule_mtl.predict")


@dataclass
class BatchResult:
    """What :func:`predict_batch` did."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """case id → the one-line reason."""
    summary: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


def _centres_for(case_id: str, table: Mapping[str, Sequence[Any]] | None) -> list[list[float]] | None:
    if table is None:
        return None
    return [list(map(float, r.center_ras_mm)) for r in table.get(case_id, [])]


def _run_case(
    case: Any,
    predictor: ScanPredictor,
    output_dir: Path,
    centres: Any,
    qc: bool,
    html_report: bool = False,
    dicom: bool = True,
) -> ScanPrediction:
    from lung_nodule_mtl.io.ct import load_ct, write_label_map

    paths = case_outputs(output_dir, case.case_id)
    start = time.perf_counter()
    volume = load_ct(case)
    want_dicom = dicom and case.kind == "dicom" and bool(volume.source_files)
    if want_dicom:  # before the model runs: a series the SEG/SR cannot be made of fails now, with its reason
        from lung_nodule_mtl.reports.dicom import dicom_headers

        dicom_headers(volume.source_files)
    read_s = time.perf_counter() - start
    try:
        result = predictor.predict(volume.image, centres)
    except ValueError as e:  # a given centre outside the image: the case's input is wrong
        from lung_nodule_mtl.io.ct import InputError

        raise InputError(case.path, str(e)) from None
    for warning in [*volume.warnings, *result.warnings]:
        logger.warning("%s: %s", case.case_id, warning)
    # every file under a temporary name first; the renames happen when the stack closes, the report last
    with contextlib.ExitStack() as stack:
        report_tmp = stack.enter_context(atomic_path(paths["report"]))
        labels_tmp = stack.enter_context(atomic_path(paths["labels"]))
        start = time.perf_counter()
        write_label_map(volume, result.labels, labels_tmp)
        write_s = time.perf_counter() - start
        result.timings_s = {"read": round(read_s, 3), **result.timings_s, "write": round(write_s, 3)}
        report = scan_report(case, volume, result, predictor, paths["labels"].name)
        kept = result.isotropic_image is not None and result.isotropic_labels is not None
        views = nodule_views(result) if kept and (qc or html_report) else {}  # drawn once for both
        if qc and kept:
            report["qc_figures"] = write_qc_figures(stack, output_dir, case.case_id, result, views)
        if html_report:
            write_html_report(stack, output_dir, report, result, views)
        written = [n.label for n in result.nodules if n.voxels_in_label_map > 0]
        if want_dicom and written:
            report.update(_write_dicom(stack, paths, volume.source_files, result, report, predictor, written))
        with open(report_tmp, "w") as f:
            json.dump(json_safe(report), f, indent=2)
            f.write("\n")
    return result


def _write_dicom(
    stack: contextlib.ExitStack,
    paths: Mapping[str, Path],
    source_files: Sequence[str | Path],
    result: ScanPrediction,
    report: Mapping[str, Any],
    predictor: ScanPredictor,
    written: Sequence[int],
) -> dict[str, str]:
    """``<case>_seg.dcm`` and ``<case>_sr.dcm`` (the ``written`` nodules, each with voxels in the label map) under
    temporary names renamed when ``stack`` closes; the report's entries naming them."""
    from lung_nodule_mtl.reports.dicom import write_dicom_outputs

    lungs = lungs_center_ras(result)
    sides = {n.label: chest_side(n.center_world_mm_ras, lungs) for n in result.nodules}
    nodules = [n for n in report["nodules"] if int(n["label"]) in set(written)]
    seg_tmp = stack.enter_context(atomic_path(paths["seg"]))
    sr_tmp = stack.enter_context(atomic_path(paths["sr"]))
    version = predictor.model_info.get("bundle_version")
    if write_dicom_outputs(source_files, result.labels, nodules, seg_tmp, sr_tmp, version, sides) is None:
        raise RuntimeError("no written nodule has a voxel in the label map")  # ``written`` says they all have
    return {"dicom_seg": paths["seg"].name, "dicom_sr": paths["sr"].name}


def predict_batch(
    input_path: str | Path,
    output_dir: str | Path,
    predictor: ScanPredictor,
    nodules_csv: str | Path | None = None,
    qc: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    raise_on_failure: bool = False,
    *,
    html_report: bool = False,
    dicom: bool = True,
) -> BatchResult:
    """Run :class:`~lung_nodule_mtl.inference.pipeline.ScanPredictor` over every case of ``input_path``.

    Args:
        input_path: a NIfTI file, a MetaImage, a DICOM series folder, or a folder of those.
        output_dir: created if missing; must not be the input folder.
        predictor: the configured predictor (``keep_images=True`` is needed for ``qc``).
        nodules_csv: nodule centres to analyse instead of detecting (LUNA16 ``annotations.csv`` columns, LPS, or
            this project's ``summary.csv``, RAS); cases absent from it get an empty report.
        qc: write a PNG per nodule.
        html_report: write ``<case>_report.html`` (needs ``keep_images``, set here as for ``qc``).
        dicom: for DICOM series inputs, also write ``<case>_seg.dcm`` (a DICOM Segmentation of the nodules) and
            ``<case>_sr.dcm`` (their measurements as a TID 1500 Structured Report).
        overwrite: redo cases whose outputs are complete (default: skip them).
        progress: show a progress bar over cases.
        raise_on_failure: raise ``RuntimeError`` at the end if any case failed (for ``monai.bundle run``).

    Returns:
        A :class:`BatchResult`.

    Raises:
        FileNotFoundError: ``input_path`` does not exist.
        ValueError: no case in the input, an unreadable ``nodules_csv``, or ``output_dir`` equal to the input folder.
        RuntimeError: with ``raise_on_failure``, when a case failed (after all the others ran).
    """
    from lung_nodule_mtl.io.ct import InputError, find_cases

    qc, overwrite = as_bool(qc, "qc"), as_bool(overwrite, "overwrite")
    progress = as_bool(progress, "progress")
    src = Path(input_path)
    out = Path(output_dir)
    if src.is_dir() and out.resolve() == src.resolve():
        raise ValueError(f"{out}: the output folder must not be the input folder (outputs would become inputs).")
    cases = [c for c in find_cases(src) if not Path(c.path).resolve().is_relative_to(out.resolve())]
    if not cases:
        raise ValueError(f"{src}: no CT scan found (NIfTI, MetaImage or DICOM series).")
    table = None
    if nodules_csv is not None:
        from lung_nodule_mtl.data.nodule_table import read_nodule_table

        table = read_nodule_table(nodules_csv)
        unknown = sorted(set(table) - {c.case_id for c in cases})
        if unknown:
            logger.warning(
                "%s: %d case(s) not in the input, ignored: %s", nodules_csv, len(unknown), ", ".join(unknown[:5])
            )
    if qc or html_report:
        predictor.keep_images = True
    out.mkdir(parents=True, exist_ok=True)

    result = BatchResult()
    bar = tqdm(cases, desc="predict", unit="case", disable=not progress)
    for case in bar:
        bar.set_postfix_str(case.case_id)
        paths = case_outputs(out, case.case_id)
        if not overwrite and is_complete(paths) and (not html_report or paths["html"].is_file()):
            logger.info("%s: outputs complete, skipped (use --overwrite to redo)", case.case_id)
            result.skipped.append(case.case_id)
            continue
        start = time.perf_counter()
        try:
            prediction = _run_case(case, predictor, out, _centres_for(case.case_id, table), qc, html_report, dicom)
        except InputError as e:
            reason = str(e)
        except (OSError, ValueError, RuntimeError, MemoryError) as e:  # unexpected, but the batch goes on
            logger.debug("traceback", exc_info=True)
            reason = f"{case.path}: {type(e).__name__}: {e}"
        else:
            seconds = time.perf_counter() - start
            logger.info("%s: %d nodule(s) in %.1f s", case.case_id, len(prediction.nodules), seconds)
            result.done.append(case.case_id)
            continue
        logger.error("%s: failed: %s", case.case_id, reason)
        result.failed[case.case_id] = reason
    result.summary = write_summary(out, [c.case_id for c in cases])
    logger.info(
        "%d case(s) done, %d skipped (complete), %d failed; summary: %s",
        len(result.done),
        len(result.skipped),
        len(result.failed),
        result.summary,
    )
    if raise_on_failure and result.failed:
        raise RuntimeError(f"{len(result.failed)} case(s) failed: " + "; ".join(result.failed.values()))
    return result
