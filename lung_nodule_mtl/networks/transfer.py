"""Transfer learning (seed 2): partial checkpoint loading and freezing of encoder stages.

Seed 2 fine-tunes with some layers frozen to suit small training sets. :func:`load_partial_state` loads whatever
of a checkpoint fits (the heads may differ: keys missing on either side or with another shape are skipped, and
reported), :func:`freeze_encoder_stages` freezes chosen encoder stages. Both are usable from a bundle config, e.g.::

    "network": "$lung_nodule_mtl.networks.transfer.load_partial_state(@network_def, @pretrained_path)[0]"

Checkpoints are read with ``torch.load(..., weights_only=True)`` only: no pickled code is executed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["LoadReport", "freeze_encoder_stages", "init_weights", "load_partial_state"]

logger = logging.getLogger(__name__)

STATE_DICT_KEYS: tuple[str, ...] = ("state_dict", "model", "network", "net", "model_state_dict")
"""Where a state dict is looked for inside a checkpoint dict when ``key`` is not given (MONAI bundles save
``{"model": state_dict}``; Lightning-style files ``{"state_dict": ...}``)."""

STRIP_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
"""Prefixes removed from checkpoint keys by default (``DataParallel`` / DDP and ``torch.compile`` wrappers)."""


@dataclass
class LoadReport:
    """What :func:`load_partial_state` did.

    Attributes:
        loaded: model keys whose values were copied from the checkpoint.
        shape_mismatch: model key → ``(checkpoint shape, model shape)`` for keys skipped because the shapes differ.
        missing: model keys the checkpoint does not have (they keep their current values).
        unexpected: checkpoint keys (after mapping) the model does not have.
        excluded: model keys matched by ``exclude`` and left alone.
    """

    loaded: list[str] = field(default_factory=list)
    shape_mismatch: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[str]:
        """Model keys not loaded: shape-mismatched, missing from the checkpoint or excluded."""
        return sorted({*self.shape_mismatch, *self.missing, *self.excluded})

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (e.g. to save next to the run's logs)."""
        return asdict(self)

    def summary(self) -> str:
        """One-line summary."""
        return (
            f"loaded {len(self.loaded)} tensors; skipped {len(self.shape_mismatch)} shape-mismatched, "
            f"{len(self.missing)} missing from the checkpoint, {len(self.excluded)} excluded; "
            f"{len(self.unexpected)} checkpoint keys unused"
        )


def _extract_state_dict(obj: Any, key: str | None, source: str) -> dict[str, torch.Tensor]:
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            raise ValueError(f"checkpoint {source}: key must name a state dict inside it, got key={key!r}.")
        obj = obj[key]
    elif isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for k in STATE_DICT_KEYS:
            if isinstance(obj.get(k), Mapping):
                obj = obj[k]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"checkpoint {source}: expected a state dict (names → tensors), possibly under one of "
            f"{list(STATE_DICT_KEYS)} (or pass key=...), got {type(obj).__name__}."
        )
    return dict(obj)


