"""Batches for MONAI's Ignite engines: the image as the network input, every label as one target dict.

MONAI's ``SupervisedTrainer`` calls ``loss_function(pred, targets)`` with what ``prepare_batch``
returns as targets, and ``SupervisedEvaluator`` stores it under ``engine.state.output["label"]``.
A multi-task model needs all of its labels there, so :class:`MultiTaskPrepareBatch` returns
``(image, {"label": mask, "malignancy": ..., "malignancy_score": ..., <attribute>: ..., ...})``.

With ``augmentation`` (a :class:`~lung_nodule_mtl.transforms.batch_augment.BatchAugmentation`), the image and the
mask are augmented as a batch on the training device after the move (``train.yaml``: ``device_augmentation``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch

from lung_nodule_mtl.constants import ATTRIBUTE_NAMES, Keys

__all__ = ["DEFAULT_TARGET_KEYS", "MultiTaskPrepareBatch"]

DEFAULT_TARGET_KEYS: tuple[str, ...] = (
    Keys.LABEL.value,
    Keys.MALIGNANCY.value,
    Keys.MALIGNANCY_SCORE.value,
    *ATTRIBUTE_NAMES,
    Keys.DIAMETER.value,
    Keys.NODULE.value,
)
"""Keys moved into the targets dict when present in the batch (the mask and every head's label)."""


class MultiTaskPrepareBatch(PrepareBatch):
    """Split a collated batch into the network input and a dict of targets, on ``device``.

    Args:
        image_key: key of the input image ``(B, C, H, W, D)``.
        target_keys: keys copied into the targets dict; absent keys are skipped (e.g. no mask at
            inference), non-tensor values (case ids, paths) are never moved.
        augmentation: ``(image, mask or None) -> (image, mask)`` applied on ``device`` after the move (the mask is
            the target under ``label_key``); ``None``: none.
        label_key: the mask's key.
    """

    def __init__(
        self,
        image_key: str = Keys.IMAGE,
        target_keys: Sequence[str] = DEFAULT_TARGET_KEYS,
        augmentation: Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]]
        | None = None,
        label_key: str = Keys.LABEL,
    ) -> None:
        if isinstance(target_keys, str):
            raise TypeError(f"target_keys must be a sequence of keys, got the string {target_keys!r}.")
        self.image_key = str(image_key)
        self.target_keys = tuple(str(k) for k in target_keys)
        self.augmentation = augmentation
        self.label_key = str(label_key)

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``(image, targets)`` with every tensor on ``device``."""
        if self.image_key not in batchdata:
            raise KeyError(f"batch has no {self.image_key!r} (keys: {sorted(map(str, batchdata))}).")
        image = batchdata[self.image_key].to(device=device, non_blocking=non_blocking, **kwargs)
        targets = {
            key: batchdata[key].to(device=device, non_blocking=non_blocking, **kwargs)
            for key in self.target_keys
            if isinstance(batchdata.get(key), torch.Tensor)
        }
        if self.augmentation is not None:
            image, mask = self.augmentation(image, targets.get(self.label_key))
            if mask is not None:
                targets[self.label_key] = mask
        return image, targets
