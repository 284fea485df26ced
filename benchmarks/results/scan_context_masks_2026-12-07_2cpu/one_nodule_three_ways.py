"""One real nodule in three surroundings: its VOI, its mask's voxels alone in air, pasted into a real CT.

The crop centred on the nodule (the bundle's 48^3 at 1 mm, one pass, no mirroring) and the Dice of the network's
mask (probability > 0.5) against the nodule's mask in that crop, with the detection head's probability:

    python benchmarks/results/scan_context_masks_2026-12-07_2cpu/one_nodule_three_ways.py \
        --voi ../shared/data/lidc_vois --case LIDC-IDRI-0466_R_2 --set runs/eval/test_tseg [--checkpoint W]

``--set``: an ``insert-nodules`` output that pasted the case (its ``nodules.csv`` names it in ``from_case``).
LIDC-IDRI (CC BY 3.0): Armato SG III et al., Medical Physics 38:915-931, 2011, doi:10.7937/K9/TCIA.2015.LO9QL9SX.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import monai
import numpy as np
import torch

from lung_nodule_mtl.constants import AIR_HU, OutputKeys
from lung_nodule_mtl.inference.bundle import load_scan_predictor
from lung_nodule_mtl.io.ct import find_cases, load_ct


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voi", type=Path, required=True, help="folder with image/ and nodule_mask/ (lidc_vois)")
    p.add_argument("--case", required=True)
    p.add_argument("--set", type=Path, required=True)
    p.add_argument("--checkpoint", default=None)
    args = p.parse_args()
    overrides = {"device_name": "cpu", **({"ckpt_file": args.checkpoint} if args.checkpoint else {})}
    predictor, _ = load_scan_predictor(overrides=overrides)
    load = monai.transforms.LoadImage(image_only=True, ensure_channel_first=True)
    to_grid = monai.transforms.ResampleToMatch(mode="nearest")

    def run(hu: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        x = predictor.window(torch.from_numpy(hu[None].astype(np.float32))).float()[None]
        with torch.inference_mode():
            out = predictor.network(x)
        mask = torch.sigmoid(out[str(OutputKeys.MASK)][0, 0].float()).numpy() > 0.5
        dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
        return {"dice": round(float(dice), 3), "detection": round(float(torch.sigmoid(out["nodule"][0, 0])), 3)}

    def crops(image: monai.data.MetaTensor, label: monai.data.MetaTensor, centre: list[float] | None):
        iso = predictor._resampler.to_isotropic(image)
        lab = to_grid(label, iso)
        if centre is None:  # the VOI: the centre of its mask
            com = np.argwhere(lab[0].numpy() > 0).mean(axis=0)
            centre = list((np.asarray(iso.affine) @ np.r_[com, 1])[:3])
        hu = predictor._crop(iso, centre).as_tensor()[0].numpy()
        lab_crop = predictor._crop(lab, centre).as_tensor()[0].numpy()
        middle = tuple(s // 2 for s in lab_crop.shape)
        return hu, (lab_crop == lab_crop[middle]) if lab_crop[middle] > 0 else lab_crop > 0

    voi_hu, voi_truth = crops(
        load(args.voi / "image" / f"{args.case}.nii.gz"), load(args.voi / "nodule_mask" / f"{args.case}.nii.gz"), None
    )
    with open(args.set / "nodules.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r.get("from_case") == args.case)
    image = args.set / "images" / f"{row['seriesuid']}.nii.gz"
    scan_hu, scan_truth = crops(
        load_ct(find_cases(image)[0]).image, load(args.set / "labels" / image.name), json.loads(row["center_ras"])
    )
    result = {
        "voi_crop": run(voi_hu, voi_truth),
        "voi_mask_voxels_in_air": run(np.where(voi_truth, voi_hu, AIR_HU), voi_truth),
        f"pasted_into_{row['seriesuid']}": run(scan_hu, scan_truth),
        "nodule_voxels_1mm": int(voi_truth.sum()),
        "diameter_mm": float(row["diameter_mm"]),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
