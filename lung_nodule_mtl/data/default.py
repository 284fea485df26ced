"""Which datalist a run uses: a prepared one, or the built-in synthetic data generated once."""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["DATALIST_NAME", "resolve_datalist"]

logger = logging.getLogger(__name__)

DATALIST_NAME = "datalist.json"


def resolve_datalist(
    dataset_dir: str | os.PathLike[str] | None,
    datalist: str | os.PathLike[str] | None = None,
    synthetic_dir: str | os.PathLike[str] = "data/synthetic",
    cases: int = 24,
    seed: int = 0,
    mode: str = "crops",
) -> str:
    """Path of the datalist JSON a bundle run reads.

    * ``datalist`` given: that file (relative paths are relative to ``dataset_dir`` when given).
    * else ``dataset_dir`` given: ``<dataset_dir>/datalist.json`` (as ``prepare-vois`` and
      ``synth`` write it).
    * else the built-in synthetic data in ``synthetic_dir``, generated on first use (``cases``
      patients, ``seed``, ``mode``: ``crops`` or ``growth`` pairs) and reused afterwards, so a fresh clone
      trains out of the box.

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
    path = Path(synthetic_dir) / DATALIST_NAME
    if not path.is_file():
        from lung_nodule_mtl.data.synthetic import synthesize_dataset

        logger.info("no dataset_dir: generating the built-in synthetic data in %s", synthetic_dir)
        synthesize_dataset(synthetic_dir, cases=cases, seed=seed, mode=mode)
    return str(path)
