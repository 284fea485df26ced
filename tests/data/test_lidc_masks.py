"""LIDC-IDRI outlines on the CT grid (:mod:`lung_nodule_mtl.data.lidc_idri.masks`), on inputs built here.

Readers' nodules are :class:`~lung_nodule_mtl.data.lidc_idri.reading.ReaderNodule` objects made directly (no XML):
slice ``k`` of a 40 x 40 x 8 grid has SOP UID ``"uid.<k>"`` and z = -50 + 2.5 k mm; voxels are 0.7 x 0.7 x 2.5 mm.
Expected masks are counted from the module's documented rules (pixel centres strictly inside an outline, the
outline's own pixels out unless ``include_contour``, exclusions carved after inclusions).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from lung_nodule_mtl.data.lidc_idri.masks import (
    AnnotationMask,
    SliceLookup,
    annotation_mask,
    cluster_annotations,
    consensus_mask,
    max_axial_diameter_mm,
    polygon_interior,
)
from lung_nodule_mtl.data.lidc_idri.reading import ReaderNodule, Roi

SHAPE = (40, 40, 8)
Z0, DZ = -50.0, 2.5
AFFINE = np.diag([0.7, 0.7, DZ, 1.0])
LOOKUP = SliceLookup({f"uid.{k}": k for k in range(SHAPE[2])}, Z0 + DZ * np.arange(SHAPE[2]), DZ / 2)


def rect(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """The 8-connected pixel outline of the rectangle ``[x0, x1] x [y0, y1]``, clockwise."""
    top = [(x, y0) for x in range(x0, x1 + 1)]
    right = [(x1, y) for y in range(y0 + 1, y1 + 1)]
    bottom = [(x, y1) for x in range(x1 - 1, x0 - 1, -1)]
    left = [(x0, y) for y in range(y1 - 1, y0, -1)]
    return top + right + bottom + left


def diamond(cx: int, cy: int, r: int) -> list[tuple[int, int]]:
    """The pixel outline ``|x - cx| + |y - cy| = r``, in order around it (diagonal steps)."""
    pts = [(cx + t, cy - r + t) for t in range(r)]
    pts += [(cx + r - t, cy + t) for t in range(r)]
    pts += [(cx - t, cy + r - t) for t in range(r)]
    pts += [(cx - r + t, cy - t) for t in range(r)]
    return pts


def roi(
    k: int, points: list[tuple[int, int]], inclusion: bool = True, sop: str | None = "", z: float | None = None
) -> Roi:
    """An outline on slice ``k``: by default with that slice's UID and z (``sop=None``: no UID in the file)."""
    uid = f"uid.{k}" if sop == "" else sop
    return Roi(Z0 + DZ * k if z is None else z, uid, inclusion, np.asarray(points, dtype=np.int64))


def nodule(reader: int, rois: list[Roi], name: str = "n1") -> ReaderNodule:
    return ReaderNodule(reader, f"r{reader}", name, rois, {}, False)


