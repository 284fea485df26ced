"""How much of each pasted nodule its host hides, and what a detector found of the visible and the hidden ones.

``insert-nodules`` blends a real nodule into a host scan as ``max(nodule, host)``: where the host is denser than
the nodule (a vessel, the pleura, the chest wall, the mediastinum) the host shows and the nodule is invisible, while
its label still claims those voxels. Before 2026-12-07 a juxta-vascular / juxta-pleural nodule was **centred** on a
dense voxel, so a nodule placed at the pleura lay half in the chest wall (:func:`~lung_nodule_mtl.data.insertion.
nodule_place` now moves it off by its radius). This script measures that on a set made either way:

* per inserted nodule, its ``dense_overlap``: the share of its mask on host voxels >= -300 HU (the host resampled
  to the set's grid exactly as ``insert-nodules`` does; a set made since the fix has it in ``nodules.csv`` too);
* with ``--predictions`` (``predict --threshold 0 --max-nodules 50`` on the set's images): each nodule's best score
  by LUNA16's hit rule, whether it was ever a candidate and whether it is reported at ``--threshold``, summed for
  the visible (overlap <= ``--max-overlap``) and the hidden nodules;
* with ``--out``: ``annotations_visible.csv`` (the host's own nodules and the visible inserted ones) and
  ``annotations_hidden.csv`` (the hidden ones), for ``evaluate-froc --annotations annotations_visible.csv --excluded
  annotations_hidden.csv``: the FROC with the hidden nodules neither found nor missed.

    python benchmarks/inserted_visibility.py set --set runs/eval/dev --hosts runs/eval/dev_hosts/images \\
        --predictions runs/eval/0.6.1/pred_dev --threshold 0.78 --out runs/vis/dev [--json dev.json]

``places`` measures the same for the **training** windows of ``train_scans.yaml`` (``RandScanWindowsd`` pastes with
the same two kinds of place): bank nodules of ``--folds`` drawn at random places of each host, the dense overlap
where the nodule lands the old way (centred on the sampled voxel) and the new way (:func:`~lung_nodule_mtl.data.
insertion.nodule_place`, before its rejection):

    python benchmarks/inserted_visibility.py places --hosts ../shared/data/lidc_idri/LIDC-IDRI-0001 \\
        --nodules runs/eval/lidc_vois/datalist.json --folds 0 1 2 3 [--draws 300] [--json places.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from lung_nodule_mtl.utils.io import atomic_write_csv, atomic_write_json

LUNA16_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]


def _inserted(set_dir: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    with (set_dir / "nodules.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            row["center"] = [float(v) for v in json.loads(row["center_ras"])]
            out.setdefault(row["seriesuid"], []).append(row)
    return out


def overlaps(set_dir: Path, hosts: list[str]) -> list[dict[str, Any]]:
    """Per inserted nodule of the set: case, diameter, placement, centre (RAS mm) and its host ``dense_overlap``."""
    import nibabel as nib
    from scipy import ndimage

    from lung_nodule_mtl.data.insertion import DENSE_OVERLAP_HU
    from lung_nodule_mtl.io import find_cases, load_ct
    from lung_nodule_mtl.transforms.chains import AXIS_LABELS, ORIENTATION
    from lung_nodule_mtl.transforms.resample import IsotropicResampler

    table = _inserted(set_dir)
    cases = {c.case_id: c for h in hosts for c in find_cases(h)}
    rows = []
    for case_id, records in sorted(table.items()):
        mine = [r for r in records if r["source"] == "inserted"]
        if not mine:
            continue
        if case_id not in cases:
            raise ValueError(f"{set_dir}: case {case_id!r} is not among the hosts {hosts}.")
        label_img = nib.load(set_dir / "labels" / f"{case_id}.nii.gz")
        labels = np.asarray(label_img.dataobj)
        spacing = [float(z) for z in label_img.header.get_zooms()[:3]]
        host = IsotropicResampler(spacing, ORIENTATION, AXIS_LABELS).to_isotropic(load_ct(cases[case_id]).image)
        hu = host[0].numpy()
        if hu.shape != labels.shape or not np.allclose(np.asarray(host.affine), label_img.affine, atol=1e-3):
            raise ValueError(f"{set_dir}/labels/{case_id}.nii.gz: its grid is not the host's resampled grid.")
        inv = np.linalg.inv(label_img.affine)
        for r in mine:
            voxel = np.round(inv[:3, :3] @ np.asarray(r["center"]) + inv[:3, 3]).astype(int)
            voxel = np.clip(voxel, 0, np.asarray(labels.shape) - 1)
            value = int(labels[tuple(voxel)])
            if value == 0:  # a concave mask's centre of mass outside it: the nearest labelled voxel
                _, nearest = ndimage.distance_transform_edt(labels == 0, return_indices=True)
                value = int(labels[tuple(nearest[:, voxel[0], voxel[1], voxel[2]])])
            mask = labels == value
            rows.append(
                {
                    "case": case_id,
                    "diameter_mm": float(r["diameter_mm"]),
                    "placement": r["placement"],
                    "center_ras": r["center"],
                    "dense_overlap": round(float((hu[mask] >= DENSE_OVERLAP_HU).mean()), 4),
                }
            )
    return rows


def add_hits(rows: list[dict[str, Any]], predictions: Path, threshold: float) -> None:
    """Each row's best score among the predictions inside its radius (LUNA16's rule) and whether it is reported."""
    from lung_nodule_mtl.data.nodule_table import read_nodule_table
    from lung_nodule_mtl.metrics.froc import PREDICTIONS_SUMMARY

    preds = read_nodule_table(predictions / PREDICTIONS_SUMMARY)
    for r in rows:
        centre = np.asarray(r["center_ras"])
        scores = [
            float(c.probability)
            for c in preds.get(r["case"], [])
            if c.probability is not None and np.linalg.norm(np.asarray(c.center_ras_mm) - centre) < r["diameter_mm"] / 2
        ]
        r["best_score"] = max(scores) if scores else None
        r["reported"] = bool(scores) and max(scores) >= threshold


def summary(rows: list[dict[str, Any]], max_overlap: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, part in (
        ("visible", [r for r in rows if r["dense_overlap"] <= max_overlap]),
        ("hidden", [r for r in rows if r["dense_overlap"] > max_overlap]),
    ):
        s: dict[str, Any] = {"n": len(part), "juxta_dense": sum(r["placement"] == "juxta_dense" for r in part)}
        if part and "best_score" in part[0]:
            s["ever_a_candidate"] = sum(r["best_score"] is not None for r in part)
            s["reported"] = sum(bool(r["reported"]) for r in part)
        out[name] = s
    return out


def write_tables(set_dir: Path, rows: list[dict[str, Any]], max_overlap: float, out: Path) -> None:
    """``annotations_visible.csv`` (the set's annotations less the hidden nodules) and ``annotations_hidden.csv``."""
    from lung_nodule_mtl.constants import lps_to_ras

    hidden = [np.asarray(r["center_ras"]) for r in rows if r["dense_overlap"] > max_overlap]
    visible_rows, hidden_rows = [], []
    with (set_dir / "annotations.csv").open(newline="", encoding="utf-8") as f:
        for a in csv.DictReader(f):
            ras = np.asarray(lps_to_ras([float(a[k]) for k in ("coordX", "coordY", "coordZ")]))
            is_hidden = any(np.linalg.norm(ras - h) < 0.01 for h in hidden)
            (hidden_rows if is_hidden else visible_rows).append({k: a[k] for k in LUNA16_COLUMNS})
    if len(hidden_rows) != len(hidden):
        raise ValueError(f"{set_dir}/annotations.csv: {len(hidden)} hidden nodules, {len(hidden_rows)} rows found.")
    atomic_write_csv(visible_rows, out / "annotations_visible.csv", LUNA16_COLUMNS)
    atomic_write_csv(hidden_rows, out / "annotations_hidden.csv", LUNA16_COLUMNS)


def places(hosts: list[str], datalist: Path, folds: list[int], draws: int, seed: int) -> dict[str, Any]:
    """Per host and kind of place: the share of bank nodules with more than 15 % / 50 % of their mask on dense host
    voxels, and the median overlap, centred on the sampled voxel (before 2026-12-07) and placed by
    :func:`~lung_nodule_mtl.data.insertion.nodule_place` (now; before it rejects)."""
    from lung_nodule_mtl.data import load_datalist
    from lung_nodule_mtl.data.insertion import (
        DEFAULT_MAX_DENSE_OVERLAP,
        NoduleBank,
        dense_overlap,
        nodule_place,
        random_orientation,
        sampling_points,
    )
    from lung_nodule_mtl.io import find_cases, load_ct
    from lung_nodule_mtl.transforms.chains import AXIS_LABELS, ORIENTATION
    from lung_nodule_mtl.transforms.lung import lung_mask
    from lung_nodule_mtl.transforms.resample import IsotropicResampler

    items = [i for i in load_datalist(datalist, "training") if i.get("fold") is not None and int(i["fold"]) in folds]
    if not items:
        raise ValueError(f"{datalist}: no training nodules in folds {folds}.")
    rng = np.random.default_rng(seed)
    bank = NoduleBank.from_items(items)
    out: dict[str, Any] = {"bank": len(bank), "draws": draws, "seed": seed, "hosts": {}}
    for case in [c for h in hosts for c in find_cases(h)]:
        iso = IsotropicResampler(bank.spacing_mm, ORIENTATION, AXIS_LABELS).to_isotropic(load_ct(case).image)
        hu = iso[0].numpy()
        points = sampling_points(hu, lung_mask(hu, bank.spacing_mm), rng, spacing_mm=bank.spacing_mm)
        result = {}
        for kind in ("parenchyma", "dense"):
            old, new = [], []
            for _ in range(draws):
                _, mask = random_orientation(bank[int(rng.integers(len(bank)))], rng)
                point = points[kind][int(rng.integers(len(points[kind])))]
                old.append(dense_overlap(hu, mask, point.tolist()))
                new.append(nodule_place(hu, mask, point, kind, rng, bank.spacing_mm, max_dense_overlap=1.0)[1])  # type: ignore[index]
            result[kind] = {
                f"{name}_{stat}": round(float(value), 4)
                for name, v in (("centred", np.asarray(old)), ("placed", np.asarray(new)))
                for stat, value in (
                    (f"over_{DEFAULT_MAX_DENSE_OVERLAP:g}", (v > DEFAULT_MAX_DENSE_OVERLAP).mean()),
                    ("over_0.5", (v > 0.5).mean()),
                    ("median", np.median(v)),
                )
            }
        out["hosts"][case.case_id] = result
        print(case.case_id, json.dumps(result), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("set", help="the inserted nodules of an insert-nodules set")
    q.add_argument("--set", required=True, type=Path, help="an insert-nodules output folder")
    q.add_argument("--hosts", required=True, nargs="+", help="its host scans, as given to insert-nodules --hosts")
    q.add_argument("--predictions", type=Path, default=None, help="predict's output folder for the set's images")
    q.add_argument("--threshold", type=float, default=0.78, help="the operating point (default: 0.78)")
    q.add_argument("--max-overlap", type=float, default=0.15, help="visible up to this dense overlap (default: 0.15)")
    q.add_argument("--out", type=Path, default=None, help="write annotations_visible.csv / annotations_hidden.csv")
    q.add_argument("--json", type=Path, default=None, help="write the rows and the summary here")
    q = sub.add_parser("places", help="the places training windows paste nodules at")
    q.add_argument("--hosts", required=True, nargs="+", help="host scans (files or folders, as predict reads them)")
    q.add_argument("--nodules", required=True, type=Path, help="datalist of nodule crops (prepare-vois)")
    q.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3], help="the bank's folds (default: 0-3)")
    q.add_argument("--draws", type=int, default=300, help="places per host and kind (default: 300)")
    q.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    q.add_argument("--json", type=Path, default=None, help="write the result here")
    args = p.parse_args(argv)
    if args.command == "places":
        result = places(args.hosts, args.nodules, args.folds, args.draws, args.seed)
        if args.json is not None:
            atomic_write_json(result, args.json)
        return 0
    rows = overlaps(args.set, args.hosts)
    if not rows:
        print(f"{args.set}: no inserted nodule", file=sys.stderr)
        return 1
    if args.predictions is not None:
        add_hits(rows, args.predictions, args.threshold)
    for r in rows:
        print(json.dumps({k: v for k, v in r.items() if k != "center_ras"}))
    result = {"set": str(args.set), "max_overlap": args.max_overlap, "threshold": args.threshold,
              "summary": summary(rows, args.max_overlap), "rows": rows}  # fmt: skip
    print(json.dumps(result["summary"]))
    if args.out is not None:
        write_tables(args.set, rows, args.max_overlap, args.out)
    if args.json is not None:
        atomic_write_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
