"""Whole-scan CT input: finding cases, loading NIfTI / MetaImage / DICOM in HU on RAS grids, rejecting bad inputs,
writing label maps on the input grid."""

from __future__ import annotations

import ast
import gzip
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage

import lung_nodule_mtl
from lung_nodule_mtl.constants import lps_to_ras
from lung_nodule_mtl.io import ct as ct_io
from lung_nodule_mtl.io.ct import Case, CTVolume, InputError, find_cases, load_ct, write_label_map

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# the `itk` package (MONAI's ITKReader, the reference here) warns about its SWIG types when it is first imported
pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute:DeprecationWarning")


def _ras_point_of_itk_index(image: sitk.Image, index: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(lps_to_ras(image.TransformIndexToPhysicalPoint(index)))


def _world(affine: np.ndarray, ijk: tuple[int, int, int]) -> np.ndarray:
    return (np.asarray(affine) @ np.array([*ijk, 1.0]))[:3]


def _load_error(path: Path, kind: str) -> InputError:
    with pytest.raises(InputError) as info:
        load_ct(Case(path.name, path, kind))  # type: ignore[arg-type]
    error = info.value
    assert isinstance(error, ValueError)
    assert str(error) == f"{path}: {error.reason}"
    assert "\n" not in str(error)
    assert path.name in str(error)
    return error


def _rewrite_nifti_header(path: Path, **fields: object) -> None:
    """Change header fields of an uncompressed ``.nii`` in place, without nibabel's checks."""
    with open(path, "r+b") as f:
        header = nib.Nifti1Header.from_fileobj(f, check=False)
        for key, value in fields.items():
            header[key] = value
        f.seek(0)
        header.write_to(f)


# ---------------------------------------------------------------------------------------------------------------
# InputError, Case
# ---------------------------------------------------------------------------------------------------------------


def test_input_error_is_one_line_value_error(tmp_path: Path) -> None:
    error = InputError(tmp_path / "a.nii.gz", "first line\nsecond   line")
    assert isinstance(error, ValueError)
    assert error.path == tmp_path / "a.nii.gz"
    assert error.reason == "first line second line"
    assert str(error) == f"{tmp_path / 'a.nii.gz'}: first line second line"


def test_case_is_frozen(tmp_path: Path) -> None:
    case = Case("a", tmp_path / "a.nii", "nifti")
    with pytest.raises(AttributeError):
        case.case_id = "b"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------------------------
# find_cases
# ---------------------------------------------------------------------------------------------------------------


def test_find_cases_mixed_folder(synthetic, tmp_path, ct, write_nifti, write_itk, write_dicom_series) -> None:
    root = tmp_path / "input"
    write_nifti(root / "b.nii.gz", ct)
    write_nifti(root / "a.nii", ct)
    write_itk(root / "c.mhd", ct)
    write_itk(root / "d.mha", ct)
    (root / "README.txt").write_text("not an image")
    (root / "notes.xml").write_text("<a/>")
    (root / "e.nii.gz.bak").write_text("ignored")
    (root / ".hidden.nii.gz").write_bytes(b"")
    # a DICOM series folder directly under INPUT, with an .xml and a README beside the slices
    write_dicom_series(root / "patient1", ct)
    (root / "patient1" / "069.xml").write_text("<LidcReadMessage/>")
    (root / "patient1" / "README.txt").write_text("readme")
    # TCIA nesting PATIENT/STUDY/SERIES
    series = root / "LIDC-IDRI-0042" / "1.3.6.1.4.1.9328.50.1.1" / "1.3.6.1.4.1.9328.50.1.2"
    write_dicom_series(series, ct)
    (series / "042.xml").write_text("<LidcReadMessage/>")
    (root / "empty_folder").mkdir()
    (root / "other").mkdir()
    (root / "other" / "notes.txt").write_text("x")

    cases = find_cases(root)
    assert [(c.case_id, c.kind) for c in cases] == [
        ("LIDC-IDRI-0042", "dicom"),
        ("a", "nifti"),
        ("b", "nifti"),
        ("c", "metaimage"),
        ("d", "metaimage"),
        ("patient1", "dicom"),
    ]
    by_id = {c.case_id: c for c in cases}
    assert by_id["LIDC-IDRI-0042"].path == series
    assert by_id["patient1"].path == root / "patient1"
    assert by_id["c"].path == root / "c.mhd"
    assert find_cases(root) == cases  # deterministic
    assert find_cases(str(root)) == cases
    # every case found loads (the README, XML files are not part of any)
    for case in cases:
        volume = load_ct(case)
        assert volume.shape == synthetic.shape


def test_find_cases_single_inputs(tmp_path, ct_nifti, ct_mhd, ct_dicom) -> None:
    assert find_cases(ct_nifti) == [Case("scan", ct_nifti, "nifti")]
    assert find_cases(ct_mhd) == [Case("scan", ct_mhd, "metaimage")]
    assert find_cases(ct_dicom) == [Case("series", ct_dicom, "dicom")]
    upper = tmp_path / "UPPER.NII.GZ"
    shutil.copy(ct_nifti, upper)
    assert find_cases(upper) == [Case("UPPER", upper, "nifti")]


def test_find_cases_tcia_patient_folder(tmp_path, ct, write_dicom_series) -> None:
    patient = tmp_path / "LIDC-IDRI-0007"
    write_dicom_series(patient / "1.3.6.1.4.1.14519.5.2.1.1" / "1.3.6.1.4.1.14519.5.2.1.2", ct)
    (patient / "1.3.6.1.4.1.14519.5.2.1.1" / "1.3.6.1.4.1.14519.5.2.1.2" / "007.xml").write_text("<a/>")
    [case] = find_cases(patient)
    assert case.case_id == "LIDC-IDRI-0007"  # not the study UID folder's name


def test_find_cases_patient_with_several_series(tmp_path, ct, write_dicom_series) -> None:
    write_dicom_series(tmp_path / "in" / "P1" / "study" / "ser_a", ct, series_uid="1.2.3.1")
    write_dicom_series(tmp_path / "in" / "P1" / "study" / "ser_b", ct, series_uid="1.2.3.2")
    write_dicom_series(tmp_path / "in" / "P2" / "study" / "ser_a", ct, series_uid="1.2.3.3")
    assert [c.case_id for c in find_cases(tmp_path / "in")] == ["P1_ser_a", "P1_ser_b", "P2"]


def test_find_cases_empty_or_corrupt_files_are_cases(tmp_path) -> None:
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    (tmp_path / "junk.mha").write_bytes(b"not an image")
    assert [(c.case_id, c.kind) for c in find_cases(tmp_path)] == [("empty", "nifti"), ("junk", "metaimage")]


def test_find_cases_missing_input(tmp_path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_cases(missing)


def test_find_cases_folder_without_inputs(tmp_path) -> None:
    (tmp_path / "README.txt").write_text("hi")
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match="no CT inputs found") as info:
        find_cases(tmp_path)
    assert info.value.path == tmp_path
    nested = tmp_path / "nested"
    (nested / "a").mkdir(parents=True)
    (nested / "a" / "scan.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError, match=r"1 NIfTI/MetaImage file\(s\) in sub-folders"):
        find_cases(nested)


def test_find_cases_unsupported_file(tmp_path, ct_dicom) -> None:
    other = tmp_path / "scan.png"
    other.write_bytes(b"x")
    with pytest.raises(InputError, match="not a supported input"):
        find_cases(other)
    with pytest.raises(InputError, match="single DICOM file"):
        find_cases(next(ct_dicom.glob("*.dcm")))


def test_find_cases_duplicate_ids(tmp_path, ct, write_nifti, write_itk) -> None:
    write_nifti(tmp_path / "scan.nii.gz", ct)
    write_itk(tmp_path / "scan.mhd", ct)
    with pytest.raises(InputError, match="case id 'scan'") as info:
        find_cases(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "scan.nii.gz") in message and str(tmp_path / "scan.mhd") in message


def test_find_cases_duplicate_ids_nifti_and_dicom(tmp_path, ct, write_nifti, write_dicom_series) -> None:
    write_nifti(tmp_path / "P1.nii.gz", ct)
    write_dicom_series(tmp_path / "P1", ct)
    with pytest.raises(InputError, match="case id 'P1'"):
        find_cases(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# load_ct: NIfTI, MetaImage, DICOM, and MONAI's LoadImage conventions
# ---------------------------------------------------------------------------------------------------------------


def test_nifti_reads_without_simpleitk(tmp_path: Path) -> None:
    """SimpleITK is imported only where DICOM or MetaImage is read: a NIfTI scan loads on a machine without it
    (the GPU machines here have none)."""
    image = (np.arange(8 * 9 * 10).reshape(8, 9, 10) * 2 - 1000).astype(np.int16)  # air to tissue
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(image, np.diag([0.7, 0.7, 2.5, 1.0])), path)
    code = (
        "import sys; sys.modules['SimpleITK'] = None\n"  # import SimpleITK now raises ImportError
        "from lung_nodule_mtl.io.ct import find_cases, load_ct\n"
        f"v = load_ct(find_cases({str(path)!r})[0])\n"
        "print(tuple(v.shape), float(v.array.min()), sys.modules.get('SimpleITK') is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["(8,", "9,", "10)", "-1000.0", "False"]


def test_ct_io_and_data_converters_import_without_torch() -> None:
    """CT I/O sits below both stages: reading CT and the converters under ``data`` need neither torch nor MONAI,
    and no module under ``data`` or ``io`` imports the inference package."""
    code = (
        "import sys, lung_nodule_mtl.io, lung_nodule_mtl.data\n"
        "from lung_nodule_mtl.data import prepare_lidc, prepare_luna16\n"
        "print(sorted(m for m in ('torch', 'monai', 'lung_nodule_mtl.inference') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    package = Path(lung_nodule_mtl.__file__).parent
    for path in [*sorted((package / "data").rglob("*.py")), *sorted((package / "io").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith("lung_nodule_mtl.inference") for n in names), f"{path} imports {names}"


def _assert_volume(volume: CTVolume, expected: np.ndarray) -> None:
    assert isinstance(volume.image, MetaTensor)
    assert volume.image.dtype == torch.float32
    assert tuple(volume.image.shape) == (1, *expected.shape)
    assert volume.shape == expected.shape
    np.testing.assert_array_equal(volume.image[0].numpy(), expected.astype(np.float32))
    assert volume.array.dtype == np.float32 and np.shares_memory(volume.array, volume.image.numpy())
    assert volume.image is volume.image  # built once
    assert volume.affine.dtype == np.float64 and volume.affine.shape == (4, 4)
    np.testing.assert_allclose(volume.image.affine.numpy(), volume.affine)
    np.testing.assert_allclose(volume.spacing_mm, np.linalg.norm(volume.affine[:3, :3], axis=0))
    assert volume.meta["hu_min"] == float(expected.min()) and volume.meta["hu_max"] == float(expected.max())


def test_load_nifti_equals_monai_loadimage(synthetic, ct_nifti, ct) -> None:
    volume = load_ct(find_cases(ct_nifti)[0])
    _assert_volume(volume, ct)
    np.testing.assert_allclose(volume.affine, synthetic.affine_ras, atol=1e-6)
    assert volume.spacing_mm == pytest.approx(synthetic.spacing)
    assert volume.meta["format"] == "nifti" and volume.meta["original_dtype"] == "int16"
    assert volume.warnings == []
    assert volume.image.meta["filename_or_obj"] == str(ct_nifti)
    reference = LoadImage(image_only=True, ensure_channel_first=True)(str(ct_nifti))
    assert torch.equal(volume.image.as_tensor(), reference.as_tensor())
    np.testing.assert_allclose(volume.image.affine.numpy(), reference.affine.numpy(), atol=1e-6)


def test_load_nifti_scaled_and_trailing_singleton(synthetic, tmp_path, ct) -> None:
    img = nib.Nifti1Image((ct.astype(np.int32) + 1024).astype(np.uint16)[..., None], synthetic.affine_ras)
    img.header.set_slope_inter(1.0, -1024.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    volume = load_ct(Case("scaled", tmp_path / "scaled.nii.gz", "nifti"))
    _assert_volume(volume, ct)
    assert volume.meta["scl_inter"] == -1024.0 and volume.meta["original_dtype"] == "uint16"


def test_load_mhd_equals_monai_itkreader(ct_mhd, ct) -> None:
    volume = load_ct(find_cases(ct_mhd)[0])
    _assert_volume(volume, ct)
    pytest.importorskip("itk", reason="MONAI's ITKReader reference needs the itk extra")
    reference = LoadImage(image_only=True, ensure_channel_first=True, reader="ITKReader")(str(ct_mhd))
    assert torch.equal(volume.image.as_tensor(), reference.as_tensor())
    np.testing.assert_allclose(volume.image.affine.numpy(), reference.affine.numpy(), atol=1e-6)
    # the ITK LPS geometry, flipped to RAS, for the oblique direction
    itk_image = sitk.ReadImage(str(ct_mhd))
    for ijk in [(0, 0, 0), (31, 0, 0), (3, 17, 11), (31, 31, 15)]:
        np.testing.assert_allclose(_world(volume.affine, ijk), _ras_point_of_itk_index(itk_image, ijk), atol=1e-6)


def test_load_mha_4d_with_trailing_singleton(tmp_path, ct) -> None:
    image = sitk.GetImageFromArray(
        np.transpose(ct)[None], isVector=False
    )  # numpy (t, k, j, i) -> ITK size (i, j, k, 1)
    assert image.GetDimension() == 4
    sitk.WriteImage(image, str(tmp_path / "t.mha"))
    volume = load_ct(Case("t", tmp_path / "t.mha", "metaimage"))
    _assert_volume(volume, ct)


def test_load_dicom_series_rescale_and_shuffled_names(synthetic, tmp_path, ct, write_dicom_series) -> None:
    folder = tmp_path / "dicom"
    order = np.random.default_rng(3).permutation(ct.shape[2])
    names = [f"IM{int(n):04d}" for n in order]  # names unrelated to the slice order, no extension
    paths = write_dicom_series(folder, ct, names=names)
    # GDCM stored HU + 1024 (RescaleIntercept -1024): the last bytes of a file are its pixels
    rows, cols = ct.shape[1], ct.shape[0]
    stored = np.frombuffer(paths[4].read_bytes()[-rows * cols * 2 :], dtype="<i2").reshape(rows, cols).T
    np.testing.assert_array_equal(stored, ct[:, :, 4].astype(np.int32) + 1024)
    [case] = find_cases(folder)
    assert case == Case("dicom", folder, "dicom")
    volume = load_ct(case)
    _assert_volume(volume, ct)  # HU back, slices in position order
    assert volume.meta["rescale_intercept"] == -1024.0 and volume.meta["rescale_slope"] == 1.0
    assert volume.meta["n_slices"] == ct.shape[2] and volume.meta["series_uid"] == "1.2.826.0.1.3680043.2.1125.7.1"
    assert volume.meta["modality"] == "CT"
    assert volume.warnings == []
    expected = LPS_TO_RAS @ np.array(
        [
            [synthetic.spacing[0], 0, 0, -50.0],
            [0, synthetic.spacing[1], 0, -60.0],
            [0, 0, synthetic.spacing[2], -100.0],
            [0, 0, 0, 1],
        ]
    )
    np.testing.assert_allclose(volume.affine, expected, atol=1e-5)


def test_load_dicom_oblique_lps_to_ras(synthetic, tmp_path, ct, write_dicom_series) -> None:
    folder = tmp_path / "oblique"
    direction = synthetic.oblique_direction()
    origin = (12.5, -30.0, 80.0)
    write_dicom_series(folder, ct, origin=origin, direction=direction)
    volume = load_ct(find_cases(folder)[0])
    _assert_volume(volume, ct)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(synthetic.spacing)
    lps[:3, 3] = origin
    np.testing.assert_allclose(volume.affine, LPS_TO_RAS @ lps, atol=1e-4)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    itk_image = reader.Execute()
    for ijk in [(0, 0, 0), (31, 0, 0), (0, 31, 0), (3, 17, 11), (31, 31, 15)]:
        np.testing.assert_allclose(_world(volume.affine, ijk), _ras_point_of_itk_index(itk_image, ijk), atol=1e-4)
    pytest.importorskip("itk", reason="MONAI's ITKReader reference needs the itk extra")
    reference = LoadImage(image_only=True, ensure_channel_first=True, reader="ITKReader")(str(folder))
    assert torch.equal(volume.image.as_tensor(), reference.as_tensor())
    np.testing.assert_allclose(volume.image.affine.numpy(), reference.affine.numpy(), atol=1e-4)


def test_load_dicom_mixed_series_takes_the_largest(synthetic, tmp_path, ct, write_dicom_series) -> None:
    folder = tmp_path / "mixed"
    write_dicom_series(folder, ct, series_uid="1.2.3.4.5.100", names=[f"a{k:02d}.dcm" for k in range(16)])
    small = synthetic.make_ct((32, 32, 10))  # another series, 10 slices, elsewhere
    write_dicom_series(
        folder, small, series_uid="1.2.3.4.5.200", origin=(0, 0, 300), names=[f"b{k:02d}.dcm" for k in range(10)]
    )
    volume = load_ct(find_cases(folder)[0])
    _assert_volume(volume, ct)
    assert volume.meta["series_uid"] == "1.2.3.4.5.100" and volume.meta["n_series_in_folder"] == 2
    [warning] = volume.warnings
    assert "1.2.3.4.5.100" in warning and "skipped 1 other" in warning and "1.2.3.4.5.200" in warning


def test_load_dicom_series_with_a_localizer_of_another_size(synthetic, tmp_path, ct, write_dicom_series) -> None:
    folder = tmp_path / "with_localizer"
    write_dicom_series(folder, ct, series_uid="1.2.3.9")
    localizer = synthetic.make_ct((40, 24, 3))[
        :, :, :2
    ]  # same SeriesInstanceUID, other image size: ITK could not stack it
    write_dicom_series(folder, localizer, series_uid="1.2.3.9", names=["loc1.dcm", "loc2.dcm"], origin=(0, 0, 500))
    volume = load_ct(find_cases(folder)[0])
    _assert_volume(volume, ct)
    assert volume.meta["series_uid"] == "1.2.3.9"
    [warning] = volume.warnings
    assert "series 1.2.3.9 mixes images" in warning and "read 16 files of size 32x32, skipped 2" in warning


def test_load_dicom_missing_slice_warns(tmp_path, ct, write_dicom_series) -> None:
    paths = write_dicom_series(tmp_path / "gap", ct)
    paths[7].unlink()
    volume = load_ct(find_cases(tmp_path / "gap")[0])
    assert volume.shape == (32, 32, 15)
    assert any("uneven slice spacing" in w for w in volume.warnings)


def test_load_dicom_duplicate_slice(tmp_path, ct, write_dicom_series) -> None:
    paths = write_dicom_series(tmp_path / "dup", ct)
    shutil.copy(paths[5], tmp_path / "dup" / "zz_copy.dcm")
    assert "1 slice(s) at the same position as another" in _load_error(tmp_path / "dup", "dicom").reason


def test_load_warns_on_padding_below_minus_3024(tmp_path, ct, write_nifti) -> None:
    ct = ct.copy()
    ct[:2] = -32768
    volume = load_ct(find_cases(write_nifti(tmp_path / "padded.nii.gz", ct))[0])
    assert volume.meta["hu_min"] == -32768.0
    assert any("padding" in w for w in volume.warnings)


# ---------------------------------------------------------------------------------------------------------------
# load_ct: bad inputs
# ---------------------------------------------------------------------------------------------------------------


def test_truncated_nifti_gz(tmp_path, ct_nifti) -> None:
    data = ct_nifti.read_bytes()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in _load_error(bad, "nifti").reason


@pytest.mark.parametrize("where", ["crc_trailer", "middle"])
def test_corrupt_gzip(synthetic, tmp_path, ct, where: str) -> None:
    raw = nib.Nifti1Image(ct, synthetic.affine_ras).to_bytes()
    data = bytearray(gzip.compress(raw))
    data[-6 if where == "crc_trailer" else len(data) // 2] ^= 0x10  # nibabel alone reads the first silently
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(bytes(data))
    reason = _load_error(bad, "nifti").reason
    assert "truncated or corrupt image data" in reason or "not a readable NIfTI file" in reason


def test_truncated_nii(tmp_path, ct, write_nifti) -> None:
    path = write_nifti(tmp_path / "cut.nii", ct)
    path.write_bytes(path.read_bytes()[:-100])
    assert "truncated or corrupt" in _load_error(path, "nifti").reason


def test_not_a_nifti(tmp_path) -> None:
    bad = tmp_path / "junk.nii.gz"
    bad.write_bytes(gzip.compress(b"hello" * 200))
    assert "not a readable NIfTI file" in _load_error(bad, "nifti").reason


@pytest.mark.parametrize(
    ("name", "kind"), [("empty.nii.gz", "nifti"), ("empty.nii", "nifti"), ("empty.mha", "metaimage")]
)
def test_empty_file(tmp_path, name: str, kind: str) -> None:
    (tmp_path / name).write_bytes(b"")
    assert "empty file (0 bytes)" in _load_error(tmp_path / name, kind).reason


def test_missing_file(tmp_path) -> None:
    assert "file not found" in _load_error(tmp_path / "gone.nii.gz", "nifti").reason


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 1)])
def test_2d_image(tmp_path, shape) -> None:
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.full(shape, -1000, np.int16), np.eye(4)), path)
    assert "2D image" in _load_error(path, "nifti").reason


def test_4d_image(synthetic, tmp_path, ct) -> None:
    path = tmp_path / "fourd.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([ct] * 3, axis=-1), synthetic.affine_ras), path)
    reason = _load_error(path, "nifti").reason
    assert "4D image" in reason and "32x32x16x3" in reason


def test_2d_and_4d_metaimage(tmp_path, ct) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.transpose(ct[:, :, 0])), str(tmp_path / "flat.mha"))
    assert "2D image" in _load_error(tmp_path / "flat.mha", "metaimage").reason
    sitk.WriteImage(
        sitk.GetImageFromArray(np.transpose(np.stack([ct] * 2, axis=-1)), isVector=False), str(tmp_path / "t.mha")
    )
    assert "4D image" in _load_error(tmp_path / "t.mha", "metaimage").reason