def dense(a: AnnotationMask) -> np.ndarray:
    """The annotation on the whole grid."""
    out = np.zeros(SHAPE, dtype=bool)
    idx = a.voxel_indices()
    out[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    return out


# ------------------------------------------------------------------------------------------------ polygon_interior


def test_square_by_its_corners() -> None:
    x0, y0, inside = polygon_interior(np.array([(2, 3), (8, 3), (8, 9), (2, 9)]))
    assert (x0, y0, inside.shape) == (2, 3, (7, 7))
    assert inside[1:6, 1:6].all()  # centres x 3..7, y 4..8: strictly inside
    assert inside.sum() - inside[1:6, 1:6].sum() <= 24  # anything else is on the outline (undecided)


def test_triangle_and_diamond_against_their_inequalities() -> None:
    for points, strictly_in, strictly_out in [
        ([(0, 0), (12, 0), (0, 12)], lambda x, y: (x > 0) & (y > 0) & (x + y < 12), lambda x, y: x + y > 12),
        (
            [(6, 0), (12, 6), (6, 12), (0, 6)],
            lambda x, y: np.abs(x - 6) + np.abs(y - 6) < 6,
            lambda x, y: np.abs(x - 6) + np.abs(y - 6) > 6,
        ),
    ]:
        x0, y0, inside = polygon_interior(np.array(points))
        x, y = np.meshgrid(x0 + np.arange(inside.shape[0]), y0 + np.arange(inside.shape[1]), indexing="ij")
        assert inside[strictly_in(x, y)].all()
        assert not inside[strictly_out(x, y)].any()
        # the same outline counter-clockwise, or from another vertex, fills the same pixels
        assert np.array_equal(polygon_interior(np.array(points[::-1]))[2], inside)
        assert np.array_equal(polygon_interior(np.roll(np.array(points), 1, axis=0))[2], inside)


def test_concave_outline_leaves_its_notch_empty() -> None:
    # a U: [0, 12] x [0, 12] without the slot [4, 8] x [4, 12]
    _, _, inside = polygon_interior(np.array([(0, 0), (12, 0), (12, 12), (8, 12), (8, 4), (4, 4), (4, 12), (0, 12)]))
    assert inside[1:4, 1:12].all() and inside[9:12, 1:12].all() and inside[1:12, 1:4].all()
    assert not inside[5:8, 5:].any()


def test_even_odd_rule_leaves_the_centre_of_a_pentagram_out() -> None:
    angles = np.deg2rad(90.0 + 144.0 * np.arange(5))  # a five-pointed star drawn in one stroke
    star = np.rint(np.c_[25 + 20 * np.cos(angles), 25 + 20 * np.sin(angles)]).astype(int)
    x0, y0, inside = polygon_interior(star)
    assert not inside[25 - x0, 25 - y0]  # crossed twice: outside under even-odd (inside under non-zero)
    assert not inside[25 - x0, 30 - y0]
    assert inside[25 - x0, 39 - y0]  # in the upper point


def test_fewer_than_three_points_fill_nothing() -> None:
    x0, y0, inside = polygon_interior(np.array([(3, 7), (9, 5)]))
    assert (x0, y0, inside.shape) == (3, 5, (7, 3)) and not inside.any()
    assert not polygon_interior(np.array([(4, 4)]))[2].any()


# ------------------------------------------------------------------------------------------------ annotation_mask


def test_outline_pixels_are_out_unless_asked_for() -> None:
    outline = diamond(20, 18, 5)
    reader = nodule(1, [roi(3, outline), roi(4, outline)])
    mask = annotation_mask(reader, LOOKUP, SHAPE)
    assert (mask.n_rois_placed, mask.n_rois_by_z, mask.warnings) == (2, 0, [])
    assert mask.offset == (15, 13, 3) and mask.mask.shape == (11, 11, 2)
    i, j, k = np.indices(SHAPE)
    taxicab = np.abs(i - 20) + np.abs(j - 18)
    on_slices = (k == 3) | (k == 4)
    np.testing.assert_array_equal(dense(mask), (taxicab < 5) & on_slices)
    assert mask.n_voxels == 2 * 41
    assert mask.points_ijk.shape == (2 * 20, 3) and set(mask.points_ijk[:, 2].tolist()) == {3, 4}
    assert sorted(map(tuple, mask.points_ijk[:20, :2].tolist())) == sorted(outline)

    with_contour = annotation_mask(reader, LOOKUP, SHAPE, include_contour=True)
    np.testing.assert_array_equal(dense(with_contour), (taxicab <= 5) & on_slices)
    assert with_contour.n_voxels == 2 * 61


def test_exclusion_is_carved_after_the_inclusions_whatever_the_file_order() -> None:
    outer, hole = rect(10, 10, 24, 20), rect(14, 13, 18, 16)
    reader = nodule(2, [roi(5, hole, inclusion=False), roi(5, outer)])  # the hole comes first in the file
    i, j = np.indices(SHAPE[:2])
    in_outer = (i > 10) & (i < 24) & (j > 10) & (j < 20)
    on_outer = (i >= 10) & (i <= 24) & (j >= 10) & (j <= 20) & ~in_outer
    hole_and_outline = (i >= 14) & (i <= 18) & (j >= 13) & (j <= 16)
    for include_contour, section in [
        (False, in_outer & ~hole_and_outline),
        (True, (in_outer | on_outer) & ~hole_and_outline),  # the outer outline joins; the hole's stays out
    ]:
        mask = annotation_mask(reader, LOOKUP, SHAPE, include_contour=include_contour)
        want = np.zeros(SHAPE, dtype=bool)
        want[:, :, 5] = section
        np.testing.assert_array_equal(dense(mask), want)
    assert annotation_mask(reader, LOOKUP, SHAPE).n_voxels == 13 * 9 - 5 * 4


def test_two_outlines_on_one_slice_are_two_islands() -> None:
    reader = nodule(1, [roi(2, rect(4, 4, 8, 8)), roi(2, rect(20, 22, 26, 30))])
    mask = annotation_mask(reader, LOOKUP, SHAPE)
    assert mask.n_voxels == 3 * 3 + 5 * 7
    assert mask.offset == (4, 4, 2) and mask.mask.shape == (23, 27, 1)
    assert not dense(mask)[9:20].any()  # nothing between the islands


def test_slice_matching_by_uid_then_z_and_what_is_dropped() -> None:
    square = rect(10, 10, 14, 14)
    rois = [
        roi(1, square),  # by UID
        roi(2, square, sop="9.9.9", z=Z0 + DZ * 2 + 1.0),  # unknown UID, 1 mm from slice 2: by z
        roi(3, square, sop=None),  # no UID: by z
        roi(5, square, z=Z0 + DZ * 6),  # UID of slice 5, z of slice 6: the UID wins, with a warning
        roi(0, square, sop="9.9.9", z=Z0 + DZ * 20),  # no UID and no slice near: dropped
        roi(4, rect(35, 35, 40, 39)),  # x = 40 is off the 40-pixel image: dropped
    ]
    mask = annotation_mask(nodule(3, rois, "Nodule 7"), LOOKUP, SHAPE, where="069.xml")
    assert mask.n_rois_placed == 4 and mask.n_rois_by_z == 2
    per_slice = dense(mask).sum(axis=(0, 1))
    assert per_slice.tolist() == [0, 9, 9, 9, 0, 9, 0, 0]
    assert len(mask.warnings) == 3
    assert all(w.startswith("069.xml: reader 3 nodule 'Nodule 7': ") for w in mask.warnings)
    assert "placed by SOP UID" in mask.warnings[0] and "slice 5" in mask.warnings[0]
    assert "matches no slice" in mask.warnings[1]
    assert "outside the 40x40 image" in mask.warnings[2]


def test_no_roi_placed_gives_an_empty_annotation() -> None:
    mask = annotation_mask(nodule(1, [roi(0, rect(1, 1, 5, 5), sop=None, z=500.0)]), LOOKUP, SHAPE)
    assert mask.mask.shape == (0, 0, 0) and mask.n_voxels == 0 and mask.n_rois_placed == 0
    assert mask.points_ijk.shape == (0, 3) and len(mask.warnings) == 1
    assert mask.voxel_indices().shape == (0, 3)


# ------------------------------------------------------------------------------------------------ clustering


def annotation(reader: int, x0: int, y0: int, x1: int, y1: int, slices: tuple[int, ...] = (3, 4)) -> AnnotationMask:
    return annotation_mask(nodule(reader, [roi(k, rect(x0, y0, x1, y1)) for k in slices]), LOOKUP, SHAPE)


def test_two_readers_nearby_are_one_nodule_a_far_one_another() -> None:
    a = [
        annotation(1, 10, 10, 16, 16),
        annotation(2, 11, 10, 17, 15),  # reader 2, overlapping reader 1's
        annotation(1, 28, 28, 33, 33),  # reader 1's second nodule, far away
        annotation(3, 29, 27, 34, 33),  # reader 3, at reader 1's second nodule
    ]
    assert sorted(cluster_annotations(a, AFFINE, tol_mm=DZ)) == [[0, 1], [2, 3]]
    assert sorted(cluster_annotations(a[:3], AFFINE, tol_mm=DZ)) == [[0, 1], [2]]


def test_link_distance_is_in_millimetres() -> None:
    # the outlines 3 pixels apart in x (2.1 mm), or on neighbouring slices (2.5 mm)
    beside = [annotation(1, 10, 10, 14, 14), annotation(2, 17, 10, 21, 14)]
    assert sorted(cluster_annotations(beside, AFFINE, tol_mm=2.0)) == [[0], [1]]
    assert sorted(cluster_annotations(beside, AFFINE, tol_mm=2.2)) == [[0, 1]]
    above = [annotation(1, 10, 10, 14, 14, slices=(3,)), annotation(2, 10, 10, 14, 14, slices=(4,))]
    assert sorted(cluster_annotations(above, AFFINE, tol_mm=2.2)) == [[0], [1]]
    assert sorted(cluster_annotations(above, AFFINE, tol_mm=2.6)) == [[0, 1]]
    coarse = np.diag([2.0, 2.0, DZ, 1.0])  # the same voxels 6 mm apart
    assert sorted(cluster_annotations(beside, coarse, tol_mm=2.2)) == [[0], [1]]


def test_chains_link_and_one_reader_gives_at_most_one_annotation() -> None:
    chain = [annotation(1, 2, 10, 6, 14), annotation(2, 8, 10, 12, 14), annotation(3, 14, 10, 18, 14)]
    # 1-2 and 2-3 are 1.4 mm apart, 1-3 8.4 mm: single linkage makes one nodule
    assert cluster_annotations(chain, AFFINE, tol_mm=1.5) == [[0, 1, 2]]
    # reader 1 twice: reader 2 joins the nearer (0.7 mm) of the two; the other stays alone
    twice = [annotation(1, 2, 10, 6, 14), annotation(2, 7, 10, 11, 14), annotation(1, 13, 10, 17, 14)]
    assert sorted(cluster_annotations(twice, AFFINE, tol_mm=5.0)) == [[0, 1], [2]]
    twice[0], twice[2] = annotation(1, 1, 10, 5, 14), annotation(1, 12, 10, 16, 14)  # now the right one is nearer
    assert sorted(cluster_annotations(twice, AFFINE, tol_mm=5.0)) == [[0], [1, 2]]
    # the same reader's two annotations, however close, stay apart
    assert sorted(cluster_annotations([chain[0], chain[0]], AFFINE, tol_mm=10.0)) == [[0], [1]]


def test_annotation_without_points_stays_alone() -> None:
    empty = annotation_mask(nodule(2, [roi(0, rect(1, 1, 5, 5), sop=None, z=900.0)]), LOOKUP, SHAPE)
    clusters = cluster_annotations([annotation(1, 1, 1, 5, 5), empty], AFFINE, tol_mm=100.0)
    assert sorted(clusters) == [[0], [1]]
    assert cluster_annotations([], AFFINE, tol_mm=1.0) == []


# ------------------------------------------------------------------------------------------------ consensus


def boxed(reader: int, box: tuple[slice, slice, slice], rng: np.random.Generator) -> AnnotationMask:
    """An irregular annotation inside ``box`` (about 70 % of its voxels)."""
    mask = rng.random(tuple(s.stop - s.start for s in box)) < 0.7
    return AnnotationMask(nodule(reader, []), (box[0].start, box[1].start, box[2].start), mask, np.zeros((0, 3), int))


def test_consensus_at_half_of_four_readers() -> None:
    rng = np.random.default_rng(0)
    boxes = [
        (slice(10, 16), slice(10, 16), slice(2, 5)),
        (slice(12, 18), slice(11, 17), slice(3, 6)),
        (slice(11, 15), slice(9, 14), slice(2, 4)),
        (slice(12, 22), slice(12, 22), slice(3, 6)),
    ]
    readers = [boxed(r + 1, b, rng) for r, b in enumerate(boxes)]
    counts_full = sum(dense(a).astype(int) for a in readers)
    for level, needed in [(0.25, 1), (0.5, 2), (0.75, 3), (1.0, 4), (0.6, 3)]:
        offset, mask, counts = consensus_mask(readers, level)
        assert offset == (10, 9, 2) and mask.shape == counts.shape == (12, 13, 4)  # the union of the boxes
        np.testing.assert_array_equal(counts, counts_full[10:22, 9:22, 2:6])
        np.testing.assert_array_equal(mask, counts_full[10:22, 9:22, 2:6] >= needed)
    half = consensus_mask(readers, 0.5)[1]
    assert half.sum() < (counts_full >= 1).sum() and half.sum() > (counts_full >= 4).sum()


def test_consensus_denominator_is_the_readers_of_this_nodule() -> None:
    rng = np.random.default_rng(1)
    box = (slice(5, 9), slice(5, 9), slice(1, 3))
    three = [boxed(r, box, rng) for r in (1, 2, 3)]
    counts = sum(a.mask.astype(int) for a in three)
    np.testing.assert_array_equal(consensus_mask(three, 0.5)[1], counts >= 2)  # 1.5 readers: 2
    np.testing.assert_array_equal(consensus_mask(three, 1.0)[1], counts == 3)
    # a reader whose outlines could not be placed still counts: 3 of 4 is not everyone
    empty = AnnotationMask(nodule(4, []), (0, 0, 0), np.zeros((0, 0, 0), bool), np.zeros((0, 3), int))
    assert not consensus_mask([*three, empty], 1.0)[1].any()
    np.testing.assert_array_equal(consensus_mask([*three, empty], 0.75)[1], counts == 3)
    offset, mask, counts_e = consensus_mask([empty, empty], 0.5)
    assert offset == (0, 0, 0) and mask.shape == counts_e.shape == (0, 0, 0)


@pytest.mark.parametrize("level", [0.0, -0.5, 1.01])
def test_consensus_level_must_be_a_fraction(level: float) -> None:
    with pytest.raises(ValueError, match="consensus level"):
        consensus_mask([annotation(1, 1, 1, 5, 5)], level)


# ------------------------------------------------------------------------------------------------ diameter


def disc(radius: int, n: int = 41) -> np.ndarray:
    i, j = np.indices((n, n))
    return (i - n // 2) ** 2 + (j - n // 2) ** 2 <= radius**2


def test_diameter_of_a_disc() -> None:
    mask = disc(10)[:, :, None]
    assert max_axial_diameter_mm(mask, (0.5, 0.5)) == pytest.approx(10.0)  # centres 20 voxels apart
    assert max_axial_diameter_mm(mask, (0.5, 1.0)) == pytest.approx(20.0)  # the longest chord is along j
    assert max_axial_diameter_mm(mask, (1.0, 0.5)) == pytest.approx(20.0)


def test_diameter_is_the_largest_over_slices() -> None:
    mask = np.stack([disc(4), disc(7), disc(2)], axis=-1)
    assert max_axial_diameter_mm(mask, (0.8, 0.8)) == pytest.approx(14 * 0.8)
    two = np.zeros((8, 8, 2), dtype=bool)
    two[0, 0, 1] = two[3, 4, 1] = True  # a 3-4-5 triangle
    two[5, 5, 0] = True  # one voxel: no pair
    assert max_axial_diameter_mm(two, (1.0, 1.0)) == pytest.approx(5.0)
    assert max_axial_diameter_mm(two[:, :, :1], (1.0, 1.0)) == 0.0
    assert max_axial_diameter_mm(np.zeros((4, 4, 3), dtype=bool), (1.0, 1.0)) == 0.0


def test_diameter_matches_every_pair_on_irregular_masks() -> None:
    rng = np.random.default_rng(2)
    mask = rng.random((14, 11, 4)) < 0.15
    mask[:, :, 3] = False
    mask[2:6, 3:9, 3] = True
    mask[9, 1, 3] = True
    spacing = (0.7, 1.3)
    best = 0.0
    for k in range(mask.shape[2]):
        pts = np.argwhere(mask[:, :, k]) * np.asarray(spacing)
        for p, q in combinations(pts, 2):
            best = max(best, float(np.hypot(*(p - q))))
    assert best > 0.0
    assert max_axial_diameter_mm(mask, spacing) == pytest.approx(best)
