"""Atomic file output: write to a temporary file in the destination folder, then rename.

A reader never sees a half-written file and an interrupted run never replaces a good file with a
broken one (``os.replace`` is atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "NiftiGeometry",
    "atomic_path",
    "atomic_write",
    "atomic_write_csv",
    "atomic_write_json",
    "atomic_write_nifti",
    "file_sha256",
    "json_safe",
    "nifti_image",
    "read_json_or_none",
    "reusable_record",
]

_UMASK = os.umask(0)
os.umask(_UMASK)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps ``path``'s suffixes (e.g. ``.nii.gz``) so that libraries which choose
    a format from the file name write the right one. On any error the temporary file is removed
    and ``path`` is left as it was.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{''.join(dest.suffixes)}", dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a file for writing that appears at ``path`` only once the block has succeeded.

    Args:
        path: destination file; its parent folder is created if needed.
        mode: ``"w"`` (text, UTF-8) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}.")
    text_args: dict[str, Any] = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
    with atomic_path(path) as tmp, open(tmp, mode, **text_args) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def atomic_write_json(obj: Any, path: str | os.PathLike[str], indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically and return the path."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")
    return Path(path)


@dataclass(frozen=True)
class NiftiGeometry:
    """The spatial fields of a NIfTI input's header, to write outputs on exactly its grid.

    Attributes:
        sform: 4x4 sform matrix as stored.
        sform_code: its code (0 unknown, 1 scanner, 2 aligned, 3 Talairach, 4 MNI, 5 template).
        qform: 4x4 matrix of the quaternion form as stored.
        qform_code: its code.
        xyzt_units: spatial and temporal units, as :meth:`nibabel.Nifti1Header.get_xyzt_units` gives them.
    """

    sform: NDArray[np.float64]
    sform_code: int
    qform: NDArray[np.float64]
    qform_code: int
    xyzt_units: tuple[str, str]


def nifti_image(
    array: np.ndarray,
    affine: np.ndarray,
    dtype: np.dtype | type | None = None,
    geometry: NiftiGeometry | None = None,
) -> nib.Nifti1Image:
    """The one way the project builds a NIfTI image: ``array`` stored as ``dtype`` with the voxel-to-RAS-mm
    ``affine``; both sform and qform get ``affine`` with code 1 (scanner) and units mm, unless ``geometry`` (a NIfTI
    input's header fields) gives the matrices, codes and units to keep.
    """
    arr = np.asarray(array)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.set_data_dtype(arr.dtype)
    if geometry is None:
        img.set_qform(img.affine, code=1)
        img.set_sform(img.affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
    else:
        img.set_sform(geometry.sform, code=geometry.sform_code)
        img.set_qform(geometry.qform, code=geometry.qform_code)
        img.header.set_xyzt_units(*geometry.xyzt_units)
    return img


def atomic_write_nifti(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike[str],
    dtype: np.dtype | type | None = None,
    geometry: NiftiGeometry | None = None,
) -> Path:
    """Write a 3D array as NIfTI (``.nii`` or ``.nii.gz``) atomically (:func:`nifti_image`).

    Args:
        array: voxel array in ``(i, j, k)`` order, as nibabel stores it.
        affine: 4x4 voxel-to-world matrix (RAS, mm); written to both qform and sform (code 1) unless ``geometry``.
        path: destination, ``.nii`` or ``.nii.gz``.
        dtype: on-disk data type (defaults to ``array.dtype``); HU are stored as int16.
        geometry: a NIfTI input's sform/qform matrices, codes and units, kept as they are.
    """
    dest = Path(path)
    if not dest.name.lower().endswith((".nii", ".nii.gz")):
        raise ValueError(f"NIfTI output must end in .nii or .nii.gz, got {str(dest)!r}.")
    img = nifti_image(array, affine, dtype, geometry)
    with atomic_path(dest) as tmp:
        nib.save(img, tmp)
    return dest


def read_json_or_none(path: str | os.PathLike[str]) -> Any:
    """The JSON in ``path``, or ``None`` when it is missing or unreadable (e.g. a record of an interrupted run)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def reusable_record(
    path: str | os.PathLike[str],
    field: str,
    expected: Any,
    files: Callable[[dict[str, Any]], Iterable[str | os.PathLike[str] | None]],
    root: str | os.PathLike[str] | None = None,
) -> dict[str, Any] | None:
    """The resumable-conversion record of one unit of work (a scan, a pair) from an earlier run, or ``None`` when it
    must be redone: the one rule of ``prepare-lidc``, ``prepare-luna16`` and ``prepare-growth``.

    A converter writes the record last, after the unit's files, holding under ``field`` what the outputs depend on
    (options, input sizes, annotations). A re-run reuses the record when it reads as JSON, ``record[field]`` equals
    ``expected`` as JSON would store it (:func:`json_safe`; tuples as lists), and every file ``files(record)`` names
    exists (relative names under ``root``; ``None`` or empty entries are skipped).
    """
    record = read_json_or_none(path)
    if not isinstance(record, dict) or record.get(field) != json.loads(json.dumps(json_safe(expected))):
        return None
    base = Path(root) if root is not None else Path()
    try:
        names = list(files(record))
    except (AttributeError, KeyError, TypeError):  # a record of another layout
        return None
    if not all(isinstance(f, str | os.PathLike) and (base / f).is_file() for f in names if f):
        return None
    return record


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as ``None`` (standard JSON ``null``) and NumPy scalars as Python numbers."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_csv(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], first_fields: Sequence[str] = ()
) -> Path:
    """Write dict rows as CSV atomically: columns ``first_fields``, then every other key in order of appearance."""
    fields = list(first_fields)
    for row in rows:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    dest = Path(path)
    with atomic_write(dest) as f:
        f.write(buffer.getvalue())
    return dest
