"""Constants and the options of the synthetic chest CT generator.

Every number of the anatomical and nodule model lives here, as a named module-level constant or a
field of :class:`SynthConfig`; the other modules of :mod:`lung_nodule_mtl.data.synthetic` only
combine them. Hounsfield values (HU) are ``(low, high)`` ranges drawn uniformly per patient or per
nodule unless said otherwise; lengths are millimetres of world space (never voxels).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

__all__ = [
    "CALCIFICATION_PATTERNS",
    "GROWTH_MODELS",
    "LOCATIONS",
    "MODES",
    "NODULE_TYPES",
    "SHAPES",
    "SynthConfig",
    "Tissue",
    "make_config",
]

Range = tuple[float, float]

MODES = ("crops", "scans", "growth")
"""Values of ``mode``: nodule-centred crops, whole chest volumes, or baseline/follow-up pairs of crops."""

NODULE_TYPES = ("solid", "part_solid", "ground_glass", "calcified")
SHAPES = ("round", "lobulated", "spiculated")
LOCATIONS = ("isolated", "juxta_vascular", "juxta_pleural")
GROWTH_MODELS = ("malignant_solid", "part_solid", "ground_glass", "benign_stable", "benign_shrinking")
"""Growth models of ``growth`` mode (see :mod:`lung_nodule_mtl.data.synthetic.growth`)."""
CALCIFICATION_PATTERNS = {1: "popcorn", 2: "laminated", 3: "solid", 4: "non_central", 5: "central"}
"""LIDC calcification ratings of calcified nodules and the pattern drawn for each (6 = absent)."""


class Tissue(IntEnum):
    """Classes of the tissue map returned with every synthetic volume (for tests and inspection).

    A voxel's class is the structure at its centre before blur and noise; thin structures (vessels,
    airway walls) take their class where they fill at least half of the voxel.
    """

    OUTSIDE_AIR = 0
    FAT = 1
    """Subcutaneous, mediastinal, pericardial and paravertebral fat."""
    MUSCLE = 2
    """Skeletal muscle and other soft tissue of the chest wall (skin, intercostal layer)."""
    ORGAN = 3
    """Heart and great vessels, oesophagus, upper abdomen (liver), intervertebral discs, spinal canal."""
    CARTILAGE = 4
    """Costal cartilage."""
    BONE_MARROW = 5
    """Cancellous bone of ribs, sternum and vertebrae."""
    BONE_CORTEX = 6
    """Cortical bone (the shell of each bone, the vertebral arches)."""
    LUNG = 7
    """Lung parenchyma."""
    VESSEL = 8
    """Pulmonary arteries and veins (non-contrast blood)."""
    AIRWAY_LUMEN = 9
    AIRWAY_WALL = 10
    NODULE_SOLID = 11
    """Solid nodule tissue, including the solid component of part-solid nodules."""
    NODULE_GGO = 12
    """Ground-glass nodule tissue (pure GGO and the ground-glass part of part-solid nodules)."""
    NODULE_CALCIFIED = 13
    """Calcified part of a calcified nodule."""
    TABLE = 14
    """Shell of the scanner table."""


# ---------------------------------------------------------------------------------------------
# Tissue densities (HU), drawn uniformly per patient.
# ---------------------------------------------------------------------------------------------
AIR_HU = -1000.0
HU_MIN, HU_MAX = -1024.0, 3071.0
"""Range of the written CT values (HU), as a 12-bit scanner stores them."""
FAT_HU: Range = (-115.0, -85.0)
MUSCLE_HU: Range = (30.0, 55.0)
ORGAN_HU: Range = (35.0, 50.0)
CARTILAGE_HU: Range = (100.0, 160.0)
BONE_MARROW_HU: Range = (300.0, 420.0)
BONE_CORTEX_HU: Range = (750.0, 1050.0)
LUNG_HU: Range = (-885.0, -835.0)
"""Parenchyma density at the body's AP centre line (inspiration)."""
LUNG_GRAVITY_HU_PER_MM: Range = (0.10, 0.30)
"""Dependent density gradient: the posterior lung is denser by this many HU per mm (supine)."""
LUNG_TEXTURE_HU: Range = (15.0, 28.0)
"""Standard deviation of the correlated parenchymal texture (HU)."""
LUNG_TEXTURE_SIGMA_MM = 1.0
"""Correlation length (Gaussian sigma, mm) of the parenchymal texture."""
VESSEL_HU: Range = (30.0, 50.0)
AIRWAY_WALL_HU: Range = (20.0, 50.0)
TABLE_HU: Range = (150.0, 250.0)

