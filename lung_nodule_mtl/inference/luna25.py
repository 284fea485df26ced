"""The LUNA25 / grand-challenge interface: a malignancy likelihood for each given nodule location.

The platform mounts one case per run::

    INPUT_DIR/nodule-locations.json                  "Multiple points": points in world mm, LPS (as ITK reports)
    INPUT_DIR/images/chest-ct/<one image>.mha        the CT (.mha; .mhd + .raw, .nii, .nii.gz are read too)
    INPUT_DIR/clinical-information-lung-ct.json      optional; read, its content not used by the model

and reads back ``OUTPUT_DIR/lung-nodule-malginancy-likelihoods.json`` (the organisers' spelling, kept since the
platform reads exactly that name): the same points, names and order, each with a ``probability`` in [0, 1].

The probability of a point (:func:`point_probability`): the report's ``malignancy_probability`` for the crop
centred on the point, i.e. the network's malignancy head, fused with the nodule's measured size where the bundle
ships a fusion (``malignancy_fusion.json`` beside the weights) and a mask is found near the point; with no mask
there is no size, and the pipeline reports the network's own probability. Should it be missing all the same (a
network without a malignancy head), ``malignancy_probability_network`` if there is one, else 0.5 with a warning
logged.

Bad input (a missing or malformed points file, an empty points list, zero or several images, a TIFF image, a
point outside the image) raises :class:`~lung_nodule_mtl.io.ct.InputError` naming the file, before anything is
written; the output is written atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lung_nodule_mtl.constants import lps_to_ras
from lung_nodule_mtl.io.ct import Case, CTVolume, InputError, find_cases, load_ct
from lung_nodule_mtl.io.geometry import outside_image
from lung_nodule_mtl.utils.io import atomic_write_json

if TYPE_CHECKING:
    from lung_nodule_mtl.inference.pipeline import NodulePrediction, ScanPredictor

__all__ = [
    "CLINICAL_FILE",
    "FALLBACK_PROBABILITY",
    "IMAGE_DIR",
    "OUTPUT_FILE",
    "POINTS_FILE",
    "find_image",
    "point_probability",
    "read_points",
    "run_luna25",
]

logger = logging.getLogger("lung_nodule_mtl.luna25")

POINTS_FILE = "nodule-locations.json"
"""The nodule locations, relative to the input folder."""
IMAGE_DIR = "images/chest-ct"
"""The folder holding the one CT image, relative to the input folder."""
CLINICAL_FILE = "clinical-information-lung-ct.json"
"""Optional clinical information, relative to the input folder (its presence is logged, its content unused)."""
OUTPUT_FILE = "lung-nodule-malginancy-likelihoods.json"
"""The output, relative to the output folder: spelled "malginancy" as the organisers spell it (the platform reads
exactly this name)."""
FALLBACK_PROBABILITY = 0.5
"""A point's probability when the network gives none."""
MULTIPLE_POINTS = "Multiple points"
_DEFAULT_NAME = "Points of interest"
_DEFAULT_VERSION = {"major": 1, "minor": 0}
_TIFF_SUFFIXES = (".tif", ".tiff")