def test_rgb_metaimage(tmp_path, ct) -> None:
    rgb = np.repeat(np.transpose(ct)[..., None], 3, axis=-1).astype(np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "rgb.mha"))
    assert "3 components per voxel" in _load_error(tmp_path / "rgb.mha", "metaimage").reason


def test_too_small_and_too_large(synthetic, tmp_path, monkeypatch) -> None:
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(synthetic.make_ct((32, 32, 4)), synthetic.affine_ras), small)
    assert "too small" in _load_error(small, "nifti").reason
    big = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(synthetic.make_ct(), synthetic.affine_ras), big)
    monkeypatch.setattr(ct_io, "MAX_VOXELS", 1000)
    assert "too large" in _load_error(big, "nifti").reason


def test_zero_spacing_in_sform(tmp_path, ct, write_nifti) -> None:
    path = write_nifti(tmp_path / "zero.nii", ct, sform_code=1, qform_code=0)
    _rewrite_nifti_header(path, srow_x=[0.0, 0.0, 0.0, 50.0])
    assert "zero voxel spacing" in _load_error(path, "nifti").reason


def test_singular_sform(tmp_path, ct, write_nifti) -> None:
    path = write_nifti(tmp_path / "singular.nii", ct, sform_code=1, qform_code=0)
    _rewrite_nifti_header(path, srow_x=[-0.8, -0.8, 0.0, 50.0], srow_y=[0.8, 0.8, 0.0, 60.0])
    assert "singular affine" in _load_error(path, "nifti").reason


