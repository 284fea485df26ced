"""Per-nodule QC figures (:mod:`lung_nodule_mtl.reports.qc`): panel layout, outline colours, lung window, PNG.

Volumes are tiny ``(20, 20, 20)`` HU arrays built here; the expected figures are painted pixel by pixel from the
documented layout (axial | coronal | sagittal, each panel's rows = its second axis reversed, a 2-pixel black gap
between panels, a ``2 * half_size_vox`` field of view whose voxel ``centre`` sits at column ``half_size_vox`` and
row ``half_size_vox - 1``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lung_nodule_mtl.constants import DEFAULT_WINDOWS
from lung_nodule_mtl.reports.qc import nodule_qc_image, write_nodule_qc

RED = (255, 40, 40)
YELLOW = (255, 220, 0)
N = 20
C = 10
H = 6  # half_size_vox: 12 x 12 panels
GAP = 2


def grey(hu: float) -> int:
    """The lung window (-1000 .. 400 HU) as an 8-bit grey level, rounded half up."""
    low, high = DEFAULT_WINDOWS["lung"]
    return int(np.floor(np.clip((hu - low) / (high - low), 0.0, 1.0) * 255.0 + 0.5))


def pixel(panel: int, a: int, b: int, ca: int, cb: int) -> tuple[int, int]:
    """``(row, col)`` of voxel coordinates ``(a, b)`` of panel ``panel`` (0 axial, 1 coronal, 2 sagittal)."""
    return cb + H - 1 - b, a - ca + H + panel * (2 * H + GAP)


def uniform(hu: float) -> np.ndarray:
    return np.full((N, N, N), hu, dtype=np.float32)


def colour_mask(image: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.all(image == np.asarray(rgb, dtype=np.uint8), axis=-1)


def ring(lo: int, hi: int) -> list[tuple[int, int]]:
    """The border pixels ``(a, b)`` of the square ``[lo, hi]^2``."""
    return [(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1) if a in (lo, hi) or b in (lo, hi)]


# ------------------------------------------------------------------------------------------------ layout


def test_shape_gap_and_magnification() -> None:
    image = nodule_qc_image(uniform(-300.0), np.zeros((N, N, N), np.int16), (C, C, C), 1, half_size_vox=H, scale=1)
    assert image.dtype == np.uint8 and image.shape == (2 * H, 3 * 2 * H + 2 * GAP, 3)
    assert (image[:, 2 * H : 2 * H + GAP] == 0).all() and (image[:, 4 * H + GAP : 4 * H + 2 * GAP] == 0).all()
    panels = np.delete(image, np.r_[2 * H : 2 * H + GAP, 4 * H + GAP : 4 * H + 2 * GAP], axis=1)
    assert (panels == grey(-300.0)).all()
    big = nodule_qc_image(uniform(-300.0), np.zeros((N, N, N), np.int16), (C, C, C), 1, half_size_vox=H, scale=3)
    assert big.shape == (6 * H, 3 * (6 * H + 2 * GAP), 3)
    np.testing.assert_array_equal(big, np.repeat(np.repeat(image, 3, axis=0), 3, axis=1))


def test_default_size() -> None:
    image = nodule_qc_image(uniform(0.0), np.zeros((N, N, N), np.int16), (C, C, C), 1)
    assert image.shape == (64 * 4, (3 * 64 + 2 * GAP) * 4, 3)  # half_size_vox=32, scale=4


def test_panels_are_axial_coronal_sagittal_with_anterior_and_superior_up() -> None:
    hu = uniform(-1000.0)
    hu[C + 3, C, C] = 400.0  # right of the centre (i)
    hu[C, C + 2, C] = 0.0  # anterior (j)
    hu[C, C, C + 4] = -500.0  # superior (k)
    image = nodule_qc_image(hu, np.zeros((N, N, N), np.int16), (C, C, C), 1, half_size_vox=H, scale=1)
    expected = np.zeros_like(image)
    for panel, (a, b), value in [
        (0, (C + 3, C), 400.0),  # axial: i to the right, j up
        (0, (C, C + 2), 0.0),
        (1, (C + 3, C), 400.0),  # coronal: i to the right, k up
        (1, (C, C + 4), -500.0),
        (2, (C + 2, C), 0.0),  # sagittal: j to the right, k up
        (2, (C, C + 4), -500.0),
    ]:
        expected[pixel(panel, a, b, C, C)] = grey(value)
    np.testing.assert_array_equal(image, expected)


def test_centre_is_rounded_half_up_and_clipped_to_the_volume() -> None:
    hu = uniform(-1000.0)
    hu[:, :, 11] = 400.0  # the axial slice through k = 11 is white
    labels = np.zeros((N, N, N), np.int16)
    image = nodule_qc_image(hu, labels, (9.6, 10.4, 10.5), 1, half_size_vox=H, scale=1)
    assert (image[:, : 2 * H] == 255).all()  # k = round(10.5) = 11, half up
    below = nodule_qc_image(hu, labels, (9.6, 10.4, 10.49), 1, half_size_vox=H, scale=1)
    assert (below[:, : 2 * H] == 0).all()
    # the coronal panel of centre (10, 10, 10.5): row of k = 11 is white (row = 11 + 6 - 1 - 11)
    assert (image[H - 1, 2 * H + GAP : 4 * H + GAP] == 255).all()
    # a centre outside the volume is clipped to its last voxel: the axial panel of k = 19 is padded air above
    hu2 = uniform(400.0)
    clipped = nodule_qc_image(hu2, labels, (C, C, 100.0), 1, half_size_vox=H, scale=1)
    coronal = clipped[:, 2 * H + GAP : 4 * H + GAP]
    assert (coronal[: H - 1] == 0).all() and (coronal[H - 1 :] == 255).all()  # k > 19: padding, -1000 HU


def test_field_of_view_outside_the_volume_is_air() -> None:
    image = nodule_qc_image(uniform(-300.0), np.zeros((N, N, N), np.int16), (0, 0, 0), 1, half_size_vox=H, scale=1)
    axial = image[:, : 2 * H]
    # voxel (0, 0) at column H, row H - 1: columns left of it (i < 0) and rows below it (j < 0) are padding
    assert (axial[:, :H] == 0).all() and (axial[H:, :] == 0).all()
    assert (axial[:H, H:] == grey(-300.0)).all()


# ------------------------------------------------------------------------------------------------ lung window


@pytest.mark.parametrize(
    ("hu", "level"),
    [(-1000.0, 0), (400.0, 255), (-300.0, 128), (-2000.0, 0), (3000.0, 255), (-650.0, 64), (50.0, 191)],
)
def test_lung_window(hu: float, level: int) -> None:
    assert grey(hu) == level
    image = nodule_qc_image(uniform(hu), np.zeros((N, N, N), np.int16), (C, C, C), 1, half_size_vox=H, scale=1)
    assert (image[:, : 2 * H] == level).all()


def test_lung_window_is_monotonic_along_a_ramp() -> None:
    hu = np.broadcast_to(np.linspace(-1200.0, 600.0, N)[:, None, None], (N, N, N)).astype(np.float32)
    image = nodule_qc_image(hu, np.zeros((N, N, N), np.int16), (C, C, C), 1, half_size_vox=H, scale=1)
    row = image[0, : 2 * H, 0].astype(int)  # i = 4 .. 15 left to right
    assert row.tolist() == [grey(v) for v in np.linspace(-1200.0, 600.0, N)[C - H : C + H]]
    assert np.all(np.diff(row) >= 0) and row[0] < row[-1]


# ------------------------------------------------------------------------------------------------ outlines


def nodules() -> tuple[np.ndarray, np.ndarray]:
    hu = uniform(-800.0)
    labels = np.zeros((N, N, N), np.int16)
    labels[C - 2 : C + 3, C - 2 : C + 3, C - 2 : C + 3] = 1  # a 5-voxel cube at the centre
    hu[labels == 1] = 40.0
    labels[C - 6 : C - 3, C + 2 : C + 5, C - 1 : C + 2] = 2  # a 3-voxel cube in the axial slice only
    return hu, labels


def expected_outlines(this: int) -> np.ndarray:
    """The figure of :func:`nodules` for label ``this``, painted from the documented layout."""
    other = 3 - this
    big, small = ring(C - 2, C + 2), ring(C - 6, C - 4)
    expected = np.zeros((2 * H, 3 * 2 * H + 2 * GAP, 3), dtype=np.uint8)
    for panel in range(3):
        expected[:, panel * (2 * H + GAP) : panel * (2 * H + GAP) + 2 * H] = grey(-800.0)
        for a in range(C - 2, C + 3):
            for b in range(C - 2, C + 3):
                expected[pixel(panel, a, b, C, C)] = grey(40.0)  # inside the cube
        for a, b in big:
            expected[pixel(panel, a, b, C, C)] = RED if this == 1 else YELLOW
    for a, b in small:  # the second nodule: i 4..6, j 12..14 in the axial panel
        expected[pixel(0, a, b + 8, C, C)] = RED if other == 1 else YELLOW
    return expected


def test_outline_of_the_nodule_red_and_of_the_others_yellow() -> None:
    hu, labels = nodules()
    image = nodule_qc_image(hu, labels, (C, C, C), 1, half_size_vox=H, scale=1)
    np.testing.assert_array_equal(image, expected_outlines(1))
    red, yellow = colour_mask(image, RED), colour_mask(image, YELLOW)
    assert red.sum() == 3 * 16  # the 5 x 5 section's border in each panel, not its inside
    assert yellow.sum() == 8  # the 3 x 3 section's border (its centre pixel is inside)
    assert red[H - 1, H] == 0 and image[H - 1, H, 0] == grey(40.0)  # the centre: the nodule's own grey


def test_outline_colours_follow_the_label_asked_for() -> None:
    hu, labels = nodules()
    image = nodule_qc_image(hu, labels, (C, C, C), 2, half_size_vox=H, scale=1)
    np.testing.assert_array_equal(image, expected_outlines(2))
    assert colour_mask(image, RED).sum() == 8 and colour_mask(image, YELLOW).sum() == 3 * 16


def test_outline_scales_with_the_figure() -> None:
    hu, labels = nodules()
    image = nodule_qc_image(hu, labels, (C, C, C), 1, half_size_vox=H, scale=4)
    assert colour_mask(image, RED).sum() == 3 * 16 * 16 and colour_mask(image, YELLOW).sum() == 8 * 16
    np.testing.assert_array_equal(image[::4, ::4], expected_outlines(1))


def test_no_outline_without_labels() -> None:
    hu, _ = nodules()
    image = nodule_qc_image(hu, np.zeros((N, N, N), np.int16), (C, C, C), 1, half_size_vox=H, scale=1)
    assert not colour_mask(image, RED).any() and not colour_mask(image, YELLOW).any()


def test_nodule_cut_by_the_field_of_view_is_outlined_at_the_edge() -> None:
    hu = uniform(-800.0)
    labels = np.zeros((N, N, N), np.int16)
    labels[C : C + 9, C - 1 : C + 2, C - 1 : C + 2] = 1  # runs out of the 12-voxel field of view (i > 15)
    image = nodule_qc_image(hu, labels, (C, C, C), 1, half_size_vox=H, scale=1)
    red = colour_mask(image[:, : 2 * H], RED)
    rows = [pixel(0, 0, b, C, C)[0] for b in (C - 1, C, C + 1)]
    # i = 10 .. 15 visible (columns 6 .. 11); the panel's last column closes the outline
    assert red[rows[0], H:].all() and red[rows[2], H:].all()
    assert red[rows[1], H] and red[rows[1], 2 * H - 1] and not red[rows[1], H + 1 : 2 * H - 1].any()
    assert not red[:, :H].any()


# ------------------------------------------------------------------------------------------------ PNG


def test_write_png_round_trip(tmp_path: Path) -> None:
    hu, labels = nodules()
    image = nodule_qc_image(hu, labels, (C, C, C), 1, half_size_vox=H, scale=2)
    out = tmp_path / "qc" / "deep" / "case_nodule1.png"  # the folders are made
    assert write_nodule_qc(out, image) == out
    with Image.open(out) as png:
        assert png.format == "PNG" and png.mode == "RGB" and png.size == (image.shape[1], image.shape[0])
        np.testing.assert_array_equal(np.asarray(png), image)
    assert sorted(p.name for p in out.parent.iterdir()) == ["case_nodule1.png"]  # no temporary file left


def test_write_png_with_a_title_line(tmp_path: Path) -> None:
    hu, labels = nodules()
    image = nodule_qc_image(hu, labels, (C, C, C), 1, half_size_vox=H, scale=4)
    out = write_nodule_qc(tmp_path / "titled.png", image, title="case 1 nodule 1: 12.3 mm")
    with Image.open(out) as png:
        pixels = np.asarray(png)
    assert pixels.shape == (image.shape[0] + 16, image.shape[1], 3)
    np.testing.assert_array_equal(pixels[16:], image)
    band = pixels[:16]
    # the text in white (anti-aliased: shades of grey) on black, left-aligned
    assert (band[..., 0] == band[..., 1]).all() and (band[..., 1] == band[..., 2]).all()
    assert (band[..., 0] > 128).sum() > 20 and (band[:, -8:] == 0).all()
    other = write_nodule_qc(tmp_path / "other.png", image, title="case 2 nodule 7: 4.0 mm")
    with Image.open(other) as png:
        assert not np.array_equal(np.asarray(png)[:16], band)


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hu, labels = nodules()
    image = nodule_qc_image(hu, labels, (C, C, C), 1, half_size_vox=H, scale=1)
    out = tmp_path / "qc.png"
    out.write_bytes(b"previous figure")

    def broken_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        Path(str(fp)).write_bytes(b"\x89PNG half written")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_nodule_qc(out, image, title="x")
    assert out.read_bytes() == b"previous figure"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["qc.png"]  # the partial file is gone
    monkeypatch.undo()
    write_nodule_qc(out, image)  # replaces the old file
    with Image.open(out) as png:
        np.testing.assert_array_equal(np.asarray(png), image)
    assert [p.name for p in tmp_path.iterdir()] == ["qc.png"]


def test_old_keyword_spelling_warns_and_draws_the_same() -> None:
    hu = np.linspace(-1000.0, 400.0, N**3).reshape(N, N, N)
    labels = np.zeros((N, N, N), np.int16)
    labels[C - 1 : C + 2, C - 1 : C + 2, C - 1 : C + 2] = 1
    new = nodule_qc_image(hu, labels, center_voxel=(C, C, C), label=1, half_size_vox=H, scale=1)
    with pytest.warns(FutureWarning, match="center_voxel"):
        old = nodule_qc_image(hu, labels, centre_voxel=(C, C, C), label=1, half_size_vox=H, scale=1)
    np.testing.assert_array_equal(old, new)
