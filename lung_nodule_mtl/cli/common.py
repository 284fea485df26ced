"""What the ``lung-nodule-mtl`` subcommands share."""

from __future__ import annotations

import argparse
import json
from collections.abc import Container, Mapping
from typing import Any

__all__ = ["print_summary"]


def print_summary(title: str, summary: Mapping[str, Any], skip: Container[str] = ()) -> None:
    """Print ``title`` and one aligned ``key value`` line per entry of ``summary`` (dicts and lists as JSON)."""
    print(title)
    for key, value in summary.items():
        if key in skip:
            continue
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        print(f"  {key:<20} {shown}")


def add_annotated_scan_arguments(p: argparse.ArgumentParser, out_help: str, checkpoint_help: str) -> None:
    """``--scans --annotations --excluded --out --bundle --checkpoint --device``: the inputs of a fit on annotated
    whole scans (``refit-detection-head``, ``fit-candidate-classifier``)."""
    p.add_argument("--scans", required=True, help="scans as predict reads them (a file, or a folder of them)")
    p.add_argument(
        "--annotations",
        required=True,
        help="their nodules: CSV seriesuid (the scan's case id), coordX, coordY, coordZ (LPS mm), diameter_mm; a scan "
        "without rows has none",
    )
    p.add_argument("--excluded", default=None, help="findings that are neither (LUNA16 annotations_excluded.csv)")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--bundle", default=None, help="bundle folder (default: as predict)")
    p.add_argument("--checkpoint", default=None, help=checkpoint_help)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
