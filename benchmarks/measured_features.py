"""What the readers' own nodule masks measure, and what that tells about malignancy and the attributes.

The ceiling of the late fusion (``lung-nodule-mtl fit-malignancy``): the measurements the fusion reads
(``lung_nodule_mtl.metrics.measurements``: size, Hounsfield-unit density, calcified and ground-glass fractions,
rim contrast, sphericity, elongation, flatness) taken on the **reference** masks of a ``prepare-vois`` datalist
(at the VOIs' own spacing) instead of a network's predicted masks, then the fusion's own fitting and
out-of-fold report over the datalist's patient folds:

* malignancy: size and density (``measured``), every measurement (``all-measured``), and in the same run the
  baseline, the equivalent diameter alone (and the readers' diameter in the report);
* attributes: a multinomial model per attribute on every measurement against the majority rating of the other
  folds (exact and within-one accuracy);
* the ceiling of any model that reads malignancy through the attributes: the same out-of-fold logistic model of
  the mask's size plus the **readers' own** attribute ratings (``size + readers' attributes``; with the density:
  ``size, density + readers' attributes``). No model can be told these ratings on a new scan, and the same readers
  rated malignancy in the same sitting, so it is an upper bound, not a baseline.

    lung-nodule-mtl prepare-vois --vois ../shared/data/lidc_vois --out data/lidc_vois --folds 5
    python benchmarks/measured_features.py --datalist data/lidc_vois/datalist.json --out runs/measured \\
        --json benchmarks/results/measured_features_lidc.json            # ~2 min on 2 CPU cores

Writes one ``per_nodule.csv`` per fold under ``--out`` (the columns ``evaluating`` writes: ``m_*``, the
reference diameter, label and ratings; no network columns) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

LIDC_CITATION = "LIDC-IDRI (CC BY 3.0): Armato SG III et al., Medical Physics 38:915-931, 2011."


def measure_datalist(datalist: Path, out: Path) -> list[Path]:
    """Measure every item's reference mask and write one ``per_nodule.csv`` per fold; the tables' paths."""
    import nibabel as nib
    import numpy as np

    from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES
    from lung_nodule_mtl.metrics.measurements import MEASUREMENTS, nodule_measurements
    from lung_nodule_mtl.utils.io import atomic_write_csv

    doc = json.loads(datalist.read_text())
    items = [it for key in ("training", "validation", "test") for it in doc.get(key, [])]
    if not items:
        raise ValueError(f"{datalist}: no items in training, validation or test.")
    folds: dict[int, list[dict[str, Any]]] = {}
    for it in items:
        if "fold" not in it:
            raise ValueError(f"{datalist}: item {it.get('case_id')!r} has no fold (prepare-vois --folds 5).")
        image, label = (
            Path(it[k]) if Path(it[k]).is_absolute() else datalist.parent / it[k] for k in ("image", "label")
        )
        img = nib.load(str(image))
        mask = np.asarray(nib.load(str(label)).dataobj) > 0
        m = nodule_measurements(np.asarray(img.dataobj, dtype=np.float32), mask, img.header.get_zooms()[:3])
        row: dict[str, Any] = {
            "case_id": it["case_id"],
            "patient_id": it.get("patient_id", it["case_id"]),
            "diameter_mm": it.get("diameter_mm"),
            "pred_diameter_mm": None if m is None else round(math.exp(m["log_diameter_mm"]), 3),
            "malignancy": it.get("malignancy"),
            "pred_malignancy_prob": None,
        }
        row.update({f"m_{k}": None if m is None else m[k] for k in MEASUREMENTS})
        row.update({a: it.get(a) for a in ATTRIBUTE_CLASSES})
        folds.setdefault(int(it["fold"]), []).append(row)
    tables = []
    for k in sorted(folds):
        tables.append(atomic_write_csv(folds[k], out / f"f{k}" / "per_nodule.csv"))
    return tables


READERS_ATTRIBUTES: tuple[str, ...] = (
    "subtlety",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
)
"""The readers' graded ratings of the ceiling rows (internal structure is one rating in nearly every nodule)."""