def read_points(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[list[float]]]:
    """Read a grand-challenge "Multiple points" file.

    Returns:
        ``(document, points_lps)``: the parsed JSON (points as given) and each point's ``[x, y, z]`` in mm (LPS).

    Raises:
        InputError: a missing or unreadable file, not JSON, a ``type`` other than "Multiple points", no
            ``points`` list or an empty one, a point without three finite coordinates.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "nodule locations file not found")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(p, f"not readable as JSON ({e})") from e
    if not isinstance(doc, dict):
        raise InputError(p, f'expected a JSON object with "points", got {type(doc).__name__}')
    if "type" in doc and doc["type"] != MULTIPLE_POINTS:
        raise InputError(p, f'"type" is {doc["type"]!r}, expected {MULTIPLE_POINTS!r}')
    points = doc.get("points")
    if not isinstance(points, list):
        raise InputError(p, 'no "points" list')
    if not points:
        raise InputError(p, "empty points list: no nodule location to score")
    coords: list[list[float]] = []
    for k, item in enumerate(points):
        where = f"point {k + 1}" + (f" ({item['name']!r})" if isinstance(item, dict) and "name" in item else "")
        xyz = item.get("point") if isinstance(item, dict) else None
        if not isinstance(xyz, list) or len(xyz) != 3:
            raise InputError(p, f'{where}: expected "point": [x, y, z] in mm, got {xyz!r}')
        try:
            values = [float(v) for v in xyz]
        except (TypeError, ValueError):
            raise InputError(p, f"{where}: coordinates must be numbers, got {xyz!r}") from None
        if not all(math.isfinite(v) for v in values) or any(isinstance(v, bool) for v in xyz):
            raise InputError(p, f"{where}: coordinates must be finite numbers, got {xyz!r}")
        coords.append(values)
    return doc, coords


def find_image(input_dir: str | os.PathLike[str]) -> Case:
    """The one CT image in ``input_dir/images/chest-ct/``.

    Raises:
        InputError: no such folder, a TIFF image (SimpleITK reads its pixels but not the CT's origin, spacing and
            direction, without which world points cannot be placed), no image, or more than one.
    """
    folder = Path(input_dir) / IMAGE_DIR
    if not folder.is_dir():
        raise InputError(folder, "image folder not found (expected one .mha CT image in it)")
    tiffs = sorted(f.name for f in folder.iterdir() if f.name.lower().endswith(_TIFF_SUFFIXES))
    if tiffs:
        raise InputError(
            folder / tiffs[0],
            "a TIFF image is not supported: SimpleITK reads its pixels but not the CT's spatial metadata (origin, "
            "spacing, direction), without which the world-mm nodule locations cannot be placed; give the scan as "
            ".mha (MetaImage)",
        )
    try:
        cases = find_cases(folder)
    except InputError as e:
        raise InputError(folder, f"no CT image: {e.reason}") from None
    if len(cases) != 1:
        names = ", ".join(c.path.name for c in cases)
        raise InputError(folder, f"expected exactly one CT image, found {len(cases)}: {names}")
    return cases[0]


def _check_inside(points_file: Path, volume: CTVolume, names: Sequence[str], points_lps: Sequence[list[float]]) -> None:
    """Every point inside the image (the predictor's own tolerance: half a voxel beyond the edge voxels)."""
    for name, lps in zip(names, points_lps, strict=True):
        vox = outside_image(volume.affine, volume.shape, lps_to_ras(lps))
        if vox is not None:
            raise InputError(
                points_file,
                f"point {name!r} at {lps} mm (LPS) lies outside the image {volume.case.path.name} (voxel "
                f"{np.round(vox, 1).tolist()}, shape {list(volume.shape)})",
            )


def point_probability(nodule: NodulePrediction) -> tuple[float, str]:
    """The probability written for one point and where it comes from.

    The rule: ``malignancy_probability`` (``"malignancy_probability"``: fused with the size where there is a
    fusion and a mask, the network's own otherwise); else ``malignancy_probability_network`` (``"network"``); else
    :data:`FALLBACK_PROBABILITY` (``"fallback"``: the network has no malignancy head). Clipped to [0, 1].
    """
    for value, source in (
        (nodule.malignancy_probability, "malignancy_probability"),
        (nodule.malignancy_probability_network, "network"),
    ):
        if value is not None and math.isfinite(float(value)):
            return min(max(float(value), 0.0), 1.0), source
    return FALLBACK_PROBABILITY, "fallback"


def _read_clinical(input_dir: Path) -> bool:
    """Whether the clinical information file is there (read, logged, its content unused; never an error)."""
    path = input_dir / CLINICAL_FILE
    if not path.is_file():
        return False
    try:
        json.loads(path.read_text(encoding="utf-8"))
        logger.info("%s present: not used by the model", path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        logger.warning("%s present but not readable as JSON (%s): ignored", path, e)
    return True


def run_luna25(input_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str], predictor: ScanPredictor) -> Path:
    """Score each nodule location of one LUNA25 / grand-challenge case and write the likelihoods file.

    Args:
        input_dir: holds ``nodule-locations.json``, ``images/chest-ct/<image>`` and optionally
            ``clinical-information-lung-ct.json``.
        output_dir: where ``lung-nodule-malginancy-likelihoods.json`` is written (created if missing).
        predictor: the whole-scan predictor; the points are analysed as given centres (no detection).

    Returns:
        The output file's path.

    Raises:
        InputError: bad input (see the module docstring); nothing is written then.
        FileNotFoundError: ``input_dir`` does not exist.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(2, "input folder not found", str(root))
    points_file = root / POINTS_FILE
    doc, points_lps = read_points(points_file)
    names = [str(item.get("name", f"point {k + 1}")) for k, item in enumerate(doc["points"])]
    case = find_image(root)
    clinical = _read_clinical(root)
    volume = load_ct(case)
    for warning in volume.warnings:
        logger.warning("%s: %s", case.path.name, warning)
    _check_inside(points_file, volume, names, points_lps)

    prediction = predictor.predict(volume.image, centers_ras=[lps_to_ras(p) for p in points_lps])
    for warning in prediction.warnings:
        logger.warning("%s: %s", case.path.name, warning)
    if len(prediction.nodules) != len(points_lps):  # given centres come back one each, in order
        raise RuntimeError(f"{len(points_lps)} points given, {len(prediction.nodules)} predictions returned")

    out_points = []
    for name, item, nodule in zip(names, doc["points"], prediction.nodules, strict=True):
        probability, source = point_probability(nodule)
        if source == "fallback":
            logger.warning(
                "point %r: the network gives no malignancy probability: %s written", name, FALLBACK_PROBABILITY
            )
        elif source == "network":
            logger.info("point %r: the network's probability on its crop is written", name)
        out_points.append({**item, "probability": probability})
    output = {
        "name": doc.get("name", _DEFAULT_NAME),
        "type": doc.get("type", MULTIPLE_POINTS),
        "points": out_points,
        "version": doc.get("version", _DEFAULT_VERSION),
    }
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = atomic_write_json(output, out / OUTPUT_FILE)
    logger.info(
        "%s: %d point(s) scored%s -> %s",
        case.path.name,
        len(out_points),
        " (clinical information present, not used)" if clinical else "",
        path,
    )
    return path
