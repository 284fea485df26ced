"""Where the deterministic head of a training chain (load, orient, resample; for scans the lung mask and window
places) is kept: in memory for the run (MONAI ``CacheDataset``) or on disk across runs and folds (MONAI
``PersistentDataset``, keyed by the item and the chain's parameters, so a changed chain never reads a stale
cache)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monai.data import Dataset

__all__ = ["cached_dataset"]


def cached_dataset(
    data: Sequence[Any],
    transform: Callable[..., Any],
    cache_dir: str | os.PathLike[str] | None = None,
    cache_rate: float = 1.0,
    num_workers: int | None = 1,
    progress: bool = True,
) -> Dataset:
    """A ``PersistentDataset`` under ``cache_dir`` when one is given, else a ``CacheDataset`` (``cache_rate`` of the
    items in memory, computed by ``num_workers`` threads, with a progress bar unless ``progress`` is false).

    The disk cache holds what the chain computes before its first random transform, one file per item, named by a
    hash of the item and of the pickled deterministic transforms (their parameters included): safe to share between
    the folds of a cross-validation and between runs; a changed chain makes new files, never reads stale ones.

    A chain that nests plain ``Compose`` blocks (the bundle's ``load``, ``scan_load`` …) is flattened first: MONAI's
    caching datasets stop at the first transform that is random *or a* ``Compose`` (every ``Compose`` is
    ``Randomizable``), so a nested load block would leave nothing cached and every draw would load and resample its
    volume again. ``OneOf`` / ``SomeOf`` / ``RandomOrder`` stay blocks (they choose at random).
    """
    # imported here: lung_nodule_mtl.data (the converters) must import without torch or MONAI
    from monai.data import CacheDataset, PersistentDataset
    from monai.data.utils import pickle_hashing
    from monai.transforms import Compose

    if type(transform) is Compose:
        transform = transform.flatten()  # keeps the chain's settings; a block with other map_items stays a block

    if cache_dir is not None and str(cache_dir) != "":
        os.makedirs(cache_dir, exist_ok=True)
        return PersistentDataset(data, transform, cache_dir=os.fspath(cache_dir), hash_transform=pickle_hashing)
    return CacheDataset(data, transform, cache_rate=cache_rate, num_workers=num_workers, progress=progress)
