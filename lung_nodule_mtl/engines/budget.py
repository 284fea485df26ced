"""Fit a training run into a wall-clock budget (a lent GPU, a queue's time limit), annealing to the end."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["TimeBudget"]

logger = logging.getLogger(__name__)


class TimeBudget:
    """Ignite handler: shorten the run to the epochs that fit in ``seconds``, and its learning-rate schedule with it.

    After every epoch but the first (which starts the workers and tunes the kernels) it estimates how many epochs
    fit in what is left of the budget (from the last epoch's duration, with ``margin``) and, when that is fewer than
    ``max_epochs``, lowers ``max_epochs`` — and the ``T_max`` of a cosine schedule, so the learning rate still
    anneals to its minimum at the new last epoch. It never adds epochs.
    The run then completes normally (final checkpoint, ``COMPLETED`` handlers).

    Args:
        seconds: the budget, counted from the ``STARTED`` event; ``None`` or ``<= 0``: no limit.
        lr_scheduler: a scheduler with ``T_max`` (``CosineAnnealingLR``) stepped once per epoch, to shorten too.
        margin: fraction of the budget kept free.
    """

    def __init__(self, seconds: float | None = None, lr_scheduler: Any = None, margin: float = 0.05) -> None:
        self.seconds = None if seconds is None or float(seconds) <= 0 else float(seconds)
        self.lr_scheduler = lr_scheduler
        self.margin = float(margin)
        self.start = 0.0
        self.epoch_start = 0.0
        self.shortened_to: int | None = None

    def attach(self, engine: Engine) -> None:
        if self.seconds is None:
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, engine: Engine) -> None:
        self.start = time.monotonic()

    def _epoch_started(self, engine: Engine) -> None:
        self.epoch_start = time.monotonic()

    def epochs_that_fit(self, epoch: int, elapsed: float, last_epoch_s: float) -> int:
        """The last epoch that ends within the budget, estimated after ``epoch`` epochs in ``elapsed`` s."""
        assert self.seconds is not None
        left = self.seconds * (1.0 - self.margin) - elapsed
        return epoch + max(math.floor(left / max(last_epoch_s, 1e-6)), 0)

    def _epoch_completed(self, engine: Engine) -> None:
        now = time.monotonic()
        epoch, max_epochs = int(engine.state.epoch), int(engine.state.max_epochs or 0)
        fit = self.epochs_that_fit(epoch, now - self.start, now - self.epoch_start)
        if fit >= max_epochs or (epoch == 1 and fit > 1):  # the first epoch is slow (workers, autotuning): wait
            return
        new = max(fit, epoch)
        logger.warning(
            "time budget %.0f s: %d of %d epochs fit (%.0f s so far, last epoch %.0f s)",
            self.seconds,
            new,
            max_epochs,
            now - self.start,
            now - self.epoch_start,
        )
        self.shortened_to = new
        engine.state.max_epochs = new
        if self.lr_scheduler is not None and hasattr(self.lr_scheduler, "T_max"):
            self.lr_scheduler.T_max = new
        if new <= epoch:
            engine.terminate()
