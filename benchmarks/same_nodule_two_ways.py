"""The same real nodules seen two ways: Dice of the mask from their VOI crop against Dice in a whole scan.

Issue 14's measure of the air-padding shortcut, on every pasted real nodule of a test set instead of one nodule: a
network that learnt "a blob between two slabs of air" segments a nodule in its padded VOI crop and loses it in a
scan. For each real nodule that ``insert-nodules`` pasted into the scans of ``--set`` (its ``nodules.csv`` names the
VOI it came from) and each nodule of a ``prepare-lidc`` output (matched to the VOI of the same patient with the
nearest diameter), the bundle's scan predictor analyses the scan at the nodule's centre (``predict --nodules``: the
mask component of the crop centred on it, mirrored as the bundle's ``mirror_tta``) and the Dice against the
reference mask is set beside the VOI's Dice from ``evaluating``'s ``per_nodule.csv`` for the same weights.

    python -m monai.bundle run evaluating ... --ckpt_file W --output_dir runs/voi_eval     # per_nodule.csv
    python benchmarks/same_nodule_two_ways.py --set runs/eval/test_syn --set runs/eval/lidc \
        --voi-table runs/voi_eval/per_nodule.csv [--checkpoint W] [--set-config network_def#heads=EXPR] \
        [--json runs/two_ways.json]

Prints one line per nodule and the paired means (VOI, scan, scan - VOI with a bootstrap interval over nodules, and
how many nodules the scan mask misses: Dice < 0.1). LIDC-IDRI (CC BY 3.0): Armato SG III et al., Medical Physics
38:915-931, 2011, doi:10.7937/K9/TCIA.2015.LO9QL9SX.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lung_nodule_mtl.inference.bundle import load_scan_predictor
from lung_nodule_mtl.io.ct import find_cases, load_ct

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reported_mask_dice import reference  # one integer label per reference nodule of a scan

MISSED_DICE = 0.1


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def nodules_of_set(folder: Path, voi: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The set's real nodules: case, centre (RAS mm), diameter and the row of the VOI it came from."""
    table = _rows(folder / "nodules.csv")
    by_case = {r["case_id"]: r for r in voi}
    out: list[dict[str, Any]] = []
    if table and "from_case" in table[0]:  # insert-nodules: the pasted real nodules
        for r in table:
            if r.get("source") != "inserted" or r["from_case"] not in by_case:
                continue
            out.append({"case": r["seriesuid"], "centre": json.loads(r["center_ras"]), "voi": by_case[r["from_case"]],
                        "diameter_mm": float(r["diameter_mm"])})  # fmt: skip
    else:  # prepare-lidc: the nodules in its datalist, each its own consensus mask
        for r in table:
            if r.get("in_datalist") != "True":
                continue
            same = [v for v in voi if v["patient_id"] == r["patient_id"]]
            if not same:
                continue
            d = float(r["diameter_mm"])
            match = min(same, key=lambda v: abs(float(v["diameter_mm"]) - d))
            out.append({"case": r["scan_id"], "centre": [float(r[f"center_ras_{a}"]) for a in "xyz"], "voi": match,
                        "diameter_mm": d})  # fmt: skip
    return out


def reference_mask(labels: np.ndarray, centre: list[float], affine: np.ndarray) -> np.ndarray | None:
    """The reference mask of the nodule at ``centre`` (RAS mm) in a scan's label map (:func:`reference`): the label
    under its centre, else the commonest label within 2 voxels; ``None`` where there is none."""
    v = np.round((np.linalg.inv(affine) @ np.r_[centre, 1.0])[:3]).astype(int)
    box = tuple(slice(max(c - 2, 0), c + 3) for c in v)
    values = labels[box][labels[box] > 0]
    if values.size == 0:
        return None
    return labels == np.bincount(values.astype(np.int64)).argmax()


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return round(float(np.mean([r[key] for r in rows])), 4)


def bootstrap_ci(x: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [float(x[rng.integers(0, len(x), len(x))].mean()) for _ in range(n)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", action="append", required=True, type=Path, help="insert-nodules or prepare-lidc output")
    p.add_argument("--voi-table", required=True, type=Path, help="evaluating's per_nodule.csv for the same weights")
    p.add_argument("--checkpoint", default=None, help="weights (default: the bundle's)")
    p.add_argument("--set-config", action="append", default=[], metavar="ID=VALUE",
                   help="a bundle config override, e.g. \"network_def#heads=$list(lung_nodule_mtl.networks."
                        "DEFAULT_HEADS)\" for weights without the detection head")  # fmt: skip
    p.add_argument("--json", default=None, type=Path, help="write the rows and the summary here")
    args = p.parse_args(argv)
    overrides: dict[str, Any] = {"device_name": "cpu"} | ({"ckpt_file": args.checkpoint} if args.checkpoint else {})
    for item in args.set_config:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set-config {item!r}: expected ID=VALUE")
        overrides[key] = value
    torch.set_num_threads(max(1, torch.get_num_threads()))
    predictor, _ = load_scan_predictor(None, overrides)
    voi = _rows(args.voi_table)
    rows = []
    for folder in args.set:
        nodules = nodules_of_set(folder, voi)
        for case in find_cases(folder / "images"):
            mine = [n for n in nodules if n["case"] == case.case_id]
            if not mine:
                continue
            volume = load_ct(case)
            result = predictor.predict(volume.image, [n["centre"] for n in mine])
            labels = np.asarray(result.labels)
            truth = reference(folder / "labels", case.case_id)
            for k, n in enumerate(mine):
                ref = reference_mask(truth, n["centre"], np.asarray(volume.image.affine))
                if ref is None:
                    continue
                pred = labels == k + 1
                dice = 2.0 * float((pred & ref).sum()) / max(float(pred.sum() + ref.sum()), 1.0)
                row = {"set": folder.name, "case_id": case.case_id, "voi": n["voi"]["case_id"],
                       "diameter_mm": round(n["diameter_mm"], 2), "voi_dice": round(float(n["voi"]["dice"]), 4),
                       "scan_dice": round(dice, 4)}  # fmt: skip
                rows.append(row)
                print(row, flush=True)
    if not rows:
        print("no nodule of the sets has a row in the VOI table", file=sys.stderr)
        return 1
    v = np.asarray([r["voi_dice"] for r in rows])
    s = np.asarray([r["scan_dice"] for r in rows])
    summary = {
        "n": len(rows),
        "voi_dice": round(float(v.mean()), 4),
        "scan_dice": round(float(s.mean()), 4),
        "scan_minus_voi": round(float((s - v).mean()), 4),
        "scan_minus_voi_ci95": [round(x, 4) for x in bootstrap_ci(s - v)],
        f"missed_in_scan_dice_below_{MISSED_DICE}": int((s < MISSED_DICE).sum()),
        f"missed_in_voi_dice_below_{MISSED_DICE}": int((v < MISSED_DICE).sum()),
        "per_set": {
            name: {"n": len(sub), "voi_dice": _mean(sub, "voi_dice"), "scan_dice": _mean(sub, "scan_dice")}
            for name in dict.fromkeys(r["set"] for r in rows)
            for sub in [[r for r in rows if r["set"] == name]]
        },
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sets": [str(s) for s in args.set], "rows": rows, "summary": summary}, indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
