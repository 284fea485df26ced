"""benchmarks/head_refit_heldout.py on cached samples of three scans whose features carry the answer: leave one scan
out, the refit head separates the held-out nodules that the given head (which ranks them backwards) does not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

from lung_nodule_mtl.inference.head_refit import HEAD_PREFIX, HeadSamples


@pytest.fixture
def bench(load_benchmark) -> Iterator[ModuleType]:
    with load_benchmark("head_refit_heldout") as module:
        yield module


def _scan(case: str, rng: np.random.Generator) -> HeadSamples:
    n_pos, n_neg = 6, 20
    labels = np.r_[np.ones(n_pos), np.zeros(n_neg)].astype(np.float32)
    features = rng.normal(0.0, 0.3, size=(n_pos + n_neg, 8, 4)).astype(np.float32)
    features[:, :, 0] += 2.0 * labels[:, None]  # feature 0 says "nodule"
    return HeadSamples(
        features=features,
        labels=labels,
        case_ids=np.asarray([case] * len(labels)),
        kinds=np.asarray(["annotation"] * n_pos + ["candidate"] * n_neg),
        centres_ras=np.zeros((len(labels), 3)),
        diameters_mm=np.r_[np.full(3, 5.0), np.full(3, 12.0), np.full(n_neg - 2, 4.0), np.full(2, 2.0)],
    )


def test_leave_one_scan_out_scores_both_heads(bench, tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "refit" / "samples").mkdir(parents=True)
    for case in ("a", "b", "c"):
        _scan(case, rng).save(tmp_path / "refit" / "samples" / f"{case}.npz")
    head = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Dropout(0.0), nn.Linear(3, 1))
    with torch.no_grad():  # the given head ranks backwards: more of feature 0, lower score
        head[0].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        head[0].bias.fill_(0.5)
        head[3].weight.copy_(torch.tensor([[-2.0, 2.0, 0.1]]))
        head[3].bias.zero_()
    ckpt = tmp_path / "model.pt"
    torch.save({HEAD_PREFIX + k: v for k, v in head.state_dict().items()} | {"other.weight": torch.ones(2)}, ckpt)
    out = tmp_path / "r.json"
    args = ["--refit-dir", str(tmp_path / "refit"), "--checkpoint", str(ckpt), "--threshold", "0.5", "--out", str(out)]
    assert bench.main([*args, "--epochs", "40", "--lr", "0.02"]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["scans"] == 3 and result["nodule_centres"] == 18 and result["nodule_centres_under_8mm"] == 9
    assert result["non_nodule_candidates"] == 3 * 18  # the 2 mm candidates of each scan are left out
    assert result["released"]["auc_nodules_vs_candidates"] < 0.2
    assert result["refit"]["auc_nodules_vs_candidates"] > 0.95
    assert result["refit"]["auc_under_8mm_vs_candidates"] > 0.95
    assert result["refit"]["non_nodules_at_threshold"] < result["released"]["non_nodules_at_threshold"]
    assert json.loads(capsys.readouterr().out) == result
    (tmp_path / "one" / "samples").mkdir(parents=True)
    _scan("a", rng).save(tmp_path / "one" / "samples" / "a.npz")
    assert bench.main(["--refit-dir", str(tmp_path / "one"), "--checkpoint", str(ckpt)]) == 1
