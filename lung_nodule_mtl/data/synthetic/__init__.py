"""Deterministic synthetic chest CT with lung nodules: the project's built-in default data.

:func:`synthesize_dataset` writes NIfTI volumes (CT in HU as int16, nodule masks as uint8 0/1)
and a MONAI-style ``datalist.json`` split by patient; :func:`generate_case` makes one case in memory
(images, masks, tissue maps, affines, nodule records) for tests and inspection. Every number below
is a named constant of :mod:`lung_nodule_mtl.data.synthetic.config` or a field of :class:`SynthConfig`.
``growth`` mode (:func:`generate_growth_case`) writes each nodule at a baseline and a follow-up scan,
for growth prediction; its growth model and registration noise are documented in
:mod:`lung_nodule_mtl.data.synthetic.growth`.

Determinism
    Case ``k`` of seed ``s`` draws from ``SeedSequence(s, spawn_key=(k,))`` split into independent
    streams (anatomy, nodules, geometry, image noise), so it is the same whatever the number of cases;
    the same ``(seed, options)`` gives identical arrays. The anatomy of patient ``k`` is the same in
    ``crops`` and ``scans`` mode.

Geometry (as DICOM-derived NIfTI)
    Affine ``diag(-sx, -sy, sz)`` plus the RAS position of voxel 0, so voxel axes point Left,
    Posterior, Superior (``aff2axcodes == ('L', 'P', 'S')``, like the LIDC crops). The patient lies
    supine near the scanner isocentre (body centre x in [-15, 15] mm, y in [-30, 30] mm, RAS); the lung
    base is at world z in [-330, -230] mm. ``crops``: pixel spacing U(0.6, 0.9) mm and a slice spacing
    drawn per patient among 0.625/1/1.25/1.5/2/2.5/3 mm within [1, 2.5]; 64 x 64 pixels and, by default,
    the same physical extent in z (``round(64 sx / sz)`` slices, more if the nodule needs them); the
    nodule centre is a voxel centre shifted by up to 6 mm (whole voxels) from the crop's middle voxel
    ``n // 2``. ``scans``: 256 x 256 x 160 voxels by default; the in-plane field of view is U(330, 380)
    mm (widened so that the body fits with 12 mm of air each side), i.e. 1.3-1.5 mm pixels at 256
    (0.64-0.74 mm at 512, as clinical CT); the z range covers the lungs' middle, or all of them with up
    to 10 mm margins when the scan is long enough.

Anatomy (implicit functions of world mm, sampled on any grid)
    Body: a superellipse ``|X/a|^p + |Y/b|^p = s(z)^p`` with half-width a U(135, 165) mm, anterior
    half-depth b U(95, 120) mm, back flattened x U(0.88, 0.97), p U(2.2, 2.7), narrowing by U(6, 14)%
    towards the apices. Wall, outside in (depths along the ray from the body centre): skin U(1.5, 2.5)
    mm (muscle density), subcutaneous fat U(4, 18) mm +-35% around the body, muscle U(6, 12) mm plus
    pectorals U(4, 12) mm anterolaterally and paraspinal muscles reaching U(45, 60) mm from the back
    skin to the vertebral bodies, then the intercostal layer (rib thickness + U(1.5, 3) mm) holding 12
    ribs: elliptic sections U(4.5, 6) x U(2.8, 3.5) mm half-axes with a 1.2 mm cortex, a pitch of U(22,
    28) mm, each rib U(35, 55) mm lower at its anterior end; costal cartilage in front of 40 degrees
    from the midline, and the sternum. Spine: vertebral bodies (radius U(16, 21) mm, 15% wider,
    intervertebral discs U(4, 6) mm), spinal canal (radius U(7, 9) mm), arches, spinous and transverse
    processes. Mediastinum: fat around a column of half-width U(18, 25) mm (+U(6, 12) mm at the hila,
    30% of it at the anterior junction, 70% behind the trachea, +-3 mm wobble), the heart (ellipsoid,
    semi-axes U(55, 70) x U(42, 52) x U(48, 60) mm, shifted U(15, 30) mm to the left, resting on the
    left hemidiaphragm), the descending aorta (radius U(11, 14) mm) and its arch, the oesophagus.
    Lungs: the cavity inside the wall minus the mediastinum, heart, aorta and spine (1.5 mm pleural
    gap), above the hemidiaphragms (domes U(55, 80) mm above the lung base on the right, 8-20 mm lower
    on the left, falling as ``1 - u^2 - v^2`` to deep costophrenic recesses) and below paraboloid
    apices (curvature radius U(20, 30) mm, 1.8x wider antero-posteriorly); lung height U(210, 270)
    mm. Upper abdomen under the domes. A two-shell carbon table under the back.
    Airways: trachea (radius U(8, 10.5) mm), carina at U(0.58, 0.66) of the lung height, main
    bronchi (right 25 degrees from vertical, U(20, 28) mm; left 45 degrees, U(40, 50) mm), six lobar
    bronchi, then recursive asymmetric branching (children x U(0.8, 0.88) and x U(0.65, 0.75), 10-30
    and 35-65 degrees) down to 1.2 mm radius; wall 17% of the radius (at least 0.5 mm), lumen air.
    Vessels: per lung 3 arterial and 3 venous roots at the hilum, grown by space colonisation (one
    attractor per 7^3 mm^3 of lung, 3.5 mm steps, kill distance 3.5 mm, influence 30 mm); radii by a
    pipe model ``r_parent^2.6 = sum r_child^2.6`` from 0.5 mm leaves, capped at 6 mm: thick at the
    hila, thinning to the periphery.

Densities (HU, per patient) and imaging
    Air -1000; fat U(-115, -85); muscle U(30, 55); mediastinal organs, discs and canal U(35, 50);
    cartilage U(100, 160); cancellous bone U(300, 420); cortical bone U(750, 1050); vessels U(30,
    50); airway wall U(20, 50); lung parenchyma U(-885, -835) at the body's AP centre, denser
    posteriorly by U(0.1, 0.3) HU/mm (supine gravity gradient), with a correlated texture (sigma 1 mm,
    SD U(15, 28) HU). Partial volume: thin tubes by their overlap with each voxel, sub-voxel vessels
    splatted as the fraction of voxel volume they fill. Scanner: white noise with a final SD of
    U(10, 30) HU, then one Gaussian blur (in-plane sigma U(0.35, 0.75) mm, at least 0.4 voxel; 0.45
    slice along z) for the reconstruction kernel and slice profile, which also correlates the noise.
    Values are rounded and clipped to [-1024, 3071].

Nodules
    Count: 1-3 per patient (crops), 1-4 per scan. Type: solid 0.55, part-solid 0.12, ground-glass
    0.15, calcified 0.18. Diameter (mm, of the sphere of the body's volume): log-normal with median /
    sigma-of-log solid 9 / 0.5, part-solid 13 / 0.35, ground-glass 10 / 0.4, calcified 6 / 0.35,
    truncated to [3, 30]. Shape (round, lobulated, spiculated): solid < 8 mm 0.70/0.22/0.08, 8-15 mm
    0.45/0.33/0.22, >= 15 mm 0.25/0.35/0.40; part-solid 0.35/0.35/0.30; ground-glass 0.75/0.20/0.05;
    calcified 0.85/0.15/0. Location: isolated 0.6, juxta-vascular 0.2, juxta-pleural 0.2.
    Body: an ellipsoid of minor/major axis ratio U(0.82, 1) round, U(0.65, 0.95) lobulated,
    U(0.6, 0.95) spiculated, U(0.88, 1) calcified, randomly rotated, with 3-7 lobes of relative
    amplitude A U(0, 0.05) round, U(0.12, 0.30) lobulated, U(0, 0.20) spiculated. Spiculated: 6-20
    spicules, length U(0.3, 1.0) x radius (x U(0.6, 1.4), at most 12 mm), radius U(0.35, 0.8) mm
    tapering to 0.15 mm; other non-calcified nodules get 1-3 short strands (0.15-0.3 x radius) with
    probability 0.15. Edge (soft transition) width, mm: round U(0, 0.3), lobulated U(0.2, 0.8),
    spiculated U(0.4, 1.2), part-solid U(0.6, 1.4), ground-glass U(0.8, 2.0), calcified U(0, 0.2).
    Density: solid U(15, 60) HU; ground glass U(-600, -380) HU; part-solid = ground glass with a
    solid core of U(0.3, 0.8) of the diameter, possibly off-centre; calcified = solid nodule with
    calcium U(450, 1000) HU in its LIDC pattern (popcorn 0.10: 3-6 blobs; laminated 0.15: core + 2
    rings; solid 0.40: all of it; non-central 0.10; central 0.25), blobs at least 1.2 mm; smooth
    internal variation U(5, 25) HU. Inclusions (nodules >= 8 mm): air bubbles in solid/part-solid
    nodules with probability 0.1 (internal structure 4), fat in popcorn-calcified ones with
    probability 0.5 (hamartoma, internal structure 3). Placement: isolated nodules keep 3 mm of lung
    around them and clear of vessels >= 1.2 mm radius; juxta-vascular ones sit on a vessel of radius
    0.8-3.5 mm, their centre U(0.55, 0.85) x (smallest radius) from its surface; juxta-pleural ones
    have their centre U(0.55, 0.85) x (smallest radius) from the costal pleura, so they are cut by it;
    all keep 2 mm from airways and 10 mm (crops: 30 mm) from other nodules. A nodule replaces lung
    parenchyma only; vessels crossing a ground-glass nodule stay visible.

Mask (label)
    The nodule body where it fills at least half of a voxel, inside the lung: for part-solid nodules
    the ground glass and the solid core; inclusions included; **spicules are not in the mask** (thin
    strands, and the mask volume then matches ``diameter_mm``). In ``crops`` mode the label holds
    every nodule of the patient that reaches into the crop (normally only its own); in ``scans`` mode
    all nodules of the scan.

LIDC attributes (LIDC's 1-based scales), from the drawn parameters
    subtlety = round(1 + 1.7 log2(D / 3 mm) + offsets + N(0, 0.35)) clipped to 1-5, offsets
    ground-glass -1.2 (+0.5 for texture 2), part-solid -0.4, calcified +0.8, juxta-vascular -0.5,
    juxta-pleural -0.3. internal_structure 1 (soft tissue), 3 (fat), 4 (air); fluid (2) is not drawn.
    calcification = the pattern (1 popcorn, 2 laminated, 3 solid, 4 non-central, 5 central) for
    calcified nodules, else 6 (absent). sphericity from the axis ratio q: 1 below 0.55, 2 below 0.68,
    3 below 0.8, 4 below 0.9, else 5, one lower if A >= 0.2. margin = 5 - floor(edge / 0.4 mm),
    at most 3 for spiculated and ground-glass nodules. lobulation = 1 + floor(A / 0.06), so lobulated
    nodules rate >= 3 and round ones 1. spiculation: spiculated 3, +1 if the length ratio >= 0.7, +1
    with >= 14 spicules (3-5); 2 with minor strands; else 1. texture: ground-glass 1 (density below
    -480 HU) or 2; part-solid 2, 3 or 4 as the solid ratio is below 0.45, below 0.65 or above; solid
    and calcified 5.

Malignancy (a logistic model; size matters, but is not the only signal)
    logit = -1.2 + 1.2 ln(D / 10 mm) + 0.75 (spiculation - 1) + 0.45 (lobulation - 1)
    + 0.4 (5 - margin) + 0.8 [part-solid] - 1.0 [ground-glass] + 1.0 [air inclusion]
    - 0.5 [juxta-pleural] - 6 [calcified] + N(0, 0.6);
    p = sigmoid(logit); score = 1 + number of the cut points 0.15, 0.35, 0.65, 0.85 that p reaches;
    calcified nodules are benign: score 1 (probability 0.7) or 2. ``malignancy`` follows LIDC's rule
    (:func:`~lung_nodule_mtl.constants.malignancy_label_from_score`): score >= 4 -> 1, <= 2 -> 0, 3 -> -1.
    On the default mixture about 29% malignant, 54% benign and 18% indeterminate; diameter alone ranks
    malignant above benign with an AUC of about 0.85 (0.82 without calcified nodules), a linear model of
    size and attributes about 0.99.

Items
    One datalist item per nodule: ``image``, ``label`` (relative paths), ``case_id`` (``SYN-0001_1``),
    ``patient_id`` (``SYN-0001``), ``nodule_id``, ``center_world_mm`` (RAS mm, a voxel centre inside
    the mask), ``diameter_mm``, ``malignancy``, ``malignancy_score``, the eight attributes, plus
    ``nodule_type``, ``shape``, ``location``, ``malignancy_probability``, ``spacing_mm`` and, in scans
    mode, ``seriesuid`` (the scan's file stem, as in ``annotations.csv``).
"""

