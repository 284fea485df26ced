"""CT input and output below the training data and inference stages: find the cases under an input path, load each
one in HU, write volumes on its grid. Torch-free: :mod:`lung_nodule_mtl.data`'s converters and
:mod:`lung_nodule_mtl.inference` both read CT here (the volume becomes a MONAI ``MetaTensor`` only when asked for
:attr:`CTVolume.image`).

:func:`find_cases` turns the ``-i INPUT`` of ``lung-nodule-mtl predict`` into a sorted list of :class:`Case`:

* a NIfTI file (``.nii``, ``.nii.gz``) or a MetaImage (``.mhd`` with its ``.raw``/``.zraw``, or ``.mha``);
* a DICOM series folder (a folder holding DICOM files: the ``DICM`` magic at byte 128, a ``.dcm``/``.dicom``/
  ``.ima`` name, or, for files named without an extension, a series that SimpleITK's GDCM finds);
* a folder of those: NIfTI and MetaImage files directly in it, and DICOM series folders at any depth (TCIA's
  ``PATIENT/STUDY/SERIES/*.dcm`` nesting, with the reading ``.xml`` files beside the slices). Other files are
  ignored.

Case ids: the file name without ``.nii.gz``/``.nii``/``.mhd``/``.mha``; for a DICOM series folder, the name of
the folder directly under INPUT that holds it (the patient folder in TCIA's layout), or INPUT's own name when
INPUT is the series folder or that folder is named by a DICOM UID (digits and dots: INPUT is then a TCIA patient
folder whose study folders are UIDs). A patient with several series folders gives ``<patient>_<series folder>``
for each. Two inputs with one id are an error.

:func:`load_ct` reads one case (NIfTI with nibabel, DICOM series and MetaImage with SimpleITK) into a
:class:`CTVolume`: an ``(H, W, D)`` float32 array in HU with its voxel-to-RAS-world affine; its ``image`` is the
``(1, H, W, D)`` :class:`~monai.data.MetaTensor` with that affine, exactly what
``monai.transforms.LoadImage(image_only=True, ensure_channel_first=True)`` gives (nibabel's affine for NIfTI;
``diag(-1, -1, 1, 1) @`` the LPS affine for ITK images, as MONAI's ``ITKReader``), so the training transforms'
conventions hold. Anything that makes a case unusable raises :class:`InputError` with a one-line reason; the
batch reports it and goes on. A DICOM folder holding several series gives its largest (most files), with a
warning; slice order is by position (GDCM), the rescale slope and intercept are applied, and uneven slice gaps or
a gantry tilt are reported as warnings.

**The HU rule** (:func:`check_hounsfield`): CT of the chest in Hounsfield units holds air (-1000 HU, outside the
body and in the airways) and lung (-900 to -500 HU), and soft tissue or bone (>= 0 HU). A volume is accepted as
CT in HU when

1. its 0.5th percentile is <= -500 HU (:data:`HU_LOW_PERCENTILE`, :data:`HU_LOW_MAX`): air or lung is present;
2. its maximum is >= 0 HU (:data:`HU_HIGH_MIN`): tissue is present;
3. every voxel lies in ``[-32768, 40000]`` (:data:`HU_PLAUSIBLE_RANGE`): CT stored as int16 reaches -32768 at
   most (some scanners pad outside the reconstruction circle with -2048, -3024 or -32768; the windows clip such
   padding to air), and even extended-scale CT stays far below 40000 HU.

This rejects 8-bit images (0-255), intensities normalised to ``[0, 1]`` or z-scores, and raw stored values
without the DICOM rescale intercept (0-4095). Values below -3024 HU are accepted with a warning. The
percentile is computed on a strided subsample of about a million voxels; minimum, maximum and the NaN/Inf count
on every voxel.

:func:`write_label_map` writes a label map on exactly the input's grid: a NIfTI with the input's affine and,
for a NIfTI input, its sform and qform (matrices and codes), atomically.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import itertools
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from lung_nodule_mtl.io.geometry import affine_from_itk
from lung_nodule_mtl.utils.io import NiftiGeometry, atomic_write_nifti

if TYPE_CHECKING:
    import SimpleITK as sitk
    import torch
    from monai.data import MetaTensor


def _simpleitk() -> Any:
    """SimpleITK, imported where DICOM or MetaImage is read: NIfTI needs only nibabel (a machine with NIfTI scans
    only, e.g. a GPU box without SimpleITK, reads them)."""
    import SimpleITK

    return SimpleITK


__all__ = [
    "DICOM_SUFFIXES",
    "HU_HIGH_MIN",
    "HU_LOW_MAX",
    "HU_LOW_PERCENTILE",
    "HU_PADDING_WARN_BELOW",
    "HU_PLAUSIBLE_RANGE",
    "MAX_DIM_VOXELS",
    "MAX_VOXELS",
    "METAIMAGE_SUFFIXES",
    "MIN_DIM_VOXELS",
    "NIFTI_SUFFIXES",
    "CTVolume",
    "Case",
    "CaseKind",
    "InputError",
    "NiftiGeometry",
    "check_hounsfield",
    "ct_storage_dtype",
    "find_cases",
    "load_ct",
    "read_volume",
    "write_ct",
    "write_label_map",
    "write_on_grid",
]

CaseKind = Literal["nifti", "dicom", "metaimage"]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
METAIMAGE_SUFFIXES: tuple[str, ...] = (".mhd", ".mha")
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
"""File name endings taken as DICOM even without the ``DICM`` magic (preamble-less or damaged files)."""

MIN_DIM_VOXELS = 8
"""Smallest accepted size of each of the three dimensions, voxels."""
MAX_DIM_VOXELS = 4096
"""Largest accepted size of one dimension, voxels."""
MAX_VOXELS = 2**30
"""Largest accepted number of voxels (4 GiB as float32; a 512x512x600 chest CT has 1.6e8)."""

HU_LOW_PERCENTILE = 0.5
"""Percentile (in %) that must be at most :data:`HU_LOW_MAX`."""
HU_LOW_MAX = -500.0
"""Air and lung: the :data:`HU_LOW_PERCENTILE` th percentile must be <= this, HU."""
HU_HIGH_MIN = 0.0
"""Tissue: the maximum must be >= this, HU."""
HU_PLAUSIBLE_RANGE: tuple[float, float] = (-32768.0, 40000.0)
"""Every voxel must lie in this range, HU."""
HU_PADDING_WARN_BELOW = -3024.0
"""Values below this (the lowest that CT reconstructions give) are taken as padding, with a warning."""

_PERCENTILE_SAMPLE = 2**20
_CHUNK_VOXELS = 2**22
_MAX_REASON_CHARS = 400
_NON_DICOM_SUFFIXES = frozenset(
    {
        ".xml",
        ".txt",
        ".json",
        ".csv",
        ".tsv",
        ".md",
        ".html",
        ".pdf",
        ".png",
        ".jpg",
        ".jpeg",
        ".gz",
        ".zip",
        ".nii",
        ".mhd",
        ".mha",
        ".raw",
        ".zraw",
        ".nrrd",
        ".npy",
        ".npz",
        ".pt",
        ".pth",
        ".py",
        ".yaml",
        ".yml",
        ".log",
        ".ini",
        ".db",
        ".sqlite",
    }
)
_UID_NAME = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class InputError(ValueError):
    """An input case that cannot be used: ``str()`` is the one line ``"<path>: <reason>"``.

    Attributes:
        path: the offending file or folder.
        reason: why, in one line.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = _one_line(reason)
        super().__init__(f"{self.path}: {self.reason}")


