"""Synthetic whole-scan CT inputs for the inference tests: NIfTI, MetaImage and DICOM series written on disk.

The volume is tiny (32x32x16 voxels, int16 HU): air (-1000) around a tissue body (40) holding two lungs (-850),
with a ramp along the slice axis (0 to 150 HU in one row) so that any reordering of slices or axes shows.
The constants and factories are fixtures (``synthetic``, ``write_nifti``, ``write_dicom_series``, ...): test
modules do not import this file (every ``conftest`` module is named ``conftest``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, OutputKeys

AIR_HU = -1000
TISSUE_HU = 40
LUNG_HU = -850
SHAPE = (32, 32, 16)
"""Voxels ``(i, j, k)``."""
SPACING = (0.8, 0.75, 2.5)
"""mm along ``i, j, k``."""
AFFINE_RAS = np.array(
    [[-SPACING[0], 0, 0, 50.0], [0, -SPACING[1], 0, 60.0], [0, 0, SPACING[2], -100.0], [0, 0, 0, 1.0]]
)
"""A NIfTI voxel-to-RAS affine whose axes point L, P, S (as a DICOM axial series converted to NIfTI)."""
OBLIQUE_ANGLE_RAD = 0.3


def make_ct(shape: Sequence[int] = SHAPE) -> np.ndarray:
    """A synthetic chest CT in HU, int16, indexed ``(i, j, k)``."""
    ni, nj, nk = shape
    ct = np.full(shape, AIR_HU, dtype=np.int16)
    ct[3 : ni - 3, 4 : nj - 4, :] = TISSUE_HU
    ct[6 : ni // 2 - 1, 8 : nj - 8, 1 : nk - 1] = LUNG_HU
    ct[ni // 2 + 1 : ni - 6, 8 : nj - 8, 1 : nk - 1] = LUNG_HU
    ct[ni // 2, 5, :] = np.arange(nk) * 10  # a ramp along k
    ct[5, 6, 2] = 700  # an asymmetric marker
    return ct


def oblique_direction(angle: float = OBLIQUE_ANGLE_RAD) -> np.ndarray:
    """A 3x3 LPS direction cosine matrix (columns: the i, j, k axes): rotations about z and x, not axis-aligned."""
    c, s = np.cos(angle), np.sin(angle)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return rz @ rx


def _itk_image(array_ijk: np.ndarray, spacing: Sequence[float], origin: Sequence[float], direction: np.ndarray):
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array_ijk)))  # numpy (k, j, i) -> ITK (i, j, k)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection([float(v) for v in np.asarray(direction, dtype=np.float64).ravel()])
    return image


def _write_nifti(
    path: Path,
    array: np.ndarray,
    affine: np.ndarray = AFFINE_RAS,
    sform_code: int | None = None,
    qform_code: int | None = None,
) -> Path:
    img = nib.Nifti1Image(array, affine)
    if sform_code is not None:
        img.set_sform(affine, code=sform_code)
    if qform_code is not None:
        img.set_qform(affine, code=qform_code)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def _write_itk(
    path: Path,
    array: np.ndarray,
    spacing: Sequence[float] = SPACING,
    origin: Sequence[float] = (-50.0, -60.0, -100.0),
    direction: np.ndarray | None = None,
) -> Path:
    """Write ``array`` (``(i, j, k)``) with SimpleITK (``.mhd`` + ``.raw``, ``.mha``, ...); LPS geometry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(_itk_image(array, spacing, origin, np.eye(3) if direction is None else direction), str(path))
    return path