from lung_nodule_mtl.data.synthetic.anatomy import Patient, Segments, draw_patient
from lung_nodule_mtl.data.synthetic.config import (
    CALCIFICATION_PATTERNS,
    GROWTH_MODELS,
    LOCATIONS,
    MODES,
    NODULE_TYPES,
    SHAPES,
    SynthConfig,
    Tissue,
    make_config,
)
from lung_nodule_mtl.data.synthetic.dataset import (
    ANNOTATIONS_FILE,
    SyntheticCase,
    case_id,
    crop_grid,
    generate_case,
    scan_grid,
    synthesize_dataset,
    volume_items,
)
from lung_nodule_mtl.data.synthetic.geometry import Grid
from lung_nodule_mtl.data.synthetic.growth import (
    GROWTH_COLUMNS,
    Growth,
    GrowthCase,
    GrowthKeys,
    GrowthPair,
    Registration,
    draw_growth,
    draw_growth_model,
    draw_registration,
    generate_growth_case,
    grow_nodule,
    pair_item,
    render_followup,
)
from lung_nodule_mtl.data.synthetic.nodules import (
    Nodule,
    draw_nodule,
    label_nodule,
    lidc_attributes,
    malignancy_model,
    place_nodules,
)
from lung_nodule_mtl.data.synthetic.render import SyntheticVolume, render_volume

__all__ = [
    "ANNOTATIONS_FILE",
    "CALCIFICATION_PATTERNS",
    "GROWTH_COLUMNS",
    "GROWTH_MODELS",
    "LOCATIONS",
    "MODES",
    "NODULE_TYPES",
    "SHAPES",
    "Grid",
    "Growth",
    "GrowthCase",
    "GrowthKeys",
    "GrowthPair",
    "Nodule",
    "Patient",
    "Registration",
    "Segments",
    "SynthConfig",
    "SyntheticCase",
    "SyntheticVolume",
    "Tissue",
    "case_id",
    "crop_grid",
    "draw_growth",
    "draw_growth_model",
    "draw_nodule",
    "draw_patient",
    "draw_registration",
    "generate_case",
    "generate_growth_case",
    "grow_nodule",
    "label_nodule",
    "lidc_attributes",
    "make_config",
    "malignancy_model",
    "pair_item",
    "place_nodules",
    "render_followup",
    "render_volume",
    "scan_grid",
    "synthesize_dataset",
    "volume_items",
]
