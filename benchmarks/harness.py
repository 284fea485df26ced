"""Shared pieces of the benchmarks: the machine line, child processes with their peak memory, medians, tables.

Every timed run happens in a fresh child process (``python <script> --child ...``) so that each pipeline's peak
resident memory (``ru_maxrss``) is its own; the parent interleaves the pipelines' repeats (ours, baseline, ours, ...)
so slow drifts of the machine hit both alike, and reports medians.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEFAULT_WORK_DIR = REPO / "benchmarks" / ".work"


def cpu_model() -> str:
    """The CPU's model name, with its bfloat16 features (``avx512_bf16``, ``amx_bf16``, ``amx_tile``) if any."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    extras = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return (model or platform.machine()) + (f" ({', '.join(extras)})" if extras else "")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import monai
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "date": _dt.date.today().isoformat(),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": gpu,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def machine_line(m: Mapping[str, Any]) -> str:
    gpu = m["gpu"] or "no GPU"
    return (
        f"{m['date']}: {m['cpu']}, {m['usable_cores']} usable cores ({m['cpu_capability']}), torch threads "
        f"{m['torch_threads']}, {gpu}; torch {m['torch']}, MONAI {m['monai']}, load {m['load_average_1min']}"
    )


def peak_rss_gib() -> float:
    """This process's peak resident set size, GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_gpu_gib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**30


def run_child(
    script: Path, args: Sequence[str], timeout_s: float = 3600.0, python_path: str | None = None
) -> dict[str, Any]:
    """Run ``python script --child ... --result FILE`` in a fresh process and return the JSON it wrote;
    ``python_path`` goes first on the child's ``PYTHONPATH`` (e.g. another checkout, whose package then wins).

    Raises:
        RuntimeError: the child failed (its stderr's tail in the message).
    """
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, str(script), "--child", *args, "--result", str(result)]
        env = None
        if python_path is not None:
            paths = (python_path, os.environ.get("PYTHONPATH"))
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False, env=env)
        if proc.returncode != 0 or not result.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"benchmark child failed ({' '.join(cmd[1:4])} ...), exit {proc.returncode}:\n{tail}")
        return json.loads(result.read_text())


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON atomically (NaN and infinity as null), with the package's writer."""
    from lung_nodule_mtl.utils.io import atomic_write_json, json_safe

    atomic_write_json(json_safe(data), path)
    os.chmod(path, 0o644)


def median(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (pastes into benchmarks/README.md as is)."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join(lines)
