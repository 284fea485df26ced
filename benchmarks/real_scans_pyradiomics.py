"""Two more real chest CTs for detection checks: pyradiomics' test scans ``lung1`` and ``lung2``, from PyPI.

Every whole real scan we can measure detection on counts (``../shared/data`` holds one, LIDC-IDRI-0001). The
pyradiomics source distribution on PyPI (a package registry, reachable where nothing else is) ships two whole chest
CTs with one labelled lesion each, its feature tests' data: ``lung1`` (512 x 512 x 48, 0.57 mm pixels, 5 mm slices,
one lesion of ~14 mm) and ``lung2`` (512 x 512 x 61, 0.63 mm, 5 mm slices, one mass of ~45 mm). This script
downloads the pinned sdist (sha256 checked), or reads a copy given with ``--sdist``, and writes what
``lung-nodule-mtl predict`` and ``evaluate-froc`` read:

    OUT/images/PYRAD-lung1.nii.gz, PYRAD-lung2.nii.gz     the CTs (HU, int16, LPS geometry kept)
    OUT/labels/PYRAD-lung{1,2}.nii.gz                     the lesion labels
    OUT/annotations.csv                                   LUNA16 columns (LPS mm): lesions of 3-30 mm
    OUT/annotations_excluded.csv                          larger lesions (LUNA16 counts nodules up to 30 mm
                                                          only): hits on them are ignored, neither found nor false
    OUT/provenance.json                                   source, hash, lesions

    python benchmarks/real_scans_pyradiomics.py prepare --out runs/pyrad            # ~35 MB download, 1 min
    lung-nodule-mtl predict -i runs/pyrad/images -o runs/pyrad/pred                  # the bundle's operating point
    lung-nodule-mtl predict -i runs/pyrad/images -o runs/pyrad/pred_all --threshold 0 --max-nodules 50
    python benchmarks/real_scans_pyradiomics.py report --data runs/pyrad --predictions runs/pyrad/pred_all \
        --threshold 0.78 [--json out.json]

``report`` prints, per scan, each lesion's best score and rank among the scan's candidates, the Dice of that
candidate's mask (predict's ``<case>_nodules.nii.gz``) against the lesion's label, and the false positives at
``--threshold`` (the bundle's ``detection_threshold``; excluded findings ignored, LUNA16's hit rule).

Limits: only the labelled lesion of each scan is annotated (an unlabelled nodule would count as a false positive);
5 mm slices, thicker than most of LIDC-IDRI (1.25-2.5 mm). The images' original source is not documented in the
package (third-party code calls lung1 a TCIA scan); pyradiomics is BSD-3-Clause. The scans are read here for
measurement only and never copied into the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lung_nodule_mtl.utils.io import atomic_path, atomic_write_csv, atomic_write_json

SDIST_URL = (
    "https://files.pythonhosted.org/packages/03/c1/20fc2c50ab1e3304da36d866042a1905a2b05a1431ece35448ab6b4578f2/"
    "pyradiomics-3.1.0.tar.gz"
)
SDIST_SHA256 = "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4"
SCANS = ("lung1", "lung2")
CASE_PREFIX = "PYRAD-"
LUNA16_MAX_DIAMETER_MM = 30.0
LUNA16_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(dest: Path, url: str = SDIST_URL, expected: str = SDIST_SHA256) -> Path:
    """Download ``url`` to ``dest`` (atomically) and check its sha256."""
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=120) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f)
        got = sha256(tmp)
        if got != expected:  # the temporary file is removed, dest left as it was
            raise ValueError(f"{url}: sha256 {got}, expected {expected}; nothing written.")
    return dest


def _members(sdist: Path) -> dict[str, tarfile.TarInfo]:
    """The four NRRD members of the sdist, by file name (``lung1_image.nrrd`` ...)."""
    wanted = {f"{scan}_{kind}.nrrd" for scan in SCANS for kind in ("image", "label")}
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            found = {
                Path(m.name).name: m for m in tar.getmembers() if m.isfile() and Path(m.name).parent.name == "data"
            }
    except (tarfile.TarError, OSError) as err:
        raise ValueError(f"{sdist}: not a readable .tar.gz ({err}).") from err
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"{sdist}: no data/{missing[0]} in the archive (is it the pyradiomics sdist?).")
    return {name: found[name] for name in wanted}


def lesions(label: Any) -> list[dict[str, float]]:
    """One row per connected lesion of a SimpleITK label image: centre (LPS mm), volume, equivalent diameter."""
    import SimpleITK as sitk

    mask = sitk.GetArrayFromImage(label) > 0  # (z, y, x)
    components, n = ndimage.label(mask)
    voxel_mm3 = float(np.prod(label.GetSpacing()))
    rows = []
    for k in range(1, n + 1):
        zyx = np.argwhere(components == k)
        centre = label.TransformContinuousIndexToPhysicalPoint([float(v) for v in zyx[:, ::-1].mean(axis=0)])
        volume = float(len(zyx)) * voxel_mm3
        rows.append(
            {
                "coordX": round(centre[0], 2),
                "coordY": round(centre[1], 2),
                "coordZ": round(centre[2], 2),
                "volume_mm3": round(volume, 1),
                "diameter_mm": round(float((6.0 * volume / np.pi) ** (1.0 / 3.0)), 2),
            }
        )
    return rows


def prepare(out: Path, sdist: Path | None = None, max_diameter_mm: float = LUNA16_MAX_DIAMETER_MM) -> dict[str, Any]:
    """Write the two scans, their labels and LUNA16 tables under ``out`` (see the module's docstring)."""
    import SimpleITK as sitk

    out.mkdir(parents=True, exist_ok=True)
    if sdist is None:
        sdist = out / Path(SDIST_URL).name
        if not sdist.exists() or sha256(sdist) != SDIST_SHA256:
            download(sdist)
    members = _members(sdist)
    annotations: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    record: dict[str, Any] = {"source": SDIST_URL, "sha256": sha256(sdist), "scans": {}}
    with tempfile.TemporaryDirectory(dir=out) as tmp, tarfile.open(sdist, "r:gz") as tar:
        for scan in SCANS:
            case = CASE_PREFIX + scan
            images = {}
            for kind in ("image", "label"):
                src = tar.extractfile(members[f"{scan}_{kind}.nrrd"])
                if src is None:
                    raise ValueError(f"{sdist}: data/{scan}_{kind}.nrrd cannot be read.")
                path = Path(tmp) / f"{scan}_{kind}.nrrd"
                path.write_bytes(src.read())
                images[kind] = sitk.ReadImage(str(path))
            if images["image"].GetSize() != images["label"].GetSize():
                raise ValueError(f"{sdist}: {scan}'s label grid {images['label'].GetSize()} differs from its image's.")
            for kind, folder in (("image", "images"), ("label", "labels")):
                dest = out / folder / f"{case}.nii.gz"
                dest.parent.mkdir(exist_ok=True)
                with atomic_path(dest) as tmp_dest:  # the temporary name keeps ".nii.gz"
                    sitk.WriteImage(images[kind], str(tmp_dest))
            found = lesions(images["label"])
            for row in found:
                row = {"seriesuid": case, **row}
                (annotations if row["diameter_mm"] <= max_diameter_mm else excluded).append(row)
            record["scans"][case] = {
                "size": list(images["image"].GetSize()),
                "spacing_mm": [round(s, 4) for s in images["image"].GetSpacing()],
                "lesions": found,
            }
    atomic_write_csv(annotations, out / "annotations.csv", LUNA16_COLUMNS)
    atomic_write_csv(excluded, out / "annotations_excluded.csv", LUNA16_COLUMNS)
    record["max_diameter_mm"] = max_diameter_mm
    atomic_write_json(record, out / "provenance.json")
    return record


def _best_hit(cands: list[Any], ref: Any) -> Any:
    """The highest-scoring candidate inside the lesion's radius (LUNA16's hit rule)."""
    from lung_nodule_mtl.metrics.froc import LUNA16_MISSING_DIAMETER_MM

    centre, diameter = np.asarray(ref.center_ras_mm), ref.diameter_mm or LUNA16_MISSING_DIAMETER_MM
    hits = [c for c in cands if np.linalg.norm(np.asarray(c.center_ras_mm) - centre) < diameter / 2]
    return max(hits, key=lambda c: c.probability)


def _dice(data: Path, predictions: Path, case: str, cand: Any, ref: Any) -> float | None:
    """Dice of the candidate's mask in predict's label map against the lesion's label component (``None``: no map)."""
    import nibabel as nib

    pred_path, label_path = predictions / f"{case}_nodules.nii.gz", data / "labels" / f"{case}.nii.gz"
    if cand.nodule_id is None or not pred_path.is_file() or not label_path.is_file():
        return None
    pred, label = nib.load(pred_path), nib.load(label_path)
    if pred.shape != label.shape or not np.allclose(pred.affine, label.affine, atol=1e-3):
        raise ValueError(f"{pred_path}: grid differs from {label_path}'s.")
    components, n = ndimage.label(np.asarray(label.dataobj) > 0)
    if n == 0:
        return None
    centroids = np.asarray(ndimage.center_of_mass(components > 0, components, range(1, n + 1))).reshape(n, 3)
    world = nib.affines.apply_affine(label.affine, centroids)  # RAS mm, as the tables' records
    lesion = components == 1 + int(np.argmin(np.linalg.norm(world - np.asarray(ref.center_ras_mm), axis=1)))
    mask = np.asarray(pred.dataobj) == int(cand.nodule_id)
    return round(float(2.0 * (mask & lesion).sum() / (mask.sum() + lesion.sum())), 4)


def report(data: Path, predictions: Path, threshold: float) -> dict[str, Any]:
    """Per scan: each lesion's best score and rank, and the false positives scored at least ``threshold``."""
    from lung_nodule_mtl.data.nodule_table import read_nodule_table
    from lung_nodule_mtl.metrics.froc import PREDICTIONS_SUMMARY, match_candidates, prediction_dir_cases

    preds = read_nodule_table(predictions / PREDICTIONS_SUMMARY)
    refs = read_nodule_table(data / "annotations.csv")
    excl = read_nodule_table(data / "annotations_excluded.csv")
    result: dict[str, Any] = {"threshold": threshold, "scans": {}}
    for case in prediction_dir_cases(predictions):
        cands = preds.get(case, [])
        scores = np.sort(np.asarray([c.probability for c in cands], dtype=np.float64))[::-1]
        lesion_rows = []
        for kind, table in (("nodule", refs), ("excluded", excl)):
            for ref in table.get(case, []):
                tp = match_candidates(cands, [ref]).tp_scores[0]
                found = bool(np.isfinite(tp))
                best = _best_hit(cands, ref) if found else None
                lesion_rows.append(
                    {
                        "kind": kind,
                        "diameter_mm": ref.diameter_mm,
                        "best_score": float(tp) if found else None,
                        "rank": int((scores > tp).sum()) + 1 if found else None,
                        "reported": found and float(tp) >= threshold,
                        "dice": None if best is None else _dice(data, predictions, case, best, ref),
                    }
                )
        match = match_candidates(cands, refs.get(case, []), excl.get(case, []))
        result["scans"][case] = {
            "candidates": len(cands),
            "lesions": lesion_rows,
            "false_positives_at_threshold": int((match.fp_scores >= threshold).sum()),
            "top_false_positive": float(match.fp_scores.max()) if match.fp_scores.size else None,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="download (or read --sdist) and write the scans and tables")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sdist", type=Path, default=None, help="a local pyradiomics-3.1.0.tar.gz instead of PyPI")
    p.add_argument("--max-diameter", type=float, default=LUNA16_MAX_DIAMETER_MM)
    r = sub.add_parser("report", help="lesions found and false positives of a predict folder (--threshold 0 run)")
    r.add_argument("--data", type=Path, required=True, help="the prepare --out folder")
    r.add_argument("--predictions", type=Path, required=True)
    r.add_argument("--threshold", type=float, required=True, help="the operating point, e.g. the bundle's 0.78")
    r.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            record = prepare(args.out, args.sdist, args.max_diameter)
            for case, scan in record["scans"].items():
                print(case, scan["size"], scan["spacing_mm"], [les["diameter_mm"] for les in scan["lesions"]])
            return 0
        result = report(args.data, args.predictions, args.threshold)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for case, scan in result["scans"].items():
        lesion_text = "; ".join(
            f"{les['kind']} {les['diameter_mm']:.1f} mm: "
            + (
                "not a candidate"
                if les["best_score"] is None
                else f"score {les['best_score']:.3f}, rank {les['rank']}"
                + ("" if les["dice"] is None else f", mask Dice {les['dice']:.3f}")
            )
            for les in scan["lesions"]
        )
        print(
            f"{case}: {scan['candidates']} candidates; {lesion_text}; "
            f"false positives >= {args.threshold}: {scan['false_positives_at_threshold']}"
        )
    if args.json is not None:
        atomic_write_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
