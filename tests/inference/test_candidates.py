"""Blob proposals and the candidate classifier: the features, the JSON file, the samples, the fit and predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lung_nodule_mtl.inference import ScanPredictor
from lung_nodule_mtl.inference.candidates import (
    CANDIDATE_FEATURES,
    CLASSIFIER_FILE,
    GEOMETRY_FEATURES,
    PROPOSAL_FEATURES,
    CandidateClassifier,
    CandidateSamples,
    _Model,
    blob_proposals,
    candidate_features,
    classifier_beside,
    collect_candidate_samples,
    head_logits,
)
from lung_nodule_mtl.inference.fusion import weights_fingerprint


def _ball_and_tube(seed: int = 0) -> np.ndarray:
    """60^3 voxels of 1 mm: noisy lung (-850 HU), an 8 mm ball at (30, 30, 30), a 3 mm tube along the first axis
    through (., 15, 45)."""
    rng = np.random.default_rng(seed)
    hu = -850.0 + rng.normal(0.0, 20.0, (60, 60, 60))
    z, y, x = np.mgrid[:60, :60, :60]
    hu[(z - 30) ** 2 + (y - 30) ** 2 + (x - 30) ** 2 <= 16] = 30.0
    hu[(y - 15) ** 2 + (x - 45) ** 2 <= 2] = 30.0
    return hu


def _named(values: np.ndarray) -> dict[str, float]:
    return dict(zip(CANDIDATE_FEATURES, values.tolist(), strict=True))


def test_candidate_features_tell_a_ball_from_a_vessel() -> None:
    hu = _ball_and_tube()
    ball, tube = _named(candidate_features(hu, (30, 30, 30))), _named(candidate_features(hu, (30, 15, 45)))
    assert len(CANDIDATE_FEATURES) == candidate_features(hu, (30, 30, 30)).shape[0]
    for s in ("1", "2", "3"):  # a dot: three negative eigenvalues alike; a line: one near 0, two strongly negative
        assert ball[f"h{s}_l3"] < -5 and ball[f"h{s}_r13"] > 0.9 and ball[f"h{s}_blob"] > 1
        assert tube[f"h{s}_blob"] == 0.0 and tube[f"h{s}_r13"] < 0.05 and tube[f"h{s}_line"] > 50
    assert ball["border_faces"] == 0 and tube["border_faces"] == 2  # the vessel runs through the cube
    assert ball["core_fraction"] > 0.5 and tube["log_core"] == 0.0  # a 2 mm ball opening removes a 3 mm tube
    assert ball["hu_1_5mm"] == pytest.approx(30.0) and ball["hu_5_8mm"] < -800
    # in parenchyma: no bright component; near the corner of the image: outside counts as air, values finite
    assert _named(candidate_features(hu, (10, 50, 10)))["log_volume"] == 0.0
    assert np.isfinite(candidate_features(hu, (1, 1, 58))).all()


def test_blob_proposals_rank_the_ball_first_inside_the_lung() -> None:
    hu = _ball_and_tube()
    points, feats = blob_proposals(hu)
    assert feats.shape == (len(points), len(PROPOSAL_FEATURES)) and len(points) >= 2
    assert np.abs(points[0] - 30).max() <= 1  # the strongest response: the ball's centre
    assert np.all(np.diff(feats[:, 0]) <= 1e-6)  # strongest first (log response)
    # along the tube: maxima, each with one eigenvalue near 0 at the tube's scale (p1.6_l3)
    on_tube = np.hypot(points[:, 1] - 15, points[:, 2] - 45) <= 1.5
    assert on_tube.any()
    names = list(PROPOSAL_FEATURES)
    l1, l3 = feats[:, names.index("p1.6_l1")], feats[:, names.index("p1.6_l3")]
    assert np.all(np.abs(l3[on_tube]) < 0.3 * np.abs(l1[on_tube]))
    lung = np.zeros(hu.shape, dtype=bool)
    lung[:, :, 35:] = True  # the tube's half only
    inside, _ = blob_proposals(hu, lung)
    assert len(inside) and np.all(inside[:, 2] >= 35) and not (np.abs(inside - 30).max(axis=1) <= 1).any()
    with pytest.raises(ValueError, match="lung mask shape"):
        blob_proposals(hu, lung[:10])


def _classifier(max_proposals: int = 3, min_distance_mm: float = 5.0) -> CandidateClassifier:
    rng = np.random.default_rng(1)
    xp = rng.normal(size=(40, len(PROPOSAL_FEATURES)))
    xs = rng.normal(size=(40, len(CANDIDATE_FEATURES) + 1))
    yp, ys = (xp[:, 0] > 0).astype(float), (xs[:, -1] > 0).astype(float)
    return CandidateClassifier(
        _Model.fit(xp, yp, PROPOSAL_FEATURES, 1e-2),
        _Model.fit(xs, ys, (*CANDIDATE_FEATURES, "head_logit"), 1e-2),
        max_proposals,
        min_distance_mm,
        {"weights": {"file": "model.pt", "sha256": "0" * 64}},
    )


def test_the_classifier_file_round_trips_and_bad_files_are_named(tmp_path) -> None:
    clf = _classifier()
    path = clf.save(tmp_path / CLASSIFIER_FILE)
    again = CandidateClassifier.load(path)
    rng = np.random.default_rng(2)
    feats, logits = rng.normal(size=(5, len(CANDIDATE_FEATURES))), rng.normal(size=5)
    np.testing.assert_allclose(again.score(feats, logits), clf.score(feats, logits))
    assert again.max_proposals == 3 and again.fitted_on == clf.fitted_on
    # the head's evidence counts: a higher logit, all else equal, a higher probability (the fit's sign)
    up = clf.score(feats, logits + 1.0) > clf.score(feats, logits)
    assert up.all() == (clf.scorer.model.coef[-1] > 0)
    data = json.loads(path.read_text(encoding="utf-8"))
    for change, message in (
        ({"kind": "malignancy_fusion"}, "not a candidate classifier"),
        ({"version": 99}, "version 99"),
        ({"scorer": {**data["scorer"], "features": data["scorer"]["features"][:-1]}}, "scorer"),
        ({"proposal": {k: v for k, v in data["proposal"].items() if k != "scale"}}, "malformed entry"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**data, **change}), encoding="utf-8")
        with pytest.raises(ValueError, match=message) as err:
            CandidateClassifier.load(bad)
        assert str(bad) in str(err.value)
    with pytest.raises(FileNotFoundError, match="not found"):
        CandidateClassifier.load(tmp_path / "missing.json")
    # a scorer fitted on some of the columns reads exactly those
    names = list(GEOMETRY_FEATURES)
    full = np.column_stack([feats, logits])
    cols = [[*CANDIDATE_FEATURES, "head_logit"].index(n) for n in names]
    geo = _Model.fit(rng.normal(size=(30, len(names))), (rng.random(30) > 0.5).astype(float), names, 1e-2)
    some = CandidateClassifier(clf.proposal, geo, 3, 5.0)
    np.testing.assert_allclose(CandidateClassifier.load(some.save(tmp_path / "geo.json")).score(feats, logits),
                               geo.predict(full[:, cols]))  # fmt: skip
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**data, "scorer": {**data["scorer"], "features": ["nope"]}}), encoding="utf-8")
    with pytest.raises(ValueError, match="unknown: \\['nope'\\]"):
        CandidateClassifier.load(bad)
    assert CandidateClassifier.from_config(None) is None and CandidateClassifier.from_config("") is None


def test_proposals_keep_their_distance_and_count() -> None:
    clf = _classifier(max_proposals=3, min_distance_mm=5.0)
    points = np.asarray([[0, 0, 0], [0, 0, 2], [0, 0, 10], [0, 0, 20], [0, 0, 30], [40, 0, 0]])
    feats = np.zeros((6, len(PROPOSAL_FEATURES)))
    feats[:, 0] = [6, 5, 4, 3, 2, 1]  # the model ranks by these (its first feature's coefficient is positive)
    assert clf.proposal.model.coef[0] > 0
    taken = np.asarray([[0, 0, 21]])
    chosen = clf.propose(points, feats, taken, (1.0, 1.0, 1.0)).tolist()
    assert chosen == [0, 2, 4]  # [0,0,2] is 2 mm from a better one, [0,0,20] 1 mm from a mask candidate; 3 at most
    assert clf.propose(points, feats, taken, (1.0, 1.0, 3.0)).tolist() == [0, 1, 2]  # 3 mm slices: 6 mm apart now
    assert clf.propose(points, feats, np.asarray([[0, 0, 1]]), (1.0, 1.0, 1.0)).tolist() == [2, 3, 4]
    none = _classifier(max_proposals=0)
    assert none.propose(points, feats, taken, (1.0, 1.0, 1.0)).size == 0
    with pytest.raises(ValueError, match="max_proposals"):
        _classifier(max_proposals=-1)


def test_samples_are_what_predict_meets(vessel_phantom, detecting_net) -> None:
    image, records = vessel_phantom
    predictor = ScanPredictor(detecting_net(), patch_size=(32, 32, 32), max_diameter_mm=40.0, device="cpu")
    only = collect_candidate_samples(predictor, image, "phantom", records, proposals_only=True)
    assert len(only) == 0 and only.prop_features.shape[1] == len(PROPOSAL_FEATURES)
    assert only.prop_labels.sum() >= 2  # proposals on both nodules (the 7 mm one too) ...
    assert (only.prop_labels == 0).sum() >= 1  # ... and off them (the vessel)
    clf = _classifier(max_proposals=4)
    samples = collect_candidate_samples(predictor, image, "phantom", records, classifier=clf, jitter=1, seed=3)
    kinds = samples.kinds.tolist()
    assert kinds.count("annotation") == 2 * 2 and 0 < kinds.count("proposal") <= 4
    assert samples.features.shape == (len(samples), len(CANDIDATE_FEATURES))
    assert samples.labels[samples.kinds == "annotation"].tolist() == [1.0] * 4
    cand = samples.kinds == "candidate"
    assert samples.labels[cand].sum() >= 1 and (samples.labels[cand] == 0).sum() >= 1  # a nodule and the vessel
    # the head's logit is the network's, as predict computes it (one pass: the predictor does not mirror)
    heads, _, _, _ = predictor._candidate_heads(
        predictor._resampler.to_isotropic(image), samples.centres_ras[:2].tolist()
    )
    np.testing.assert_allclose(samples.head_logit[:2], head_logits(heads), rtol=1e-5)
    # an excluded finding: its proposals and candidates are left out, not negatives
    fewer = collect_candidate_samples(predictor, image, "phantom", records[:1], excluded=records[1:], jitter=0)
    near = np.linalg.norm(fewer.centres_ras - np.asarray(records[1].center_ras_mm), axis=1)
    assert not (near < records[1].diameter_mm / 2).any()
    assert fewer.prop_labels.sum() < only.prop_labels.sum()
    joined = CandidateSamples.concatenate([samples, fewer])
    assert len(joined) == len(samples) + len(fewer)


def test_fit_then_predict_with_the_classifier(
    vessel_phantom, detecting_net, threshold_net, tmp_path, monkeypatch, capsys
):
    import nibabel as nib

    from lung_nodule_mtl.cli.main import main
    from lung_nodule_mtl.inference import bundle

    image, records = vessel_phantom
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("a", "b"):  # the same phantom twice (a leave-one-scan-out fit needs two scans)
        nib.save(nib.Nifti1Image(image[0].numpy().astype(np.int16), image.affine.numpy()), scans / f"{name}.nii.gz")
    table = tmp_path / "annotations.csv"
    rows = [
        f"{case},{-r.center_ras_mm[0]},{-r.center_ras_mm[1]},{r.center_ras_mm[2]},{r.diameter_mm}"
        for case in ("a", "b")
        for r in records
    ]
    table.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n" + "\n".join(rows) + "\n", encoding="utf-8")
    net = detecting_net()
    weights = tmp_path / "models" / "model.pt"
    weights.parent.mkdir()
    torch.save(net.state_dict(), weights)

    class Parsed:
        def get_parsed_content(self, key: str) -> str:
            return str(weights)

    built: list[dict] = []

    def fake_loader(bundle_dir, overrides):
        built.append(dict(overrides))
        return ScanPredictor(net, patch_size=(32, 32, 32), max_diameter_mm=40.0, device="cpu"), Parsed()

    monkeypatch.setattr(bundle, "load_scan_predictor", fake_loader)
    out = tmp_path / "clf"
    args = ["fit-candidate-classifier", "--scans", str(scans), "--annotations", str(table), "--out", str(out)]
    assert main([*args, "--device", "cpu", "--max-proposals", "5"]) == 0
    assert built == [{"device_name": "cpu", "candidate_classifier": None}]  # its own classifier is never used
    summary = json.loads((out / "candidate_classifier_fit.json").read_text(encoding="utf-8"))
    assert summary["n_scans"] == 2 and summary["weights"] == weights_fingerprint(weights)
    assert summary["n_rows_nodule"] >= 2 * 2 * 3  # both nodules of both scans, each with 2 moved copies
    assert 0 < summary["n_candidates_added"] <= 2 * 5
    assert summary["auc"]["candidates"]["classifier_in_sample"] is not None
    path = out / CLASSIFIER_FILE
    clf = CandidateClassifier.load(path)
    assert clf.fitted_on["weights"] == weights_fingerprint(weights) and clf.max_proposals == 5
    # cached samples: a second fit, on other features, runs no network
    calls = net.calls
    assert main([*args, "--device", "cpu", "--max-proposals", "5", "--features", "geometry"]) == 0
    assert net.calls == calls
    assert CandidateClassifier.load(path).scorer.model.features == list(GEOMETRY_FEATURES)
    # --drop-shifted: the same phantom twice, so no feature tells scan a's background from b's: nothing dropped
    assert main([*args, "--device", "cpu", "--max-proposals", "5", "--drop-shifted", "a"]) == 0
    assert net.calls == calls
    shift = json.loads((out / "candidate_classifier_fit.json").read_text(encoding="utf-8"))["feature_shift"]
    assert shift["reference_cases"] == ["a"] and shift["dropped"] == [] and shift["keep_range"] == [0.35, 0.65]
    assert all(v == 0.5 for v in shift["domain_auc"].values())
    capsys.readouterr()
    for bad in (
        ["--drop-shifted", "a", "b"],
        ["--drop-shifted", "c"],
        ["--drop-shifted", "a", "--keep-range", "0.6", "1"],
    ):
        assert main([*args, "--device", "cpu", *bad]) == 1  # one clear line, before any pass over the scans
        err = capsys.readouterr().err
        assert "fit-candidate-classifier: error: --" in err and ("some, not all" in err or "0.5 <= high" in err)
    assert net.calls == calls
    assert main([*args, "--device", "cpu", "--max-proposals", "5"]) == 0  # back to every feature
    # every proposal kept as a candidate has a mask component at its centre (proposals_need_mask, the default)
    kept = CandidateSamples.load(out / "samples" / "a.candidates.npz")
    check = ScanPredictor(net, patch_size=(32, 32, 32), max_diameter_mm=40.0, device="cpu")
    rows = kept.centres_ras[kept.kinds == "proposal"].tolist()
    if rows:
        _, probs, _, _ = check._candidate_heads(check._resampler.to_isotropic(image), rows)
        assert all(check._centre_component(p.numpy()) is not None for p in probs)

    plain = ScanPredictor(net, patch_size=(32, 32, 32), max_diameter_mm=40.0, device="cpu", detection_threshold=None)
    with_clf = ScanPredictor(
        net,
        patch_size=(32, 32, 32),
        max_diameter_mm=40.0,
        device="cpu",
        detection_threshold=None,
        max_nodules=50,
        candidate_classifier=str(path),
    )
    assert with_clf.settings()["detection_score"] == "candidate classifier"
    assert with_clf.settings()["blob_proposals"] == 5 and plain.settings()["blob_proposals"] == 0
    before, after = plain.predict(image), with_clf.predict(image)
    assert after.counts["candidates_proposed"] <= 5
    assert len(after.nodules) >= len(before.nodules)
    # each reported probability is the classifier's on the candidate's features and the head's logit
    iso = with_clf._resampler.to_isotropic(image)
    centres = [n.center_world_mm_ras for n in after.nodules]
    heads, _, _, _ = with_clf._candidate_heads(iso, centres)
    expected = clf.score(with_clf._candidate_features(iso, iso[0].numpy(), centres), head_logits(heads))
    np.testing.assert_allclose([n.detection_probability for n in after.nodules], expected, atol=2e-3)
    # both nodules found, and ranked above the rest (the fit saw this phantom)
    hits = [
        min(range(len(centres)), key=lambda k: np.linalg.norm(np.asarray(centres[k]) - np.asarray(r.center_ras_mm)))
        for r in records
    ]
    for r, k in zip(records, hits, strict=True):
        assert np.linalg.norm(np.asarray(centres[k]) - np.asarray(r.center_ras_mm)) < r.diameter_mm / 2
    assert sorted(hits) == [0, 1]
    # beside the weights: found for these weights, refused (with a warning) for others
    (weights.parent / CLASSIFIER_FILE).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    assert classifier_beside(weights) == str(weights.parent / CLASSIFIER_FILE)
    other = weights.parent / "other.pt"
    torch.save({"x": torch.ones(1)}, other)
    (other.parent / "x").mkdir()
    with pytest.warns(UserWarning, match="fit-candidate-classifier"):
        assert classifier_beside(other) is None
    assert classifier_beside(None) is None and classifier_beside(tmp_path / "nothing" / "model.pt") is None
    with pytest.raises(ValueError, match="detection head"):
        ScanPredictor(threshold_net(), patch_size=(32, 32, 32), device="cpu", candidate_classifier=str(path))


def test_features_that_tell_the_backgrounds_apart_are_dropped() -> None:
    from lung_nodule_mtl.inference.candidates import _drop_shifted, domain_aucs

    rng = np.random.default_rng(0)
    n = 60
    labels = np.r_[np.ones(10), np.zeros(n - 10)].astype(np.float32)
    cases = np.asarray(["real"] * (n // 2) + ["syn"] * (n // 2))
    features = rng.normal(size=(n, len(CANDIDATE_FEATURES))).astype(np.float32)
    features[cases == "real", 3] += 4.0  # moves with the host
    features[:, 5] += 3.0 * labels  # moves with the nodule only
    head = (rng.normal(size=n) + 6.0 * (cases == "real")).astype(np.float32)
    samples = CandidateSamples(
        prop_features=np.zeros((0, 1), dtype=np.float32),
        prop_labels=np.zeros(0, dtype=np.float32),
        prop_case_ids=np.zeros(0, dtype=np.str_),
        features=features,
        head_logit=head,
        labels=labels,
        kinds=np.asarray(["candidate"] * n),
        case_ids=cases,
        centres_ras=np.zeros((n, 3)),
        diameters_mm=np.full(n, 5.0),
    )
    aucs = domain_aucs(samples, cases == "real")
    assert aucs[CANDIDATE_FEATURES[3]] == 1.0 and aucs["head_logit"] == 1.0
    assert abs(aucs[CANDIDATE_FEATURES[5]] - 0.5) < 0.2
    names = [*CANDIDATE_FEATURES, "head_logit"]
    kept, info = _drop_shifted(samples, names, ["real"], (0.35, 0.65))
    assert CANDIDATE_FEATURES[3] in info["dropped"] and CANDIDATE_FEATURES[3] not in kept
    assert CANDIDATE_FEATURES[5] in kept and "head_logit" in kept  # the head is never dropped
    assert sorted(kept + info["dropped"]) == sorted(names)
    assert _drop_shifted(samples, names, ["real"], (0.0, 1.0))[1]["dropped"] == []
    with pytest.raises(ValueError, match="not among the scans"):
        _drop_shifted(samples, names, ["other"], (0.35, 0.65))
    with pytest.raises(ValueError, match="nothing left"):
        _drop_shifted(samples, [CANDIDATE_FEATURES[3]], ["real"], (0.35, 0.65))