# ---------------------------------------------------------------------------------------------
# Imaging: noise and blur.
# ---------------------------------------------------------------------------------------------
PSF_SIGMA_MM: Range = (0.35, 0.75)
"""In-plane Gaussian point-spread function (sigma, mm) of the reconstruction kernel, drawn per patient
(sharp to smooth kernels)."""
PSF_MIN_SIGMA_VOXELS = 0.4
"""The in-plane blur is at least this many voxels (partial volume of the voxel itself)."""
PSF_SIGMA_Z_VOXELS = 0.45
"""Slice sensitivity profile (sigma) along z, in slices."""
STANDARD_SLICE_MM = (0.625, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
"""Slice spacings (mm) of clinical reconstructions; a case draws one of those inside ``slice_mm``."""

# ---------------------------------------------------------------------------------------------
# Body and chest wall (mm). The body cross-section is a superellipse |X/a|^p + |Y/b|^p = s(z)^p.
# ---------------------------------------------------------------------------------------------
BODY_CENTER_X_MM: Range = (-15.0, 15.0)
"""Body centre in world x (RAS, mm): the patient lies near the scanner's isocentre."""
BODY_CENTER_Y_MM: Range = (-30.0, 30.0)
BODY_HALF_WIDTH_MM: Range = (135.0, 165.0)
BODY_HALF_DEPTH_MM: Range = (95.0, 120.0)
"""Anterior half-depth; the back is flatter (see ``BACK_FLATTENING``)."""
BACK_FLATTENING: Range = (0.88, 0.97)
BODY_EXPONENT: Range = (2.2, 2.7)
UPPER_TAPER: Range = (0.06, 0.14)
"""Relative narrowing of the body from mid-chest to the lung apices."""
SKIN_MM: Range = (1.5, 2.5)
FAT_MM: Range = (4.0, 18.0)
FAT_VARIATION = 0.35
"""Relative angular variation of the subcutaneous fat thickness."""
MUSCLE_MM: Range = (6.0, 12.0)
PECTORAL_MM: Range = (4.0, 12.0)
"""Extra muscle thickness over the anterolateral chest (pectoral muscles)."""
BACK_TO_VERTEBRA_MM: Range = (45.0, 60.0)
"""Depth from the skin of the back to the posterior surface of the vertebral bodies."""
INTERCOSTAL_EXTRA_MM: Range = (1.5, 3.0)
"""Intercostal layer = rib thickness + this (pleura and extrapleural tissue)."""

TAPER_START = 0.55
"""The body narrows above this fraction of the lung height."""
FAT_PHASE_RAD: Range = (-0.6, 0.6)
"""Angular phase of the fat-thickness variation ``1 + FAT_VARIATION cos(2 phi + phase)``."""
PECTORAL_ANGLE_RAD = 0.6
PECTORAL_WIDTH_RAD = 0.35
"""The pectoral thickening is a Gaussian in ``|phi|`` (angle from the anterior midline) at this angle and width."""
PARASPINAL_WIDTH_RAD = 0.45
"""Angular Gaussian width of the paraspinal thickening around the posterior midline."""
MIN_PARASPINAL_MM = 5.0

# Ribs, sternum, spine (mm).
RIB_COUNT = 12
RIB_PITCH_MM: Range = (22.0, 28.0)
RIB_DROP_MM: Range = (35.0, 55.0)
"""How much lower a rib's anterior end is than its posterior end."""
RIB_HALF_HEIGHT_MM: Range = (4.5, 6.0)
RIB_HALF_THICKNESS_MM: Range = (2.8, 3.5)
CORTEX_MM = 1.2
RIB_BELOW_LUNG_MM = 40.0
"""The lowest rib lies this far below the lung base."""
RIB_GAP_MM = 0.5
"""Gap between the chest-wall muscles and the ribs."""
RIB_DROP_EXPONENT = 1.3
"""A rib at angle ``phi`` lies ``RIB_DROP * ((pi - |phi|) / pi) ** exponent`` below its posterior end."""
RIB_BONY_MIN_DEG = 40.0
"""Ribs are bone from this angle from the anterior midline backwards, costal cartilage in front."""
RIB_POSTERIOR_MAX_DEG = 168.0
STERNUM_HALF_WIDTH_MM: Range = (14.0, 18.0)
STERNUM_HALF_THICKNESS_MM: Range = (4.5, 6.0)
STERNUM_HALF_WIDTH_DEG = 12.0
STERNUM_HEIGHT = (0.25, 0.92)
"""The sternum spans these fractions of the lung height."""
STERNUM_MAX_DEG = 45.0
VERTEBRA_RADIUS_MM: Range = (16.0, 21.0)
VERTEBRA_WIDTH_RATIO = 1.15
SPINAL_CANAL_RADIUS_MM: Range = (7.0, 9.0)
VERTEBRAL_ARCH_MM = 4.0
SPINOUS_PROCESS_LENGTH_MM = 30.0
TRANSVERSE_PROCESS_LENGTH_MM = 22.0
PROCESS_HALF_WIDTH_MM = 3.5
CANAL_GAP_MM = 1.0
"""Gap between the vertebral body and the spinal canal."""
ARCH_FRONT = 0.3
"""The vertebral arch reaches this fraction of the canal radius in front of the canal centre."""
TRANSVERSE_PROCESS_BEHIND = 0.5
"""The transverse processes lie this fraction of the canal radius behind the canal centre."""
DISC_MM: Range = (4.0, 6.0)

# Lungs and mediastinum (mm).
LUNG_BASE_Z_MM: Range = (-330.0, -230.0)
"""World z (RAS) of the lowest point of the lungs (posterior costophrenic recess)."""
LUNG_HEIGHT_MM: Range = (210.0, 270.0)
DOME_RIGHT_MM: Range = (55.0, 80.0)
"""Height of the right hemidiaphragm's dome above the lung base."""
DOME_LEFT_LOWER_MM: Range = (8.0, 20.0)
DOME_PEAK_X = 0.4
"""Lateral position of each dome's peak, as a fraction of the body half-width."""
DOME_HALF_WIDTH_X = 0.45
DOME_PEAK_Y = 0.1
DOME_HALF_WIDTH_Y = 0.75
"""The dome height falls as ``1 - u^2 - v^2`` with these half-widths (fractions of the body half-axes)."""
APEX_RADIUS_MM: Range = (20.0, 30.0)
"""Curvature radius (lateral) of the lung apices, a paraboloid ``dz = d^2 / (2 R)``."""
APEX_AP_STRETCH = 1.8
"""The apex paraboloid is this much wider antero-posteriorly."""
APEX_X = 0.42
APEX_Y = -0.15
"""Position of each apex, as fractions of the body half-width and of the back's half-depth."""
MEDIASTINUM_HALF_WIDTH_MM: Range = (18.0, 25.0)
MEDIASTINUM_HILUM_EXTRA_MM: Range = (6.0, 12.0)
"""Extra half-width of the mediastinum at the level of the hila."""
MEDIASTINUM_ANTERIOR_FRACTION = 0.3
MEDIASTINUM_POSTERIOR_FRACTION = 0.7
"""The mediastinum's half-width falls to these fractions in front of and behind the trachea ..."""
MEDIASTINUM_AP_SIGMA_MM = 45.0
"""... with this Gaussian width (mm)."""
MEDIASTINUM_WOBBLE_MM = 3.0
MEDIASTINUM_WOBBLE_PERIOD_MM = 80.0
PLEURA_MM = 1.5
"""Gap (fat or pleura) between the lungs and the mediastinal organs."""
HEART_SEMI_AXES_MM: tuple[Range, Range, Range] = ((55.0, 70.0), (42.0, 52.0), (48.0, 60.0))
HEART_LEFT_SHIFT_MM: Range = (15.0, 30.0)
HEART_ANTERIOR: Range = (0.1, 0.3)
"""Heart centre in front of the body centre, as a fraction of the anterior half-depth."""
HEART_ON_DOME: Range = (0.55, 0.75)
"""Heart centre above the left dome, as a fraction of its vertical semi-axis."""
HILUM_BELOW_CARINA_MM = 10.0
HILUM_HALF_HEIGHT_MM = 35.0
"""The mediastinum widens by ``MEDIASTINUM_HILUM_EXTRA_MM`` in a Gaussian band this high around the hila."""
AORTA_RADIUS_MM: Range = (11.0, 14.0)
AORTA_BESIDE_SPINE = (0.8, 0.3)
"""Descending aorta centre: left of the midline by ``0.8`` vertebral half-width + its radius, and ``0.3``
vertebral radius in front of the vertebral centre."""
ARCH_ABOVE_CARINA_MM: Range = (20.0, 35.0)
ARCH_RISE_MM = 5.0
ASCENDING_AORTA_XY_MM = (15.0, 30.0)
"""Ascending aorta: right of the midline, and in front of the trachea (mm)."""
OESOPHAGUS_XY_MM = (-5.0, 7.0)
"""Oesophagus: left of the midline, and behind the trachea's wall (mm)."""
OESOPHAGUS_RADIUS_MM = 8.0

# Airways (mm).
TRACHEA_RADIUS_MM: Range = (8.0, 10.5)
TRACHEA_RIGHT_MM: Range = (0.0, 4.0)
TRACHEA_BEFORE_SPINE_MM: Range = (18.0, 24.0)
"""Trachea axis in front of the vertebral bodies' anterior surface (mm)."""
TRACHEA_ABOVE_APEX_MM = 100.0
CARINA_HEIGHT: Range = (0.58, 0.66)
"""Height of the carina above the lung base, as a fraction of the lung height."""
MAIN_BRONCHI = {
    # side (+1 right, -1 left): (angle from vertical (deg), length range (mm), radius / trachea radius)
    1: (25.0, (20.0, 28.0), 0.72),
    -1: (45.0, (40.0, 50.0), 0.64),
}
BRONCHUS_ANGLE_JITTER_DEG = 5.0
BRONCHUS_POSTERIOR_TILT = 0.1
LOBAR_DIRECTIONS = {
    # side: unit-ish directions (x right, y anterior, z up) of the upper, middle/lingula and lower lobe bronchi
    1: ((0.6, 0.1, 0.8), (0.5, 0.7, -0.5), (0.3, -0.45, -0.85)),
    -1: ((-0.5, 0.3, 0.8), (-0.5, 0.6, -0.4), (-0.3, -0.45, -0.85)),
}
LOBAR_RADIUS_RATIO: Range = (0.62, 0.75)
LOBAR_DIRECTION_JITTER = 0.12
ARTERY_OFFSET_MM = (6.0, 10.0, 6.0)
"""Pulmonary artery roots: offset from the main bronchus end (lateral, anterior, up), mm."""
VEIN_OFFSET_MM = (4.0, 14.0, -25.0)
"""Pulmonary vein roots: offset from the main bronchus end (lateral, anterior, up), mm."""
VEIN_DIRECTIONS = ((0.8, 0.2, 0.5), (0.9, 0.1, -0.1), (0.6, -0.5, -0.6))
"""Vein root directions (lateral, anterior, up)."""
VESSEL_DIRECTION_JITTER = 0.15
HILUM_ENTRY_MARGIN_MM = 1.5
"""Tree roots start where their line from the hilum is this far (plus their radius) inside the lung."""
AIRWAY_LENGTH_PER_RADIUS: Range = (3.5, 6.0)
AIRWAY_MAJOR_RATIO: Range = (0.8, 0.88)
AIRWAY_MINOR_RATIO: Range = (0.65, 0.75)
AIRWAY_MAX_SEGMENTS = 2000
AIRWAY_WALL_FRACTION = 0.17
"""Airway wall thickness as a fraction of the outer radius (at least ``AIRWAY_MIN_WALL_MM``)."""
AIRWAY_MIN_WALL_MM = 0.5
AIRWAY_MIN_RADIUS_MM = 1.2
"""Airways stop branching below this outer radius (their walls are no longer visible)."""

# Vessel trees (space colonisation) and airway trees (recursive branching).
VESSEL_ROOT_RADIUS_MM: Range = (4.0, 6.0)
"""Radius range of lobar vessels at the hilum (the largest radius of the vessel trees)."""
VESSEL_MIN_RADIUS_MM = 0.5
"""Radius of terminal vessel branches."""
VESSEL_ATTRACTOR_SPACING_MM = 7.0
"""One attractor point per this spacing cubed of lung volume: sets how densely vessels fill the lung."""
VESSEL_STEP_MM = 3.5
VESSEL_KILL_MM = 3.5
VESSEL_INFLUENCE_MM = 30.0
VESSEL_JITTER = 0.15
MURRAY_EXPONENT = 2.6
VESSEL_NODE_MIN_MARGIN_MM = 0.5
"""New vessel nodes must be this far inside the lung."""
TREE_END_MARGIN_MM = 1.0
"""Airway segment ends must be their radius plus this far inside the lung."""
VESSEL_MAX_NODES = 20000
VESSEL_MAX_ITERATIONS = 150
TREE_MAJOR_RATIO: Range = (0.76, 0.86)
TREE_MINOR_RATIO: Range = (0.56, 0.70)
TREE_MAJOR_ANGLE_DEG: Range = (10.0, 30.0)
TREE_MINOR_ANGLE_DEG: Range = (35.0, 65.0)
TREE_LENGTH_PER_RADIUS: Range = (5.0, 9.0)
TREE_MIN_LENGTH_MM = 2.0
TREE_OUTWARD_BIAS = 0.35
"""Weight pulling each new branch away from its root (space filling)."""
TREE_WALL_AVOIDANCE = 0.9
"""Weight pushing branches away from the lung boundary when they come close to it."""
TREE_MAX_GENERATIONS = 14

# Scanner table.
TABLE_GAP_MM: Range = (0.0, 4.0)
TABLE_THICKNESS_MM = 40.0
TABLE_SHELL_MM = 2.5
TABLE_HALF_WIDTH_MM = 220.0
TABLE_CURVATURE_RADIUS_MM = 700.0

# ---------------------------------------------------------------------------------------------
# Nodules.
# ---------------------------------------------------------------------------------------------
NODULE_TYPE_PROBABILITIES = {"solid": 0.55, "part_solid": 0.12, "ground_glass": 0.15, "calcified": 0.18}
DIAMETER_LOGNORMAL = {
    "solid": (9.0, 0.5),
    "part_solid": (13.0, 0.35),
    "ground_glass": (10.0, 0.4),
    "calcified": (6.0, 0.35),
}
"""Volume-equivalent diameter: ``(median mm, sigma of log)`` per type, truncated to ``diameter_mm``."""
SHAPE_PROBABILITIES = {
    # (round, lobulated, spiculated)
    ("solid", "small"): (0.70, 0.22, 0.08),
    ("solid", "medium"): (0.45, 0.33, 0.22),
    ("solid", "large"): (0.25, 0.35, 0.40),
    ("part_solid", None): (0.35, 0.35, 0.30),
    ("ground_glass", None): (0.75, 0.20, 0.05),
    ("calcified", None): (0.85, 0.15, 0.00),
}
SOLID_SIZE_CLASSES_MM = (8.0, 15.0)
"""Solid nodules are "small" below the first diameter, "large" from the second."""
LOCATION_PROBABILITIES = {"isolated": 0.6, "juxta_vascular": 0.2, "juxta_pleural": 0.2}

SOLID_HU: Range = (15.0, 60.0)
GGO_HU: Range = (-600.0, -380.0)
GGO_TEXTURE_1_BELOW_HU = -480.0
"""Ground-glass nodules fainter than this get texture 1, the others 2."""
CALCIUM_HU: Range = (450.0, 1000.0)
NODULE_HETEROGENEITY_HU: Range = (5.0, 25.0)
"""Amplitude of the smooth internal density variation of a nodule."""
NODULE_FAT_HU: Range = (-120.0, -80.0)
PART_SOLID_RATIO: Range = (0.3, 0.8)
"""Diameter of the solid component as a fraction of the whole part-solid nodule."""
PART_SOLID_TEXTURE_CUTS = (0.45, 0.65)
"""Solid ratio below the first value: texture 2; below the second: 3; above: 4."""

AXIS_RATIO = {"round": (0.82, 1.0), "lobulated": (0.65, 0.95), "spiculated": (0.6, 0.95)}
"""Minor/major axis ratio of the nodule body per shape (calcified nodules: ``CALCIFIED_AXIS_RATIO``)."""
CALCIFIED_AXIS_RATIO: Range = (0.88, 1.0)
SPHERICITY_CUTS = (0.55, 0.68, 0.8, 0.9)
"""Axis-ratio thresholds of sphericity 2, 3, 4, 5 (below the first: 1)."""
LOBULATION_AMPLITUDE = {"round": (0.0, 0.05), "lobulated": (0.12, 0.30), "spiculated": (0.0, 0.20)}
"""Relative radial amplitude of the lobes of the nodule surface."""
LOBULATION_STEP = 0.06
"""Lobulation rating = 1 + floor(amplitude / step), capped to 5."""
LOBE_COUNT = (3, 7)
LOBE_WIDTH = 0.12
"""Angular width of a lobe, as ``1 - cos(angle)``."""
LOBULATION_SPHERICITY_PENALTY = 0.2
"""Sphericity is lowered by one level from this lobulation amplitude."""
SPICULE_COUNT: tuple[int, int] = (6, 20)
SPICULE_LENGTH_RATIO: Range = (0.3, 1.0)
"""Spicule length as a fraction of the nodule radius (at most ``SPICULE_MAX_MM``)."""
SPICULE_MAX_MM = 12.0
SPICULATION_LONG_RATIO = 0.7
SPICULATION_MANY = 14
"""Spiculation rating of spiculated nodules: 3, +1 if the length ratio is at least ``SPICULATION_LONG_RATIO``,
+1 if they have at least ``SPICULATION_MANY`` spicules."""
SPICULE_BASE_RADIUS_MM: Range = (0.35, 0.8)
SPICULE_TIP_RADIUS_MM = 0.15
MINOR_STRAND_PROBABILITY = 0.15
"""Non-spiculated, non-calcified nodules get 1-3 short strands (spiculation 2) with this probability."""
MINOR_STRAND_LENGTH_RATIO: Range = (0.15, 0.3)
EDGE_WIDTH_MM = {
    "round": (0.0, 0.3),
    "lobulated": (0.2, 0.8),
    "spiculated": (0.4, 1.2),
    "part_solid": (0.6, 1.4),
    "ground_glass": (0.8, 2.0),
    "calcified": (0.0, 0.2),
}
"""Width (mm) of the soft transition at the nodule surface; per type for non-solid/calcified nodules."""
MARGIN_STEP_MM = 0.4
"""Margin rating = 5 - floor(edge width / step); spiculated and ground-glass nodules at most 3."""
CALCIFICATION_PATTERN_PROBABILITIES = {1: 0.10, 2: 0.15, 3: 0.40, 4: 0.10, 5: 0.25}
HAMARTOMA_FAT_PROBABILITY = 0.5
"""Popcorn-calcified nodules of at least ``INCLUSION_MIN_DIAMETER_MM`` contain fat (internal structure 3)."""
AIR_BUBBLE_PROBABILITY = 0.1
"""Solid and part-solid nodules of at least ``INCLUSION_MIN_DIAMETER_MM`` contain air (internal structure 4)."""
INCLUSION_MIN_DIAMETER_MM = 8.0
MIN_CALCIFICATION_RADIUS_MM = 1.2

# Nodule geometry details (fractions of the nodule's smallest radius unless said otherwise).
LOBE_AMPLITUDE_SPREAD: Range = (0.6, 1.0)
"""Each lobe's amplitude relative to the largest (which equals the lobulation amplitude)."""
WAVELENGTH_MM: Range = (3.0, 8.0)
"""Wavelengths of the three plane waves of the smooth internal density variation."""
SPICULE_ROOT = 0.85
"""Spicules start at this fraction of the surface radius (inside the body)."""
SPICULE_LENGTH_SPREAD: Range = (0.6, 1.4)
MINOR_STRAND_COUNT: tuple[int, int] = (1, 3)
SOLID_CORE_MAX_OFFSET = 0.6
"""The solid core of a part-solid nodule is off-centre by at most this fraction of the free room."""
HAMARTOMA_FAT_OFFSET = 0.2
HAMARTOMA_FAT_RADIUS: Range = (0.3, 0.45)
AIR_BUBBLE_COUNT: tuple[int, int] = (1, 3)
AIR_BUBBLE_RADIUS: Range = (0.08, 0.15)
"""Air bubble radius as a fraction of the diameter (at least ``AIR_BUBBLE_MIN_RADIUS_MM``)."""
AIR_BUBBLE_MIN_RADIUS_MM = 0.8
AIR_BUBBLE_MAX_OFFSET = 0.45
CENTRAL_CALCIUM_RADIUS: Range = (0.4, 0.65)
NON_CENTRAL_CALCIUM_RADIUS: Range = (0.3, 0.5)
LAMINATED_CORE = 0.3
LAMINATED_RINGS = (0.55, 0.8)
LAMINATED_RING_HALF_MM = 0.5
POPCORN_COUNT: tuple[int, int] = (3, 6)
POPCORN_RADIUS: Range = (0.18, 0.3)
CALCIUM_MAX_OFFSET = 0.8
"""Off-centre calcium stays within this fraction of the free room inside the nodule."""

# Subtlety rating: round(1 + 1.7 log2(D / 3 mm) + offsets + N(0, 0.35)), clipped to 1..5.
SUBTLETY_PER_DOUBLING = 1.7
SUBTLETY_OFFSETS = {
    "ground_glass": -1.2,
    "part_solid": -0.4,
    "calcified": 0.8,
    "juxta_vascular": -0.5,
    "juxta_pleural": -0.3,
    "texture_2": 0.5,
}
SUBTLETY_NOISE = 0.35

# Malignancy: logit = b0 + bD ln(D / 10 mm) + sum of attribute terms + N(0, sigma).
MALIGNANCY_INTERCEPT = -1.2
MALIGNANCY_LOG_DIAMETER = 1.2
MALIGNANCY_SPICULATION = 0.75
"""Per level above 1."""
MALIGNANCY_LOBULATION = 0.45
"""Per level above 1."""
MALIGNANCY_POOR_MARGIN = 0.4
"""Per level below 5."""
MALIGNANCY_PART_SOLID = 0.8
MALIGNANCY_GROUND_GLASS = -1.0
MALIGNANCY_AIR = 1.0
MALIGNANCY_JUXTA_PLEURAL = -0.5
MALIGNANCY_NOISE = 0.6
CALCIFIED_LOGIT = -6.0
"""Calcification (a benign pattern) in the logit; the rating of a calcified nodule is then 1 or 2."""
MALIGNANCY_SCORE_CUTS = (0.15, 0.35, 0.65, 0.85)
"""Probability thresholds of the ratings 2, 3, 4, 5 (below the first: 1)."""
CALCIFIED_SCORE_1_PROBABILITY = 0.7
"""Calcified nodules are benign: rating 1 with this probability, else 2."""

# Placement (mm).
NODULE_LUNG_CLEARANCE_MM = 3.0
"""Isolated and juxta-vascular nodules keep this much lung around them."""
NODULE_SEPARATION_MM = 10.0
"""Free lung between two nodules of a patient (crops: plus ``CROP_SEPARATION_MM``)."""
CROP_SEPARATION_MM = 20.0
PLEURAL_CONTACT: Range = (0.55, 0.85)
"""Juxta-pleural: distance from the centre to the chest wall, as a fraction of the smallest radius."""
VASCULAR_CONTACT: Range = (0.55, 0.85)
"""Juxta-vascular: distance from the centre to the vessel surface, as a fraction of the smallest radius."""
JUXTA_VESSEL_POSITION: Range = (0.2, 0.8)
"""Where along the vessel segment a juxta-vascular nodule sits."""
PLEURAL_CONTACT_LIMITS = (0.25, 0.95)
"""Checked after snapping to voxels: distance from the centre to the pleura, in smallest radii."""
GRID_MARGIN_VOXELS = 2.0
"""Scans keep this many voxels between a nodule's extent and the volume's faces."""
JUXTA_VESSEL_RADIUS_MM: Range = (0.8, 3.5)
ISOLATED_VESSEL_RADIUS_MM = 1.2
"""Isolated nodules keep clear of vessels at least this thick."""
AIRWAY_CLEARANCE_MM = 2.0
PLACEMENT_CANDIDATES = 256
PLACEMENT_ROUNDS = 8


# ---------------------------------------------------------------------------------------------
# Nodule growth between a baseline and a follow-up scan (``growth`` mode; see growth.py).
# ---------------------------------------------------------------------------------------------
GROWING_MODEL_OF_TYPE = {"solid": "malignant_solid", "part_solid": "part_solid", "ground_glass": "ground_glass"}
"""The growing model of each non-calcified type (and the type each growing model forces)."""
GROWTH_PROBABILITY_FLOOR = {"solid": 0.0, "part_solid": 0.5, "ground_glass": 0.3}
"""A non-calcified nodule grows with probability ``max(malignancy_probability, floor[type])``."""
SHRINKING_PROBABILITY = 0.25
"""A non-growing, non-calcified nodule shrinks (resolving inflammation) with this probability, else is stable.
Calcified nodules are always stable."""
VDT_DAYS = {"malignant_solid": (100.0, 400.0), "part_solid": (400.0, 800.0), "ground_glass": (600.0, 1200.0)}
"""Volume-doubling time (days) of the growing models, drawn log-uniformly."""
HALVING_DAYS: Range = (150.0, 600.0)
"""Volume-halving time (days) of shrinking nodules, drawn log-uniformly; their VDT is its negative."""
FOLLOWUP_INTERVALS_DAYS = (90.0, 180.0, 365.0, 730.0)
"""Clinical follow-up intervals (days): 3, 6, 12 and 24 months."""
FOLLOWUP_INTERVAL_PROBABILITIES = {
    # (90, 180, 365, 730) days, by what a reader sees at baseline (Fleischner-like)
    "solid_small": (0.10, 0.30, 0.45, 0.15),
    "solid_large": (0.40, 0.35, 0.20, 0.05),
    "part_solid": (0.25, 0.35, 0.30, 0.10),
    "ground_glass": (0.05, 0.25, 0.40, 0.30),
    "calcified": (0.05, 0.15, 0.40, 0.40),
}
"""Probabilities of ``FOLLOWUP_INTERVALS_DAYS`` per baseline type; solid nodules are "small" below
``SOLID_SIZE_CLASSES_MM[0]``."""
INTERVAL_JITTER = 0.1
"""The interval is the chosen one times ``U(1 - jitter, 1 + jitter)``, rounded to whole days."""
FOLLOWUP_MIN_DIAMETER_MM = 2.0
"""A shrinking nodule's follow-up diameter stays at least this (its upper bound is ``diameter_mm[1]``)."""
LOBE_GROWTH_EXPONENT: Range = (0.5, 1.5)
"""Relative lobe amplitudes scale by ``g ** e`` (``g`` the linear growth factor), so lobes grow faster
than the core when ``g > 1``; capped at ``MAX_LOBE_AMPLITUDE``."""
MAX_LOBE_AMPLITUDE = 0.35
SPICULE_GROWTH_EXPONENT: Range = (1.2, 2.0)
"""Spicule lengths (mm) scale by ``g ** e`` (faster than the core radius), capped at ``SPICULE_MAX_MM``."""
AXIS_GROWTH_EXPONENT: Range = (-0.15, 0.15)
"""Each principal semi-axis scales by ``g ** (1 + e_a)`` (anisotropic growth; the volume is then
set exactly)."""
SOLID_CORE_GROWTH_EXPONENT: Range = (0.5, 1.5)
"""Part-solid nodules: the solid-to-whole diameter ratio scales by ``g ** e``, capped at ``MAX_SOLID_RATIO``."""
MAX_SOLID_RATIO = 0.95
SOLID_EMERGENCE_DAYS = 1500.0
"""A growing ground-glass nodule develops a solid component (becomes part-solid) during the interval
with probability ``1 - exp(-interval / SOLID_EMERGENCE_DAYS)``."""
EMERGING_SOLID_RATIO: Range = (0.15, 0.35)
"""Diameter of a newly appeared solid component, as a fraction of the nodule's."""
GGO_DENSITY_HU_PER_DOUBLING: Range = (20.0, 60.0)
"""Ground glass gets denser by this many HU per volume doubling (fainter when shrinking) ..."""
GGO_DENSITY_LIMITS_HU = (-750.0, -300.0)
"""... within these limits."""
MAX_REGISTRATION_SHIFT_MM = 10.0
MAX_REGISTRATION_ROTATION_DEG = 30.0
"""Upper bounds accepted for the ``registration_shift_mm`` and ``registration_rotation_deg`` options."""


def _positive_range(name: str, value: Any, integer: bool = False) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}.") from e
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"{name} must satisfy 0 < low <= high, got {value!r}.")
    if integer and (lo != int(lo) or hi != int(hi)):
        raise ValueError(f"{name} must be a pair of integers, got {value!r}.")
    return lo, hi


