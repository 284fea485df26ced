"""Which datalist a run uses: a prepared one, or the built-in synthetic data generated once."""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["DATALIST_NAME", "datalist_path", "ensure_synthetic_data", "resolve_datalist"]

logger = logging.getLogger(__name__)

DATALIST_NAME = "datalist.json"


def datalist_path(
    dataset_dir: str | os.PathLike[str] | None,
    datalist: str | os.PathLike[str] | None = None,
    synthetic_dir: str | os.PathLike[str] = "data/synthetic",
) -> str:
    """Path of the datalist JSON a bundle run reads; writes nothing (a config may resolve it while parsing).

    * ``datalist`` given: that file (relative paths are relative to ``dataset_dir`` when given).
    * else ``dataset_dir`` given: ``<dataset_dir>/datalist.json`` (as ``prepare-vois`` and ``synth`` write it).
    * else ``<synthetic_dir>/datalist.json``: the built-in synthetic data, which the configs' ``initialize`` step
      generates (:func:`ensure_synthetic_data`).

    Raises:
        FileNotFoundError: a datalist that was asked for does not exist.
    """
    if datalist not in (None, ""):
        path = Path(datalist)  # type: ignore[arg-type]
        if not path.is_absolute() and dataset_dir not in (None, ""):
            path = Path(dataset_dir) / path  # type: ignore[arg-type]
        if not path.is_file():
            raise FileNotFoundError(f"datalist not found: {str(path)!r}.")
        return str(path)
    if dataset_dir not in (None, ""):
        path = Path(dataset_dir) / DATALIST_NAME  # type: ignore[arg-type]
        if not path.is_file():
            raise FileNotFoundError(
                f"dataset_dir {str(dataset_dir)!r} has no {DATALIST_NAME}: prepare it with `lung-nodule-mtl "
                "prepare-vois` or `lung-nodule-mtl synth`, or pass --datalist."
            )
        return str(path)
    return str(Path(synthetic_dir) / DATALIST_NAME)


def ensure_synthetic_data(
    datalist_file: str | os.PathLike[str],
    synthetic_dir: str | os.PathLike[str] = "data/synthetic",
    cases: int = 24,
    seed: int = 0,
    mode: str = "crops",
) -> str:
    """Generate the built-in synthetic data in ``synthetic_dir`` when ``datalist_file`` is its datalist and it does not
    exist yet (``cases`` patients, ``seed``, ``mode``: ``crops``, ``scans`` or ``growth``), so a fresh clone trains out
    of the box; any other datalist is left alone. The bundle configs call it from ``initialize``. Returns
    ``datalist_file``.
    """
    path = Path(datalist_file)
    if path.resolve() == (Path(synthetic_dir) / DATALIST_NAME).resolve() and not path.is_file():
        from lung_nodule_mtl.data.synthetic import synthesize_dataset

        logger.info("no dataset given: generating the built-in synthetic data (%s) in %s", mode, synthetic_dir)
        synthesize_dataset(synthetic_dir, cases=cases, seed=seed, mode=mode)
    return str(path)


def resolve_datalist(
    dataset_dir: str | os.PathLike[str] | None,
    datalist: str | os.PathLike[str] | None = None,
    synthetic_dir: str | os.PathLike[str] = "data/synthetic",
    cases: int = 24,
    seed: int = 0,
    mode: str = "crops",
) -> str:
    """:func:`datalist_path`, the built-in synthetic data generated on first use (:func:`ensure_synthetic_data`):
    for Python callers; the bundle configs keep the two apart (path while parsing, data in ``initialize``).

    Raises:
        FileNotFoundError: a datalist that was asked for does not exist.
    """
    path = datalist_path(dataset_dir, datalist, synthetic_dir)
    return ensure_synthetic_data(path, synthetic_dir, cases, seed, mode)
