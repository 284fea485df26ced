"""Paired fold-4 VOI figures of two `evaluating` runs: malignancy AUC (benign 0 / malignant 1 nodules) and Dice.

    python benchmarks/results/scan_context_masks_2026-12-07_2cpu/paired_voi.py \
        runs/base/voi_eval/per_nodule.csv runs/e2/voi_eval/per_nodule.csv

Prints each run's AUC, the paired difference with a bootstrap 95% interval over nodules (2000 samples, seed 0), and
the same for the mean Dice over every nodule.
"""

from __future__ import annotations

import csv
import sys

import numpy as np


def auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


def load(path: str) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["case_id"]: r for r in csv.DictReader(f)}


def main() -> None:
    base, new = load(sys.argv[1]), load(sys.argv[2])
    ids = [k for k in base if base[k]["malignancy"] in ("0", "1") and k in new]
    y = np.array([int(base[k]["malignancy"]) for k in ids])
    a = np.array([float(base[k]["pred_malignancy_prob"]) for k in ids])
    b = np.array([float(new[k]["pred_malignancy_prob"]) for k in ids])
    every = [k for k in base if k in new]
    dice = np.array([float(new[k]["dice"]) - float(base[k]["dice"]) for k in every])
    rng = np.random.default_rng(0)
    auc_diffs, dice_diffs = [], []
    for _ in range(2000):
        i = rng.integers(0, len(ids), len(ids))
        if len(set(y[i])) == 2:
            auc_diffs.append(auc(y[i], b[i]) - auc(y[i], a[i]))
        dice_diffs.append(dice[rng.integers(0, len(dice), len(dice))].mean())
    print(
        f"malignancy AUC ({len(ids)} nodules) {auc(y, a):.4f} -> {auc(y, b):.4f}, paired {np.mean(auc_diffs):+.4f} "
        f"[{np.percentile(auc_diffs, 2.5):+.4f}, {np.percentile(auc_diffs, 97.5):+.4f}]; Dice ({len(every)} nodules) "
        f"paired {dice.mean():+.4f} [{np.percentile(dice_diffs, 2.5):+.4f}, {np.percentile(dice_diffs, 97.5):+.4f}]"
    )


if __name__ == "__main__":
    main()