def _probabilities(name: str, value: Mapping[str, float], allowed: tuple[str, ...]) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping of {list(allowed)} to probabilities, got {value!r}.")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ValueError(f"{name} has unknown key(s) {unknown}; allowed: {list(allowed)}.")
    probs = {k: float(value.get(k, 0.0)) for k in allowed}
    if any(not math.isfinite(p) or p < 0 for p in probs.values()) or sum(probs.values()) <= 0:
        raise ValueError(f"{name} must hold non-negative probabilities with a positive sum, got {value!r}.")
    total = sum(probs.values())
    return {k: p / total for k, p in probs.items()}


@dataclass(frozen=True)
class SynthConfig:
    """Options of the generator (the ``**generator options`` of :func:`synthesize_dataset`).

    Attributes:
        crop_size_xy: crop size in-plane, voxels (default 64).
        crop_size_z: crop size along z, voxels; ``None`` (default) gives the same physical extent as
            in-plane: ``round(crop_size_xy * spacing_xy / slice_spacing)`` (e.g. 38 slices for
            0.75 mm pixels and 1.25 mm slices).
        crop_offset_mm: largest distance (mm, per axis) between the nodule centre and the crop centre;
            the nodule always stays inside the crop.
        scan_shape: whole-scan size ``(i, j, k)`` in voxels (default 256 x 256 x 160).
        scan_fov_mm: in-plane field of view of a scan (mm), drawn per case; the pixel spacing is
            ``fov / scan_shape[0]`` (1.3-1.5 mm at 256 pixels, 0.64-0.74 mm at 512 as in clinical CT).
            The field of view is widened when needed so that the body fits.
        scan_spacing_xy_mm: if given, scans draw their pixel spacing (mm) from this range instead,
            and the field of view is ``scan_shape * spacing`` (the body may then be cut at the sides).
        spacing_xy_mm: pixel spacing of crops (mm), drawn per patient.
        slice_mm: slice spacing (mm), drawn per patient among ``STANDARD_SLICE_MM`` in this range.
        nodules_per_crop_patient: ``(min, max)`` nodules of a patient in ``crops`` mode.
        nodules_per_scan: ``(min, max)`` nodules of a scan in ``scans`` mode.
        diameter_mm: ``(min, max)`` nodule diameter (mm, volume-equivalent).
        noise_hu: ``(min, max)`` standard deviation (HU) of the scanner noise, drawn per patient.
        nodule_type_probabilities: probability of each of ``NODULE_TYPES`` (normalised).
        location_probabilities: probability of each of ``LOCATIONS`` (normalised).
        table: draw the scanner table under the patient.
        growth_model_probabilities: ``growth`` mode: if given, the probability of each of
            ``GROWTH_MODELS`` (normalised), drawn first; a growing model forces the nodule type
            (``malignant_solid`` -> solid, ``part_solid``, ``ground_glass``) and ``benign_shrinking``
            excludes calcified nodules. ``None`` (default): the model follows the nodule's type and
            malignancy probability (see :mod:`~lung_nodule_mtl.data.synthetic.growth`).
        followup_intervals_days: ``growth`` mode: if given, the clinical intervals (days) drawn
            uniformly instead of ``FOLLOWUP_INTERVALS_DAYS`` with the per-type probabilities.
        registration_shift_mm: ``growth`` mode: largest rigid translation (mm) of the follow-up crop
            relative to the baseline (uniform in the ball of this radius).
        registration_rotation_deg: ``growth`` mode: largest rigid rotation (degrees) of the follow-up
            crop about the nodule centre (uniform angle, random axis).
    """

    crop_size_xy: int = 64
    crop_size_z: int | None = None
    crop_offset_mm: float = 6.0
    scan_shape: tuple[int, int, int] = (256, 256, 160)
    scan_fov_mm: tuple[float, float] = (330.0, 380.0)
    scan_spacing_xy_mm: tuple[float, float] | None = None
    spacing_xy_mm: tuple[float, float] = (0.6, 0.9)
    slice_mm: tuple[float, float] = (1.0, 2.5)
    nodules_per_crop_patient: tuple[int, int] = (1, 3)
    nodules_per_scan: tuple[int, int] = (1, 4)
    diameter_mm: tuple[float, float] = (3.0, 30.0)
    noise_hu: tuple[float, float] = (10.0, 30.0)
    nodule_type_probabilities: Mapping[str, float] = field(default_factory=lambda: dict(NODULE_TYPE_PROBABILITIES))
    location_probabilities: Mapping[str, float] = field(default_factory=lambda: dict(LOCATION_PROBABILITIES))
    table: bool = True
    growth_model_probabilities: Mapping[str, float] | None = None
    followup_intervals_days: tuple[float, ...] | None = None
    registration_shift_mm: float = 2.0
    registration_rotation_deg: float = 3.0

    def __post_init__(self) -> None:
        """Check every option and normalise ranges to tuples; raise ``ValueError`` naming the option."""
        set_ = object.__setattr__
        if isinstance(self.crop_size_xy, bool) or not isinstance(self.crop_size_xy, int) or self.crop_size_xy < 16:
            raise ValueError(f"crop_size_xy must be an integer >= 16 (voxels), got {self.crop_size_xy!r}.")
        if self.crop_size_z is not None and (
            isinstance(self.crop_size_z, bool) or not isinstance(self.crop_size_z, int) or self.crop_size_z < 4
        ):
            raise ValueError(f"crop_size_z must be None or an integer >= 4 (voxels), got {self.crop_size_z!r}.")
        if not (isinstance(self.crop_offset_mm, (int, float)) and 0 <= self.crop_offset_mm < math.inf):
            raise ValueError(f"crop_offset_mm must be a finite number >= 0 (mm), got {self.crop_offset_mm!r}.")
        shape = tuple(self.scan_shape) if isinstance(self.scan_shape, (tuple, list)) else ()
        if len(shape) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 16 for n in shape):
            raise ValueError(f"scan_shape must be 3 integers >= 16 (voxels), got {self.scan_shape!r}.")
        set_(self, "scan_shape", shape)
        for name in ("scan_fov_mm", "spacing_xy_mm", "slice_mm", "diameter_mm", "noise_hu"):
            set_(self, name, _positive_range(name, getattr(self, name)))
        if self.scan_spacing_xy_mm is not None:
            set_(self, "scan_spacing_xy_mm", _positive_range("scan_spacing_xy_mm", self.scan_spacing_xy_mm))
        for name in ("nodules_per_crop_patient", "nodules_per_scan"):
            lo, hi = _positive_range(name, getattr(self, name), integer=True)
            set_(self, name, (int(lo), int(hi)))
        d_lo, d_hi = self.diameter_mm
        if d_lo < 3.0 or d_hi > 30.0:
            raise ValueError(f"diameter_mm must lie within [3, 30] mm, got {self.diameter_mm!r}.")
        set_(
            self,
            "nodule_type_probabilities",
            _probabilities("nodule_type_probabilities", self.nodule_type_probabilities, NODULE_TYPES),
        )
        set_(
            self,
            "location_probabilities",
            _probabilities("location_probabilities", self.location_probabilities, LOCATIONS),
        )
        if not isinstance(self.table, bool):
            raise ValueError(f"table must be True or False, got {self.table!r}.")
        if self.growth_model_probabilities is not None:
            set_(
                self,
                "growth_model_probabilities",
                _probabilities("growth_model_probabilities", self.growth_model_probabilities, GROWTH_MODELS),
            )
        if self.followup_intervals_days is not None:
            days = self.followup_intervals_days
            try:
                values = tuple(float(d) for d in days)  # type: ignore[union-attr]
            except (TypeError, ValueError) as e:
                raise ValueError(f"followup_intervals_days must be a sequence of days > 0, got {days!r}.") from e
            if not values or not all(math.isfinite(d) and d > 0 for d in values):
                raise ValueError(f"followup_intervals_days must be a non-empty sequence of days > 0, got {days!r}.")
            set_(self, "followup_intervals_days", values)
        for name, limit in (
            ("registration_shift_mm", MAX_REGISTRATION_SHIFT_MM),
            ("registration_rotation_deg", MAX_REGISTRATION_ROTATION_DEG),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= limit:
                raise ValueError(f"{name} must be a number in [0, {limit}], got {value!r}.")
            set_(self, name, float(value))

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-friendly dictionary (recorded in the datalist's metadata)."""
        out = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}


def make_config(config: SynthConfig | None = None, **options: Any) -> SynthConfig:
    """Build a :class:`SynthConfig` from an optional base and keyword overrides.

    Raises:
        ValueError: an option is unknown or has a bad value.
    """
    known = {f.name for f in dataclasses.fields(SynthConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown generator option(s) {unknown}; known options: {sorted(known)}.")
    base = config if config is not None else SynthConfig()
    if not isinstance(base, SynthConfig):
        raise ValueError(f"config must be a SynthConfig or None, got {type(base).__name__}.")
    return dataclasses.replace(base, **options) if options else base
