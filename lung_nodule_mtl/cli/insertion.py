"""``lung-nodule-mtl insert-nodules``: real nodules pasted into whole scans (evaluation and training scans).

::

    lung-nodule-mtl prepare-vois --vois ../shared/data/lidc_vois --out data/lidc_vois --folds 5
    lung-nodule-mtl insert-nodules --hosts data/hosts/ --nodules data/lidc_vois/datalist.json --folds 4 \\
        --per-scan 3 --out data/inserted_test [--host-nodules host_annotations.csv] [--seed 0]

The work is :func:`lung_nodule_mtl.data.insertion.insert_into_scans`; this module only parses and prints.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _cmd_insert_nodules(args: argparse.Namespace) -> int:
    from lung_nodule_mtl.cli.common import print_summary
    from lung_nodule_mtl.constants import DatalistSplit
    from lung_nodule_mtl.data import load_datalist
    from lung_nodule_mtl.data.insertion import NoduleBank, insert_into_scans

    if args.per_scan < 1:
        raise ValueError(f"--per-scan must be >= 1, got {args.per_scan}.")
    items = [i for s in DatalistSplit for i in _split(load_datalist, args.nodules, s.value)]
    if args.folds is not None:
        items = [i for i in items if i.get("fold") is not None and int(i["fold"]) in set(args.folds)]
    if not items:
        raise ValueError(f"{args.nodules}: no nodules" + (f" in folds {args.folds}" if args.folds else "") + ".")
    bank = NoduleBank.from_items(items, workers=args.workers)
    summary = insert_into_scans(
        args.hosts,
        bank,
        args.out,
        per_scan=args.per_scan,
        seed=args.seed,
        host_nodules_csv=args.host_nodules,
        min_distance_mm=args.min_distance_mm,
        **({} if args.max_dense_overlap is None else {"max_dense_overlap": args.max_dense_overlap}),
    )
    summary["bank"] = f"{len(bank)} nodules of {len(bank.patients())} patients"
    print_summary(f"Real nodules pasted into {summary['hosts']} scan(s): {args.out}", summary)
    return 0


def _split(load, path, split):  # type: ignore[no-untyped-def]
    try:
        return load(path, split)
    except ValueError as e:  # a datalist without that list
        if "has no" in str(e):
            return []
        raise


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``insert-nodules`` subcommand to ``lung-nodule-mtl``'s sub-parsers."""
    p = subparsers.add_parser(
        "insert-nodules",
        help="paste real nodules (from nodule crops, e.g. the LIDC-IDRI VOIs) into the lungs of whole scans",
        description="Cut every nodule of a datalist of nodule crops out along its mask (real HU, the readers' "
        "mask and ratings), paste some into the lungs of each host scan with a soft edge (solitary, or against a "
        "vessel or the pleura), and write the scans on the isotropic training grid with label maps, a LUNA16-style "
        "annotations.csv (the FROC reference) and a datalist. Use held-out patients' nodules (--folds) for "
        "evaluation scans.",
    )
    p.add_argument("--hosts", nargs="+", required=True, help="host scans: files or folders, as predict reads them")
    p.add_argument("--nodules", required=True, help="datalist of nodule crops (e.g. prepare-vois's datalist.json)")
    p.add_argument("--folds", type=int, nargs="+", default=None, help="only the nodules of these patient folds")
    p.add_argument("--per-scan", type=int, default=3, help="nodules pasted per scan (default: 3)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--host-nodules",
        default=None,
        help="the hosts' own nodules: CSV seriesuid (case id), "
        "coordX, coordY, coordZ (LPS mm), diameter_mm; kept clear of and annotated",
    )
    p.add_argument("--min-distance-mm", type=float, default=30.0, help="between nodule centres (default: 30)")
    p.add_argument(
        "--max-dense-overlap",
        type=float,
        default=None,
        help="largest share of a pasted nodule's mask on host voxels >= -300 HU (vessels, pleura, chest wall), "
        "where it would be invisible while its label claims it (default: 0.15, insertion.DEFAULT_MAX_DENSE_OVERLAP; "
        "1: no limit)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--workers", type=int, default=0, help="processes reading the nodule crops (default: 0)")
    p.set_defaults(func=_cmd_insert_nodules)
    return p
