"""Three more real chest CTs for detection checks, from test data that packages ship on PyPI.

Every whole real scan we can measure detection on counts (``../shared/data`` holds one, LIDC-IDRI-0001), and PyPI
(a package registry, reachable where nothing else is) has three more inside source distributions' test data:

* pyradiomics 3.1.0 (BSD-3-Clause): ``lung1`` (512 x 512 x 48, 0.57 mm pixels, 5 mm slices, one labelled lesion of
  ~14 mm) and ``lung2`` (512 x 512 x 61, 0.63 mm, 5 mm slices, one labelled mass of ~45 mm); the images' original
  source is not documented in the package (third-party code calls lung1 a TCIA scan);
* TotalSegmentator 2.18.0 (Apache-2.0): ``tests/reference_files/aorta_report/example_ct.nii.gz``, a contrast-enhanced
  chest CT at 1.5 mm isotropic (233 x 167 x 191) covering both lungs, **without** nodule labels (a different patient
  than ``../shared``'s 3 mm abdominal example CT).

This script downloads the pinned sdists (sha256 checked), or reads copies given with ``--sdist NAME=PATH``, and writes
what ``lung-nodule-mtl predict``, ``insert-nodules`` and ``evaluate-froc`` read:

    OUT/images/PYRAD-lung1.nii.gz, PYRAD-lung2.nii.gz, TSEG-chest.nii.gz   the CTs (HU, geometry kept)
    OUT/labels/PYRAD-lung{1,2}.nii.gz                                      the lesion labels
    OUT/annotations.csv                          LUNA16 columns (LPS mm): labelled lesions of 3-30 mm
    OUT/annotations_excluded.csv                 larger lesions (LUNA16 counts nodules up to 30 mm only): hits on
                                                 them are ignored, neither found nor false
    OUT/provenance.json                          sources, hashes, lesions

    python benchmarks/real_scans_pypi.py prepare --out runs/real                   # ~75 MB download, 1 min
    lung-nodule-mtl predict -i runs/real/images -o runs/real/pred --threshold 0 --max-nodules 50
    python benchmarks/real_scans_pypi.py report --data runs/real --predictions runs/real/pred \
        --threshold 0.78 [--json out.json]

``report`` prints, per scan, each lesion's best score and rank among the scan's candidates, the Dice of that
candidate's mask (predict's ``<case>_nodules.nii.gz``) against the lesion's label, and the false positives at
``--threshold`` (the bundle's ``detection_threshold``; excluded findings ignored, LUNA16's hit rule).

Limits: only the labelled lesions are annotated and TSEG-chest has none (an unlabelled nodule counts as a false
positive); pyradiomics' scans have 5 mm slices, thicker than most of LIDC-IDRI (1.25-2.5 mm); TSEG-chest is a CT
angiogram (bright vessels). The scans are read here for measurement only and never copied into the repository.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lung_nodule_mtl.utils.io import atomic_path, atomic_write_csv, atomic_write_json, file_sha256


@dataclass(frozen=True)
class Source:
    """An sdist on PyPI and the scans in it: case id -> (image member, label member or ``None``), paths below the
    archive's top folder."""

    url: str
    sha256: str
    scans: dict[str, tuple[str, str | None]]


SOURCES = {
    "pyradiomics": Source(
        "https://files.pythonhosted.org/packages/03/c1/20fc2c50ab1e3304da36d866042a1905a2b05a1431ece35448ab6b4578f2/"
        "pyradiomics-3.1.0.tar.gz",
        "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4",
        {
            "PYRAD-lung1": ("data/lung1_image.nrrd", "data/lung1_label.nrrd"),
            "PYRAD-lung2": ("data/lung2_image.nrrd", "data/lung2_label.nrrd"),
        },
    ),
    "totalsegmentator": Source(
        "https://files.pythonhosted.org/packages/c3/53/7d654d2ec3fcb801ae54d318b0ffc18021aed528bf4e4df0753caf0c8a73/"
        "totalsegmentator-2.18.0.tar.gz",
        "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
        {"TSEG-chest": ("tests/reference_files/aorta_report/example_ct.nii.gz", None)},
    ),
}
LUNA16_MAX_DIAMETER_MM = 30.0
LUNA16_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")


def download(dest: Path, url: str, expected: str) -> Path:
    """Download ``url`` to ``dest`` (atomically) and check its sha256."""
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=120) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f)
        got = file_sha256(tmp)
        if got != expected:  # the temporary file is removed, dest left as it was
            raise ValueError(f"{url}: sha256 {got}, expected {expected}; nothing written.")
    return dest


def _members(sdist: Path, wanted: set[str]) -> dict[str, tarfile.TarInfo]:
    """The wanted members of an sdist, by their path below its top folder."""
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            found = {m.name.split("/", 1)[-1]: m for m in tar.getmembers() if m.isfile() and "/" in m.name}
    except (tarfile.TarError, OSError) as err:
        raise ValueError(f"{sdist}: not a readable .tar.gz ({err}).") from err
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"{sdist}: no {missing[0]} in the archive (is it the right sdist?).")
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


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, folder: str, sdist: Path) -> Any:
    """A SimpleITK image from an archive member (written to ``folder`` under its own name, so its suffix tells ITK
    the format)."""
    import SimpleITK as sitk

    src = tar.extractfile(member)
    if src is None:
        raise ValueError(f"{sdist}: {member.name} cannot be read.")
    path = Path(folder) / Path(member.name).name
    path.write_bytes(src.read())
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise ValueError(
            f"{sdist}: {member.name} is not a readable image ({str(err).strip().splitlines()[-1]})."
        ) from err


