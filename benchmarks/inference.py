"""Whole-scan inference, end to end: ours (``lung-nodule-mtl predict``) against the stock MONAI pipeline.

Both run the same network and weights (the bundle's, through its own configs) on the same scans, each repeat in a
fresh process; the table gives medians over repeats of the wall time (read -> resample -> infer -> post-process ->
write), peak resident memory, peak GPU memory, the time per stage, and how far each pipeline is from the device's
physical limit (the network's FLOPs per scan over the rate a large convolution reaches on the device in the same
run). Two Dice coefficients say whether speed changed the answer:

* **Dice (lungs)**: mask probability > 0.5 of ours vs the stock pipeline's, on the same isotropic grid, inside our
  lung mask (where ours looks): the effect of the speed changes (overlap, skipped windows, precision, resampling).
* **Dice (outputs)**: the written label maps (> 0) on the input grid: adds our post-processing (lung restriction,
  components < 3 mm and beyond the 20 most probable dropped), which the stock pipeline does not have.

The stock pipeline is what a MONAI user writes first: ``LoadImage`` -> ``Orientation`` (RAS) -> ``Spacing``
(the bundle's voxel, bilinear) -> the bundle's HU windows -> ``SlidingWindowInferer`` over the whole volume (the
bundle's patch, overlap 0.5, Gaussian, ``sw_batch_size`` 4, float32) -> sigmoid > 0.5 -> 26-connected components ->
``ResampleToMatch`` (nearest) -> ``SaveImage``.

Scans: LIDC-IDRI-0001 from ``../shared/data`` (converted to NIfTI once; LIDC-IDRI, CC BY 3.0) and a synthetic
512 x 512 x 300 chest CT from the package's generator (seed 7), both cached under ``--work-dir``.

    python benchmarks/inference.py                       # both scans, 3 repeats of ours, 1 of the stock pipeline
    python benchmarks/inference.py --scans synthetic --repeats 5 --baseline-repeats 3 --json results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

SYNTHETIC_SHAPE = (512, 512, 300)
SYNTHETIC_SEED = 7
REAL_CASE = "LIDC-IDRI-0001"
STOCK_OVERLAP = 0.5
STOCK_SW_BATCH = 4
DICE_TOLERANCE = 0.95
"""Dice (lungs) below this between ours and the stock pipeline is reported as a changed answer."""


# -- inputs ----------------------------------------------------------------------------------------------------------


def prepare_scans(work_dir: Path, which: list[str]) -> dict[str, Path]:
    """The benchmark scans as NIfTI (int16 HU) in ``work_dir``, written once."""
    import nibabel as nib

    work_dir.mkdir(parents=True, exist_ok=True)
    scans: dict[str, Path] = {}
    for name in which:
        if name == "real":
            src = harness.SHARED_DATA / "lidc_idri" / REAL_CASE
            out = work_dir / f"{REAL_CASE}.nii.gz"
            if not out.is_file():
                if not src.is_dir():
                    print(f"skipping the real scan: {src} not found", file=sys.stderr)
                    continue
                from lung_nodule_mtl.io.ct import find_cases, load_ct

                volume = load_ct(find_cases(src)[0])
                hu = np.rint(np.asarray(volume.image[0])).astype(np.int16)
                _save_atomic(nib.Nifti1Image(hu, volume.affine), out)
            scans["real"] = out
        elif name == "synthetic":
            out = work_dir / "synthetic_{}x{}x{}.nii.gz".format(*SYNTHETIC_SHAPE)
            if not out.is_file():
                from lung_nodule_mtl.data.synthetic.dataset import generate_case

                case = generate_case(0, seed=SYNTHETIC_SEED, mode="scans", scan_shape=SYNTHETIC_SHAPE, slice_mm=(1, 1))
                vol = case.volumes[0]
                _save_atomic(nib.Nifti1Image(vol.image.astype(np.int16), vol.affine), out)
            scans["synthetic"] = out
        else:
            path = Path(name)
            if not path.is_file():
                raise SystemExit(f"--scans: {name!r} is neither 'real', 'synthetic' nor a NIfTI file")
            scans[path.name.split(".")[0]] = path
    return scans


def _save_atomic(img: Any, out: Path) -> None:
    import nibabel as nib

    tmp = out.with_name(f".{out.name}.tmp.nii.gz")
    nib.save(img, tmp)
    tmp.replace(out)


# -- the two pipelines (in a child process) ----------------------------------------------------------------------


def _parser(bundle: str | None, device: str, sets: list[str]) -> tuple[Any, Any]:
    from lung_nodule_mtl.inference.bundle import load_scan_predictor

    overrides: dict[str, Any] = {"device_name": device, "progress": False}
    for item in sets:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    return load_scan_predictor(bundle, overrides)


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    from lung_nodule_mtl.inference.batch import case_outputs, predict_batch
    from lung_nodule_mtl.io.ct import find_cases

    predictor, _ = _parser(args.bundle, args.device, args.set)
    if args.maps:  # not timed: the isotropic maps for the Dice against the stock pipeline
        from lung_nodule_mtl.io.ct import load_ct

        predictor.keep_images = True
        pred = predictor.predict(load_ct(find_cases(args.input)[0]).image)
        np.savez_compressed(args.maps, prob=pred.isotropic_probability, lung=pred.isotropic_lung)
        return {}
    out = Path(args.out)
    start = time.perf_counter()
    predict_batch(args.input, out, predictor, progress=False, overwrite=True, raise_on_failure=True)
    wall = time.perf_counter() - start
    report = json.loads(case_outputs(out, find_cases(args.input)[0].case_id)["report"].read_text())
    result = {
        "wall_s": wall,
        "stages_s": report["timings_s"],
        "counts": report.get("counts", {}),
        "n_nodules": report["n_nodules"],
        "labels": str(case_outputs(out, report["case_id"])["labels"]),
        "peak_rss_gib": harness.peak_rss_gib(),
        "peak_gpu_gib": harness.peak_gpu_gib(),
    }
    return result


def run_stock(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from monai.data import MetaTensor
    from monai.data.utils import dense_patch_slices
    from monai.inferers import SlidingWindowInferer
    from monai.inferers.utils import _get_scan_interval
    from monai.transforms import LoadImage, Orientation, ResampleToMatch, SaveImage, Spacing
    from scipy import ndimage

    from lung_nodule_mtl.inference.pipeline import resolve_device
    from lung_nodule_mtl.networks.sliding_window import SlidingWindowAdapter
    from lung_nodule_mtl.transforms.chains import AXIS_LABELS
    from lung_nodule_mtl.transforms.window import LungWindow

    _, parser = _parser(args.bundle, args.device, [])
    device = resolve_device(args.device)
    network = parser.get_parsed_content("network_def").to(device).eval()
    network.load_state_dict(torch.load(parser.get_parsed_content("ckpt_file"), map_location=device, weights_only=True))
    roi = tuple(int(s) for s in parser.get_parsed_content("patch_size"))
    spacing = tuple(float(s) for s in parser.get_parsed_content("spacing_mm"))
    window = LungWindow(parser.get_parsed_content("windows"))
    inferer = SlidingWindowInferer(
        roi, sw_batch_size=STOCK_SW_BATCH, overlap=STOCK_OVERLAP, mode="gaussian", sw_device=device, device=device
    )
    adapter = SlidingWindowAdapter(network, heads="none")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        stages[name] = now - t0
        return now

    start = t = time.perf_counter()
    image = LoadImage(image_only=True, ensure_channel_first=True)(args.input)
    t = lap("read", t)
    iso = Spacing(pixdim=spacing, mode="bilinear")(Orientation(axcodes="RAS", labels=AXIS_LABELS)(image))
    t = lap("resample", t)
    with torch.inference_mode():
        x = window(iso.to(device)).unsqueeze(0)
        logits = inferer(x, adapter)["mask"]
        prob = torch.sigmoid(logits[0, 0].float()).cpu().numpy()
    t = lap("sliding_window", t)
    labels, _ = ndimage.label(prob > 0.5, structure=np.ones((3, 3, 3), dtype=bool))
    t = lap("components", t)
    back = ResampleToMatch(mode="nearest")(MetaTensor(labels[None].astype(np.float32), affine=iso.affine), image)
    t = lap("restore_grid", t)
    SaveImage(output_dir=out, output_postfix="mask", separate_folder=False, output_dtype=np.int16, print_log=False)(
        back
    )
    lap("write", t)
    wall = time.perf_counter() - start
    shape = tuple(int(s) for s in iso.shape[1:])
    interval = _get_scan_interval(shape, roi, 3, (STOCK_OVERLAP,) * 3)
    result = {
        "wall_s": wall,
        "stages_s": stages,
        "counts": {"windows": len(dense_patch_slices(shape, roi, interval)), "voxels_isotropic": int(np.prod(shape))},
        "labels": str(next(out.glob("*_mask.nii*"))),
        "peak_rss_gib": harness.peak_rss_gib(),
        "peak_gpu_gib": harness.peak_gpu_gib(),
    }
    if args.maps:
        np.savez_compressed(args.maps, prob=prob)
    return result


# -- the device's rate and the network's FLOPs -------------------------------------------------------------------


def device_rate(device: str) -> dict[str, float]:
    """FLOP/s of a large 3D convolution and a large matmul on the device, float32 and (where the device computes it
    natively, ``lung_nodule_mtl.engines.bf16_native``: emulated, a rate says nothing and takes minutes) bfloat16,
    medians of 5."""
    import torch

    from lung_nodule_mtl.engines import bf16_native
    from lung_nodule_mtl.inference.pipeline import resolve_device

    dev = resolve_device(device)
    bf16 = bf16_native(dev)

    def timed(fn: Any) -> float:
        fn()
        times = []
        for _ in range(5):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    rates: dict[str, float] = {}
    n, c, s = (2, 64, 48) if dev.type == "cpu" else (8, 128, 64)
    conv = torch.nn.Conv3d(c, c, 3, padding=1, bias=False).to(dev).eval()
    x = torch.randn(n, c, s, s, s, device=dev)
    flops = 2.0 * n * c * c * 27 * s**3
    with torch.inference_mode():
        rates["conv3d_fp32"] = flops / timed(lambda: conv(x))
        if bf16:
            conv_cl, x_cl = conv.to(memory_format=torch.channels_last_3d), x.to(memory_format=torch.channels_last_3d)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                rates["conv3d_bf16"] = flops / timed(lambda: conv_cl(x_cl))
        m = 2048 if dev.type == "cpu" else 8192
        a, b = torch.randn(m, m, device=dev), torch.randn(m, m, device=dev)
        rates["matmul_fp32"] = 2.0 * m**3 / timed(lambda: a @ b)
        if bf16:
            a16, b16 = a.bfloat16(), b.bfloat16()
            rates["matmul_bf16"] = 2.0 * m**3 / timed(lambda: a16 @ b16)
    return rates


def network_flops(bundle: str | None) -> dict[str, float]:
    """FLOPs of one sliding window (mask only) and of one nodule crop through the whole network."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lung_nodule_mtl.networks.sliding_window import SlidingWindowAdapter

    _, parser = _parser(bundle, "cpu", [])
    network = parser.get_parsed_content("network_def").eval()
    roi = [int(s) for s in parser.get_parsed_content("patch_size")]
    x = torch.zeros(1, len(parser.get_parsed_content("windows")), *roi)
    out = {}
    with torch.inference_mode():
        for name, module in (("window", SlidingWindowAdapter(network, heads="none")), ("crop", network)):
            counter = FlopCounterMode(display=False)
            with counter:
                module(x)
            out[name] = float(counter.get_total_flops())
    return out


