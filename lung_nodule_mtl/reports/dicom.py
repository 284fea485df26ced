"""DICOM out for DICOM in: the nodules as a DICOM Segmentation and a TID 1500 Structured Report (highdicom).

:func:`write_dicom_seg` writes ``<case>_seg.dcm``: a binary SEG with one segment per reported nodule (labelled
``nodule <k>``, SNOMED CT "Morphologically abnormal structure" / "Nodule", anatomic region "Lung"), one frame per
source slice that holds it, each frame referencing its source instance, in the source's study with a new series;
patient and study attributes come from the source (highdicom copies them), nothing identifying is invented. It opens
aligned on the CT in OHIF and 3D Slicer. The algorithm's name and version are in each segment's algorithm
identification.

:func:`write_dicom_outputs` writes that SEG and ``<case>_sr.dcm`` beside it: a Comprehensive 3D SR holding a TID 1500
Measurement Report (observer: this algorithm as a device), one TID 1411 volumetric measurement group per nodule that
references the nodule's segment in the SEG, with

* the measurements: equivalent-sphere diameter (SCT "Diameter", mm), volume (SCT "Volume", mm3) and the malignancy
  probability (DCM "Probability of cancer", no units, in [0, 1]);
* the eight LIDC-IDRI characteristics as qualitative evaluations, coded as in the DICOM representation of the
  LIDC-IDRI annotations (Fedorov et al., "Standardized representation of the TCIA LIDC-IDRI annotations using
  DICOM", PeerJ Preprints 2018; the ``99LIDCQIICR`` codes are that work's private scheme, declared in the SR's
  Coding Scheme Identification), so the model's ratings read like the readers' ratings published in that form;
* the finding site: lung, with the side when the lungs were found.

The label map is the one ``predict`` writes (:class:`~lung_nodule_mtl.inference.ScanPrediction` ``labels``), on the
grid :func:`~lung_nodule_mtl.io.load_ct` read: array axes ``(i, j, k)`` = (column, row, slice in
:attr:`~lung_nodule_mtl.io.CTVolume.source_files` order).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from lung_nodule_mtl import __version__
from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, Attribute
from lung_nodule_mtl.utils.io import atomic_path

if TYPE_CHECKING:
    import highdicom as hd
    from pydicom import Dataset

__all__ = [
    "ALGORITHM_NAME",
    "LIDC_ATTRIBUTE_CODES",
    "attribute_value_code",
    "build_dicom_seg",
    "build_dicom_sr",
    "dicom_headers",
    "write_dicom_outputs",
    "write_dicom_seg",
]

ALGORITHM_NAME = "lung_nodule_mtl LNMSNet"

LIDC_SCHEME = "99LIDCQIICR"
"""Private coding scheme of the DICOM representation of the LIDC-IDRI annotations (QIICR)."""

_NCIT, _RADLEX = "NCIt", "RADLEX"  # DICOM PS3.16 coding scheme designators

LIDC_ATTRIBUTE_CODES: dict[str, tuple[str, str, str]] = {
    Attribute.SUBTLETY: ("C45992", _NCIT, "Subtlety score"),
    Attribute.INTERNAL_STRUCTURE: ("200", LIDC_SCHEME, "Internal structure"),
    Attribute.CALCIFICATION: ("C3672", _NCIT, "Calcification"),
    Attribute.SPHERICITY: ("400", LIDC_SCHEME, "Sphericity"),
    Attribute.MARGIN: ("C25563", _NCIT, "Margin"),
    Attribute.LOBULATION: ("C62175", _NCIT, "Lobular Pattern"),
    Attribute.SPICULATION: ("C28749", _NCIT, "Spiculation"),
    Attribute.TEXTURE: ("C41144", _NCIT, "Texture"),
}
"""Concept name ``(value, scheme, meaning)`` of each characteristic, as the LIDC-IDRI DICOM SRs code it."""

_RATING_CODES: dict[str, dict[int, tuple[str, str, str]]] = {
    Attribute.SUBTLETY: {
        1: ("101", LIDC_SCHEME, "1 out of 5 (Extremely subtle)"),
        2: ("102", LIDC_SCHEME, "2 out of 5 (Moderately subtle)"),
        3: ("103", LIDC_SCHEME, "3 out of 5 (Fairly subtle)"),
        4: ("104", LIDC_SCHEME, "4 out of 5 (Moderately obvious)"),
        5: ("105", LIDC_SCHEME, "5 out of 5 (Obvious)"),
    },
    Attribute.INTERNAL_STRUCTURE: {
        1: ("C12471", _NCIT, "Soft tissue"),
        2: ("C25278", _NCIT, "Fluid"),
        3: ("C12472", _NCIT, "Adipose tissue"),
        4: ("C73434", _NCIT, "Air"),
    },
    Attribute.CALCIFICATION: {
        1: ("RID35453", _RADLEX, "Popcorn calcification sign"),
        2: ("302", LIDC_SCHEME, "Laminated appearance"),
        3: ("RID5741", _RADLEX, "Solid appearance"),
        4: ("304", LIDC_SCHEME, "Non-central appearance"),
        5: ("RID5827", _RADLEX, "Central calcification"),
        6: ("RID28473", _RADLEX, "Absent"),
    },
    Attribute.SPHERICITY: {
        1: ("RID5811", _RADLEX, "linear"),
        3: ("RID5800", _RADLEX, "ovoid"),
        5: ("RID5799", _RADLEX, "round"),
    },
    Attribute.MARGIN: {1: ("RID5709", _RADLEX, "Indistinct margin"), 5: ("RID5707", _RADLEX, "Circumscribed margin")},
    Attribute.LOBULATION: {
        1: ("601", LIDC_SCHEME, "1 out of 5 (No lobulation)"),
        5: ("605", LIDC_SCHEME, "5 out of 5 (Marked lobulation)"),
    },
    Attribute.SPICULATION: {
        1: ("701", LIDC_SCHEME, "1 out of 5 (No spiculation)"),
        5: ("705", LIDC_SCHEME, "5 out of 5 (Marked spiculation)"),
    },
    Attribute.TEXTURE: {
        1: ("RID50153", _RADLEX, "non-solid pulmonary nodule"),
        3: ("RID50152", _RADLEX, "part-solid pulmonary nodule"),
        5: ("RID50151", _RADLEX, "solid pulmonary nodule"),
    },
}
"""Coded value of each rating where the LIDC-IDRI DICOM SRs give it a term; the other ratings of a five-level
scale are the generic ``"<r> out of 5"`` (``00<r>``) of that scheme."""

_CT_CHEST = ("24627-2", "LN", "CT Chest")


def attribute_value_code(attribute: str, rating: int) -> tuple[str, str, str]:
    """``(value, scheme, meaning)`` of a characteristic's rating (LIDC scale ``1..n``).

    Raises:
        ValueError: an unknown characteristic or a rating outside its scale.
    """
    if attribute not in ATTRIBUTE_CLASSES:
        raise ValueError(f"unknown characteristic {attribute!r}; expected one of {sorted(ATTRIBUTE_CLASSES)}")
    n = ATTRIBUTE_CLASSES[attribute]
    if not 1 <= int(rating) <= n:
        raise ValueError(f"{attribute} rating {rating} is outside 1..{n}")
    known = _RATING_CODES[attribute].get(int(rating))
    return known if known is not None else (f"{int(rating):03d}", LIDC_SCHEME, f"{int(rating)} out of 5")


REQUIRED_ATTRIBUTES: tuple[str, ...] = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "Rows",
    "Columns",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
)
"""Source attributes the SEG and SR cannot be made without (identity, study, frame of reference, geometry)."""

EMPTY_IF_ABSENT: tuple[str, ...] = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
"""Patient and study attributes the SEG and SR must carry (DICOM type 2): copied when present, left empty (unknown)
when a de-identification removed them; never invented."""


def dicom_headers(source_files: Sequence[str | os.PathLike[str]]) -> list[Dataset]:
    """The series' slice headers (no pixels), checked for what the SEG and SR need.

    Raises:
        InputError: a slice lacks (or has empty) one of :data:`REQUIRED_ATTRIBUTES`; the message names the file and
            the attribute.
    """
    import pydicom

    from lung_nodule_mtl.io.ct import InputError

    headers: list[Dataset] = []
    for f in source_files:
        ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        missing = [a for a in REQUIRED_ATTRIBUTES if ds.get(a) in (None, "")]
        if missing:
            raise InputError(
                f,
                f"DICOM attribute(s) {', '.join(missing)} missing or empty: the DICOM SEG and SR of the nodules need "
                "them (--no-dicom skips those outputs)",
            )
        for name in EMPTY_IF_ABSENT:
            if name not in ds:
                setattr(ds, name, None)
        headers.append(ds)
    return headers


def build_dicom_seg(
    sources: Sequence[Dataset],
    labels: NDArray[np.integer],
    nodule_labels: Sequence[int],
    model_version: str | None = None,
) -> tuple[hd.seg.Segmentation, dict[int, int]] | None:
    """The SEG of :func:`write_dicom_seg` in memory, with ``{nodule label: segment number}``; ``None`` when no listed
    nodule has a voxel. ``sources``: the series' slice datasets (headers suffice), in ``labels``' slice order."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

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
        source_images=list(sources),
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
    return seg, {k: s for s, k in enumerate(present, start=1)}


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
        InputError: a slice lacks an attribute the SEG needs (:func:`dicom_headers`).
    """
    built = build_dicom_seg(dicom_headers(source_files), labels, nodule_labels, model_version)
    if built is None:
        return None
    dest = Path(path)
    with atomic_path(dest) as tmp:
        built[0].save_as(str(tmp))
    return dest


def _code(value: tuple[str, str, str]) -> hd.sr.CodedConcept:
    import highdicom as hd

    return hd.sr.CodedConcept(value=value[0], scheme_designator=value[1], meaning=value[2])


def _referenced_segment(seg: hd.seg.Segmentation, segment: int) -> hd.sr.ReferencedSegment:
    """The SR's reference to one segment and the source slices it lies on. (highdicom's
    ``ReferencedSegment.from_segmentation`` fails on a one-segment SEG, whose segment number is in the shared
    functional groups.)"""
    import highdicom as hd

    shared = seg.SharedFunctionalGroupsSequence[0]
    sources = []
    for frame in seg.PerFrameFunctionalGroupsSequence:
        ident = frame.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        if int(ident[0].ReferencedSegmentNumber) == segment:
            ref = frame.DerivationImageSequence[0].SourceImageSequence[0]
            sources.append(hd.sr.SourceImageForSegmentation(ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID))
    return hd.sr.ReferencedSegment(seg.SOPClassUID, seg.SOPInstanceUID, segment, source_images=sources)


def _nodule_group(
    nodule: Mapping[str, Any],
    seg: hd.seg.Segmentation,
    segment: int,
    algorithm: hd.sr.AlgorithmIdentification,
    side: str | None,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    laterality = {"right": codes.SCT.Right, "left": codes.SCT.Left}.get(str(side)) if side else None
    site = [hd.sr.FindingSite(anatomic_location=codes.SCT.Lung, laterality=laterality)]
    measured = [
        (codes.SCT.Diameter, nodule.get("diameter_mm"), codes.UCUM.Millimeter),
        (codes.SCT.Volume, nodule.get("volume_mm3"), codes.UCUM.CubicMillimeter),
        (codes.DCM.ProbabilityOfCancer, nodule.get("malignancy_probability"), codes.UCUM.NoUnits),
    ]
    measurements = [
        hd.sr.Measurement(name=name, value=float(value), unit=unit)
        for name, value, unit in measured
        if value is not None
    ]
    ratings = nodule.get("attributes") or {}
    evaluations = [
        hd.sr.QualitativeEvaluation(name=_code(concept), value=_code(attribute_value_code(name, int(ratings[name]))))
        for name, concept in LIDC_ATTRIBUTE_CODES.items()
        if ratings.get(name) is not None
    ]
    label = int(nodule["label"])
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"nodule {label}"),
        referenced_segment=_referenced_segment(seg, segment),
        finding_type=codes.SCT.Nodule,
        algorithm_id=algorithm,
        finding_sites=site,
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def build_dicom_sr(
    sources: Sequence[Dataset],
    seg: hd.seg.Segmentation,
    segment_of: Mapping[int, int],
    nodules: Sequence[Mapping[str, Any]],
    model_version: str | None = None,
    sides: Mapping[int, str | None] | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 Measurement Report of the nodules that have a segment in ``seg``.

    Args:
        sources: the source series' datasets (headers suffice): the SR joins their study.
        seg: the Segmentation of :func:`build_dicom_seg`, which the SR references (and lists as evidence).
        segment_of: ``{nodule label: segment number}`` in ``seg``.
        nodules: the nodules as ``predict``'s ``<case>.json`` lists them (``label``, ``diameter_mm``, ``volume_mm3``,
            ``malignancy_probability``, ``attributes``); one without a segment is left out.
        model_version: the weights' version, the algorithm version (default: the package's).
        sides: per nodule label, ``"right"`` / ``"left"`` (the patient's), written as the finding site's laterality.
    """
    import highdicom as hd
    from pydicom import Dataset
    from pydicom.sr.codedict import codes

    version = str(model_version or __version__)
    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=version)
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=hd.UID(), name=ALGORITHM_NAME, manufacturer_name="lung_nodule_mtl", model_name=f"LNMSNet {version}"
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    sides = sides or {}
    groups = [
        _nodule_group(n, seg, segment_of[int(n["label"])], algorithm, sides.get(int(n["label"])))
        for n in nodules
        if int(n["label"]) in segment_of
    ]
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=_code(_CT_CHEST), imaging_measurements=groups
    )
    first = sources[0]
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, seg],
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=int(getattr(first, "SeriesNumber", 0) or 0) + 1001,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="lung_nodule_mtl",
        is_complete=True,
        series_description="lung nodule measurements (lung_nodule_mtl, research use)",
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = LIDC_SCHEME
    scheme.CodingSchemeName = "LIDC-IDRI characteristics in DICOM (QIICR)"
    scheme.CodingSchemeResponsibleOrganization = "QIICR"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def write_dicom_outputs(
    source_files: Sequence[str | os.PathLike[str]],
    labels: NDArray[np.integer],
    nodules: Sequence[Mapping[str, Any]],
    seg_path: str | os.PathLike[str],
    sr_path: str | os.PathLike[str] | None,
    model_version: str | None = None,
    sides: Mapping[int, str | None] | None = None,
) -> tuple[Path, Path | None] | None:
    """Write the SEG (:func:`write_dicom_seg`) and, with ``sr_path``, the SR (:func:`build_dicom_sr`) that references
    it, each atomically; the source headers are read once.

    Returns:
        ``(seg_path, sr_path or None)``, or ``None`` (nothing written) when no nodule has a voxel in ``labels``.
    """
    sources = dicom_headers(source_files)
    built = build_dicom_seg(sources, labels, [int(n["label"]) for n in nodules], model_version)
    if built is None:
        return None
    seg, segment_of = built
    sr = build_dicom_sr(sources, seg, segment_of, nodules, model_version, sides) if sr_path is not None else None
    with contextlib.ExitStack() as stack:  # both renamed only when both are written
        seg_tmp = stack.enter_context(atomic_path(Path(seg_path)))
        seg.save_as(str(seg_tmp))
        if sr is not None and sr_path is not None:
            sr_tmp = stack.enter_context(atomic_path(Path(sr_path)))
            sr.save_as(str(sr_tmp))
    return Path(seg_path), None if sr_path is None else Path(sr_path)
