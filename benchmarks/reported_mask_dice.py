"""Dice of the nodules ``predict`` reports against reference masks, with and without ``crop_masks``.

For each scan of a set (``images/<case>.nii.gz`` and ``labels/<case>.nii.gz``, one label per nodule, as
``insert-nodules`` writes; or ``labels/<case>_<k>.nii.gz``, one mask per nodule, as ``prepare-lidc`` writes), the
bundle's scan predictor (its default operating point) runs twice: the reported masks from the sliding window alone,
and completed by each nodule's centred crop component (bundle 0.6.1's default). Each reported nodule is matched to
the reference nodule it overlaps most; unmatched ones (false positives, or nodules without a reference mask) are
left out. Prints one line per scan and the mean Dice of both, and writes them as JSON with ``--json``.

    python benchmarks/reported_mask_dice.py --set runs/eval/dev --json runs/eval/dev_mask_dice.json
    lung-nodule-mtl prepare-lidc --lidc-root ../shared/data/lidc_idri --out runs/eval/lidc
    python benchmarks/reported_mask_dice.py --set runs/eval/lidc               # LIDC-IDRI-0001 vs the readers
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from lung_nodule_mtl.inference.bundle import load_scan_predictor
from lung_nodule_mtl.io.ct import find_cases, load_ct


def reference(labels: Path, case_id: str) -> np.ndarray:
    """One integer label per reference nodule."""
    single = labels / f"{case_id}.nii.gz"
    if single.is_file():
        return np.asarray(nib.load(single).dataobj).astype(np.int64)
    files = sorted(labels.glob(f"{case_id}_*.nii.gz"))
    if not files:
        raise FileNotFoundError(f"{labels}: no {case_id}.nii.gz or {case_id}_<k>.nii.gz reference mask.")
    out = None
    for k, f in enumerate(files):
        m = np.asarray(nib.load(f).dataobj) > 0
        out = np.zeros(m.shape, np.int64) if out is None else out
        out[m] = k + 1
    assert out is not None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", required=True, type=Path, help="folder with images/ and labels/")
    p.add_argument("--checkpoint", default=None, help="weights (default: the bundle's)")
    p.add_argument("--json", default=None, type=Path, help="write the per-nodule rows and the means here")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    overrides = {"device_name": "cpu"} | ({"ckpt_file": args.checkpoint} if args.checkpoint else {})
    predictor, _ = load_scan_predictor(None, overrides)
    rows = []
    for case in find_cases(args.set / "images"):
        volume = load_ct(case)
        truth = reference(args.set / "labels", case.case_id)
        for crop_masks in (False, True):
            predictor.crop_masks = crop_masks
            result = predictor.predict(volume.image)
            labels = np.asarray(result.labels)
            for nodule in result.nodules:
                mine = labels == nodule.label
                overlap = np.bincount(truth[mine].ravel(), minlength=int(truth.max()) + 1)
                overlap[0] = 0
                if overlap.max() == 0:
                    continue
                ref = truth == int(overlap.argmax())
                dice = 2.0 * float((mine & ref).sum()) / float(mine.sum() + ref.sum())
                rows.append({"case_id": case.case_id, "reference": int(overlap.argmax()), "crop_masks": crop_masks,
                             "dice": round(dice, 4), "diameter_mm": nodule.diameter_mm})  # fmt: skip
        print(case.case_id, [r for r in rows if r["case_id"] == case.case_id], flush=True)
    means = {}
    for crop_masks in (False, True):
        d = [r["dice"] for r in rows if r["crop_masks"] == crop_masks]
        means[str(crop_masks).lower()] = {"n": len(d), "mean_dice": float(np.mean(d)) if d else None}
        print(f"crop_masks {crop_masks}: {len(d)} reported nodules matched, mean Dice {means[str(crop_masks).lower()]}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps({"set": str(args.set), "rows": rows, "mean": means}, indent=1) + "\n")
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