# -- the parent ----------------------------------------------------------------------------------------------------


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def compare_maps(ours_maps: Path, stock_maps: Path, ours_labels: str, stock_labels: str) -> dict[str, Any]:
    import nibabel as nib

    ours, stock = np.load(ours_maps), np.load(stock_maps)
    out: dict[str, Any] = {"dice_lungs": None, "dice_outputs": None}
    if ours["prob"].shape == stock["prob"].shape and ours["lung"].shape == ours["prob"].shape:
        lung = ours["lung"].astype(bool)
        out["dice_lungs"] = dice(ours["prob"] > 0.5, (stock["prob"] > 0.5) & lung)
        out["max_abs_prob_diff_lungs"] = float(np.abs(ours["prob"] - stock["prob"] * lung).max())
    else:
        out["note"] = f"isotropic grids differ: {ours['prob'].shape} vs {stock['prob'].shape}"
    la, lb = np.asarray(nib.load(ours_labels).dataobj), np.asarray(nib.load(stock_labels).dataobj)
    out["dice_outputs"] = dice(la > 0, lb > 0)
    out["identical_label_maps"] = bool(la.shape == lb.shape and np.array_equal(la, lb))
    return out


def ours_configs(args: argparse.Namespace) -> dict[str, list[str]]:
    """Our configurations: the bundle's defaults (plus ``--set``) and, with the stock pipeline's overlap, the one
    whose answer should equal the stock pipeline's."""
    configs = {"ours": list(args.set)}
    if args.same_overlap:
        configs[f"ours, overlap {STOCK_OVERLAP}"] = [*args.set, f"sw_overlap={STOCK_OVERLAP}"]
    if args.float32:
        configs["ours, float32"] = [*args.set, "amp_enabled=false"]
    return configs


