"""What refitting the detection head buys on scans it did not see: leave one scan out over the samples that
``lung-nodule-mtl refit-detection-head`` cached (``OUT/samples/<case>.npz``).

For each scan, the head is refitted (:func:`lung_nodule_mtl.inference.head_refit.fit_detection_head`, the command's
defaults) on the other scans' samples and both heads, the released one and the refit one, score the held-out scan's
crops as ``predict`` does (:func:`~lung_nodule_mtl.inference.head_refit.head_scores`). Reported over all held-out
crops: the AUC of nodule crops against the candidates that are not nodules, the same for nodules under 8 mm only,
the mean probability at nodule centres (under 8 mm / from 8 mm) and of the non-nodule candidates, and the share of
non-nodule candidates at or above the bundle's detection threshold. Candidates below ``--min-diameter-mm`` (predict's
3 mm) are left out of the scores, as ``predict`` never scores them.

    lung-nodule-mtl refit-detection-head --scans SCANS --annotations annotations.csv --out refit/
    python benchmarks/head_refit_heldout.py --refit-dir refit/ [--checkpoint bundle/models/model.pt] [--out r.json]

Seconds on 2 CPU cores once the samples exist.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _head(checkpoint: str, width: int) -> nn.Module:
    from lung_nodule_mtl.inference.head_refit import HEAD_PREFIX

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    head_state = {k[len(HEAD_PREFIX) :]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    hidden = int(head_state["0.weight"].shape[0])
    head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(0.0), nn.Linear(hidden, 1))
    head.load_state_dict(head_state)
    return head.eval()


def _auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    from lung_nodule_mtl.metrics.classification import rank_auc

    auc = rank_auc(np.concatenate([pos, neg]), np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]))
    return None if np.isnan(auc) else auc


def main(argv: list[str] | None = None) -> int:
    from lung_nodule_mtl.inference.head_refit import HeadSamples, fit_detection_head, head_scores

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--refit-dir", required=True, help="the output folder of refit-detection-head (its samples/)")
    p.add_argument("--checkpoint", default="bundle/models/model.pt", help="the weights whose head was refitted")
    p.add_argument(
        "--threshold", type=float, default=None, help="detection threshold (default: the bundle's for the head alone)"
    )
    p.add_argument("--min-diameter-mm", type=float, default=3.0, help="predict's smallest candidate (default: 3)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    a = p.parse_args(argv)
    if a.threshold is None:
        import yaml

        bundle = Path(__file__).resolve().parents[1] / "bundle" / "configs" / "scan_inference.yaml"
        a.threshold = float(yaml.safe_load(bundle.read_text(encoding="utf-8"))["detection_threshold_head"])
    files = sorted((Path(a.refit_dir) / "samples").glob("*.npz"))
    if len(files) < 2:
        print(f"{a.refit_dir}/samples: need the samples of 2 or more scans, found {len(files)}", file=sys.stderr)
        return 1
    scans = {f.stem: HeadSamples.load(f) for f in files}
    width = int(next(iter(scans.values())).features.shape[-1])
    before, after, labels, diam, kinds = [], [], [], [], []
    for case, held in scans.items():
        train = HeadSamples.concatenate([s for c, s in scans.items() if c != case])
        refit, _ = fit_detection_head(
            _head(a.checkpoint, width), train, epochs=a.epochs, learning_rate=a.lr, weight_decay=a.weight_decay
        )
        keep = (held.kinds == "annotation") | (held.diameters_mm >= a.min_diameter_mm)
        before.append(head_scores(_head(a.checkpoint, width), held.features)[keep])
        after.append(head_scores(refit, held.features)[keep])
        labels.append(held.labels[keep])
        diam.append(held.diameters_mm[keep])
        kinds.append(held.kinds[keep])
    b, r, y, d, k = (np.concatenate(x) for x in (before, after, labels, diam, kinds))
    centre = k == "annotation"
    small, large, neg = centre & (d < 8.0), centre & (d >= 8.0), y < 0.5
    result: dict = {"scans": len(scans), "threshold": a.threshold, "nodule_centres": int(centre.sum())}
    result["non_nodule_candidates"] = int(neg.sum())
    result["nodule_centres_under_8mm"] = int(small.sum())
    for name, s in (("released", b), ("refit", r)):
        result[name] = {
            "auc_nodules_vs_candidates": _auc(s[y > 0.5], s[neg]),
            "auc_under_8mm_vs_candidates": _auc(s[small], s[neg]),
            "mean_probability_centres_under_8mm": float(s[small].mean()) if small.any() else None,
            "mean_probability_centres_from_8mm": float(s[large].mean()) if large.any() else None,
            "mean_probability_non_nodules": float(s[neg].mean()),
            "non_nodules_at_threshold": float((s[neg] >= a.threshold).mean()),
            "centres_under_8mm_at_threshold": float((s[small] >= a.threshold).mean()) if small.any() else None,
        }
    print(json.dumps(result, indent=2))
    if a.out:
        from lung_nodule_mtl.utils.io import atomic_write_json

        atomic_write_json(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
