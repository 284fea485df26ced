"""Label encoding: malignancy policies, scores, 0-based attributes, missing labels, collate of a mixed batch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from monai.data import list_data_collate

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, ATTRIBUTE_NAMES, IGNORE_INDEX, Keys
from lung_nodule_mtl.transforms.labels import (
    LABEL_KEYS,
    NoduleLabels,
    NoduleLabelsd,
    encode_attribute,
    encode_malignancy,
    encode_malignancy_score,
)

LABELLED = {
    Keys.MALIGNANCY.value: 1,
    Keys.MALIGNANCY_SCORE.value: 4,
    "subtlety": 5,
    "internal_structure": 1,
    "calcification": 6,
    "sphericity": 3,
    "margin": 4,
    "lobulation": 2,
    "spiculation": 1,
    "texture": 5,
}


@pytest.mark.parametrize(
    ("value", "policy", "expected"),
    [
        (1, "ignore", 1.0),
        (0, "ignore", 0.0),
        (1.0, "soft", 1.0),
        (np.int64(0), "soft", 0.0),
        (-1, "ignore", float(IGNORE_INDEX)),
        (-1, "soft", 0.5),
        (None, "ignore", float(IGNORE_INDEX)),
        (None, "soft", float(IGNORE_INDEX)),
        (math.nan, "soft", float(IGNORE_INDEX)),
        (torch.tensor(1), "ignore", 1.0),
    ],
)
def test_malignancy(value: Any, policy: str, expected: float) -> None:
    out = encode_malignancy(value, policy)  # type: ignore[arg-type]
    assert out.dtype == torch.float32 and out.shape == ()
    assert out.item() == expected


@pytest.mark.parametrize(("value", "expected"), [(1, 1.0), (4, 4.0), (2.5, 2.5), (5.0, 5.0), (None, IGNORE_INDEX)])
def test_malignancy_score(value: Any, expected: float) -> None:
    out = encode_malignancy_score(value)
    assert out.dtype == torch.float32 and out.shape == ()
    assert out.item() == expected


@pytest.mark.parametrize("name", ATTRIBUTE_NAMES)
def test_attribute_zero_based(name: str) -> None:
    levels = ATTRIBUTE_CLASSES[name]
    out = [encode_attribute(name, v) for v in range(1, levels + 1)]
    assert all(t.dtype == torch.int64 and t.shape == () for t in out)
    assert [t.item() for t in out] == list(range(levels))
    assert encode_attribute(name, None).item() == IGNORE_INDEX
    assert encode_attribute(name, 2.0).item() == 1  # integral floats (JSON, pandas) are fine
    with pytest.raises(ValueError, match=rf"{name} must be an integer in 1\.\.{levels}.*got {levels + 1}"):
        encode_attribute(name, levels + 1)
    with pytest.raises(ValueError, match=rf"{name} must be an integer"):
        encode_attribute(name, 0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: encode_malignancy(2), r"malignancy must be 1, 0, -1 or None, got 2"),
        (lambda: encode_malignancy(0.5), "malignancy must be 1, 0, -1"),
        (lambda: encode_malignancy("1"), "malignancy must be a number or None, got '1'"),
        (lambda: encode_malignancy(1, "drop"), r"indeterminate must be one of \('ignore', 'soft'\), got 'drop'"),
        (lambda: encode_malignancy_score(0), r"malignancy_score must be in \[1, 5\].*got 0"),
        (lambda: encode_malignancy_score(5.5), "malignancy_score must be in"),
        (lambda: encode_malignancy_score(torch.ones(2)), r"malignancy_score must be one number.*shape \(2,\)"),
        (lambda: encode_attribute("texture", 2.5), r"texture must be an integer in 1\.\.5"),
        (lambda: encode_attribute("colour", 1), "name must be one of"),
        (lambda: NoduleLabels(keys=["malignancy", "diameter_mm"]), "keys must be a non-empty subset"),
        (lambda: NoduleLabels(keys=[]), "keys must be a non-empty subset"),
        (lambda: NoduleLabelsd(indeterminate="maybe"), "indeterminate must be one of"),
    ],
)
def test_ill_arg(call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_dict_labelled() -> None:
    item = {"image": "a.nii.gz", Keys.CASE_ID.value: "A_1", **LABELLED}
    out = NoduleLabelsd()(item)
    assert out["image"] == "a.nii.gz" and out[Keys.CASE_ID] == "A_1"  # other keys pass through
    assert item[Keys.MALIGNANCY] == 1  # the input is not modified
    assert out[Keys.MALIGNANCY].item() == 1.0 and out[Keys.MALIGNANCY_SCORE].item() == 4.0
    assert {name: out[name].item() for name in ATTRIBUTE_NAMES} == {k: LABELLED[k] - 1 for k in ATTRIBUTE_NAMES}


def test_dict_missing_keys() -> None:
    out = NoduleLabelsd()({"image": "b.nii.gz", "texture": None, "margin": 3})
    assert set(LABEL_KEYS) <= set(out)
    assert all(out[k].item() == IGNORE_INDEX for k in LABEL_KEYS if k != "margin")
    assert out["margin"].item() == 2


def test_dict_subset_of_keys() -> None:
    out = NoduleLabelsd(keys=[Keys.MALIGNANCY], indeterminate="soft")({Keys.MALIGNANCY.value: -1, "texture": 5})
    assert out[Keys.MALIGNANCY].item() == 0.5
    assert out["texture"] == 5  # not encoded: not among the keys


def test_collate_mixed_batch() -> None:
    items = [
        {"image": torch.zeros(1, 2, 2, 2), **LABELLED},
        {"image": torch.zeros(1, 2, 2, 2)},  # unlabelled
        {"image": torch.zeros(1, 2, 2, 2), Keys.MALIGNANCY.value: -1, Keys.MALIGNANCY_SCORE.value: 3},
    ]
    batch = list_data_collate([NoduleLabelsd(indeterminate="soft")(item) for item in items])
    assert batch["image"].shape == (3, 1, 2, 2, 2)
    assert batch[Keys.MALIGNANCY].dtype == torch.float32 and batch[Keys.MALIGNANCY].shape == (3,)
    assert batch[Keys.MALIGNANCY].tolist() == [1.0, IGNORE_INDEX, 0.5]
    assert batch[Keys.MALIGNANCY_SCORE].tolist() == [4.0, IGNORE_INDEX, 3.0]
    assert batch["calcification"].dtype == torch.int64
    assert batch["calcification"].tolist() == [5, IGNORE_INDEX, IGNORE_INDEX]
    # the batch works as is with the losses it is meant for
    logits = torch.zeros(3, ATTRIBUTE_CLASSES["calcification"])
    loss = torch.nn.functional.cross_entropy(logits, batch["calcification"], ignore_index=IGNORE_INDEX)
    assert loss.item() == pytest.approx(math.log(6))  # only the labelled item counts


@pytest.mark.parametrize(
    ("value", "expected"), [(1, 1.0), (0.0, 0.0), (None, float(IGNORE_INDEX)), (math.nan, float(IGNORE_INDEX))]
)
def test_nodule_detection_label(value: Any, expected: float) -> None:
    from lung_nodule_mtl.transforms.labels import encode_nodule

    out = encode_nodule(value)
    assert out.dtype == torch.float32 and out.item() == expected


def test_nodule_detection_label_rejects_other_values() -> None:
    from lung_nodule_mtl.transforms.labels import encode_nodule

    with pytest.raises(ValueError, match="nodule must be 1, 0 or None"):
        encode_nodule(0.5)
    assert NoduleLabelsd()({"nodule": 1})[Keys.NODULE].item() == 1.0