@pytest.mark.parametrize("value", [-0.8, 0.0, float("nan")])
def test_bad_pixdim_with_qform(tmp_path, ct, write_nifti, value: float) -> None:
    path = write_nifti(tmp_path / "pixdim.nii", ct, sform_code=0, qform_code=1)
    pixdim = nib.load(path).header["pixdim"].copy()
    pixdim[1] = value
    _rewrite_nifti_header(path, pixdim=pixdim)  # nibabel's load would silently take abs() or 1
    assert "invalid voxel spacing" in _load_error(path, "nifti").reason


def test_bad_pixdim_ignored_when_sform_is_used(synthetic, tmp_path, ct, write_nifti) -> None:
    path = write_nifti(tmp_path / "pixdim.nii", ct, sform_code=1, qform_code=0)
    pixdim = nib.load(path).header["pixdim"].copy()
    pixdim[1] = 0.0
    _rewrite_nifti_header(path, pixdim=pixdim)
    volume = load_ct(Case("pixdim", path, "nifti"))
    np.testing.assert_allclose(volume.affine, synthetic.affine_ras, atol=1e-6)
    assert any("pixdim" in w for w in volume.warnings)


@pytest.mark.parametrize("value", ["0", "-0.8"])
def test_bad_spacing_metaimage(tmp_path, ct, write_itk, value: str) -> None:
    path = write_itk(tmp_path / "bad.mhd", ct)
    text = path.read_text().splitlines()
    text = [f"ElementSpacing = {value} 0.75 2.5" if line.startswith("ElementSpacing") else line for line in text]
    path.write_text("\n".join(text) + "\n")
    assert "invalid voxel spacing" in _load_error(path, "metaimage").reason


