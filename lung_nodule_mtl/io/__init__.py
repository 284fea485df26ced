"""CT input and output below both pipeline stages, torch-free.

* :mod:`~lung_nodule_mtl.io.ct`: find the cases under an input path (NIfTI, MetaImage, DICOM series), read each
  one as CT in HU with its checks, write label maps and volumes on its grid.
* :mod:`~lung_nodule_mtl.io.geometry`: RAS world mm ↔ voxel through a 4x4 affine; a mask's equivalent diameter.

:mod:`lung_nodule_mtl.data` (the converters) and :mod:`lung_nodule_mtl.inference` (``predict``) both import from
here; nothing here imports torch or MONAI until a tensor is asked for (:attr:`~lung_nodule_mtl.io.ct.CTVolume.image`).
"""

from lung_nodule_mtl.io.ct import (
    Case,
    CaseKind,
    CTVolume,
    InputError,
    NiftiGeometry,
    check_hounsfield,
    ct_storage_dtype,
    find_cases,
    load_ct,
    read_volume,
    write_ct,
    write_label_map,
    write_on_grid,
)
from lung_nodule_mtl.io.geometry import equivalent_diameter_mm, voxel_to_world, world_to_voxel

__all__ = [
    "CTVolume",
    "Case",
    "CaseKind",
    "InputError",
    "NiftiGeometry",
    "check_hounsfield",
    "ct_storage_dtype",
    "equivalent_diameter_mm",
    "find_cases",
    "load_ct",
    "read_volume",
    "voxel_to_world",
    "world_to_voxel",
    "write_ct",
    "write_label_map",
    "write_on_grid",
]