def _report_nodules(labels_file: str, case_id: str) -> list[dict[str, Any]]:
    """The nodules of the report written beside a label map: centre voxel, detection and malignancy probability,
    diameter."""
    from lung_nodule_mtl.inference.batch import case_outputs

    report = json.loads(case_outputs(Path(labels_file).parent, case_id)["report"].read_text())
    keys = ("center_voxel", "detection_probability", "malignancy_probability", "diameter_mm")
    return [{k: n.get(k) for k in keys} for n in report["nodules"]]


def compare_outputs(
    scan: Path, ours: dict[str, Any], reference: dict[str, Any], ours_maps: Path, ref_maps: Path
) -> dict[str, Any]:
    """Ours against another checkout's run on the same scan: the nodules reported (the same centres; probabilities
    and diameters within 0.01), the written label maps and the mask probability inside the lungs."""
    from lung_nodule_mtl.io.ct import find_cases

    case_id = find_cases(str(scan))[0].case_id
    a, b = _report_nodules(ours["labels"], case_id), _report_nodules(reference["labels"], case_id)
    same = len(a) == len(b) and all(
        x["center_voxel"] == y["center_voxel"]
        and all(
            (x[k] is None and y[k] is None) or (x[k] is not None and y[k] is not None and abs(x[k] - y[k]) <= 0.01)
            for k in ("detection_probability", "malignancy_probability", "diameter_mm")
        )
        for x, y in zip(a, b, strict=True)
    )
    maps = compare_maps(ours_maps, ref_maps, ours["labels"], reference["labels"])
    keys = ("dice_lungs", "max_abs_prob_diff_lungs", "dice_outputs", "identical_label_maps")
    return {"same_nodules": same, "nodules": len(a), "nodules_reference": len(b)} | {k: maps.get(k) for k in keys}


