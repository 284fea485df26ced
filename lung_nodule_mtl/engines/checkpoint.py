"""Checkpoints that let an interrupted training run resume where it stopped.

:class:`TrainingCheckpoint` is one Ignite handler for the trainer: on ``attach`` it adds the
trainer itself to the objects to save (which a declarative config cannot do without a circular
reference), then

* attaches a MONAI ``CheckpointSaver`` writing ``checkpoint_epoch=<N>.pt`` every epoch (the last
  one kept) with the network, optimiser, scheduler and trainer state, and ``model_final.pt`` at the
  end; on rank 0 only under ``torch.distributed``;
* when ``resume`` and a checkpoint exists, attaches a MONAI ``CheckpointLoader`` for the newest one
  (every rank), so the epoch counter, weights, optimiser and scheduler continue from it.

MONAI's loader uses ``torch.load(..., weights_only=True)``: a checkpoint cannot run code when loaded.

Every checkpoint is written atomically by :class:`AtomicCheckpointSaver` (MONAI's ``CheckpointSaver``
writes in place, so a run killed mid-save leaves a truncated file that the next resume cannot read).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointLoader, CheckpointSaver

from lung_nodule_mtl.utils.flags import as_bool
from lung_nodule_mtl.utils.io import atomic_path

__all__ = ["CHECKPOINT_PATTERN", "AtomicCheckpointSaver", "AtomicDiskSaver", "TrainingCheckpoint", "latest_checkpoint"]

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"checkpoint_epoch=(\d+)\.pt$")
"""File names of MONAI ``CheckpointSaver``'s interval checkpoints (with or without a prefix)."""


def latest_checkpoint(ckpt_dir: str | os.PathLike[str]) -> Path | None:
    """The interval checkpoint with the highest epoch in ``ckpt_dir``, or ``None`` if there is none."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.search(p.name))]
    return max(found)[1] if found else None


class AtomicDiskSaver(BaseSaveHandler):
    """Ignite save handler writing each checkpoint to a temporary file, then renaming it (rank 0 only).

    Args:
        dirname: folder of the checkpoints (created if needed).
        filename: fixed file name that replaces the one Ignite proposes (as MONAI's saver does for
            ``model.pt`` / ``model_final.pt``), or ``None`` to keep Ignite's.
    """

    def __init__(self, dirname: str | os.PathLike[str], filename: str | None = None) -> None:
        self.dirname = Path(dirname)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != 0:
            return
        with atomic_path(self.dirname / (self.filename or filename)) as tmp:
            torch.save(checkpoint, tmp)

    def remove(self, filename: str) -> None:
        if idist.get_rank() == 0:
            (self.dirname / (self.filename or filename)).unlink(missing_ok=True)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's :class:`~monai.handlers.CheckpointSaver` (same arguments) with atomic writes.

    The save handlers MONAI creates (which write in place) are replaced by :class:`AtomicDiskSaver`
    with the same folder and fixed file name; everything else (file names, key-metric selection,
    unwrapping of DDP models) is MONAI's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                old = checkpoint.save_handler
                checkpoint.save_handler = AtomicDiskSaver(old.dirname, getattr(old, "filename", None))  # type: ignore[assignment]


class TrainingCheckpoint:
    """Save every epoch and resume from the newest checkpoint; see the module docstring.

    Args:
        ckpt_dir: folder of the checkpoints.
        objects: what to save and restore besides the trainer, e.g.
            ``{"model": net, "optimizer": opt, "lr_scheduler": sched}``.
        resume: load the newest ``checkpoint_epoch=<N>.pt`` before training, if there is one.
        save_interval: epochs between checkpoints.
        final_filename: file of the weights-and-state at the end of training.
        map_location: ``torch.load``'s ``map_location`` when resuming (e.g. the device).
    """

    def __init__(
        self,
        ckpt_dir: str | os.PathLike[str],
        objects: Mapping[str, Any],
        resume: bool = True,
        save_interval: int = 1,
        final_filename: str = "model_final.pt",
        map_location: Any = None,
    ) -> None:
        if "trainer" in objects:
            raise ValueError("objects must not hold 'trainer': the engine the handler is attached to is added.")
        if save_interval < 1:
            raise ValueError(f"save_interval must be >= 1 epoch, got {save_interval!r}.")
        self.ckpt_dir = Path(ckpt_dir)
        self.objects = dict(objects)
        self.resume = as_bool(resume, "resume")
        self.save_interval = save_interval
        self.final_filename = final_filename
        self.map_location = map_location
        self.resumed_from: Path | None = None

    def attach(self, engine: Engine) -> None:
        to_save = {**self.objects, "trainer": engine}
        if self.resume and (path := latest_checkpoint(self.ckpt_dir)) is not None:
            logger.info("resuming training from %s", path)
            self.resumed_from = path
            CheckpointLoader(load_path=str(path), load_dict=to_save, map_location=self.map_location).attach(engine)
        if idist.get_rank() == 0:
            AtomicCheckpointSaver(
                save_dir=str(self.ckpt_dir),
                save_dict=to_save,
                save_interval=self.save_interval,
                n_saved=1,
                save_final=True,
                final_filename=self.final_filename,
            ).attach(engine)
