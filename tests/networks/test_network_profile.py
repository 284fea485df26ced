"""The parameter/FLOPs profiler of LNMSNet variants."""

from __future__ import annotations

import pytest

from lung_nodule_mtl.networks.profile import main, profile_table, profile_variant


def test_profile_variant() -> None:
    params1, flops1 = profile_variant({"init_filters": 4, "blocks": (1, 1)}, in_channels=1, patch=(16, 16, 16))
    params3, flops3 = profile_variant({"init_filters": 4, "blocks": (1, 1)}, in_channels=3, patch=(16, 16, 16))
    assert params3 - params1 == 2 * 27 * 4  # only the stem sees the input channels
    assert 0 < flops1 < flops3
    _, no_ms = profile_variant({"init_filters": 4, "blocks": (1, 1), "msconv": False}, patch=(16, 16, 16))
    assert no_ms < flops1


def test_profile_table(capsys: pytest.CaptureFixture[str]) -> None:
    table = profile_table({"tiny": {"init_filters": 4, "blocks": (1,)}}, channels=(1,), patch=(8, 8, 8))
    assert table.splitlines()[2].startswith("| tiny")
    assert "GFLOPs" in table
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "FLOPs" in capsys.readouterr().out