def readers_attributes_ceiling(
    tables: list[Path], measurements: list[str], n_bootstrap: int, l2: float = 1e-2
) -> dict[str, Any]:
    """The out-of-fold malignancy report (the fusion's own, :func:`fit_malignancy_fusion`'s) of a logistic model of
    ``measurements`` plus the readers' :data:`READERS_ATTRIBUTES` ratings of each nodule (the attributes rated
    two ways or more; nodules with one of their ratings missing are left out). The ratings join the measurements
    of the fusion's design only here: a fusion that is saved cannot name them."""
    import numpy as np

    from lung_nodule_mtl.inference.fusion import _groups, _malignancy_report, read_oof_predictions

    data = read_oof_predictions(tables)
    ratings = {a: data["attributes"][a] for a in READERS_ATTRIBUTES}
    rated = {f"rated_{a}": v for a, v in ratings.items() if np.unique(v[np.isfinite(v)]).size >= 2}
    if not rated:
        raise ValueError(f"{tables[0]}: no attribute is rated two ways or more; no ceiling to measure.")
    data["measurements"] = {**data["measurements"], **rated}
    report, _ = _malignancy_report(data, [*measurements, *rated], _groups(data, len(tables)), l2, n_bootstrap)
    return {**report, "readers_attributes": sorted(a.removeprefix("rated_") for a in rated)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datalist", required=True, help="prepare-vois datalist.json with patient folds")
    p.add_argument("--out", required=True, help="folder for the per-fold tables")
    p.add_argument("--bootstrap", type=int, default=2000, help="patient-level bootstrap samples (default 2000)")
    p.add_argument("--json", default=None, help="write every figure to this JSON")
    args = p.parse_args(argv)

    from lung_nodule_mtl.inference.fusion import (
        DEFAULT_ATTRIBUTE_FEATURES,
        DEFAULT_MALIGNANCY_FEATURES,
        fit_malignancy_fusion,
    )
    from lung_nodule_mtl.utils.io import atomic_write_json, json_safe

    datalist = Path(args.datalist)
    if not datalist.is_file():
        raise FileNotFoundError(f"datalist not found: {str(datalist)!r} (lung-nodule-mtl prepare-vois).")
    tables = measure_datalist(datalist, Path(args.out))
    sets = {
        "diameter (equivalent, reference mask)": ["log_diameter_mm"],
        "size and density (measured)": list(DEFAULT_MALIGNANCY_FEATURES),
        "every measurement (all-measured)": list(DEFAULT_ATTRIBUTE_FEATURES),
    }
    results: dict[str, Any] = {"machine": harness.machine(), "datalist": str(datalist), "malignancy": {}}
    print(f"{harness.machine_line(results['machine'])}; {len(tables)} folds; {LIDC_CITATION}\n")
    print("| malignancy, out of fold | AUC [95% CI] | − reference diameter [95% CI] | size-matched AUC | Brier |")
    print("|---|---|---|---|---|")
    ceiling = {
        "size + readers' attributes (ceiling)": ["log_diameter_mm"],
        "size, density + readers' attributes (ceiling)": list(DEFAULT_MALIGNANCY_FEATURES),
    }
    for name, features in [*sets.items(), *ceiling.items()]:
        if name in ceiling:
            m = readers_attributes_ceiling(tables, features, args.bootstrap)
        else:
            m = fit_malignancy_fusion(tables, n_bootstrap=args.bootstrap, features=features)[1]["malignancy"]
        results["malignancy"][name] = m
        ci, diff = m["ci_fused"], m["ci_fused_minus_reference_diameter"]
        gain = m["fused_minus_reference_diameter"]
        matched = m["size_matched_fused"]
        cells = [f"{m['fused_auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]", f"{gain:+.3f} [{diff[0]:+.3f}, {diff[1]:+.3f}]",
                 f"{matched['auc']:.3f} ({matched['n_pairs']} pairs)", f"{m['brier']['fused']:.3f}"]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")
    m = results["malignancy"]["diameter (equivalent, reference mask)"]
    print(f"\nreference diameter alone: AUC {m['reference_diameter_auc']:.3f}; size-matched pairs: its AUC "
          f"{m['size_matched_fused']['diameter_auc']:.3f}\n")  # fmt: skip
    _, report = fit_malignancy_fusion(tables, features=None, attribute_features=list(DEFAULT_ATTRIBUTE_FEATURES))
    results["attributes"] = report["attributes"]
    print("| attribute, out of fold | exact: measurements | exact: majority | within one: measurements | majority |")
    print("|---|---|---|---|---|")
    for name, r in report["attributes"].items():
        print(f"| {name} | {r['fused']['exact']:.3f} | {r['majority']['exact']:.3f} | {r['fused']['within_one']:.3f} "
              f"| {r['majority']['within_one']:.3f} |")  # fmt: skip
    if args.json:
        atomic_write_json(json_safe(results), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
