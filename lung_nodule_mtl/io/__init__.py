"""CT input and output below both pipeline stages, torch-free.

* :mod:`~lung_nodule_mtl.io.ct`: find the cases under an input path (NIfTI, MetaImage, DICOM series), read each
  one as CT in HU with its checks, write label maps and volumes on its grid.
* :mod:`~lung_nodule_mtl.io.geometry`: RAS world mm ↔ voxel through a 4x4 affine.

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
    find_cases,
    load_ct,
    read_volume,
    write_label_map,
    write_on_grid,
)
from lung_nodule_mtl.io.geometry import voxel_to_world, world_to_voxel

__all__ = [
    "CTVolume",
    "Case",
    "CaseKind",
    "InputError",
    "NiftiGeometry",
    "check_hounsfield",
    "find_cases",
    "load_ct",
    "read_volume",
    "voxel_to_world",
    "world_to_voxel",
    "write_label_map",
    "write_on_grid",
]