@dataclass(frozen=True)
class Case:
    """One scan to run inference on.

    Attributes:
        case_id: unique name of the case, used to name its outputs.
        path: the NIfTI or MetaImage file, or the DICOM series folder.
        kind: ``"nifti"``, ``"dicom"`` or ``"metaimage"``.
    """

    case_id: str
    path: Path
    kind: CaseKind


@dataclass
class CTVolume:
    """A loaded CT scan in HU on its own grid.

    Attributes:
        array: ``(H, W, D)`` float32 array in HU, indexed as the affine says.
        affine: 4x4 float64 voxel-to-RAS-mm affine: the grid outputs are written on.
        shape: ``(H, W, D)``, voxels.
        spacing_mm: voxel size along the three array axes, mm (the affine's column norms).
        case: the case it was loaded from.
        warnings: things worth reporting that did not stop the load (a mixed DICOM series folder, uneven slices).
        meta: facts about the source: ``format``, ``original_dtype``, ``hu_min``, ``hu_max``, ``hu_p0_5``; DICOM:
            ``series_uid``, ``n_slices``, ``n_series_in_folder``, ``modality``, ``rescale_slope``,
            ``rescale_intercept``, ...; NIfTI: ``sform_code``, ``qform_code``, ``scl_slope``, ``scl_inter``.
        nifti: the header geometry of a NIfTI input (``None`` for DICOM and MetaImage), used by
            :func:`write_label_map`.
        source_files: a DICOM input's slice files in the order of the array's last axis (``k``); empty otherwise.
    """

    array: NDArray[np.float32]
    affine: NDArray[np.float64]
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    case: Case
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    nifti: NiftiGeometry | None = None
    source_files: list[Path] = field(default_factory=list)

    @functools.cached_property
    def image(self) -> MetaTensor:
        """``(1, H, W, D)`` float32 ``MetaTensor`` in HU sharing :attr:`array`'s memory; its ``affine`` is
        :attr:`affine` and its meta what ``monai.transforms.LoadImage(image_only=True, ensure_channel_first=True)``
        gives (``original_affine``, ``spatial_shape``, ``space`` RAS, ``filename_or_obj``). Imports torch and MONAI
        on first use.
        """
        import torch
        from monai.data import MetaTensor
        from monai.utils import MetaKeys, SpaceKeys

        return MetaTensor(
            torch.from_numpy(self.array)[None],
            affine=torch.as_tensor(self.affine, dtype=torch.float64),
            meta={
                MetaKeys.ORIGINAL_AFFINE: self.affine.copy(),
                MetaKeys.SPATIAL_SHAPE: np.asarray(self.shape),
                MetaKeys.SPACE: SpaceKeys.RAS,
                MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
                "filename_or_obj": str(self.case.path),
            },
        )


# --------------------------------------------------------------------------------------------------------------
# Finding the cases
# --------------------------------------------------------------------------------------------------------------


