"""benchmarks/candidate_domain_shift.py on cached samples of three scans, one of them a real host whose background
moves one feature: that feature comes first with a domain AUC near 1, the nodule feature stays near 0.5, and a
classifier that reads the moved feature puts more of the real host's non-nodules above its threshold."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType

import numpy as np
import pytest

from lung_nodule_mtl.inference.candidates import (
    CANDIDATE_FEATURES,
    HEAD_LOGIT,
    PROPOSAL_FEATURES,
    CandidateClassifier,
    CandidateSamples,
    _Model,
)

NODULE, SHIFTED = CANDIDATE_FEATURES[0], CANDIDATE_FEATURES[1]


@pytest.fixture
def bench(load_benchmark) -> Iterator[ModuleType]:
    with load_benchmark("candidate_domain_shift") as module:
        yield module


def _scan(case: str, rng: np.random.Generator, real: bool) -> CandidateSamples:
    n_pos, n_neg = 6, 30
    labels = np.r_[np.ones(n_pos), np.zeros(n_neg)].astype(np.float32)
    features = rng.normal(0.0, 0.3, size=(len(labels), len(CANDIDATE_FEATURES))).astype(np.float32)
    features[:, 0] += 2.0 * labels  # says "nodule" in every host
    features[:, 1] += 1.5 * labels  # says "nodule" in synthetic hosts ...
    if real:
        features[n_pos:, 1] += 3.0  # ... but a real background has more of it
    empty = np.zeros((0, 1), dtype=np.float32)
    return CandidateSamples(
        prop_features=empty,
        prop_labels=np.zeros(0, dtype=np.float32),
        prop_case_ids=np.zeros(0, dtype=np.str_),
        features=features,
        head_logit=rng.normal(size=len(labels)).astype(np.float32),
        labels=labels,
        kinds=np.asarray(["annotation"] * n_pos + ["candidate"] * n_neg),
        case_ids=np.asarray([case] * len(labels)),
        centres_ras=np.zeros((len(labels), 3)),
        diameters_mm=np.full(len(labels), 6.0),
    )


def test_the_shifted_feature_is_named_and_the_classifier_pays_for_it(bench, tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    samples = tmp_path / "fit" / "samples"
    samples.mkdir(parents=True)
    scans = {case: _scan(case, rng, real=case == "ct_real") for case in ("syn_a", "syn_b", "ct_real")}
    for case, s in scans.items():
        s.save(samples / f"{case}.candidates.npz")
    (samples / "syn_a.proposals.npz").write_bytes(b"not read")  # only the candidate rows are
    synthetic = CandidateSamples.concatenate([scans["syn_a"], scans["syn_b"]])
    x = rng.normal(size=(20, len(PROPOSAL_FEATURES)))
    proposal = _Model.fit(x, (x[:, 0] > 0).astype(float), PROPOSAL_FEATURES, 1e-2)
    paths = {}
    for name, cols in (("shifted", [0, 1]), ("steady", [0])):
        names = [CANDIDATE_FEATURES[c] for c in cols]
        scorer = _Model.fit(synthetic.features[:, cols], synthetic.labels, names, 1e-2)
        paths[name] = tmp_path / f"{name}.json"
        CandidateClassifier(proposal, scorer, 0, 5.0).save(paths[name])
    out = tmp_path / "shift.json"
    args = ["--samples", str(samples), "--real", "ct_real", "--out", str(out)]
    args += ["--classifier", f"{paths['shifted']}:0.5", "--classifier", f"{paths['steady']}:0.5"]
    assert bench.main(args) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["rows"]["synthetic_hosts"] == {"cases": 2, "nodule": 12, "non_nodule": 60}
    assert result["rows"]["real_hosts"] == {"cases": ["ct_real"], "nodule": 6, "non_nodule": 30}
    ranked = result["features_by_domain_shift"]
    assert next(iter(ranked)) == SHIFTED and ranked[SHIFTED]["domain_auc"] > 0.95
    assert abs(ranked[NODULE]["domain_auc"] - 0.5) < 0.25 and ranked[NODULE]["nodule_auc"] > 0.95
    assert set(ranked) == {*CANDIDATE_FEATURES, HEAD_LOGIT}
    shifted, steady = (result["classifiers"][str(paths[k])] for k in ("shifted", "steady"))
    assert shifted["features"] == 2 and shifted["threshold"] == 0.5
    real_fp = [int(c["real_non_nodules_at_threshold"].split("/")[0]) for c in (shifted, steady)]
    assert shifted["real_non_nodules_at_threshold"].endswith("/30")
    assert real_fp[0] > 20 and real_fp[1] < 5
    assert shifted["real_nodule_auc"] < steady["real_nodule_auc"]
    assert "most shifted features" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no samples of"):
        bench.main(["--samples", str(samples), "--real", "ct_other"])
    with pytest.raises(SystemExit, match=r"no <case>\.candidates\.npz"):
        bench.main(["--samples", str(tmp_path)])


def test_where_the_candidates_lie_and_dropped_cases(bench, tmp_path) -> None:
    """--images: each non-nodule candidate's distance to the lungs' surface on a phantom with two air boxes in soft
    tissue; --drop leaves a cached case out."""
    import nibabel as nib

    rng = np.random.default_rng(1)
    hu = np.zeros((64, 64, 64), dtype=np.int16)  # 2 mm voxels: a 128 mm cube of soft tissue
    hu[8:30, 12:52, 12:52] = -850  # two lungs, 44 x 80 x 80 mm each
    hu[34:56, 12:52, 12:52] = -850
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    images = tmp_path / "images"
    images.mkdir()
    samples = tmp_path / "samples"
    samples.mkdir()
    deep, wall = [19 * 2.0, 32 * 2.0, 32 * 2.0], [8 * 2.0, 32 * 2.0, 32 * 2.0]  # RAS mm: a lung's middle, its edge
    for case, centre in (("syn", deep), ("ct_real", wall)):
        nib.save(nib.Nifti1Image(hu, affine), images / f"{case}.nii.gz")
        s = _scan(case, rng, real=case == "ct_real")
        s.centres_ras[:] = centre
        s.save(samples / f"{case}.candidates.npz")
    _scan("other", rng, real=False).save(samples / "other.candidates.npz")
    out = tmp_path / "r.json"
    args = ["--samples", str(samples), "--real", "ct_real", "--images", str(images), "--out", str(out)]
    assert bench.main([*args, "--drop", "other"]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["rows"]["synthetic_hosts"]["cases"] == 1  # "other" left out
    walls = result["non_nodules_to_lung_surface"]
    assert walls["synthetic"]["n"] == 30 and walls["real"]["n"] == 30
    assert 15.0 <= walls["synthetic"]["median_mm"] <= 25.0 and walls["synthetic"]["within_3mm"] == 0.0
    assert walls["real"]["median_mm"] <= 3.0 and walls["real"]["within_3mm"] == 1.0
    assert bench.main(args) == 0  # "other" has no scan under --images: its rows count, without a distance
    result = json.loads(out.read_text(encoding="utf-8"))
    assert (
        result["rows"]["synthetic_hosts"]["cases"] == 2
        and result["non_nodules_to_lung_surface"]["synthetic"]["n"] == 30
    )