def test_metaimage_missing_or_truncated_raw(tmp_path, ct, write_itk) -> None:
    path = write_itk(tmp_path / "scan.mhd", ct)
    raw = tmp_path / "scan.raw"
    raw.write_bytes(raw.read_bytes()[:1000])
    assert "truncated or corrupt" in _load_error(path, "metaimage").reason
    raw.unlink()
    assert "'scan.raw' named by the header is missing" in _load_error(path, "metaimage").reason


def test_nan_and_inf_voxels(synthetic, tmp_path, ct) -> None:
    data = ct.astype(np.float32)
    data[1, 2, 3] = data[4, 5, 6] = data[7, 8, 9] = np.nan
    data[0, 0, 0], data[1, 1, 1] = np.inf, -np.inf
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, synthetic.affine_ras), path)
    assert "3 NaN and 2 infinite voxel(s)" in _load_error(path, "nifti").reason


@pytest.mark.parametrize(
    ("name", "make", "phrase"),
    [
        ("uint8", lambda ct: ((ct.astype(np.float64) + 1000) / 1700 * 255).astype(np.uint8), "(uint8)"),
        ("unit", lambda ct: (ct.astype(np.float32) + 1000) / 1700, "(float32)"),
        ("raw_stored", lambda ct: ct.astype(np.int16) + 1024, "rescale intercept"),
        ("all_air", lambda ct: np.full_like(ct, -1000), "values -1000 to -1000"),
    ],
)
def test_not_hounsfield(synthetic, tmp_path, ct, name, make, phrase) -> None:
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(make(ct), synthetic.affine_ras), path)
    reason = _load_error(path, "nifti").reason
    assert "not CT in Hounsfield units" in reason and phrase in reason
    assert "expected CT in HU" in reason


