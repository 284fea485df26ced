"""TimeBudget: a run shortened to the epochs that fit, its cosine schedule annealed at the new end."""

from __future__ import annotations

import time

import torch
from ignite.engine import Engine, Events

from lung_nodule_mtl.engines import TimeBudget


def _run(budget: float | None, epoch_s: float, max_epochs: int) -> tuple[Engine, TimeBudget, list[float]]:
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(params, lr=1.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
    engine = Engine(lambda e, b: time.sleep(epoch_s))
    lrs: list[float] = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: scheduler.step())
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: lrs.append(optimizer.param_groups[0]["lr"]))
    handler = TimeBudget(budget, scheduler, margin=0.0)
    handler.attach(engine)
    engine.run([0], max_epochs=max_epochs)
    return engine, handler, lrs


def test_a_run_that_does_not_fit_is_shortened_and_still_anneals() -> None:
    engine, handler, lrs = _run(budget=0.55, epoch_s=0.1, max_epochs=20)
    assert handler.shortened_to is not None and 3 <= engine.state.epoch <= 6 < 20
    assert engine.state.epoch == engine.state.max_epochs == handler.shortened_to
    assert lrs[-1] < 0.05  # the cosine schedule reached (about) its minimum at the new last epoch


def test_a_run_that_fits_is_left_alone() -> None:
    engine, handler, lrs = _run(budget=5.0, epoch_s=0.01, max_epochs=4)
    assert handler.shortened_to is None and engine.state.epoch == 4 and lrs[-1] < 1e-6


def test_no_budget_attaches_nothing() -> None:
    engine, handler, _ = _run(budget=None, epoch_s=0.0, max_epochs=3)
    assert engine.state.epoch == 3 and handler.seconds is None


def test_epochs_that_fit() -> None:
    b = TimeBudget(100.0, margin=0.1)
    assert b.epochs_that_fit(epoch=2, elapsed=20.0, last_epoch_s=10.0) == 2 + 7  # (90 - 20) / 10
    assert b.epochs_that_fit(epoch=2, elapsed=95.0, last_epoch_s=10.0) == 2