def _strip_suffix(name: str, suffixes: tuple[str, ...]) -> str | None:
    lower = name.lower()
    for suffix in suffixes:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _file_kind(path: Path) -> tuple[str, CaseKind] | None:
    """``(case id, kind)`` of a NIfTI or MetaImage file name, ``None`` for any other file."""
    stem = _strip_suffix(path.name, NIFTI_SUFFIXES)
    if stem is not None:
        return stem, "nifti"
    stem = _strip_suffix(path.name, METAIMAGE_SUFFIXES)
    if stem is not None:
        return stem, "metaimage"
    return None


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _is_dicom_folder(folder: Path, files: list[str]) -> bool:
    """Whether ``folder`` holds DICOM files (``files`` are the names of the plain files in it)."""
    sitk = _simpleitk()
    candidates = [
        name
        for name in files
        if not name.startswith(".")
        and name.upper() != "DICOMDIR"  # the index of a DICOM medium, no image
        and _file_kind(Path(name)) is None
        and Path(name).suffix.lower() not in _NON_DICOM_SUFFIXES
    ]
    if not candidates:
        return False
    if any(_has_dicom_magic(folder / name) for name in candidates):
        return True
    if any(name.lower().endswith(DICOM_SUFFIXES) for name in candidates):
        return True  # preamble-less or damaged: GDCM decides at load time, where a failure is reported
    if any(Path(name).suffix == "" or _UID_NAME.match(name) for name in candidates):
        with contextlib.suppress(RuntimeError):
            return len(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))) > 0
    return False


def _walk(root: Path) -> Iterator[tuple[Path, list[str]]]:
    """Folders under ``root`` (itself first, then depth first, sorted; hidden ones skipped) with their files."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        yield folder, sorted(f for f in filenames if (folder / f).is_file())


def _dicom_case_ids(root: Path, folders: list[Path]) -> list[str]:
    """Case ids of the DICOM series folders under ``root`` (see the module docstring)."""
    root_name = Path(os.path.abspath(root)).name
    rels = [folder.relative_to(root).parts for folder in folders]
    # the patient: the folder directly under root, or root itself when that folder is a TCIA study/series UID
    keys = [rel[0] if rel and not _UID_NAME.match(rel[0]) else root_name for rel in rels]
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    ids = [""] * len(folders)
    for key, members in groups.items():
        if len(members) == 1:
            ids[members[0]] = key
            continue
        short = {i: f"{key}_{rels[i][-1]}" if rels[i] and rels[i][-1] != key else key for i in members}
        counts: dict[str, int] = {}
        for name in short.values():
            counts[name] = counts.get(name, 0) + 1
        for i in members:
            below_key = rels[i][1:] if rels[i][:1] == (key,) else rels[i]
            ids[i] = short[i] if counts[short[i]] == 1 else "_".join((key, *below_key))
    return ids


def find_cases(input_path: str | os.PathLike[str]) -> list[Case]:
    """List the scans under ``input_path``, sorted by case id.

    Args:
        input_path: a NIfTI file, a MetaImage file, a DICOM series folder, or a folder holding NIfTI and
            MetaImage files and (at any depth) DICOM series folders.

    Returns:
        The cases, sorted by ``case_id``. An empty or corrupt file with a known extension is still a case: it
        fails in :func:`load_ct`, so that a batch reports it and goes on.

    Raises:
        FileNotFoundError: ``input_path`` does not exist.
        InputError: a file of an unsupported type; a folder with no inputs; two inputs with the same case id.
    """
    root = Path(input_path)
    if not root.exists():
        raise FileNotFoundError(2, "input not found", str(root))
    if root.is_file():
        found = _file_kind(root)
        if found is not None:
            return [Case(found[0], root, found[1])]
        if _has_dicom_magic(root) or root.name.lower().endswith(DICOM_SUFFIXES):
            raise InputError(root, "a single DICOM file: give the folder of its series instead")
        raise InputError(
            root, "not a supported input: expected a .nii, .nii.gz, .mhd or .mha file, or a DICOM series folder"
        )
    if not root.is_dir():
        raise InputError(root, "neither a file nor a folder")

    cases: list[Case] = []
    dicom_folders: list[Path] = []
    nested_files = 0
    for folder, files in _walk(root):
        if folder == root:
            for name in files:
                found = _file_kind(Path(name))
                if found is not None and not name.startswith("."):
                    cases.append(Case(found[0], root / name, found[1]))
        else:
            nested_files += sum(_file_kind(Path(name)) is not None for name in files)
        if _is_dicom_folder(folder, files):
            dicom_folders.append(folder)
    cases += [
        Case(case_id, folder, "dicom")
        for case_id, folder in zip(_dicom_case_ids(root, dicom_folders), dicom_folders, strict=True)
    ]
    if not cases:
        hint = (
            f" ({nested_files} NIfTI/MetaImage file(s) in sub-folders: such files are only looked for directly "
            "in the input folder)"
            if nested_files
            else ""
        )
        raise InputError(
            root, f"no CT inputs found: expected .nii, .nii.gz, .mhd or .mha files or DICOM series folders{hint}"
        )
    cases.sort(key=lambda c: (c.case_id, str(c.path)))
    for previous, case in itertools.pairwise(cases):
        if previous.case_id == case.case_id:
            raise InputError(
                case.path, f"case id {case.case_id!r} is also the id of {previous.path}; rename one of them"
            )
    return cases


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 3] + "..."


def _itk_message(exc: BaseException) -> str:
    """The useful part of an ITK/SimpleITK exception message (it starts with source file paths)."""
    text = str(exc)
    if "ITK ERROR:" in text:
        text = text.split("ITK ERROR:", 1)[1]
        text = re.sub(r"^\s*\w+\(0x[0-9a-fA-F]+\):\s*", "", text)
    return _one_line(text)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(n)) for n in shape)


def _check_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Squeeze trailing singleton dimensions beyond the third; reject 2D, 4D, tiny and huge images."""
    dims = tuple(int(n) for n in shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims = dims[:-1]
    if len(dims) > 3:
        raise InputError(
            path,
            f"{len(dims)}D image (shape {_shape_text(shape)}): expected a 3D CT volume (one time point, one channel)",
        )
    if len(dims) < 3 or 1 in dims:
        raise InputError(path, f"2D image (shape {_shape_text(shape)}): expected a 3D CT volume")
    if min(dims) < MIN_DIM_VOXELS:
        raise InputError(
            path, f"image too small (shape {_shape_text(dims)}): each dimension needs at least {MIN_DIM_VOXELS} voxels"
        )
    n_voxels = math.prod(dims)
    if max(dims) > MAX_DIM_VOXELS or n_voxels > MAX_VOXELS:
        raise InputError(
            path,
            f"image too large (shape {_shape_text(dims)}, {n_voxels:.3g} voxels): the limits are {MAX_DIM_VOXELS} "
            f"voxels per dimension and {MAX_VOXELS:.3g} voxels",
        )
    return dims  # type: ignore[return-value]


def _check_affine(path: Path, affine: NDArray[np.float64]) -> tuple[float, float, float]:
    """Return the voxel spacing (column norms of the affine); reject non-finite, zero or singular geometry."""
    if not np.all(np.isfinite(affine)):
        raise InputError(path, f"non-finite voxel spacing or orientation: affine {np.round(affine[:3], 4).tolist()}")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing < 1e-6):
        raise InputError(
            path, f"zero voxel spacing: {tuple(round(float(s), 6) for s in spacing)} mm (affine columns of zero norm)"
        )
    det = abs(float(np.linalg.det(affine[:3, :3])))
    if det < 1e-6 * float(np.prod(spacing)):
        raise InputError(
            path,
            f"singular affine (the voxel axes are not independent): {np.round(affine[:3, :3], 4).tolist()}",
        )
    return tuple(float(s) for s in spacing)  # type: ignore[return-value]


