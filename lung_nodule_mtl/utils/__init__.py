"""Small utilities shared by the pipeline stages."""

from lung_nodule_mtl.utils.flags import as_bool
from lung_nodule_mtl.utils.io import atomic_path, atomic_write, atomic_write_json, atomic_write_nifti

__all__ = ["as_bool", "atomic_path", "atomic_write", "atomic_write_json", "atomic_write_nifti"]