def bench_scan(name: str, path: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    script = Path(__file__).resolve()
    common = ["--input", str(path), "--device", args.device] + (["--bundle", args.bundle] if args.bundle else [])
    ours = ours_configs(args)
    reference = f"ours, {args.reference_label}" if args.reference else None
    labels = [*ours, *([reference] if reference else []), "stock"]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    wanted = {label: args.repeats for label in labels} | {"stock": args.baseline_repeats}
    stock_maps = work / f"{name}_stock_maps.npz"
    cached = work / f"{name}_stock_runs.json"
    key = {"input": str(path), "size": path.stat().st_size, "machine": harness.cpu_model(), "bundle": args.bundle}
    if args.reuse_baseline and cached.is_file() and stock_maps.is_file():
        saved = json.loads(cached.read_text())
        if saved.get("key") == key:
            runs["stock"] = saved["runs"][: args.baseline_repeats]
            print(f"  {name} stock: reusing {len(runs['stock'])} earlier run(s) from {cached}", flush=True)

    def run_ours(label: str, out_dir: Path, maps: Path | None = None) -> dict[str, Any]:
        extra = ["--maps", str(maps)] if maps else []
        if label == reference:  # the other checkout's script, package and (unless --bundle) bundle
            ref_script = args.reference.resolve() / "benchmarks" / "inference.py"
            child = ["ours", *common, "--out", str(out_dir), *extra]
            return harness.run_child(ref_script, child, python_path=str(args.reference.resolve()))
        sets = ["--set", *ours[label]] if ours[label] else []
        return harness.run_child(script, ["ours", *common, "--out", str(out_dir), *extra, *sets])

    for _ in range(max(wanted.values())):  # interleaved: ours, ..., stock, ours, ...
        for label in runs:
            if len(runs[label]) >= wanted[label]:
                continue
            if label == "stock":
                extra = [] if runs["stock"] else ["--maps", str(stock_maps)]
                res = harness.run_child(script, ["stock", *common, "--out", str(work / f"{name}_stock_out"), *extra])
            else:
                res = run_ours(label, work / f"{name}_{labels.index(label)}_out")
            runs[label].append(res)
            print(
                f"  {name} {label}: run {len(runs[label])}: {res['wall_s']:.1f} s, "
                f"peak RSS {res['peak_rss_gib']:.2f} GiB",
                flush=True,
            )
    harness.write_json(cached, {"key": key, "runs": runs["stock"]})
    agreement: dict[str, Any] = {}
    maps_files = {}
    for i, label in enumerate(labels[:-1]):  # the maps of ours (keep_images: not timed), then compare
        maps_files[label] = work / f"{name}_{i}_maps.npz"
        run_ours(label, work / f"{name}_maps_out", maps_files[label])
        agreement[label] = compare_maps(
            maps_files[label], stock_maps, runs[label][0]["labels"], runs["stock"][0]["labels"]
        )
    if reference:
        first = labels[0]
        agreement[reference]["vs_ours"] = compare_outputs(
            path, runs[first][0], runs[reference][0], maps_files[first], maps_files[reference]
        )
        print(f"  {name}: ours vs {reference}: {agreement[reference]['vs_ours']}", flush=True)
    return {"scan": name, "input": str(path), "runs": runs, "agreement": agreement}


def summarise(result: dict[str, Any], flops: dict[str, float], rates: dict[str, float]) -> dict[str, Any]:
    best_rate = max(rates.values())
    summary: dict[str, Any] = {}
    for pipeline, runs in result["runs"].items():
        stages = list(dict.fromkeys(k for r in runs for k in r["stages_s"]))
        c = runs[0]["counts"]
        work = c.get("windows", 0) * flops["window"] + runs[0].get("n_nodules", 0) * flops["crop"]
        summary[pipeline] = {
            "wall_s": harness.median(r["wall_s"] for r in runs),
            "peak_rss_gib": harness.median(r["peak_rss_gib"] for r in runs),
            "peak_gpu_gib": harness.median(r["peak_gpu_gib"] for r in runs),
            "stages_s": {s: harness.median(r["stages_s"].get(s) for r in runs) for s in stages},
            "windows": c.get("windows"),
            "tflop": work / 1e12,
            "limit_s": work / best_rate,
            "repeats": len(runs),
        }
    return summary


def print_tables(name: str, summary: dict[str, Any], agreement: dict[str, Any]) -> str:
    stock = summary["stock"]
    lines = [f"\n### {name}\n"]
    rows = []
    for label, s in summary.items():
        a = agreement.get(label, {})
        rows.append(
            [
                "stock MONAI" if label == "stock" else label,
                s["repeats"],
                s["wall_s"],
                stock["wall_s"] / s["wall_s"] if s["wall_s"] else None,
                s["peak_rss_gib"],
                s["peak_gpu_gib"],
                s["windows"],
                s["tflop"],
                s["limit_s"],
                (s["wall_s"] / s["limit_s"]) if s["limit_s"] else None,
                harness.fmt(a.get("dice_lungs"), 4) if a else "-",
                harness.fmt(a.get("dice_outputs"), 4) if a else "-",
            ]
        )
    headers = ["pipeline", "repeats", "wall s (median)", "speed-up", "peak RSS GiB", "peak GPU GiB", "windows"]
    headers += ["TFLOP", "limit s", "x limit", "Dice lungs", "Dice outputs"]
    lines.append(harness.table(headers, rows))
    notes = [f"{k}: {v['note']}" for k, v in agreement.items() if v.get("note")]
    lines.append(
        f"\nDice vs the stock pipeline (tolerance: Dice lungs >= {DICE_TOLERANCE})" + "; ".join(["", *notes]) + "\n"
    )
    stages = list(dict.fromkeys(k for s in summary.values() for k in s["stages_s"]))
    labels = ["stock MONAI" if k == "stock" else k for k in summary]
    rows = [[st, *(s["stages_s"].get(st) for s in summary.values())] for st in stages]
    lines.append(harness.table(["stage (median s)", *labels], rows))
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scans", nargs="+", default=["real", "synthetic"], help="'real', 'synthetic' or NIfTI files")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of ours per scan (default 3)")
    p.add_argument("--baseline-repeats", type=int, default=1, help="timed runs of the stock pipeline (default 1)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--bundle", default=None, help="bundle folder (default: this checkout's bundle/)")
    p.add_argument(
        "--same-overlap",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"also run ours at the stock pipeline's overlap {STOCK_OVERLAP} (default: yes)",
    )
    p.add_argument("--float32", action="store_true", help="also run ours without mixed precision (amp_enabled=false)")
    p.add_argument("--set", nargs="*", default=[], help="ours: bundle overrides KEY=JSON, e.g. sw_overlap=0.5")
    p.add_argument("--work-dir", type=Path, default=harness.DEFAULT_WORK_DIR, help="scans and outputs cached here")
    p.add_argument(
        "--reuse-baseline",
        action="store_true",
        help="reuse the stock pipeline's runs saved in --work-dir by an earlier run on the same scan and machine\n"
        "(for iterating on ours; published figures run both side by side)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="another checkout of this project (e.g. `git worktree add /tmp/before COMMIT`): its `predict` runs as\n"
        "one more pipeline, interleaved, and its answer is compared with ours (same nodules, label maps, mask)",
    )
    p.add_argument("--reference-label", default="reference", help="its name in the tables (e.g. 'before')")
    p.add_argument("--json", type=Path, default=None, help="write every run and the summary here")
    # child mode (internal)
    p.add_argument("--child", choices=["ours", "stock"], help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--maps", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        res = run_ours(args) if args.child == "ours" else run_stock(args)
        harness.write_json(args.result, res)
        return 0

    m = harness.machine()
    print(harness.machine_line(m), flush=True)
    scans = prepare_scans(args.work_dir, args.scans)
    if not scans:
        print("no scan to run", file=sys.stderr)
        return 1
    results = []
    for name, path in scans.items():
        print(f"{name}: {path}", flush=True)
        results.append(bench_scan(name, path, args, args.work_dir))
    flops = network_flops(args.bundle)
    rates = device_rate(args.device)
    print(
        "\ndevice rate (TFLOP/s): " + ", ".join(f"{k} {v / 1e12:.3f}" for k, v in rates.items()),
        f"\nnetwork: {flops['window'] / 1e9:.2f} GFLOP per sliding window, {flops['crop'] / 1e9:.2f} GFLOP per "
        "nodule crop; 'limit s' = FLOPs / the best rate above",
        flush=True,
    )
    text = harness.machine_line(m) + "\n"
    for r in results:
        r["summary"] = summarise(r, flops, rates)
        text += print_tables(r["scan"], r["summary"], r["agreement"])
    if args.json:
        harness.write_json(
            args.json,
            {"machine": m, "argv": sys.argv[1:], "flops": flops, "device_rate": rates, "results": results},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
