"""Tried 2026-12-07, not adopted: a pasted nodule's mask from its centred crop analysed at coarser scales.

For every real nodule ``insert-nodules`` pasted into the scans of each set, the crop centred on it (the bundle's
48^3 at 1 mm, one pass, no mirroring) against the same place analysed at 1.5 mm and 2 mm (a 72 / 96 mm cube resized
to 48^3, its mask probability resized back): the Dice of the mask component at the centre (``_centre_component``)
against the pasted nodule's label. A large nodule that the network under-segments at 1 mm looks smaller at 2 mm.

    python benchmarks/results/scan_context_masks_2026-12-07_2cpu/tried_scale_tta/scale_tta.py \
        runs/realhosts/s101 runs/realhosts/s102 runs/realhosts/s103 runs/eval/test_tseg --json scale_tta.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import monai
import numpy as np
import torch
import torch.nn.functional as F

from lung_nodule_mtl.constants import OutputKeys
from lung_nodule_mtl.inference.bundle import load_scan_predictor
from lung_nodule_mtl.io.ct import find_cases, load_ct
from lung_nodule_mtl.transforms import NoduleCenteredCrop

PATCH = 48


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="+", type=Path)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    predictor, _ = load_scan_predictor(overrides={"device_name": "cpu"})
    load = monai.transforms.LoadImage(image_only=True, ensure_channel_first=True)
    to_grid = monai.transforms.ResampleToMatch(mode="nearest")

    def mask_prob(hu: np.ndarray) -> torch.Tensor:
        x = predictor.window(torch.from_numpy(hu[None])).float()[None]
        with torch.inference_mode():
            return torch.sigmoid(predictor.network(x)[str(OutputKeys.MASK)][0, 0].float())

    def at_scale(iso: monai.data.MetaTensor, centre: list[float], factor: float) -> np.ndarray:
        size = int(PATCH * factor)
        big = NoduleCenteredCrop(size)(iso, centre).as_tensor()[None].float()
        prob = mask_prob(F.interpolate(big, size=(PATCH,) * 3, mode="trilinear", align_corners=False)[0, 0].numpy())
        up = F.interpolate(prob[None, None], size=(size,) * 3, mode="trilinear", align_corners=False)[0, 0].numpy()
        o = (size - PATCH) // 2
        return up[o : o + PATCH, o : o + PATCH, o : o + PATCH]

    rows = []
    for folder in args.sets:
        with open(folder / "nodules.csv", newline="") as f:
            table = [r for r in csv.DictReader(f) if r["source"] == "inserted"]
        for image in sorted((folder / "images").glob("*.nii.gz")):
            case = image.name[: -len(".nii.gz")]
            iso = predictor._resampler.to_isotropic(load_ct(find_cases(image)[0]).image)
            labels = to_grid(load(folder / "labels" / image.name), iso)
            for r in (r for r in table if r["seriesuid"] == case):
                centre = json.loads(r["center_ras"])
                lab = NoduleCenteredCrop(PATCH, pad_value=0.0)(labels, centre).as_tensor()[0].numpy()
                if lab[PATCH // 2, PATCH // 2, PATCH // 2] == 0:
                    continue
                truth = lab == lab[PATCH // 2, PATCH // 2, PATCH // 2]
                row = {
                    "set": folder.name,
                    "case": case,
                    "nodule": r["from_case"],
                    "diameter_mm": float(r["diameter_mm"]),
                }
                for name, factor in (("1mm", 1.0), ("1.5mm", 1.5), ("2mm", 2.0)):
                    component = predictor._centre_component(at_scale(iso, centre, factor))
                    row[name] = 0.0 if component is None else round(dice(component, truth), 4)
                print(json.dumps(row), flush=True)
                rows.append(row)
    bins = [(0, 8), (8, 12), (12, 16), (16, 40)]
    summary = {}
    for lo, hi in bins:
        sel = [r for r in rows if lo <= r["diameter_mm"] < hi]
        if sel:
            summary[f"{lo}-{hi} mm"] = {
                "n": len(sel),
                **{k: round(float(np.mean([r[k] for r in sel])), 3) for k in ("1mm", "1.5mm", "2mm")},
            }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