def prepare(
    out: Path,
    sdists: dict[str, Path] | None = None,
    sources: tuple[str, ...] = tuple(SOURCES),
    max_diameter_mm: float = LUNA16_MAX_DIAMETER_MM,
) -> dict[str, Any]:
    """Write the scans of ``sources``, their labels and LUNA16 tables under ``out`` (see the module's docstring).

    ``sdists`` maps a source's name to a local copy of its sdist; the others are downloaded into ``out`` (once).
    """
    import SimpleITK as sitk

    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown source {unknown[0]!r}; known: {', '.join(SOURCES)}.")
    out.mkdir(parents=True, exist_ok=True)
    annotations: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    record: dict[str, Any] = {"sources": {}, "scans": {}, "max_diameter_mm": max_diameter_mm}
    for name in sources:
        source = SOURCES[name]
        sdist = (sdists or {}).get(name)
        if sdist is None:  # downloaded once into out, checked against the pinned hash
            sdist = out / Path(source.url).name
            if not sdist.exists() or file_sha256(sdist) != source.sha256:
                download(sdist, source.url, source.sha256)
            digest = source.sha256
        else:
            digest = file_sha256(sdist)
        wanted = {m for pair in source.scans.values() for m in pair if m is not None}
        members = _members(sdist, wanted)
        record["sources"][name] = {"url": source.url, "sha256": digest}
        with tempfile.TemporaryDirectory(dir=out) as tmp, tarfile.open(sdist, "r:gz") as tar:
            for case, (image_member, label_member) in source.scans.items():
                images = {"image": _read_member(tar, members[image_member], tmp, sdist)}
                if label_member is not None:
                    images["label"] = _read_member(tar, members[label_member], tmp, sdist)
                    if images["image"].GetSize() != images["label"].GetSize():
                        raise ValueError(f"{sdist}: {case}'s label grid differs from its image's.")
                for kind, folder in (("image", "images"), ("label", "labels")):
                    if kind in images:
                        with atomic_path(out / folder / f"{case}.nii.gz") as dest:  # the temporary keeps ".nii.gz"
                            sitk.WriteImage(images[kind], str(dest))
                found = lesions(images["label"]) if "label" in images else []
                for row in found:
                    row = {"seriesuid": case, **row}
                    (annotations if row["diameter_mm"] <= max_diameter_mm else excluded).append(row)
                record["scans"][case] = {
                    "source": name,
                    "size": list(images["image"].GetSize()),
                    "spacing_mm": [round(s, 4) for s in images["image"].GetSpacing()],
                    "labelled": "label" in images,
                    "lesions": found,
                }
    atomic_write_csv(annotations, out / "annotations.csv", LUNA16_COLUMNS)
    atomic_write_csv(excluded, out / "annotations_excluded.csv", LUNA16_COLUMNS)
    atomic_write_json(record, out / "provenance.json")
    return record


def _best_hit(cands: list[Any], ref: Any) -> Any:
    """The highest-scoring candidate inside the lesion's radius (LUNA16's hit rule), ``None`` if none is."""
    from lung_nodule_mtl.metrics.froc import LUNA16_MISSING_DIAMETER_MM

    centre, diameter = np.asarray(ref.center_ras_mm), ref.diameter_mm or LUNA16_MISSING_DIAMETER_MM
    hits = [c for c in cands if np.linalg.norm(np.asarray(c.center_ras_mm) - centre) < diameter / 2]
    return max(hits, key=lambda c: c.probability, default=None)


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
                best = _best_hit(cands, ref)
                tp = None if best is None else float(best.probability)
                lesion_rows.append(
                    {
                        "kind": kind,
                        "diameter_mm": ref.diameter_mm,
                        "best_score": tp,
                        "rank": None if tp is None else int((scores > tp).sum()) + 1,
                        "reported": tp is not None and tp >= threshold,
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
    p.add_argument("--sources", nargs="+", choices=list(SOURCES), default=list(SOURCES))
    p.add_argument("--sdist", action="append", default=[], metavar="NAME=PATH", help="a local copy of a source's sdist")
    p.add_argument("--max-diameter", type=float, default=LUNA16_MAX_DIAMETER_MM)
    r = sub.add_parser("report", help="lesions found and false positives of a predict folder (--threshold 0 run)")
    r.add_argument("--data", type=Path, required=True, help="the prepare --out folder")
    r.add_argument("--predictions", type=Path, required=True)
    r.add_argument("--threshold", type=float, required=True, help="the operating point, e.g. the bundle's 0.78")
    r.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            pairs = [item.partition("=") for item in args.sdist]
            if any(not sep or not path for _, sep, path in pairs):
                raise ValueError(f"--sdist takes NAME=PATH, got {args.sdist!r}.")
            sdists = {name: Path(path) for name, _, path in pairs}
            record = prepare(args.out, sdists, tuple(args.sources), args.max_diameter)
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
            f"{case}: {scan['candidates']} candidates; {lesion_text or 'no labelled lesion'}; "
            f"false positives >= {args.threshold}: {scan['false_positives_at_threshold']}"
        )
    if args.json is not None:
        atomic_write_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
