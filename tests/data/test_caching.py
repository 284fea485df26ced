"""lung_nodule_mtl.data.cached_dataset: the deterministic head of a chain is computed once per item, also when the
chain nests Compose blocks as the bundle's configs do (MONAI's caching stops at the first Compose otherwise)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from monai.transforms import Compose, MapTransform, OneOf, RandomizableTransform

from lung_nodule_mtl.data import cached_dataset


class CountingLoad(MapTransform):
    """Deterministic: turns the item's value into a tensor and counts its calls (shared across the test)."""

    calls = 0

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        type(self).calls += 1
        d = dict(data)
        d["image"] = torch.full((1, 4, 4, 4), float(d["value"]))
        return d


class RandShift(RandomizableTransform, MapTransform):
    """Random: adds a draw in [0, 1) to the image."""

    def __init__(self, keys: str, prob: float = 1.0) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        self.randomize(None)
        d = dict(data)
        d["image"] = d["image"] + float(self.R.uniform())
        return d


def _chain(nested: bool) -> Compose:
    load = [CountingLoad(keys="image")]
    return Compose([Compose(load) if nested else load[0], RandShift(keys="image", prob=1.0)])


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "disk"])
def test_deterministic_head_computed_once_per_item(tmp_path: Path, nested: bool, on_disk: bool) -> None:
    data = [{"value": v} for v in (1.0, 5.0, 9.0)]
    CountingLoad.calls = 0
    ds = cached_dataset(data, _chain(nested), cache_dir=tmp_path / "cache" if on_disk else None, progress=False)
    draws = [ds[i % len(data)]["image"] for i in range(3 * len(data))]
    assert CountingLoad.calls == len(data)  # cached: the load never runs again, nested or not
    for i, image in enumerate(draws):
        shift = float(image.flatten()[0]) - data[i % len(data)]["value"]
        assert 0.0 <= shift < 1.0  # the random tail still runs on every draw
    assert len({float(d.flatten()[0]) for d in draws}) == len(draws)  # and draws differ


def test_random_compose_blocks_are_not_unrolled() -> None:
    """OneOf chooses among its transforms at random: it must stay one block (and stop the cache there)."""
    chain = Compose([CountingLoad(keys="image"), OneOf([RandShift(keys="image", prob=1.0), Compose([])])])
    CountingLoad.calls = 0
    ds = cached_dataset([{"value": 2.0}], chain, progress=False)
    assert CountingLoad.calls == 1
    values = {round(float(ds[0]["image"].flatten()[0]), 6) for _ in range(20)}
    assert 2.0 in values and len(values) > 1  # sometimes the identity branch, sometimes a shift