def _write_dicom_series(
    folder: Path,
    hu: np.ndarray,
    spacing: Sequence[float] = SPACING,
    origin: Sequence[float] = (-50.0, -60.0, -100.0),
    direction: np.ndarray | None = None,
    series_uid: str = "1.2.826.0.1.3680043.2.1125.7.1",
    names: Sequence[str] | None = None,
    intercept: float = -1024.0,
    slope: float = 1.0,
    modality: str = "CT",
) -> list[Path]:
    """Write ``hu`` (``(i, j, k)``, int16 HU) as a DICOM series, one file per ``k`` (SimpleITK's DicomSeriesFromArray).

    GDCM stores ``(HU - intercept) / slope`` and the RescaleIntercept/Slope tags; ImagePositionPatient and
    ImageOrientationPatient give the LPS geometry. ``names``: the file name of each slice (default ``k``-ordered).
    """
    folder.mkdir(parents=True, exist_ok=True)
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    volume = _itk_image(hu, spacing, origin, direction)
    d = volume.GetDirection()
    orientation = "\\".join(f"{v:.10g}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")  # whatever the file names
    writer.KeepOriginalImageUIDOn()
    names = names or [f"slice{k:03d}.dcm" for k in range(hu.shape[2])]
    paths = []
    for k in range(hu.shape[2]):
        image = volume[:, :, k]
        position = "\\".join(f"{v:.10g}" for v in volume.TransformIndexToPhysicalPoint((0, 0, k)))
        tags = {
            "0008|0060": modality,
            "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": f"{series_uid}.100",
            "0020|000e": series_uid,
            "0020|0052": f"{series_uid}.200",
            "0020|0013": str(k + 1),
            "0020|0032": position,
            "0020|0037": orientation,
            "0018|0050": f"{spacing[2]:g}",
            "0028|1052": f"{intercept:g}",
            "0028|1053": f"{slope:g}",
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        paths.append(folder / names[k])
        writer.SetFileName(str(paths[-1]))
        writer.Execute(image)
    return paths


@pytest.fixture
def synthetic() -> SimpleNamespace:
    """The synthetic geometry: ``shape``, ``spacing``, ``affine_ras``, ``make_ct(shape)``, ``oblique_direction()``."""
    return SimpleNamespace(
        shape=SHAPE,
        spacing=SPACING,
        affine_ras=AFFINE_RAS.copy(),
        make_ct=make_ct,
        oblique_direction=oblique_direction,
    )


@pytest.fixture
def ct() -> np.ndarray:
    """The synthetic CT, int16 HU, ``(i, j, k)``."""
    return make_ct()


@pytest.fixture
def write_nifti() -> Callable[..., Path]:
    """``write_nifti(path, array, affine=AFFINE_RAS, sform_code=None, qform_code=None) -> path``."""
    return _write_nifti


@pytest.fixture
def write_itk() -> Callable[..., Path]:
    """``write_itk(path, array, spacing, origin, direction=None) -> path`` (LPS geometry, SimpleITK)."""
    return _write_itk


@pytest.fixture
def write_dicom_series() -> Callable[..., list[Path]]:
    """``write_dicom_series(folder, hu, spacing, origin, direction, series_uid, names, intercept, slope, modality)``."""
    return _write_dicom_series


@pytest.fixture
def ct_nifti(tmp_path: Path, ct: np.ndarray) -> Path:
    """The synthetic CT as ``scan.nii.gz`` (sform and qform code 1)."""
    return _write_nifti(tmp_path / "scan.nii.gz", ct, AFFINE_RAS, sform_code=1, qform_code=1)


@pytest.fixture
def ct_mhd(tmp_path: Path, ct: np.ndarray) -> Path:
    """The synthetic CT as ``scan.mhd`` + ``scan.raw`` with an oblique direction."""
    return _write_itk(tmp_path / "scan.mhd", ct, direction=oblique_direction())


@pytest.fixture
def ct_dicom(tmp_path: Path, ct: np.ndarray) -> Path:
    """The synthetic CT as a DICOM series folder ``series/`` (axial, RescaleIntercept -1024)."""
    folder = tmp_path / "series"
    _write_dicom_series(folder, ct)
    return folder


class ThresholdNet(nn.Module):
    """Stand-in multi-task network with a known answer: the mask logit is positive above -410 HU in the lung window
    (half-way between lung and soft tissue); the malignancy logit grows with the foreground fraction of the input,
    so bigger nodules score higher; every attribute predicts its highest rating. Counts its ``segment`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return 40.0 * (x[:, :1] - 0.42)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = self.segment(x)
        fg = (mask > 0).float().mean(dim=(1, 2, 3, 4))
        out = {str(OutputKeys.MASK): mask, str(OutputKeys.MALIGNANCY): (fg * 200.0 - 1.0)[:, None]}
        out[str(OutputKeys.MALIGNANCY_SCORE)] = (1.0 + 4.0 * fg)[:, None]
        for name, n in ATTRIBUTE_CLASSES.items():
            out[name] = torch.nn.functional.one_hot(torch.full((x.shape[0],), n - 1), n).float()
        return out


@pytest.fixture
def threshold_net() -> type[ThresholdNet]:
    """The :class:`ThresholdNet` class (call it for a fresh network)."""
    return ThresholdNet


class DetectingNet(ThresholdNet):
    """:class:`ThresholdNet` with a detection head (``nodule``): its logit grows with the foreground share of the
    crop's central 8 voxels (a blob centred in the crop scores high, a thin vessel's cross-section lower)."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({str(OutputKeys.NODULE): nn.Identity()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().forward(x)
        fg = (out[str(OutputKeys.MASK)] > 0).float()
        h, w, d = (s // 2 for s in fg.shape[2:])
        centre = fg[:, 0, h - 4 : h + 4, w - 4 : w + 4, d - 4 : d + 4].mean(dim=(1, 2, 3))
        out[str(OutputKeys.NODULE)] = self.heads[str(OutputKeys.NODULE)](8.0 * (centre - 0.5))[:, None]
        return out


@pytest.fixture
def detecting_net() -> type[DetectingNet]:
    """The :class:`DetectingNet` class (call it for a fresh network)."""
    return DetectingNet


@pytest.fixture(scope="session")
def vessel_phantom() -> tuple[Any, list[Any]]:
    """A chest phantom (LPS DICOM-like grid, 0.9 x 0.9 x 2.5 mm) with a 12 mm and a 7 mm nodule and a vessel (a 3 mm
    tube of soft tissue along the slices through the right lung, RAS x = 30, y = 15 mm): the image as a
    ``MetaTensor`` and the nodules as ``NoduleRecord`` (case ``phantom``)."""
    from monai.data import MetaTensor

    from lung_nodule_mtl.data.nodule_table import NoduleRecord
    from lung_nodule_mtl.data.synthetic.phantom import PhantomNodule, chest_phantom

    nodules = (PhantomNodule((-40.0, 10.0, 5.0), 12.0), PhantomNodule((35.0, -5.0, -20.0), 7.0))
    image, affine, _ = chest_phantom(shape=(150, 120, 48), spacing_mm=(0.9, 0.9, 2.5), nodules=nodules, lps=True)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in image.shape), indexing="ij"), axis=-1).reshape(-1, 3)
    world = grid @ affine[:3, :3].T + affine[:3, 3]
    tube = (np.hypot(world[:, 0] - 30.0, world[:, 1] - 15.0) < 1.5) & (np.abs(world[:, 2]) < 30.0)
    image.reshape(-1)[tube] = 40
    meta = MetaTensor(torch.from_numpy(image.astype(np.float32))[None], affine=torch.from_numpy(affine))
    records = [NoduleRecord("phantom", tuple(n.center_ras_mm), diameter_mm=n.diameter_mm) for n in nodules]
    return meta, records