def load_partial_state(
    model: nn.Module,
    checkpoint: str | PathLike[str] | Mapping[str, Any],
    key: str | None = None,
    src_prefix: str = "",
    dst_prefix: str = "",
    strip_prefixes: Sequence[str] = STRIP_PREFIXES,
    mapping: Mapping[str, str] | None = None,
    exclude: str | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, LoadReport]:
    """Load the parts of a checkpoint that fit ``model``; skip and report the rest.

    Works like :func:`monai.networks.utils.copy_model_state` but also reports shape-mismatched keys apart, reads
    files safely and handles wrapped checkpoints. Keys are transformed in this order: ``strip_prefixes`` removed,
    only keys starting with ``src_prefix`` kept (and the prefix removed), ``mapping`` applied to the whole key,
    ``dst_prefix`` prepended. Example: a MONAI/MedicalNet ResNet-18 checkpoint into LNMSNet's encoder with
    ``dst_prefix="encoder."`` (its stride-2 7×7×7 ``conv1`` is skipped as shape-mismatched).

    Args:
        model: the model to update in place.
        checkpoint: a file path (read with ``torch.load(weights_only=True)``) or an already loaded dict.
        key: name of the state dict inside the checkpoint dict; ``None`` to use the dict itself or one of
            :data:`STATE_DICT_KEYS`.
        src_prefix: keep only checkpoint keys with this prefix, and remove it (e.g. ``"encoder."``).
        dst_prefix: prefix added to the checkpoint keys to make model keys (e.g. ``"encoder."``).
        strip_prefixes: prefixes removed from checkpoint keys first (``"module."``...).
        mapping: ``{checkpoint key: model key}`` renames, applied after the prefixes are handled on the source side.
        exclude: regular expression; model keys it matches (``re.search``) are not loaded (e.g. ``"^heads\\."``).
        map_location: device for the loaded tensors.

    Returns:
        ``(model, report)``; the report is also logged (summary at INFO, key lists at DEBUG).

    Raises:
        FileNotFoundError: if ``checkpoint`` is a path that does not exist.
        ValueError: if no state dict can be found in the checkpoint.
    """
    if isinstance(checkpoint, Mapping):
        source = "<dict>"
        raw: Any = checkpoint
    else:
        source = str(checkpoint)
        try:
            raw = torch.load(checkpoint, map_location=map_location, weights_only=True)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"checkpoint not found: {source}") from e
    src = _extract_state_dict(raw, key, source)

    renamed: dict[str, torch.Tensor] = {}
    for k, v in src.items():
        for p in strip_prefixes:
            if k.startswith(p):
                k = k[len(p) :]
        if src_prefix:
            if not k.startswith(src_prefix):
                continue
            k = k[len(src_prefix) :]
        if mapping and k in mapping:
            k = mapping[k]
        renamed[dst_prefix + k] = v

    dst = model.state_dict()
    pattern = re.compile(exclude) if exclude else None
    report = LoadReport()
    update: dict[str, torch.Tensor] = {}
    for k, v in dst.items():
        if pattern is not None and pattern.search(k):
            report.excluded.append(k)
        elif k not in renamed:
            report.missing.append(k)
        elif tuple(renamed[k].shape) != tuple(v.shape):
            report.shape_mismatch[k] = (list(renamed[k].shape), list(v.shape))
        else:
            update[k] = renamed[k]
            report.loaded.append(k)
    report.unexpected = sorted(k for k in renamed if k not in dst)
    model.load_state_dict(update, strict=False)

    logger.info("load_partial_state(%s): %s", source, report.summary())
    for k, (s_shape, d_shape) in report.shape_mismatch.items():
        logger.info("  skipped %s: checkpoint shape %s, model shape %s", k, s_shape, d_shape)
    logger.debug("  loaded: %s", report.loaded)
    logger.debug("  missing from the checkpoint: %s", report.missing)
    logger.debug("  unused checkpoint keys: %s", report.unexpected)
    return model, report


def freeze_encoder_stages(model: nn.Module, stages: Sequence[str | int]) -> list[str]:
    """Freeze encoder stages of an :class:`~lung_nodule_mtl.networks.LNMSNet` (``requires_grad=False``).

    Frozen stages also stay in eval mode through ``model.train()``, so their normalisation statistics do not move.
    Frozen parameters get no gradient, and PyTorch optimisers skip parameters whose ``grad`` is ``None``; building
    the optimiser from ``filter(lambda p: p.requires_grad, model.parameters())`` makes that explicit.

    Args:
        model: an LNMSNet (anything with a ``freeze_stages`` method).
        stages: ``"stem"``, ``"layer1"`` … ``"layerN"``, indices (0 = stem) or ``"encoder"`` for all.

    Returns:
        The names of the frozen stages.

    Raises:
        ValueError: if the model cannot freeze stages or a stage is unknown.
    """
    freeze = getattr(model, "freeze_stages", None)
    if not callable(freeze):
        raise ValueError(f"freeze_encoder_stages: model must be an LNMSNet, got {type(model).__name__}.")
    result: list[str] = freeze(stages)
    return result


def init_weights(model: nn.Module, checkpoint: str | PathLike[str] | None = None) -> nn.Module:
    """``model`` with the weights of ``checkpoint`` that fit it (:func:`load_partial_state`; what was not loaded is
    logged), or unchanged when ``checkpoint`` is ``None`` or empty: a bundle's ``init_weights`` knob (fine-tuning).

    Raises:
        FileNotFoundError: a checkpoint that does not exist.
    """
    if checkpoint in (None, ""):
        return model
    if not Path(str(checkpoint)).is_file():
        raise FileNotFoundError(f"init_weights: checkpoint not found: {str(checkpoint)!r}.")
    load_partial_state(model, checkpoint)  # logs what it loaded and skipped
    return model
