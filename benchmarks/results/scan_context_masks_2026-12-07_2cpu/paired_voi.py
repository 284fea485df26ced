"""Paired fold-4 VOI figures of two `evaluating` runs: malignancy AUC (benign 0 / malignant 1 nodules) and Dice.

    python benchmarks/results/scan_context_masks_2026-12-07_2cpu/paired_voi.py \
        runs/base/voi_eval/per_nodule.csv runs/e2/voi_eval/per_nodule.csv

Prints each run's AUC, the paired difference with a bootstrap 95% interval over nodules (2000 samples, seed 0), and
the same for the mean Dice over every nodule.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from lung_nodule_mtl.metrics.classification import paired_auc_bootstrap

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/
from same_nodule_two_ways import bootstrap_ci


def load(path: str) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["case_id"]: r for r in csv.DictReader(f)}


def main() -> None:
    base, new = load(sys.argv[1]), load(sys.argv[2])
    ids = [k for k in base if base[k]["malignancy"] in ("0", "1") and k in new]
    auc = paired_auc_bootstrap(
        [float(new[k]["pred_malignancy_prob"]) for k in ids],
        [float(base[k]["pred_malignancy_prob"]) for k in ids],
        [int(base[k]["malignancy"]) for k in ids],
    )
    every = [k for k in base if k in new]
    dice = np.array([float(new[k]["dice"]) - float(base[k]["dice"]) for k in every])
    low, high = bootstrap_ci(dice)
    ci = auc["ci_difference"]
    print(
        f"malignancy AUC ({len(ids)} nodules) {auc['auc_b']:.4f} -> {auc['auc_a']:.4f}, paired "
        f"{auc['difference']:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]; Dice ({len(every)} nodules) "
        f"paired {dice.mean():+.4f} [{low:+.4f}, {high:+.4f}]"
    )


if __name__ == "__main__":
    main()
