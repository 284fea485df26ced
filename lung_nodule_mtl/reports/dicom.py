"""DICOM out for DICOM in: the nodule masks as a DICOM Segmentation in the source study (highdicom).

:func:`write_dicom_seg` writes ``<case>_seg.dcm``: a binary SEG with one segment per reported nodule (labelled
``nodule <k>``, SNOMED CT "Morphologically abnormal structure" / "Nodule", anatomic region "Lung"), one frame per
source slice that holds it, each frame referencing its source instance, in the source's study with a new series;
patient and study attributes come from the source (highdicom copies them), nothing identifying is invented. It opens
aligned on the CT in OHIF and 3D Slicer. The algorithm's name and version are in each segment's algorithm
identification.

The label map is the one ``predict`` writes (:class:`~lung_nodule_mtl.inference.ScanPrediction` ``labels``), on the
grid :func:`~lung_nodule_mtl.io.load_ct` read: array axes ``(i, j, k)`` = (column, row, slice in
:attr:`~lung_nodule_mtl.io.CTVolume.source_files` order).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from lung_nodule_mtl import __version__
from lung_nodule_mtl.utils.io import atomic_path

__all__ = ["ALGORITHM_NAME", "write_dicom_seg"]

ALGORITHM_NAME = "lung_nodule_mtl LNMSNet"


def write_dicom_seg(
    source_files: Sequence[str | os.PathLike[str]],
    labels: NDArray[np.integer],
    nodule_labels: Sequence[int],
    path: str | os.PathLike[str],
    model_version: str | None = None,
) -> Path | None:
    """Write the nodules of ``labels`` as a DICOM Segmentation of the source series, atomically.

    Args:
        source_files: the source series' slice files, in the order of ``labels``' last axis.
        labels: ``(columns, rows, slices)`` label map, ``k`` the nodule with label ``k``.
        nodule_labels: the labels to write, one segment each (segment ``s`` is ``nodule_labels[s - 1]``).
        path: destination ``.dcm``.
        model_version: the weights' version, written as the algorithm version (default: the package's).

    Returns:
        ``path``, or ``None`` when no listed nodule has a voxel (a SEG needs one segment at least).

    Raises:
        ValueError: ``labels`` does not match the source series (slice count, rows, columns).
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in source_files]  # headers suffice
    cols, rows, n = labels.shape
    first = sources[0]
    if n != len(sources) or (int(first.Rows), int(first.Columns)) != (rows, cols):
        raise ValueError(
            f"label map {labels.shape} (columns, rows, slices) does not match the series: {len(sources)} slices of "
            f"{int(first.Rows)} x {int(first.Columns)}"
        )
    present = [int(k) for k in nodule_labels if np.any(labels == int(k))]
    if not present:
        return None
    segment_of = np.zeros(int(labels.max()) + 1, dtype=np.uint16)
    for s, k in enumerate(present, start=1):
        segment_of[k] = s
    frames = segment_of[np.asarray(labels, dtype=np.int64)].transpose(2, 1, 0)  # (slices, rows, columns)
    frames = frames.astype(np.uint8 if len(present) < 256 else np.uint16)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, version=str(model_version or __version__), family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=s,
            segment_label=f"nodule {k}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Nodule,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[codes.SCT.Lung],
        )
        for s, k in enumerate(present, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(getattr(first, "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="lung_nodule_mtl",
        manufacturer_model_name="LNMSNet",
        software_versions=__version__,
        device_serial_number="none",
        series_description="lung nodules (lung_nodule_mtl, research use)",
        omit_empty_frames=True,
    )
    dest = Path(path)
    with atomic_path(dest) as tmp:
        seg.save_as(str(tmp))
    return dest
