"""World (RAS mm) ↔ voxel conversions on identity, anisotropic L,P,S and rotated affines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lung_nodule_mtl.io.geometry import equivalent_diameter_mm, voxel_to_world, world_to_voxel


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix about ``axis`` by ``angle`` radians."""
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def _affine(linear: np.ndarray, origin: tuple[float, float, float]) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3], a[:3, 3] = linear, origin
    return a


AFFINES = {
    "identity": np.eye(4),
    "lps_anisotropic": _affine(np.diag([-0.703, -0.703, 2.5]), (180.0, 170.0, -310.5)),
    "rotated_anisotropic": _affine(
        _rotation(np.array([1.0, 2.0, 3.0]), 0.4) @ np.diag([0.6, 0.9, 2.5]), (-12.3, 45.6, 7.8)
    ),
}


@pytest.fixture
def points_vox() -> np.ndarray:
    return np.random.default_rng(0).uniform(-10.0, 500.0, size=(50, 3))


@pytest.mark.parametrize("name", list(AFFINES))
def test_round_trip_numpy(name: str, points_vox: np.ndarray) -> None:
    affine = AFFINES[name]
    world = voxel_to_world(affine, points_vox)
    assert isinstance(world, np.ndarray) and world.dtype == np.float64 and world.shape == (50, 3)
    np.testing.assert_allclose(world_to_voxel(affine, world), points_vox, rtol=0, atol=1e-10)
    np.testing.assert_allclose(voxel_to_world(affine, world_to_voxel(affine, world)), world, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(AFFINES))
def test_round_trip_torch(name: str, points_vox: np.ndarray) -> None:
    affine = torch.as_tensor(AFFINES[name])  # MetaTensor.affine is a float64 tensor
    vox = torch.as_tensor(points_vox)
    world = voxel_to_world(affine, vox)
    assert isinstance(world, torch.Tensor) and world.dtype == torch.float64
    torch.testing.assert_close(world_to_voxel(affine, world), vox, rtol=0, atol=1e-10)


def test_known_values() -> None:
    affine = AFFINES["lps_anisotropic"]  # i -> -x (L), j -> -y (P), k -> +z (S)
    np.testing.assert_allclose(voxel_to_world(affine, [0, 0, 0]), [180.0, 170.0, -310.5])
    np.testing.assert_allclose(voxel_to_world(affine, [10, 20, 4]), [180.0 - 7.03, 170.0 - 14.06, -300.5])
    np.testing.assert_allclose(world_to_voxel(affine, [180.0 - 7.03, 170.0 - 14.06, -300.5]), [10, 20, 4], atol=1e-12)
    rotated = AFFINES["rotated_anisotropic"]
    expected = rotated[:3, :3] @ np.array([1.0, 2.0, 3.0]) + rotated[:3, 3]
    np.testing.assert_allclose(voxel_to_world(rotated, np.array([1.0, 2.0, 3.0])), expected)


def test_dtype_and_shape_kept() -> None:
    affine = AFFINES["rotated_anisotropic"]
    single = world_to_voxel(affine, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float32))
    assert single.shape == (3,) and single.dtype == torch.float32
    assert world_to_voxel(affine, torch.tensor([1, 2, 3])).dtype == torch.float64  # integers -> float64
    batched = voxel_to_world(affine, np.zeros((2, 4, 3)))
    assert batched.shape == (2, 4, 3)
    np.testing.assert_allclose(batched, np.broadcast_to(affine[:3, 3], (2, 4, 3)))


@pytest.mark.parametrize(
    ("affine", "points", "match"),
    [
        (np.eye(3), [0.0, 0.0, 0.0], "affine must be a 4x4"),
        (np.full((4, 4), np.nan), [0.0, 0.0, 0.0], "affine must be finite"),
        (np.diag([1.0, 0.0, 1.0, 1.0]), [0.0, 0.0, 0.0], "invertible"),
        (np.eye(4), [0.0, 0.0], "points_mm must have shape"),
        (np.eye(4), 1.0, "points_mm must have shape"),
    ],
)
def test_ill_arg(affine: np.ndarray, points: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        world_to_voxel(affine, points)


def test_ill_arg_voxel_to_world() -> None:
    with pytest.raises(ValueError, match="points_vox must have shape"):
        voxel_to_world(np.eye(4), np.zeros((5, 2)))


def test_equivalent_diameter_is_the_diameter_of_the_sphere_of_that_volume() -> None:
    for d in (0.0, 3.0, 10.0, 31.7):
        assert equivalent_diameter_mm(math.pi / 6.0 * d**3) == pytest.approx(d, rel=1e-12, abs=1e-12)
    # a 10x10x10 mm cube is a sphere of 12.407 mm
    assert equivalent_diameter_mm(1000.0) == pytest.approx(12.4070, abs=1e-4)
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="volume_mm3"):
            equivalent_diameter_mm(bad)


def test_itk_geometry_is_the_bridge_to_simpleitk_both_ways() -> None:
    """An oblique, anisotropic voxel-to-RAS affine given to an ITK image puts every ITK index at the LPS point of
    the same voxel, and reading the ITK geometry back gives the affine."""
    import SimpleITK as sitk

    from lung_nodule_mtl.constants import ras_to_lps
    from lung_nodule_mtl.io.geometry import LPS_TO_RAS, affine_from_itk, flip_lps_ras, itk_geometry

    linear = _rotation(np.array([0.3, -0.5, 1.0]), 0.4) @ np.diag([0.7, 0.8, 2.5]) @ np.diag([-1.0, 1.0, 1.0])
    affine = _affine(linear, (12.0, -40.0, 300.0))
    spacing, origin, direction = itk_geometry(affine)
    image = sitk.Image([5, 6, 7], sitk.sitkInt16)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    for ijk in [(0, 0, 0), (4, 0, 2), (1, 5, 6)]:
        lps = image.TransformIndexToPhysicalPoint(ijk)
        np.testing.assert_allclose(lps, ras_to_lps(voxel_to_world(affine, np.asarray(ijk, float))), atol=1e-9)
    back = affine_from_itk(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    np.testing.assert_allclose(back, affine, atol=1e-9)
    np.testing.assert_allclose(flip_lps_ras(flip_lps_ras(affine)), affine)
    np.testing.assert_array_equal(LPS_TO_RAS @ LPS_TO_RAS, np.eye(4))
    with pytest.raises(ValueError, match="zero-length"):
        itk_geometry(np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="3 dimensions"):
        affine_from_itk((1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0))