def test_values_out_of_plausible_range(synthetic, tmp_path, ct) -> None:
    data = ct.astype(np.float32)
    data[3, 3, 3] = 1e6
    path = tmp_path / "huge.nii.gz"
    nib.save(nib.Nifti1Image(data, synthetic.affine_ras), path)
    assert "outside the plausible CT range" in _load_error(path, "nifti").reason


def test_dicom_folder_without_series(tmp_path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for k in range(3):
        (folder / f"{k}.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 10)
    [case] = find_cases(folder)
    assert case.kind == "dicom"
    assert "no DICOM series found" in _load_error(folder, "dicom").reason


def test_dicom_not_ct(tmp_path, ct, write_dicom_series) -> None:
    write_dicom_series(tmp_path / "mr", ct, modality="MR")
    assert "modality 'MR'" in _load_error(tmp_path / "mr", "dicom").reason


def test_dicom_single_slice(tmp_path, ct, write_dicom_series) -> None:
    write_dicom_series(tmp_path / "one", ct[:, :, :1])
    assert "2D image" in _load_error(tmp_path / "one", "dicom").reason


# ---------------------------------------------------------------------------------------------------------------
# write_label_map
# ---------------------------------------------------------------------------------------------------------------


def _labels(shape: tuple[int, ...], top: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, top + 1, size=shape).astype(np.int64)


@pytest.mark.parametrize(("sform_code", "qform_code"), [(1, 1), (2, 0), (0, 1), (0, 0), (4, 2)])
def test_write_label_map_nifti_keeps_grid_and_codes(
    synthetic, tmp_path, ct, write_nifti, sform_code, qform_code
) -> None:
    source = write_nifti(tmp_path / "in.nii.gz", ct, synthetic.affine_ras, sform_code=sform_code, qform_code=qform_code)
    volume = load_ct(find_cases(source)[0])
    labels = _labels(ct.shape)
    out = write_label_map(volume, labels, tmp_path / "out" / "labels.nii.gz")
    assert out == tmp_path / "out" / "labels.nii.gz"
    assert sorted(p.name for p in out.parent.iterdir()) == ["labels.nii.gz"]  # no temporary file left
    img = nib.load(out)
    source_img = nib.load(source)
    assert img.shape == ct.shape
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)
    np.testing.assert_allclose(img.affine, volume.affine, atol=1e-4)
    np.testing.assert_allclose(img.affine, source_img.affine, atol=1e-4)
    assert int(img.header["sform_code"]) == sform_code and int(img.header["qform_code"]) == qform_code
    reloaded = LoadImage(image_only=True, ensure_channel_first=True)(str(out))
    np.testing.assert_allclose(reloaded.affine.numpy(), volume.image.affine.numpy(), atol=1e-4)


def test_write_label_map_uint16_and_tensor(tmp_path, ct_nifti, ct) -> None:
    volume = load_ct(find_cases(ct_nifti)[0])
    labels = _labels(ct.shape, top=300)
    out = write_label_map(volume, torch.from_numpy(labels), tmp_path / "labels.nii")
    img = nib.load(out)
    assert img.get_data_dtype() == np.uint16
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)


