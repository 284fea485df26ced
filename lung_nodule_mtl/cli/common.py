"""What the ``lung-nodule-mtl`` subcommands share."""

from __future__ import annotations

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
