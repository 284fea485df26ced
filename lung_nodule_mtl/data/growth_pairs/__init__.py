"""Real nodule growth pairs: a user's longitudinal CT scans → aligned baseline / follow-up crops and a growth datalist.

:func:`prepare_growth_pairs` (``lung-nodule-mtl prepare-growth``) turns a CSV of nodules seen at two times into
the files and the datalist that ``lung-nodule-mtl synth --mode growth`` writes for synthetic pairs, so the growth
training chain (:func:`lung_nodule_mtl.transforms.growth.get_growth_transforms`) and the growth evaluation read
either the same way.

One job per module:

* :mod:`~lung_nodule_mtl.data.growth_pairs.table`: PAIRS.csv, its columns (the table there), read and checked
  row by row (:func:`read_pairs_csv`, :class:`PairSpec`);
* :mod:`~lung_nodule_mtl.data.growth_pairs.grid`: voxel grids and the bridge to SimpleITK images;
* :mod:`~lung_nodule_mtl.data.growth_pairs.loader`: loading scans and masks (a small cache), and the nodule in a
  mask (**Masks** there; how to make masks from centres);
* :mod:`~lung_nodule_mtl.data.growth_pairs.registration`: the rigid registration (:class:`RegistrationSettings`);
* :mod:`~lung_nodule_mtl.data.growth_pairs.crops`: one pair: the crops, the item, the arrays;
* :mod:`~lung_nodule_mtl.data.growth_pairs.convert`: the data set: :func:`prepare_growth_pairs` writes the pairs,
  their records, the datalist and the summary.

**Per pair** (``<case>`` = ``<patient_id>_<nodule_id>``):

1. Both scans and masks are loaded; a centre must lie inside its scan (voxel coordinates within the image).
2. The baseline crop: a cube of ``crop_mm`` around the baseline centre, resampled (linear; mask nearest) onto an
   RAS-aligned grid of ``spacing_mm`` (the centre is voxel ``n // 2``, as
   :class:`~lung_nodule_mtl.transforms.crop.NoduleCenteredCrop` crops, so the training chain's crop of
   ``crop_mm / spacing_mm`` voxels takes the whole file),
   or, with ``spacing_mm=None``, the baseline's own voxels (no interpolation). Outside the scan: air (-1000 HU)
   and mask 0.
3. The follow-up is aligned to it by a rigid transform (:class:`RegistrationSettings`): a SimpleITK
   ``Euler3DTransform`` about the baseline centre, initialised with the translation *follow-up centre - baseline
   centre* (the centres coincide), refined by a multi-resolution registration of the follow-up's neighbourhood to
   the baseline crop; a result out of bounds, or not better than the centres' alignment, is rejected, with a
   warning (see :mod:`~lung_nodule_mtl.data.growth_pairs.registration`). ``register=False``
   (``--no-register``) uses the centre alignment only (scans registered before).
4. The follow-up image (linear) and nodule mask (nearest) are resampled onto the baseline crop grid.
5. Written atomically: ``images/<case>_t0.nii.gz``, ``images/<case>_t1.nii.gz`` (int16 HU),
   ``labels/<case>_t0.nii.gz``, ``labels/<case>_t1.nii.gz`` (uint8 0/1, this nodule only), all with the crop's
   affine, then ``records/<case>.json`` (the item, the registration, the options and the inputs' sizes and
   times): a pair with a record and its four files is complete and a re-run reuses it unless ``overwrite`` or the
   row, an input file or an option changed.

A row that cannot be used (a missing or unreadable file, a centre outside its scan, a non-positive interval, no
mask at the centre, ...) is reported as one line ``PAIRS.csv line N (patient P, nodule K): reason``, leaves no
file, and the others go on; ``lung-nodule-mtl prepare-growth`` then exits with status 1.

**Outputs** in ``out_dir``: the files above; ``datalist.json`` (:mod:`lung_nodule_mtl.data.datalist`, split by
patient with :func:`~lung_nodule_mtl.data.datalist.build_datalist`; items with ``image``/``label`` = the
baseline's files, ``baseline``, ``baseline_mask``, ``followup``, ``followup_mask``, ``interval_days``,
``center_world_mm`` (RAS mm, baseline centre = the crop's voxel ``n // 2``), ``followup_center_world_mm`` (where
the follow-up centre lands on the baseline crop, RAS mm), ``followup_scan_center_world_mm`` (the follow-up
centre in its own scan, RAS mm), ``diameter_mm`` / ``followup_diameter_mm`` (volume-equivalent),
``baseline_mask_volume_mm3`` / ``followup_mask_volume_mm3`` (the written masks' voxels x voxel volume),
``registration`` (see :func:`prepare_growth_pairs`), ``source: "user pairs"``, ``fold``, ``patient_id``,
``case_id``, ``nodule_id`` and the dates if given); ``pairs_summary.csv`` (one row per CSV row, failed ones with
their reason: :data:`SUMMARY_COLUMNS`).
"""

from lung_nodule_mtl.data.growth_pairs.convert import (
    DEFAULT_CROP_MM,
    DEFAULT_SPACING_MM,
    SUMMARY_COLUMNS,
    prepare_growth_pairs,
)
from lung_nodule_mtl.data.growth_pairs.crops import SOURCE
from lung_nodule_mtl.data.growth_pairs.loader import CENTER_SEARCH_MM, CENTRE_SEARCH_MM
from lung_nodule_mtl.data.growth_pairs.registration import RegistrationSettings
from lung_nodule_mtl.data.growth_pairs.table import (
    INTERVAL_COLUMNS,
    OPTIONAL_COLUMNS,
    PAIRS_COLUMNS,
    PairRowError,
    PairSpec,
    read_pairs_csv,
)

__all__ = [
    "CENTER_SEARCH_MM",
    "CENTRE_SEARCH_MM",
    "DEFAULT_CROP_MM",
    "DEFAULT_SPACING_MM",
    "INTERVAL_COLUMNS",
    "OPTIONAL_COLUMNS",
    "PAIRS_COLUMNS",
    "SOURCE",
    "SUMMARY_COLUMNS",
    "PairRowError",
    "PairSpec",
    "RegistrationSettings",
    "prepare_growth_pairs",
    "read_pairs_csv",
]