def _check_spacing_values(path: Path, spacing: tuple[float, ...], what: str) -> None:
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(path, f"invalid voxel spacing {what} {tuple(spacing)}: each must be finite and > 0 mm")


def _file_present(path: Path) -> None:
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")


def _chunks(array: NDArray[Any]) -> Iterator[NDArray[Any]]:
    step = max(1, _CHUNK_VOXELS // max(1, math.prod(array.shape[1:])))
    for start in range(0, array.shape[0], step):
        yield array[start : start + step]


def check_hounsfield(path: str | os.PathLike[str], array: NDArray[Any], original_dtype: str) -> dict[str, Any]:
    """Check that ``array`` is CT in HU (the rule of the module docstring).

    Args:
        path: the case's path, for the error message.
        array: the volume, ``(H, W, D)``.
        original_dtype: the data type of the source, for the error message.

    Returns:
        ``{"hu_min", "hu_max", "hu_p0_5", "warnings"}``.

    Raises:
        InputError: NaN or infinite voxels, or values that are not CT in HU.
    """
    lo, hi = math.inf, -math.inf
    n_nan = n_inf = 0
    floating = np.issubdtype(array.dtype, np.floating)
    for chunk in _chunks(array):
        if floating:
            n_nan += int(np.count_nonzero(np.isnan(chunk)))
            n_inf += int(np.count_nonzero(np.isinf(chunk)))
            if n_nan or n_inf:
                continue
        lo = min(lo, float(chunk.min()))
        hi = max(hi, float(chunk.max()))
    if n_nan or n_inf:
        raise InputError(path, f"{n_nan} NaN and {n_inf} infinite voxel(s) of {array.size}: expected finite HU values")
    step = max(1, math.ceil((array.size / _PERCENTILE_SAMPLE) ** (1 / 3)))
    p_low = float(np.percentile(array[::step, ::step, ::step], HU_LOW_PERCENTILE))
    found = f"values {lo:g} to {hi:g} ({original_dtype}), {HU_LOW_PERCENTILE:g}th percentile {p_low:g}"
    expected = (
        f"expected CT in HU: air/lung present ({HU_LOW_PERCENTILE:g}th percentile <= {HU_LOW_MAX:g}), "
        f"tissue present (max >= {HU_HIGH_MIN:g}), all values in [{HU_PLAUSIBLE_RANGE[0]:g}, {HU_PLAUSIBLE_RANGE[1]:g}]"
    )
    if lo < HU_PLAUSIBLE_RANGE[0] or hi > HU_PLAUSIBLE_RANGE[1]:
        raise InputError(path, f"values outside the plausible CT range: {found}; {expected}")
    if p_low > HU_LOW_MAX or hi < HU_HIGH_MIN:
        hint = ""
        if lo >= 0 and hi <= 4095 and float(lo).is_integer() and float(hi).is_integer() and hi > 255:
            hint = " (raw stored values without the DICOM rescale intercept, usually -1024?)"
        raise InputError(path, f"not CT in Hounsfield units: {found}{hint}; {expected}")
    warnings = []
    if lo < HU_PADDING_WARN_BELOW:
        warnings.append(f"values down to {lo:g} HU, below {HU_PADDING_WARN_BELOW:g}: taken as padding outside the scan")
    return {"hu_min": lo, "hu_max": hi, "hu_p0_5": p_low, "warnings": warnings}


@dataclass
class _Loaded:
    array: NDArray[np.float32]
    affine: NDArray[np.float64]
    original_dtype: str
    meta: dict[str, Any]
    warnings: list[str]
    nifti: NiftiGeometry | None = None
    source_files: list[Path] = field(default_factory=list)


def _nifti_raw_header(path: Path, header_class: Any) -> Any:
    """The header as stored (nibabel's ``load`` silently fixes negative and zero ``pixdim``)."""
    with nib.openers.ImageOpener(str(path)) as f:
        return header_class.from_fileobj(f, check=False)


def _read_nifti_data(path: Path, img: Any) -> tuple[NDArray[Any], Any]:
    """The unscaled voxels and the array proxy (for its slope and intercept) of a NIfTI image.

    A ``.nii.gz`` is read in one pass through its end, so that gzip checks its CRC and length (nibabel alone
    stops after the last voxel and would take a corrupt trailer, or a bit flip the inflater let pass, silently).
    """
    if not path.name.lower().endswith(".gz"):
        proxy = img.dataobj
        return np.asanyarray(proxy.get_unscaled()), proxy
    with gzip.open(path, "rb") as stream:
        streamed = type(img).from_file_map({"image": nib.FileHolder(str(path), fileobj=stream)}, mmap=False)
        proxy = streamed.dataobj
        raw = np.asanyarray(proxy.get_unscaled())
        while stream.read(1 << 20):  # reading to the end makes gzip check the CRC
            pass
    return raw, proxy


def _read_nifti(path: Path) -> _Loaded:
    _file_present(path)
    try:
        img = nib.load(path, mmap=False)
    except Exception as exc:  # nibabel raises many types (ImageFileError, OSError, EOFError, HeaderDataError, ...)
        raise InputError(path, f"not a readable NIfTI file: {type(exc).__name__}: {exc}") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    shape = _check_shape(path, img.shape)
    hdr = img.header
    sform_code = int(hdr.get_sform(coded=True)[1])
    qform_code = int(hdr.get_qform(coded=True)[1])
    warnings = []
    try:
        raw_pixdim = tuple(float(v) for v in _nifti_raw_header(path, type(hdr))["pixdim"][1:4])
    except Exception:  # the header was read once already; keep nibabel's values if re-reading fails
        raw_pixdim = tuple(float(v) for v in hdr["pixdim"][1:4])
    if not all(math.isfinite(v) and v > 0 for v in raw_pixdim):
        if sform_code == 0:  # the affine comes from pixdim (qform or Analyze-style)
            raise InputError(
                path, f"invalid voxel spacing in the NIfTI header: pixdim[1:4] = {raw_pixdim}, each must be > 0 mm"
            )
        warnings.append(f"NIfTI pixdim[1:4] = {raw_pixdim} is invalid; the sform (code {sform_code}) is used")
    affine = np.asarray(img.affine, dtype=np.float64)
    _check_affine(path, affine)
    try:  # inside the try: a truncated or corrupt .nii.gz fails only when its data are read
        raw, proxy = _read_nifti_data(path, img)
    except Exception as exc:
        raise InputError(path, f"truncated or corrupt image data: {type(exc).__name__}: {exc}") from exc
    if raw.dtype.kind not in "biuf":
        raise InputError(path, f"unsupported voxel type {raw.dtype} (e.g. RGB): expected grey levels")
    array = _float32_c_order(raw.reshape(shape))  # C order, as MONAI's NibabelReader gives it
    original_dtype = str(raw.dtype)
    del raw
    slope, inter = float(proxy.slope), float(proxy.inter)
    if slope != 1.0:
        array *= np.float32(slope)
    if inter != 0.0:
        array += np.float32(inter)
    meta = {
        "nifti_version": 2 if isinstance(img, nib.Nifti2Image) else 1,
        "sform_code": sform_code,
        "qform_code": qform_code,
        "scl_slope": slope,
        "scl_inter": inter,
    }
    units = hdr.get_xyzt_units()
    geometry = NiftiGeometry(
        sform=np.asarray(hdr.get_sform(), dtype=np.float64),
        sform_code=sform_code,
        qform=np.asarray(hdr.get_qform(), dtype=np.float64),
        qform_code=qform_code,
        xyzt_units=(str(units[0]), str(units[1])),
    )
    return _Loaded(array, affine, original_dtype, meta, warnings, geometry)


def _sitk_geometry(
    path: Path, spacing: tuple[float, ...], origin: tuple[float, ...], direction: tuple[float, ...]
) -> NDArray[np.float64]:
    """The RAS affine of an ITK image (its first three dimensions) after checking its geometry."""
    _check_spacing_values(path, tuple(spacing[:3]), "read by ITK")
    affine = affine_from_itk(spacing, origin, direction)
    _check_affine(path, affine)
    return affine


def _float32_c_order(source: NDArray[Any], tile: int = 64) -> NDArray[np.float32]:
    """A C-ordered float32 copy of a 3D array; a Fortran-ordered source is copied in tiles (cache friendly)."""
    out = np.empty(source.shape, dtype=np.float32)
    if source.flags.c_contiguous:
        out[...] = source
        return out
    for i in range(0, source.shape[0], tile):
        for k in range(0, source.shape[2], tile):
            out[i : i + tile, :, k : k + tile] = source[i : i + tile, :, k : k + tile]
    return out


def _sitk_array(image: sitk.Image, shape: tuple[int, int, int]) -> NDArray[np.float32]:
    """The voxels of ``image`` as a C-ordered float32 ``(i, j, k)`` array (ITK index order, as ``ITKReader``)."""
    sitk = _simpleitk()
    view = sitk.GetArrayViewFromImage(image)  # (..., k, j, i)
    return _float32_c_order(view.reshape(shape[::-1]).transpose(2, 1, 0))


def _check_components(path: Path, n: int) -> None:
    if n != 1:
        raise InputError(path, f"{n} components per voxel (e.g. RGB or a vector image): expected one grey level")


def _read_metaimage(path: Path) -> _Loaded:
    sitk = _simpleitk()
    _file_present(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(path, f"not a readable MetaImage: {_itk_message(exc)}") from exc
    size = tuple(int(n) for n in reader.GetSize())
    shape = _check_shape(path, size)
    _check_components(path, reader.GetNumberOfComponents())
    _check_spacing_values(path, tuple(reader.GetSpacing())[:3], "in the header")
    affine = _sitk_geometry(path, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    if path.suffix.lower() == ".mhd":
        _check_metaimage_data_file(path)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(path, f"truncated or corrupt image data: {_itk_message(exc)}") from exc
    original_dtype = image.GetPixelIDTypeAsString()
    array = _sitk_array(image, shape)
    del image
    return _Loaded(array, affine, original_dtype, {}, [])


def _check_metaimage_data_file(path: Path) -> None:
    """A clear message for a ``.mhd`` whose data file is missing or too short (ITK's is misleading)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise InputError(path, f"cannot read the MetaImage header: {exc}") from exc
    fields = dict(
        (key.strip().lower(), value.strip()) for key, _, value in (line.partition("=") for line in text.splitlines())
    )
    data_file = fields.get("elementdatafile", "")
    if not data_file or data_file.upper() in ("LOCAL", "LIST") or "%" in data_file:
        return
    data_path = path.parent / data_file
    if not data_path.is_file():
        raise InputError(path, f"the data file {data_file!r} named by the header is missing")
    if fields.get("compresseddata", "false").lower() != "true":
        sizes = {"met_char": 1, "met_uchar": 1, "met_short": 2, "met_ushort": 2, "met_int": 4, "met_uint": 4}
        sizes |= {"met_float": 4, "met_double": 8, "met_long_long": 8, "met_ulong_long": 8}
        item = sizes.get(fields.get("elementtype", "").lower())
        try:
            n = math.prod(int(v) for v in fields.get("dimsize", "").split())
        except ValueError:
            return
        if item is not None and data_path.stat().st_size < n * item:
            raise InputError(
                path,
                f"truncated or corrupt image data: {data_file!r} has {data_path.stat().st_size} bytes, "
                f"{n * item} expected",
            )


def _dicom_tag(reader: Any, key: str, index: int | None = None) -> str | None:
    """A tag of the first slice read by an ``ImageSeriesReader`` (or of an ``ImageFileReader``), stripped."""
    try:
        if index is None:
            return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else None
        return reader.GetMetaData(index, key).strip() if reader.HasMetaDataKey(index, key) else None
    except RuntimeError:
        return None


def _slice_warnings(path: Path, reader: sitk.ImageSeriesReader, n: int, direction: NDArray[np.float64]) -> list[str]:
    """Warnings on uneven slice positions; an error if two slices share a position."""
    positions = []
    for i in range(n):
        value = _dicom_tag(reader, "0020|0032", i)
        try:
            positions.append([float(v) for v in (value or "").split("\\")])
        except ValueError:
            return []
        if len(positions[-1]) != 3:
            return []
    pos = np.asarray(positions)
    normal = direction[:, 2]
    offsets = pos @ normal
    n_duplicates = int(np.sum(np.diff(np.sort(offsets)) < 1e-3))
    if n_duplicates:
        raise InputError(
            path,
            f"{n_duplicates} slice(s) at the same position as another (duplicate files, or several volumes in one "
            "series)",
        )
    gaps = np.diff(offsets)
    if not (np.all(gaps > 0) or np.all(gaps < 0)):
        raise InputError(path, "slices not in position order: GDCM could not sort them (mixed orientations?)")
    warnings = []
    gaps = np.abs(gaps)
    median = float(np.median(gaps))
    if float(gaps.max() - gaps.min()) > max(0.01 * median, 1e-3):
        warnings.append(
            f"uneven slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm, missing slices?): read on a regular grid"
        )
    span = pos[-1] - pos[0]
    lateral = float(np.linalg.norm(span - (span @ normal) * normal))
    if lateral > 1e-3 * max(1.0, float(np.linalg.norm(span))):
        warnings.append(
            f"slice positions drift {lateral:.3g} mm off the slice normal (gantry tilt?): geometry approximated"
        )
    return warnings


def _dicom_info(folder: Path, file: str) -> sitk.ImageFileReader:
    sitk = _simpleitk()
    info = sitk.ImageFileReader()
    info.SetFileName(file)
    try:
        info.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(folder, f"unreadable DICOM file {Path(file).name}: {_itk_message(exc)}") from exc
    return info


def _read_series(files: list[str]) -> tuple[sitk.Image, Any]:
    """Read DICOM files as one volume; return the image and the reader (which holds the tags)."""
    sitk = _simpleitk()
    reader: Any
    if len(files) > 1:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        reader.MetaDataDictionaryArrayUpdateOn()
    else:
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
    return reader.Execute(), reader


def _largest_stackable_group(files: list[str]) -> tuple[list[str], tuple[int, ...]] | None:
    """The largest group of ``files`` with one image size and orientation, sorted by position along the normal.

    For a series ITK cannot stack (a localizer or a reformat sharing the SeriesInstanceUID of the axial slices).
    """
    sitk = _simpleitk()
    groups: dict[tuple[Any, ...], list[tuple[float, str]]] = {}
    for file in files:
        info = sitk.ImageFileReader()
        info.SetFileName(file)
        try:
            info.ReadImageInformation()
            orientation = np.asarray([float(v) for v in (_dicom_tag(info, "0020|0037") or "").split("\\")])
            position = np.asarray([float(v) for v in (_dicom_tag(info, "0020|0032") or "").split("\\")])
        except (RuntimeError, ValueError):
            continue
        if orientation.shape != (6,) or position.shape != (3,):
            continue
        key = (tuple(info.GetSize()), tuple(np.round(orientation, 3)))
        normal = np.cross(orientation[:3], orientation[3:])
        groups.setdefault(key, []).append((float(position @ normal), file))
    if not groups:
        return None
    key, members = max(groups.items(), key=lambda item: (len(item[1]), item[0]))
    return [file for _, file in sorted(members)], key[0]


def _read_dicom(path: Path) -> _Loaded:
    sitk = _simpleitk()
    if not path.is_dir():
        raise InputError(path, "DICOM series folder not found")
    try:
        series_ids = sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))
    except RuntimeError as exc:
        raise InputError(path, f"no DICOM series found: {_itk_message(exc)}") from exc
    if not series_ids:
        raise InputError(path, "no DICOM series found: SimpleITK (GDCM) reads no series in this folder")
    series = [(uid, list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), uid))) for uid in series_ids]
    series = sorted((s for s in series if s[1]), key=lambda s: (-len(s[1]), s[0]))
    if not series:
        raise InputError(path, "no DICOM series found: GDCM lists no file for any series in this folder")
    uid, files = series[0]
    warnings = []
    if len(series) > 1:
        others = ", ".join(f"{u} ({len(f)} files)" for u, f in series[1:6]) + (", ..." if len(series) > 6 else "")
        warnings.append(
            f"{len(series)} DICOM series in the folder: read {uid} ({len(files)} files), "
            f"skipped {len(series) - 1} other(s): {others}"
        )
    info = _dicom_info(path, files[0])
    modality = _dicom_tag(info, "0008|0060")
    if modality and modality.upper() != "CT":
        raise InputError(path, f"DICOM modality {modality!r} in series {uid}: expected 'CT'")
    _check_components(path, info.GetNumberOfComponents())
    in_plane = tuple(int(n) for n in info.GetSize())
    _check_shape(path, (*in_plane[:2], len(files)) if len(files) > 1 else in_plane)
    try:
        image, reader = _read_series(files)
    except RuntimeError as exc:
        group = _largest_stackable_group(files) if len(files) > 1 else None
        if group is None or len(group[0]) == len(files):
            raise InputError(path, f"truncated or corrupt DICOM series {uid}: {_itk_message(exc)}") from exc
        warnings.append(
            f"series {uid} mixes images of several sizes or orientations: read {len(group[0])} files of size "
            f"{_shape_text(group[1][:2])}, skipped {len(files) - len(group[0])}"
        )
        files = group[0]
        info = _dicom_info(path, files[0])
        _check_shape(path, (*group[1][:2], len(files)))
        try:
            image, reader = _read_series(files)
        except RuntimeError as exc2:
            raise InputError(path, f"truncated or corrupt DICOM series {uid}: {_itk_message(exc2)}") from exc2
    if len(files) == 1:
        warnings.append("a single multi-frame DICOM file: ITK's slice geometry for it may be approximate")
    image_size = tuple(int(n) for n in image.GetSize())
    shape = _check_shape(path, image_size)
    affine = _sitk_geometry(path, image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    if len(files) > 1:
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
        warnings += _slice_warnings(path, reader, len(files), direction)

    def tag(key: str) -> str | None:
        return _dicom_tag(reader, key, 0) if len(files) > 1 else _dicom_tag(info, key)

    def number(key: str) -> float | None:
        value = tag(key)
        try:
            return float(value) if value else None
        except ValueError:
            return None

    meta = {
        "series_uid": uid,
        "n_slices": shape[2],
        "n_files": len(files),
        "n_series_in_folder": len(series),
        "modality": modality,
        "study_uid": tag("0020|000d"),
        "series_description": tag("0008|103e"),
        "manufacturer": tag("0008|0070"),
        "convolution_kernel": tag("0018|1210"),
        "slice_thickness_mm": number("0018|0050"),
        "rescale_slope": number("0028|1053"),
        "rescale_intercept": number("0028|1052"),
    }
    original_dtype = image.GetPixelIDTypeAsString()
    array = _sitk_array(image, shape)
    del image
    return _Loaded(array, affine, original_dtype, meta, warnings, source_files=[Path(f) for f in files])


_READERS = {"nifti": _read_nifti, "metaimage": _read_metaimage, "dicom": _read_dicom}


def read_volume(case: Case) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """A NIfTI or MetaImage volume that is not CT (a mask, a label map): ``(array (H, W, D) float32, voxel → RAS
    affine)``, read and checked as :func:`load_ct` reads (same file kinds and one-line errors), without the HU check.

    Raises:
        InputError: as :func:`load_ct` (except for HU values), and for a DICOM folder.
    """
    if case.kind == "dicom":
        raise InputError(case.path, "expected a NIfTI or MetaImage volume, got a DICOM series folder")
    loaded = _READERS[case.kind](Path(case.path))
    return loaded.array, loaded.affine


def load_ct(case: Case) -> CTVolume:
    """Load one case as CT in HU on its own grid, checked.

    Args:
        case: from :func:`find_cases`.

    Returns:
        The volume: see :class:`CTVolume`.

    Raises:
        InputError: with a one-line reason: a missing, empty, unreadable, truncated or corrupt file; a 2D or 4D
            image; an image too small or too large; zero, negative, non-finite voxel spacing or a singular
            affine; NaN or infinite voxels; values that are not CT in HU (see the module docstring); a DICOM
            folder with no series, or with a modality other than CT.
    """
    reader = _READERS.get(case.kind)
    if reader is None:
        raise InputError(case.path, f"unknown case kind {case.kind!r}")
    loaded = reader(Path(case.path))
    stats = check_hounsfield(case.path, loaded.array, loaded.original_dtype)
    shape = tuple(int(n) for n in loaded.array.shape)
    spacing = tuple(float(s) for s in np.linalg.norm(loaded.affine[:3, :3], axis=0))
    meta = {"format": case.kind, "original_dtype": loaded.original_dtype, **loaded.meta}
    meta.update({k: stats[k] for k in ("hu_min", "hu_max", "hu_p0_5")})
    return CTVolume(
        array=loaded.array,
        affine=loaded.affine,
        shape=shape,  # type: ignore[arg-type]
        spacing_mm=spacing,  # type: ignore[arg-type]
        case=case,
        warnings=loaded.warnings + stats["warnings"],
        meta=meta,
        nifti=loaded.nifti,
        source_files=loaded.source_files,
    )


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------


def write_label_map(volume: CTVolume, labels: NDArray[Any] | torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Write a label map on exactly the grid of ``volume`` as NIfTI, atomically.

    The NIfTI's affine is ``volume.affine``; for a NIfTI input, its sform and qform matrices and codes and its
    units are those of the input, so any reader sees the same grid. For DICOM and MetaImage inputs both forms
    get code 1 (scanner): voxel ``(i, j, k)`` lies at the RAS point of the input's ITK index ``(i, j, k)``.

    Args:
        volume: the loaded input.
        labels: ``(H, W, D)`` integer (or boolean) array or CPU/GPU tensor, ``volume.shape``; 0 is background.
        path: destination, ``.nii`` or ``.nii.gz``; its folder is created.

    Returns:
        ``path``. Stored as uint8 when the largest label is below 255, else uint16.

    Raises:
        ValueError: a shape other than ``volume.shape``, non-integer, negative or too large (> 65535) labels, or
            a path that does not end in ``.nii``/``.nii.gz``.
    """
    dest = Path(path)
    if not dest.name.lower().endswith(NIFTI_SUFFIXES):
        raise ValueError(f"a label map is written as NIfTI: the path must end in .nii or .nii.gz, got {str(dest)!r}")
    array = labels.detach().cpu().numpy() if hasattr(labels, "detach") else np.asarray(labels)
    if tuple(array.shape) != tuple(volume.shape):
        raise ValueError(f"labels have shape {tuple(array.shape)}, the volume {tuple(volume.shape)}")
    if array.dtype.kind not in "biu":
        raise ValueError(f"labels must be integers, got {array.dtype}")
    top = int(array.max()) if array.size else 0
    if array.size and int(array.min()) < 0:
        raise ValueError(f"labels must be >= 0, got {int(array.min())}")
    if top > np.iinfo(np.uint16).max:
        raise ValueError(f"labels must be <= {np.iinfo(np.uint16).max}, got {top}")
    dtype = np.uint8 if top < 255 else np.uint16
    return write_on_grid(volume, array, dest, dtype)


def ct_storage_dtype(array: NDArray[Any]) -> type[np.generic]:
    """The one rule for storing CT in HU: int16 when every value is an integer in its range (DICOM, LUNA16's
    ``MET_SHORT``), int32 for integers beyond it, float32 otherwise; lossless either way. Checked in slabs along the
    last axis (no full-size temporary)."""
    a = np.asarray(array)
    if a.dtype.kind in "biu":
        integral = True
    else:
        integral = all(bool(np.all(np.mod(chunk, 1) == 0)) for chunk in _slabs(a))
    if not integral:
        return np.float32
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
        return np.int16
    return np.int32


def _slabs(a: NDArray[Any], depth: int = 16) -> Iterator[NDArray[Any]]:
    for k in range(0, a.shape[-1] if a.ndim else 1, depth):
        yield a[..., k : k + depth] if a.ndim else a


def write_ct(volume: CTVolume, path: str | os.PathLike[str]) -> Path:
    """Write a loaded CT as NIfTI on exactly its grid (:func:`write_on_grid`), stored as
    :func:`ct_storage_dtype` says, atomically. Returns ``path``."""
    return write_on_grid(volume, volume.array, path, ct_storage_dtype(volume.array))


def write_on_grid(volume: CTVolume, array: NDArray[Any], path: str | os.PathLike[str], dtype: Any) -> Path:
    """Write ``array`` (``volume.shape``) as NIfTI on exactly the grid of ``volume``, atomically.

    The affine is ``volume.affine``; a NIfTI input's sform/qform matrices and codes and units are kept, DICOM and
    MetaImage inputs get both forms with code 1 (scanner). The array is stored as ``dtype``.
    """
    return atomic_write_nifti(array, volume.affine, path, dtype, volume.nifti)