@pytest.mark.parametrize("source", ["ct_mhd", "dicom_oblique"])
def test_write_label_map_itk_inputs_on_itk_grid(synthetic, tmp_path, request, ct, write_dicom_series, source) -> None:
    if source == "ct_mhd":
        path = request.getfixturevalue("ct_mhd")
        itk_image = sitk.ReadImage(str(path))
    else:
        path = tmp_path / "dicom"
        write_dicom_series(path, ct, origin=(5.0, 6.0, -7.0), direction=synthetic.oblique_direction())
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path)))
        itk_image = reader.Execute()
    volume = load_ct(find_cases(path)[0])
    labels = _labels(ct.shape)
    out = write_label_map(volume, labels, tmp_path / "labels.nii.gz")
    img = nib.load(out)
    assert img.shape == ct.shape
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)
    np.testing.assert_allclose(img.affine, volume.affine, atol=1e-4)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    for ijk in [(0, 0, 0), (31, 0, 0), (0, 31, 0), (0, 0, 15), (7, 19, 11)]:
        np.testing.assert_allclose(_world(img.affine, ijk), _ras_point_of_itk_index(itk_image, ijk), atol=1e-4)
    # the same voxels read back by SimpleITK lie on the input's ITK grid
    back = sitk.ReadImage(str(out))
    np.testing.assert_allclose(back.GetOrigin(), itk_image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), itk_image.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(np.transpose(sitk.GetArrayFromImage(back)), labels)


