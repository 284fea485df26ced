"""LIDC-IDRI as TCIA ships it (DICOM series + reading XML) -> CT NIfTI, consensus nodule masks, tables, datalist.

* :mod:`~lung_nodule_mtl.data.lidc_idri.reading`: the reading XML (readers' nodules, outlines, ratings, marks).
* :mod:`~lung_nodule_mtl.data.lidc_idri.masks`: outlines on the CT grid, clustering into nodules, consensus.
* :mod:`~lung_nodule_mtl.data.lidc_idri.convert`: :func:`prepare_lidc`, the ``prepare-lidc`` command's work.
"""

from lung_nodule_mtl.data.lidc_idri.convert import (
    LidcOptions,
    LidcScanSource,
    aggregate_rating,
    convert_scan,
    find_lidc_scans,
    prepare_lidc,
)
from lung_nodule_mtl.data.lidc_idri.masks import (
    AnnotationMask,
    SliceLookup,
    annotation_mask,
    cluster_annotations,
    consensus_mask,
    polygon_interior,
)
from lung_nodule_mtl.data.lidc_idri.reading import (
    RATING_NAMES,
    LidcReading,
    LidcXmlError,
    NonNoduleMark,
    NotCtReadingError,
    ReaderNodule,
    Roi,
    parse_lidc_xml,
)
from lung_nodule_mtl.io import write_ct  # (the one CT writer, kept here for the converter's users)

__all__ = [
    "RATING_NAMES",
    "AnnotationMask",
    "LidcOptions",
    "LidcReading",
    "LidcScanSource",
    "LidcXmlError",
    "NonNoduleMark",
    "NotCtReadingError",
    "ReaderNodule",
    "Roi",
    "SliceLookup",
    "aggregate_rating",
    "annotation_mask",
    "cluster_annotations",
    "consensus_mask",
    "convert_scan",
    "find_lidc_scans",
    "parse_lidc_xml",
    "polygon_interior",
    "prepare_lidc",
    "write_ct",
]
