"""Which annotated nodules the sliding-window mask makes candidates, for several window grids of the same scans.

``predict`` proposes candidates as the components (>= ``min_diameter_mm``) of its sliding-window mask above
``mask_threshold``; a nodule that is no candidate is missed whatever the detection head says. This benchmark runs
only that stage (no head) with the bundle's settings and, per grid, counts the annotated nodules hit by a candidate
(LUNA16's rule: the candidate's centre inside the nodule's radius) and the candidates:

* ``overlap O``: the whole-volume grid of MONAI's ``SlidingWindowInferer`` at overlap ``O`` (the bundle's grid at
  its ``sw_overlap``);
* ``overlap O, shifted``: the same grid moved by half a window step along every axis (the lung box's first
  ``step / 2`` voxels stay with the unshifted pass);
* ``overlap O, both``: the voxel-wise maximum of the two.

    python benchmarks/candidate_recall.py --images SET/images --annotations SET/annotations.csv \\
        [--overlaps 0.25 0.5] [--shifted] [--out recall.json]

About 15-60 s per scan and grid on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import torch


def _grid(predictor: Any, overlap: float) -> None:
    from monai.inferers import SlidingWindowInferer

    predictor.overlap = float(overlap)
    predictor.inferer = SlidingWindowInferer(
        roi_size=predictor.sw_roi_size,
        sw_batch_size=predictor.sw_batch_size,
        overlap=predictor.overlap,
        mode=predictor.blend_mode,
        sw_device=predictor.device,
        device=torch.device("cpu"),
        cache_roi_weight_map=True,
        with_coord=True,
    )


def main(argv: list[str] | None = None) -> int:
    from lung_nodule_mtl.data.nodule_table import read_nodule_table
    from lung_nodule_mtl.inference.bundle import load_scan_predictor
    from lung_nodule_mtl.inference.head_refit import _inside
    from lung_nodule_mtl.io.ct import find_cases, load_ct
    from lung_nodule_mtl.io.geometry import voxel_to_world

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="scans as predict reads them")
    p.add_argument("--annotations", required=True, help="their nodules (LUNA16 layout, the scans' case ids)")
    p.add_argument("--overlaps", type=float, nargs="+", default=[0.25], help="sliding-window overlaps (0.25)")
    p.add_argument("--shifted", action="store_true", help="also each grid shifted by half a step, and both")
    p.add_argument("--bundle", default=None)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--out", default=None, help="write the counts as JSON here")
    a = p.parse_args(argv)
    overrides: dict[str, Any] = {"device_name": "cpu"}
    if a.checkpoint:
        overrides["ckpt_file"] = a.checkpoint
    predictor, _ = load_scan_predictor(a.bundle, overrides)
    table = read_nodule_table(a.annotations)
    totals: dict[str, dict[str, float]] = {}
    per_scan: list[dict[str, Any]] = []
    n_nodules = 0
    for case in find_cases(a.images):
        iso = predictor._resampler.to_isotropic(load_ct(case).image)
        lungs = predictor._find_lungs(iso[0].numpy())
        box = lungs.box
        nodules = table.get(case.case_id, [])
        n_nodules += len(nodules)
        maps: dict[str, np.ndarray] = {}
        for overlap in a.overlaps:
            _grid(predictor, overlap)
            start = time.perf_counter()
            base = predictor._mask_probability(iso, box, lungs.mask)[0].numpy()
            maps[f"overlap {overlap:g}"] = base
            if a.shifted:
                half = round(predictor.sw_roi_size[0] * (1.0 - overlap) / 2.0)
                sbox = tuple(
                    slice(b.start + half, b.stop) if b.stop - b.start - half >= r else b
                    for b, r in zip(box, predictor.sw_roi_size, strict=True)
                )
                shifted = base.copy()
                off = tuple(s.start - b.start for s, b in zip(sbox, box, strict=True))
                shifted[off[0] :, off[1] :, off[2] :] = predictor._mask_probability(iso, sbox, lungs.mask)[0].numpy()
                maps[f"overlap {overlap:g}, shifted"] = shifted
                maps[f"overlap {overlap:g}, both"] = np.maximum(base, shifted)
            totals.setdefault(f"overlap {overlap:g}", {}).setdefault("seconds", 0.0)
            totals[f"overlap {overlap:g}"]["seconds"] += time.perf_counter() - start
        row: dict[str, Any] = {"case": case.case_id, "nodules": len(nodules)}
        offset = np.asarray([s.start for s in box], dtype=np.float64)
        for name, prob in maps.items():
            if lungs.mask is not None:
                prob = prob * lungs.mask[box]
            _, _, centres = predictor._detect(prob, predictor._voxel_mm3)
            world = np.asarray([voxel_to_world(np.asarray(iso.affine), c + offset) for c in centres]).reshape(-1, 3)
            found = sum(bool(_inside(world, [n], 10.0).any()) for n in nodules)
            entry = totals.setdefault(name, {})
            entry["found"] = entry.get("found", 0) + found
            entry["candidates"] = entry.get("candidates", 0) + len(world)
            row[name] = {"found": found, "candidates": len(world)}
        per_scan.append(row)
        print(json.dumps(row), flush=True)
    result = {"images": a.images, "nodules": n_nodules, "grids": totals, "per_scan": per_scan}
    for name, entry in totals.items():
        if "found" in entry:
            print(f"{name:<24} {int(entry['found'])}/{n_nodules} nodules, {int(entry['candidates'])} candidates")
    if a.out:
        from lung_nodule_mtl.utils.io import atomic_write_json

        atomic_write_json(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