def test_write_label_map_rejects_bad_labels(tmp_path, ct_nifti, ct) -> None:
    volume = load_ct(find_cases(ct_nifti)[0])
    with pytest.raises(ValueError, match="shape"):
        write_label_map(volume, np.zeros((32, 32, 15), np.uint8), tmp_path / "a.nii.gz")
    with pytest.raises(ValueError, match="integers"):
        write_label_map(volume, np.zeros(ct.shape, np.float32), tmp_path / "a.nii.gz")
    with pytest.raises(ValueError, match=">= 0"):
        write_label_map(volume, -np.ones(ct.shape, np.int16), tmp_path / "a.nii.gz")
    with pytest.raises(ValueError, match=r"\.nii"):
        write_label_map(volume, np.zeros(ct.shape, np.uint8), tmp_path / "a.mha")
    assert not (tmp_path / "a.nii.gz").exists()


# ---------------------------------------------------------------------------------------------------------------
# Real data (../shared/data)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.real_data
def test_real_lidc_dicom(shared_data: Path) -> None:
    patient = shared_data / "lidc_idri" / "LIDC-IDRI-0001"
    [case] = find_cases(patient)
    assert case.case_id == "LIDC-IDRI-0001" and case.kind == "dicom"
    assert [c.case_id for c in find_cases(shared_data / "lidc_idri")] == ["LIDC-IDRI-0001"]
    start = time.perf_counter()
    volume = load_ct(case)
    seconds = time.perf_counter() - start
    print(f"LIDC-IDRI-0001: {volume.shape} {volume.spacing_mm} loaded in {seconds:.2f} s; meta {volume.meta}")
    assert volume.shape == (512, 512, 133)
    assert volume.spacing_mm == pytest.approx((0.703125, 0.703125, 2.5), abs=1e-4)
    assert -3024 <= volume.meta["hu_min"] <= -1000 and 2000 <= volume.meta["hu_max"] <= 4000
    assert volume.meta["n_slices"] == 133 and volume.meta["modality"] == "CT"
    assert volume.warnings == []
    # the ~26 mm nodule at LPS (56.2, 86.3, -115.9) (LUNA16 convention): solid at its centre, lung either side
    hu = volume.image[0].numpy()
    centre = np.linalg.inv(volume.affine) @ np.array([*lps_to_ras((56.2, 86.3, -115.9)), 1.0])
    i, j, k = (round(float(v)) for v in centre[:3])
    assert hu[i - 1 : i + 2, j - 1 : j + 2, k].mean() > -100
    assert hu[i - 27, j, k] < -600 and hu[i + 27, j, k] < -600
    pytest.importorskip("itk", reason="MONAI's ITKReader reference needs the itk extra")
    reference = LoadImage(image_only=True, ensure_channel_first=True, reader="ITKReader")(str(case.path))
    assert torch.equal(volume.image.as_tensor(), reference.as_tensor())
    np.testing.assert_allclose(volume.affine, reference.affine.numpy(), atol=1e-4)


@pytest.mark.real_data
def test_real_totalsegmentator_nifti(shared_data: Path) -> None:
    path = shared_data / "totalsegmentator_example" / "example_ct.nii.gz"
    [case] = find_cases(path)
    start = time.perf_counter()
    volume = load_ct(case)
    seconds = time.perf_counter() - start
    print(f"example_ct: {volume.shape} {volume.spacing_mm} loaded in {seconds:.2f} s; meta {volume.meta}")
    assert volume.shape == (122, 101, 112)
    assert volume.spacing_mm == pytest.approx((3.0, 3.0, 3.0), abs=1e-3)
    assert volume.meta["hu_min"] == pytest.approx(-1207) and volume.meta["hu_max"] == pytest.approx(3382)
    reference = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    assert torch.equal(volume.image.as_tensor(), reference.as_tensor())
    np.testing.assert_allclose(volume.affine, reference.affine.numpy(), atol=1e-6)
