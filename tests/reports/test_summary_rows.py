"""summary.csv rows of a case report: the fusion's outputs, and the network's own beside them."""

from __future__ import annotations

from lung_nodule_mtl.reports.scan import summary_rows


def _report(**extra: object) -> dict:
    nodule = {"label": 1, "center_world_mm_ras": [1.0, 2.0, 3.0], "center_voxel": [4, 5, 6], "diameter_mm": 8.0,
              "volume_mm3": 268.0, "detection_probability": 0.97, "malignancy_probability": 0.3,
              "malignancy_score": 2.5, "attributes": {"texture": 5, "margin": 4}, "source": "detected",
              **extra}  # fmt: skip
    return {"case_id": "c1", "nodules": [nodule], "model": {"package_version": "9.9"}}


def test_rows_without_a_fusion_hold_the_network_outputs_only() -> None:
    [row] = summary_rows(_report())
    assert row["texture"] == 5 and row["margin"] == 4 and row["malignancy_probability"] == 0.3
    assert not [k for k in row if k.endswith("_network")] and row["model_version"] == "9.9"


def test_rows_with_a_fusion_keep_the_network_ratings_beside_the_fused_ones() -> None:
    [row] = summary_rows(_report(malignancy_probability_network=0.6, attributes_network={"texture": 3, "margin": 2}))
    assert row["malignancy_probability"] == 0.3 and row["malignancy_probability_network"] == 0.6
    assert row["texture"] == 5 and row["texture_network"] == 3 and row["margin_network"] == 2
