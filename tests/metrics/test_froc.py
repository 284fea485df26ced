"""LUNA16 FROC: hits within the radius, one hit per nodule, excluded findings ignored, CPM, bootstrap."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from monai.metrics import compute_froc_curve_data, compute_froc_score

from lung_nodule_mtl.data.nodule_table import NoduleRecord, read_nodule_table
from lung_nodule_mtl.metrics.froc import DEFAULT_FPS_PER_SCAN, froc, match_candidates, operating_point

RATES = [f"{r:g}" for r in DEFAULT_FPS_PER_SCAN]


def nod(case: str, xyz: tuple[float, float, float], d: float | None = 10.0) -> NoduleRecord:
    return NoduleRecord(case_id=case, center_ras_mm=xyz, diameter_mm=d)


def cand(case: str, xyz: tuple[float, float, float], p: float | None) -> NoduleRecord:
    return NoduleRecord(case_id=case, center_ras_mm=xyz, probability=p)


def far(i: int) -> tuple[float, float, float]:
    """A point far from every nodule of these tests."""
    return (500.0 + 50.0 * i, 500.0, 500.0)


@pytest.fixture
def four_scans() -> tuple[dict[str, list[NoduleRecord]], dict[str, list[NoduleRecord]]]:
    """4 scans, 4 nodules: hits scored 0.9, 0.8, 0.3, one miss; false positives 0.8 (a tie), 0.5, 0.5, 0.2."""
    ann = {
        "s0": [nod("s0", (0, 0, 0)), nod("s0", (40, 0, 0))],
        "s1": [nod("s1", (0, 0, 0))],
        "s2": [nod("s2", (0, 0, 0))],
    }
    pred = {
        "s0": [cand("s0", (1, 1, 1), 0.9), cand("s0", far(0), 0.5)],
        "s1": [cand("s1", (0, 2, 0), 0.8), cand("s1", far(1), 0.5)],
        "s2": [cand("s2", (0, 0, -3), 0.3), cand("s2", far(2), 0.2)],
        "s3": [cand("s3", far(3), 0.8)],
    }
    return pred, ann


def test_hand_computed_curve(four_scans) -> None:
    pred, ann = four_scans
    r = froc(pred, ann)
    # thresholds 0.9, 0.8, 0.5, 0.3, 0.2: (FP/scan, sensitivity) after (0, 0)
    assert r["curve"]["thresholds"] == [None, 0.9, 0.8, 0.5, 0.3, 0.2]
    assert r["curve"]["fps_per_scan"] == [0.0, 0.0, 0.25, 0.75, 0.75, 1.0]
    assert r["curve"]["sensitivity"] == [0.0, 0.25, 0.5, 0.5, 0.75, 0.75]
    # 0.125 lies half way along the tie (0, .25) -> (.25, .5); from 1 FP/scan on, the last sensitivity
    expected = [0.375, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75]
    assert r["sensitivity"] == {k: pytest.approx(v) for k, v in zip(RATES, expected, strict=True)}
    assert r["cpm"] == pytest.approx(4.375 / 7)
    assert (r["n_scans"], r["n_annotations"], r["n_detected"]) == (4, 4, 3)
    assert (r["n_candidates"], r["n_false_positives"], r["n_duplicate_hits"], r["n_excluded_hits"]) == (7, 4, 0, 0)
    assert "bootstrap" not in r


def test_operating_point_on_the_hand_computed_curve(four_scans) -> None:
    """Thresholds 0.9, 0.8, 0.5, 0.3, 0.2 give (FP/scan, sensitivity) (0, .25), (.25, .5), (.75, .5), (.75, .75),
    (1, .75): the best sensitivity within the allowance, at its fewest false positives, half-way to the next score."""
    r = froc(*four_scans)
    point = operating_point(r, 0.5)  # best .5, first reached at 0.8 (0.25 FP/scan); 0.5 adds only false positives
    assert point["threshold"] == pytest.approx(0.65)
    assert (point["sensitivity"], point["fps_per_scan"]) == (0.5, 0.25)
    assert (point["lowest_score_kept"], point["next_score"]) == (0.8, 0.5)
    assert operating_point(r, 0.75)["threshold"] == pytest.approx(0.25)  # .75 at 0.3; next 0.2
    assert operating_point(r, 0.1)["threshold"] == pytest.approx(0.85)  # only 0.9's hit is within 0.1 FP/scan
    assert operating_point(r, 5.0)["sensitivity"] == 0.75 and operating_point(r, 5.0)["next_score"] == 0.2
    # the threshold reproduces the point: what scores at least it
    kept = [c for cs in four_scans[0].values() for c in cs if c.probability >= operating_point(r, 0.5)["threshold"]]
    assert sorted(c.probability for c in kept) == [0.8, 0.8, 0.9]  # 2 hits and the 0.8 false positive
    # nothing found: no threshold
    nothing = froc({"s0": [cand("s0", far(0), 0.9)]}, {"s0": [nod("s0", (0, 0, 0))]})
    assert operating_point(nothing, 2.0)["threshold"] is None
    with pytest.raises(ValueError, match="max_fps_per_scan"):
        operating_point(r, 0.0)
    with pytest.raises(ValueError, match="curve"):
        operating_point({"cpm": 0.5}, 1.0)


def test_same_as_monai_camelyon_convention(four_scans) -> None:
    # MONAI's functions take the missed nodule as a 0 score; with one miss and positive scores they apply as is
    pred, ann = four_scans
    r = froc(pred, ann)
    fps, sens = compute_froc_curve_data(np.array([0.8, 0.5, 0.5, 0.2]), np.array([0.9, 0.8, 0.3, 0.0]), 4, 4)
    np.testing.assert_allclose(r["curve"]["fps_per_scan"], fps[::-1])
    np.testing.assert_allclose(r["curve"]["sensitivity"], sens[::-1])
    assert r["cpm"] == pytest.approx(compute_froc_score(fps, sens, DEFAULT_FPS_PER_SCAN))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_matches_monai(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ann: dict[str, list[NoduleRecord]] = {}
    pred: dict[str, list[NoduleRecord]] = {}
    for s in range(12):
        case = f"c{s}"
        ann[case] = [nod(case, tuple(rng.uniform(-100, 100, 3)), float(rng.uniform(4, 30))) for _ in range(s % 3)]
        pts = [a.center_ras_mm + rng.normal(0, 4, 3) for a in ann[case]] + list(rng.uniform(-100, 100, (6, 3)))
        # scores rounded to 2 decimals: many ties
        pred[case] = [cand(case, tuple(p), round(float(rng.random()), 2)) for p in pts]
    r = froc(pred, ann)
    tp, fp = [], []
    for case in ann:
        m = match_candidates(pred[case], ann[case])
        tp += m.tp_scores.tolist()
        fp += m.fp_scores.tolist()
    # MONAI skips its lowest score as a threshold (CAMELYON's 0 for misses): give it one below every score
    sentinel = float(np.nanmin(tp + fp)) - 1.0
    tp_probs = np.array([sentinel if math.isnan(t) else t for t in tp])
    fps, sens = compute_froc_curve_data(np.array([*fp, sentinel]), tp_probs, len(tp), len(ann))
    np.testing.assert_allclose(r["curve"]["fps_per_scan"], fps[::-1])
    np.testing.assert_allclose(r["curve"]["sensitivity"], sens[::-1])
    assert r["cpm"] == pytest.approx(compute_froc_score(fps, sens, DEFAULT_FPS_PER_SCAN))
    assert r["n_annotations"] == len(tp) and r["n_false_positives"] == len(fp)


def test_perfect_detector() -> None:
    ann = {"a": [nod("a", (0, 0, 0)), nod("a", (30, 0, 0))], "b": [nod("b", (0, 0, 0), 5.0)]}
    pred = {"a": [cand("a", (0, 0, 0), 0.9), cand("a", (30, 0, 0), 0.9)], "b": [cand("b", (1, 0, 0), 0.9)]}
    r = froc(pred, ann)
    assert r["cpm"] == 1.0 and set(r["sensitivity"].values()) == {1.0}
    assert (r["n_detected"], r["n_false_positives"]) == (3, 0)
    # why MONAI's curve is not called as is: it drops the lowest score as a threshold, here the only one
    fps, sens = compute_froc_curve_data(np.zeros(0), np.array([0.9, 0.9, 0.9]), 3, 2)
    assert compute_froc_score(fps, sens, DEFAULT_FPS_PER_SCAN) == 0.0


@pytest.mark.parametrize(
    ("offset", "detected"),
    [((4.999, 0, 0), True), ((5.0, 0, 0), False), ((5.001, 0, 0), False), ((3, 3.99, 0), True), ((3, 4, 0), False)],
)
def test_radius_boundary(offset: tuple[float, float, float], detected: bool) -> None:
    ann = {"a": [nod("a", (10, -20, 30), 10.0)]}
    xyz = (10 + offset[0], -20 + offset[1], 30 + offset[2])
    r = froc({"a": [cand("a", xyz, 0.7)]}, ann)
    assert r["n_detected"] == int(detected) and r["n_false_positives"] == int(not detected)
    assert r["cpm"] == (1.0 if detected else 0.0)


def test_double_hits_count_once_and_are_not_false_positives() -> None:
    # nodule 1 hit at 0.9 and again at 0.8, nodule 2 at 0.3, a false positive at 0.5; one scan
    ann = {"a": [nod("a", (0, 0, 0)), nod("a", (50, 0, 0))]}
    pred = {
        "a": [cand("a", (0, 0, 0), 0.9), cand("a", (1, 0, 0), 0.8), cand("a", (50, 0, 0), 0.3), cand("a", far(0), 0.5)]
    }
    r = froc(pred, ann)
    assert (r["n_detected"], r["n_duplicate_hits"], r["n_false_positives"]) == (2, 1, 1)
    assert r["curve"]["fps_per_scan"] == [0.0, 0.0, 1.0, 1.0]
    assert r["curve"]["sensitivity"] == [0.0, 0.5, 0.5, 1.0]
    # the 0.8 double hit as a false positive would give sensitivity 0.5 at 1 FP/scan and a CPM of 5/7
    assert list(r["sensitivity"].values()) == [0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert r["cpm"] == pytest.approx(5.5 / 7)


def test_candidate_on_two_nodules_counts_for_both() -> None:
    ann = {"a": [nod("a", (0, 0, 0)), nod("a", (4, 0, 0))]}
    r = froc({"a": [cand("a", (2, 0, 0), 0.6)]}, ann)
    assert (r["n_detected"], r["n_false_positives"], r["cpm"]) == (2, 0, 1.0)


def test_excluded_hits_ignored() -> None:
    ann = {"a": [nod("a", (0, 0, 0))]}
    excl = {"a": [nod("a", (50, 0, 0), None), nod("a", (0, 3, 0), 4.0)]}  # no diameter: LUNA16's 10 mm
    pred = {
        "a": [
            cand("a", (52, 0, 0), 0.9),  # on the excluded finding (within 5 mm): ignored
            cand("a", (0, 3, 0), 0.8),  # on the nodule and an excluded finding: the nodule's hit
            cand("a", (56, 0, 0), 0.7),  # 6 mm from the excluded finding: a false positive
        ]
    }
    r = froc(pred, ann, excl)
    assert (r["n_excluded_hits"], r["n_false_positives"], r["n_detected"]) == (1, 1, 1)
    assert r["curve"]["thresholds"] == [None, 0.8, 0.7]
    assert r["cpm"] == 1.0  # the nodule comes first, at 0 FP/scan
    # without the excluded table the 0.9 mark is a false positive ahead of the nodule
    r = froc(pred, ann)
    assert (r["n_excluded_hits"], r["n_false_positives"]) == (0, 2)
    assert list(r["sensitivity"].values()) == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    # a larger default diameter for findings without one swallows the 0.7 mark too
    assert froc(pred, ann, excl, missing_diameter_mm=14.0)["n_false_positives"] == 0


def test_no_candidates() -> None:
    ann = {"a": [nod("a", (0, 0, 0))], "b": [nod("b", (0, 0, 0))]}
    r = froc({}, ann)
    assert r["cpm"] == 0.0 and set(r["sensitivity"].values()) == {0.0}
    assert (r["n_scans"], r["n_candidates"], r["n_detected"]) == (2, 0, 0)
    assert r["curve"] == {"fps_per_scan": [0.0], "sensitivity": [0.0], "thresholds": [None]}


def test_no_annotations_is_an_error() -> None:
    with pytest.raises(ValueError, match="no annotations in the 1 evaluated scans"):
        froc({"a": [cand("a", (0, 0, 0), 0.5)]}, {})
    with pytest.raises(ValueError, match="2 annotations lie in other cases"):
        froc({"a": [cand("a", (0, 0, 0), 0.5)]}, {"b": [nod("b", (0, 0, 0)), nod("b", (9, 9, 9))]}, case_ids=["a"])


def test_scans_divide_false_positives() -> None:
    ann = {"a": [nod("a", (0, 0, 0))]}
    pred = {"a": [cand("a", far(0), 0.9), cand("a", (0, 0, 0), 0.5)]}
    one = froc(pred, ann)
    assert one["n_scans"] == 1 and one["cpm"] == pytest.approx(4 / 7)  # the nodule comes at 1 FP/scan
    four = froc(pred, ann, case_ids=["a", "b", "c", "d"])  # scans without findings count
    assert four["n_scans"] == 4 and four["cpm"] == pytest.approx(6 / 7)  # ... at 0.25 FP/scan
    # the default scans are every case of the three tables
    assert froc(pred, ann, {"e": [nod("e", (0, 0, 0))]})["n_scans"] == 2


def test_cases_outside_scans_left_out(caplog: pytest.LogCaptureFixture) -> None:
    ann = {"a": [nod("a", (0, 0, 0))], "b": [nod("b", (0, 0, 0))]}
    pred = {"a": [cand("a", (0, 0, 0), 0.9)], "c": [cand("c", (0, 0, 0), 0.99), cand("c", far(0), 0.99)]}
    r = froc(pred, ann, case_ids=["a"])
    assert (r["n_scans"], r["n_annotations"], r["n_false_positives"], r["cpm"]) == (1, 1, 0, 1.0)
    assert (r["n_candidates_outside_scans"], r["n_annotations_outside_scans"]) == (2, 1)
    assert "2 candidates of 1 cases outside the evaluated scans" in caplog.text


def test_ill_arg() -> None:
    ann = {"a": [nod("a", (0, 0, 0))]}
    pred = {"a": [cand("a", (0, 0, 0), 0.9)]}
    with pytest.raises(ValueError, match="more than once"):
        froc(pred, ann, case_ids=["a", "a"])
    with pytest.raises(ValueError, match="no scans"):
        froc(pred, ann, case_ids=[])
    with pytest.raises(ValueError, match="fps_per_scan"):
        froc(pred, ann, fps_per_scan=[0.5, -1])
    with pytest.raises(ValueError, match="twice"):
        froc(pred, ann, fps_per_scan=[1, 1.0])
    with pytest.raises(ValueError, match="n_bootstrap"):
        froc(pred, ann, n_bootstrap=-1)
    with pytest.raises(ValueError, match=r"case 'a' \(line 0\) needs a finite detection probability, got None"):
        froc({"a": [cand("a", (0, 0, 0), None)]}, ann)
    with pytest.raises(ValueError, match="finite"):
        froc({"a": [cand("a", (0, 0, 0), math.nan)]}, ann)


def test_custom_rates() -> None:
    pred, ann = {"a": [cand("a", far(0), 0.9), cand("a", (0, 0, 0), 0.5)]}, {"a": [nod("a", (0, 0, 0))]}
    r = froc(pred, ann, fps_per_scan=[0.5, 1, 3])
    assert r["sensitivity"] == {"0.5": 0.0, "1": 1.0, "3": 1.0} and r["cpm"] == pytest.approx(2 / 3)


def test_luna16_annotation_matches_ras_prediction(tmp_path: Path) -> None:
    # LUNA16 tables are LPS: the same point is (-x, -y, z) in the project's RAS
    (tmp_path / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2.3,10.5,-20.25,30,6\n")
    (tmp_path / "summary.csv").write_text(
        "case_id,nodule_id,center_x_mm,center_y_mm,center_z_mm,diameter_mm,detection_probability\n"
        "1.2.3,1,-10.5,20.25,30,5.5,0.9\n"  # the nodule, in RAS
        "1.2.3,2,10.5,-20.25,30,5.5,0.8\n"  # LPS numbers read as RAS: 45 mm away, a false positive
    )
    ann = read_nodule_table(tmp_path / "annotations.csv")
    r = froc(read_nodule_table(tmp_path / "summary.csv"), ann)
    assert (r["n_detected"], r["n_false_positives"], r["cpm"]) == (1, 1, 1.0)
    assert r["curve"]["thresholds"] == [None, 0.9, 0.8]


def _bootstrap_data(n_scans: int, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    ann, pred = {}, {}
    for s in range(n_scans):
        case = f"c{s}"
        ann[case] = [nod(case, (0, 0, 0))]
        pred[case] = [cand(case, far(i), float(rng.random())) for i in range(3)]
        if rng.random() < 0.7:
            pred[case].append(cand(case, (1, 0, 0), float(rng.random())))
    return pred, ann


def test_bootstrap_interval() -> None:
    pred, ann = _bootstrap_data(30, 0)
    r = froc(pred, ann, n_bootstrap=300, seed=3)
    b = r["bootstrap"]
    assert (b["n_samples"], b["n_valid"], b["seed"], b["confidence"]) == (300, 300, 3, 0.95)
    assert b["cpm"]["ci_low"] < r["cpm"] < b["cpm"]["ci_high"]
    assert abs(b["cpm"]["mean"] - r["cpm"]) < 0.05
    for rate in RATES:
        ci = b["sensitivity"][rate]
        assert ci["ci_low"] <= r["sensitivity"][rate] <= ci["ci_high"]
    assert r["sensitivity"]["8"] > r["sensitivity"]["0.125"]
    # replayable; the point estimate does not depend on the bootstrap
    again = froc(pred, ann, n_bootstrap=300, seed=3)
    assert again["bootstrap"] == b and again["cpm"] == r["cpm"] == froc(pred, ann)["cpm"]
    assert froc(pred, ann, n_bootstrap=300, seed=4)["bootstrap"] != b


def test_bootstrap_identical_scans_degenerate() -> None:
    # every scan alike: every resample has the same curve, so the interval is the point
    ann = {f"c{s}": [nod(f"c{s}", (0, 0, 0))] for s in range(5)}
    pred = {c: [cand(c, far(0), 0.9), cand(c, (0, 0, 0), 0.5)] for c in ann}
    r = froc(pred, ann, n_bootstrap=50)
    assert r["cpm"] == pytest.approx(4 / 7)
    assert r["bootstrap"]["cpm"] == {k: pytest.approx(4 / 7) for k in ("mean", "ci_low", "ci_high")}


def test_bootstrap_skips_samples_without_nodules(caplog: pytest.LogCaptureFixture) -> None:
    ann = {"c0": [nod("c0", (0, 0, 0))]}
    pred = {f"c{s}": [cand(f"c{s}", (0, 0, 0), 0.5)] for s in range(10)}
    b = froc(pred, ann, n_bootstrap=100)["bootstrap"]
    # P(no draw of c0 among 10) = 0.9**10 = 0.35
    assert 40 < b["n_valid"] < 90
    assert "drew no annotation" in caplog.text
