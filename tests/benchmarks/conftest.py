"""The benchmark scripts as modules (``benchmarks/`` is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@contextmanager
def benchmark_script(name: str) -> Iterator[ModuleType]:
    """``benchmarks/<name>.py`` imported as a module, registered in ``sys.modules`` while in use (dataclasses look
    their module up there) and removed after."""
    spec = importlib.util.spec_from_file_location(f"lnm_{name}_benchmark", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="session")
def load_benchmark() -> object:
    """:func:`benchmark_script`, for the tests' fixtures."""
    return benchmark_script
