"""Training throughput of the MONAI Bundle: samples/s and the share of each step spent waiting for data.

The trainer is the bundle's own: ``bundle/configs/train.yaml`` parsed by :class:`monai.bundle.ConfigParser` with
overrides (``bundle_root`` in a temporary folder, ``resume: false``, ``cache_rate``, ``num_workers``, ...), and
``train#trainer`` (MONAI's ``SupervisedTrainer``) run for ``--warmup + --iterations`` iterations. Left out of what
``train.yaml`` runs: the ``ValidationHandler`` (validation is not training throughput; its data set is then never
built) and Ignite's ``ProgressBar`` (terminal output only); the ``StatsHandler`` / ``LrScheduleHandler`` logs are
silenced (``--verbose`` keeps them) but the handlers still run, as do the TensorBoard handler, the loss-term means
and the per-epoch checkpoint (written into the temporary ``bundle_root``).

Per iteration, from Ignite events (``GET_BATCH_STARTED``, ``GET_BATCH_COMPLETED``, ``ITERATION_COMPLETED``):

* **step**: time from one ``ITERATION_COMPLETED`` to the next (everything the loop does for one batch, epoch-end
  handlers and DataLoader worker start-up included);
* **wait**: ``GET_BATCH_STARTED`` → ``GET_BATCH_COMPLETED``, i.e. ``next(DataLoader)``: the time the step waits for
  data (all of the transforms with ``num_workers 0``; only what the workers have not prepared in advance otherwise);
* **samples/s**: batch size / step, median over the measured iterations (the warm-up ones are dropped), and the
  **wait fraction** wait / step, median and total (sum of waits / sum of steps, which counts the rare long waits
  the median ignores).

Configurations: every ``--augmentations`` × ``--cache-rates`` × ``--workers`` (the bundle's ``CacheDataset`` with
``cache_rate`` 1.0 caches the deterministic head of the chain, load → RAS → spacing; 0.0 runs every transform every
time; ``sample``: train.yaml's ``augmentation`` per sample in the DataLoader, ``device``: batched on the training
device by ``lung_nodule_mtl.transforms.BatchAugmentation``, the bundle's default); the baseline, for the ratios, is
``cache_rate 0.0`` with the first ``--workers`` and ``--augmentations`` values. Then ``--trainer-variants``
rows, the cached configuration with the first ``--workers`` value and config overrides:

* ``bf16``: on CPU the bundle's ``cpu_amp: true`` (``lung_nodule_mtl.engines.AutocastInferer``: the forward in
  ``bfloat16`` autocast, outputs back to fp32 for the loss; MONAI's ``SupervisedTrainer`` only autocasts on CUDA,
  with ``amp: true``); on CUDA ``amp: true`` with ``amp_dtype: bfloat16``;
* ``cl``: ``channels_last: true`` (the network's weights in ``channels_last_3d``, so the convolutions run
  channels-last);
* ``bf16-cl``: both (the bundle's defaults since 0.5.2). Every row names its layout and precision: the others run
  ``channels_last: false`` and, on CUDA, ``amp: true`` with ``amp_dtype: float16`` (fp16 autocast + ``GradScaler``,
  the defaults before 0.5.2), on CPU float32.

Then the **raw train step** (``--step-variants``): forward + ``train_loss`` + backward + ``optimizer.step()`` of the
bundle's ``network``, ``train_loss`` and ``optimizer`` (fresh, same seed, per variant) on one fixed batch of the
bundle's training data, in fp32, bf16 autocast, fp16 autocast + ``GradScaler`` (CUDA only, what ``amp: true``
runs), each with or without ``channels_last_3d``; the variants run interleaved so that a noisy machine affects them
alike.

Run from the repository root (``--help`` for the options)::

    python benchmarks/training.py --json training.json
    python benchmarks/training.py --dataset-dir data/lidc_vois --max-items 64   # prepared LIDC-IDRI VOIs

The default (synthetic data, 20 measured iterations per configuration) takes 2-4 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import monai
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from monai.utils import CommonKeys, set_determinism

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # the benchmarks' shared pieces (machine line, atomic JSON)

REPO = Path(__file__).resolve().parents[1]
TRAIN_CONFIG = REPO / "bundle" / "configs" / "train.yaml"

DROPPED_HANDLERS = ("ValidationHandler", "ignite.handlers.ProgressBar")
"""``_target_`` of the ``train#handlers`` entries the benchmark leaves out (see the module docstring)."""

CPU_TRAINER_VARIANTS = ("bf16", "cl")
CUDA_TRAINER_VARIANTS = ("cl",)
TRAINER_VARIANTS = ("bf16", "cl", "bf16-cl")
CPU_STEP_VARIANTS = ("fp32", "bf16", "fp32-cl", "bf16-cl")
CUDA_STEP_VARIANTS = ("fp32", "fp16", "bf16", "fp16-cl")
STEP_PRECISIONS = ("fp32", "bf16", "fp16")


# ---------------------------------------------------------------------------------------------------------------
# timing of the bundle's trainer


class StepTimer:
    """Ignite handler: per-iteration data wait and step time; terminates the engine after ``warmup + iterations``.

    Attach it after every other handler, so that the step it measures includes theirs.
    """

    def __init__(self, warmup: int, iterations: int) -> None:
        self.warmup = warmup
        self.iterations = iterations
        self.count = 0
        self.batch_sizes: list[int] = []
        self.waits: list[float] = []
        self.steps: list[float] = []
        self._t_last: float | None = None
        self._t_get = 0.0
        self._t_got = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._get_started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._get_completed)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._completed)

    def _get_started(self, engine: Engine) -> None:
        self._t_get = time.perf_counter()
        if self._t_last is None:  # first iteration: its step starts with its fetch
            self._t_last = self._t_get

    def _get_completed(self, engine: Engine) -> None:
        self._t_got = time.perf_counter()

    def _completed(self, engine: Engine) -> None:
        now = time.perf_counter()
        self.count += 1
        if self.count > self.warmup:
            self.batch_sizes.append(_batch_size(engine))
            self.waits.append(self._t_got - self._t_get)
            self.steps.append(now - (self._t_last if self._t_last is not None else self._t_get))
        self._t_last = now
        if self.count >= self.warmup + self.iterations:
            engine.terminate()


def _batch_size(engine: Engine) -> int:
    """Samples in the iteration: the trainer's output is decollated (a list, one item per sample) or a batch dict."""
    for value in (engine.state.output, engine.state.batch):
        if isinstance(value, list | tuple):
            return len(value)
        if isinstance(value, Mapping):
            image = value.get(CommonKeys.IMAGE)
            if isinstance(image, torch.Tensor):
                return int(image.shape[0])
    raise RuntimeError("cannot tell the batch size of the iteration")


@dataclass
class TrainerRow:
    """One trainer configuration's result (times in seconds)."""

    name: str
    cache_rate: float
    num_workers: int
    bf16: bool
    channels_last: bool
    device_augmentation: bool
    training_items: int
    iterations: int
    setup_s: float
    samples_per_s: float
    samples_per_s_mean: float
    step_s: float
    wait_s: float
    compute_s: float
    wait_fraction: float
    wait_fraction_total: float
    ratio_vs_baseline: float = math.nan
    baseline: bool = False
    repeat_samples_per_s: list[float] = field(default_factory=list)


@dataclass
class TrainerConfig:
    cache_rate: float
    num_workers: int
    bf16: bool = False
    channels_last: bool = False
    device_augmentation: bool = True

    @property
    def name(self) -> str:
        if self.cache_rate in (0.0, 1.0):
            text = "cached" if self.cache_rate == 1.0 else "uncached"
        else:
            text = f"cache_rate {self.cache_rate:g}"
        text += f", workers {self.num_workers}"
        text += ", batched device augmentation" if self.device_augmentation else ", per-sample augmentation"
        return text + (", bf16 autocast" if self.bf16 else "") + (", channels_last_3d" if self.channels_last else "")

    def overrides(self, device: torch.device) -> dict[str, Any]:
        """Config overrides of this configuration."""
        out: dict[str, Any] = {
            "cache_rate": self.cache_rate,
            "num_workers": self.num_workers,
            "device_augmentation": self.device_augmentation,
        }
        # explicit, whatever the bundle's defaults: the rows differ only in what they name
        out["channels_last"] = self.channels_last
        if device.type == "cuda":
            out.update({"amp": True, "amp_dtype": "bfloat16" if self.bf16 else "float16"})
        else:
            out["cpu_amp"] = self.bf16  # the bundle's lung_nodule_mtl.engines.AutocastInferer
        return out


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def bundle_parser(config_file: Path, overrides: Mapping[str, Any]) -> ConfigParser:
    """``train.yaml`` with ``overrides`` (``#``-separated ids) applied and the dropped handlers removed."""
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser.update(dict(overrides))
    handlers = parser["train#handlers"]
    parser["train#handlers"] = [
        h for h in handlers if not (isinstance(h, Mapping) and h.get("_target_") in DROPPED_HANDLERS)
    ]
    return parser


def _quiet(trainer: Engine, handlers: Sequence[Any]) -> None:
    """Set the loggers of the trainer and of its handlers (``StatsHandler``, ``LrScheduleHandler``) to WARNING."""
    trainer.logger.setLevel(logging.WARNING)
    for handler in handlers:
        if isinstance(getattr(handler, "logger", None), logging.Logger):
            handler.logger.setLevel(logging.WARNING)


def run_trainer(
    config_file: Path,
    overrides: Mapping[str, Any],
    warmup: int,
    iterations: int,
    verbose: bool = False,
) -> tuple[StepTimer, float, int]:
    """Build ``train#trainer`` from the bundle, run ``warmup + iterations`` iterations.

    Returns:
        the timer, the setup time (parsing, network, ``CacheDataset`` fill) and the number of training items.
    """
    parser = bundle_parser(config_file, overrides)
    t0 = time.perf_counter()
    trainer = parser.get_parsed_content("train#trainer")
    setup_s = time.perf_counter() - t0
    if not verbose:
        _quiet(trainer, parser.get_parsed_content("train#handlers"))
    timer = StepTimer(warmup, iterations)
    timer.attach(trainer)
    set_determinism(seed=parser.get_parsed_content("seed"))  # as the bundle's ``training`` section
    trainer.run()
    if timer.count < warmup + iterations:
        raise RuntimeError(f"the trainer stopped after {timer.count} of {warmup + iterations} iterations")
    return timer, setup_s, len(trainer.data_loader.dataset)


def summarize(config: TrainerConfig, timers: Sequence[StepTimer], setup_s: float, items: int) -> TrainerRow:
    steps = [s for t in timers for s in t.steps]
    waits = [w for t in timers for w in t.waits]
    sizes = [b for t in timers for b in t.batch_sizes]
    return TrainerRow(
        name=config.name,
        cache_rate=config.cache_rate,
        num_workers=config.num_workers,
        bf16=config.bf16,
        channels_last=config.channels_last,
        device_augmentation=config.device_augmentation,
        training_items=items,
        iterations=len(steps),
        setup_s=setup_s,
        samples_per_s=statistics.median(b / s for b, s in zip(sizes, steps, strict=True)),
        samples_per_s_mean=sum(sizes) / sum(steps),
        step_s=statistics.median(steps),
        wait_s=statistics.median(waits),
        compute_s=statistics.median(s - w for s, w in zip(steps, waits, strict=True)),
        wait_fraction=min(1.0, max(0.0, statistics.median(w / s for w, s in zip(waits, steps, strict=True)))),
        wait_fraction_total=min(1.0, max(0.0, sum(waits) / sum(steps))),
        repeat_samples_per_s=[
            statistics.median(b / s for b, s in zip(t.batch_sizes, t.steps, strict=True)) for t in timers
        ],
    )


# ---------------------------------------------------------------------------------------------------------------
# raw train step on a fixed batch


@dataclass
class StepRow:
    name: str
    precision: str
    channels_last: bool
    steps: int
    step_s: float
    samples_per_s: float
    first_loss: float
    ratio_vs_fp32: float = math.nan


def _step_variant(text: str) -> tuple[str, bool]:
    precision, _, suffix = text.partition("-")
    if precision not in STEP_PRECISIONS or suffix not in ("", "cl"):
        raise argparse.ArgumentTypeError(
            f"step variant {text!r}: expected <precision>[-cl], precision one of {', '.join(STEP_PRECISIONS)}"
        )
    return precision, suffix == "cl"


def _variant_label(precision: str, channels_last: bool) -> str:
    label = {"fp32": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast + GradScaler"}[precision]
    return label + (" + channels_last_3d" if channels_last else "")


def _to_memory_format(value: Any, channels_last: bool) -> Any:
    if channels_last and isinstance(value, torch.Tensor) and value.ndim == 5:
        return value.contiguous(memory_format=torch.channels_last_3d)
    return value


def make_train_step(
    parser_factory: Callable[[], ConfigParser],
    batch: tuple[torch.Tensor, dict[str, torch.Tensor]],
    device: torch.device,
    precision: str,
    channels_last: bool,
    seed: int,
) -> Callable[[], float]:
    """A closure running one step of a fresh ``network`` / ``train_loss`` / ``optimizer`` of the bundle."""
    set_determinism(seed=seed)
    parser = parser_factory()
    network = parser.get_parsed_content("network")  # the bundle's layout (channels_last: true) is set here per variant
    network = network.to(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
    loss_fn = parser.get_parsed_content("train_loss")
    optimizer = parser.get_parsed_content("optimizer")  # built on the (converted) network's parameters
    inputs = _to_memory_format(batch[0], channels_last)
    targets = {k: _to_memory_format(v, channels_last) for k, v in batch[1].items()}
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    network.train()

    def step() -> float:
        optimizer.zero_grad(set_to_none=False)  # SupervisedTrainer's default
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(network(inputs), targets).mean()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.item()  # synchronises the device, as TotalLoss does every step

    return step


def run_raw_steps(
    parser_factory: Callable[[], ConfigParser],
    device: torch.device,
    variants: Sequence[tuple[str, bool]],
    iterations: int,
    warmup: int,
    seed: int,
) -> list[StepRow]:
    parser = parser_factory()
    loader = parser.get_parsed_content("train#dataloader")
    batch = parser.get_parsed_content("prepare_batch")(next(iter(loader)), device)
    batch_size = int(batch[0].shape[0])
    steps = {v: make_train_step(parser_factory, batch, device, *v, seed=seed) for v in variants}
    first_loss = {}
    for v, step in steps.items():
        torch.manual_seed(seed)  # same dropout draws for the first step of every variant
        first_loss[v] = step()
        for _ in range(max(warmup - 1, 0)):
            step()
    times: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
    for _ in range(iterations):
        for v, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[v].append(time.perf_counter() - t0)
    rows = []
    for v in variants:
        step_s = statistics.median(times[v])
        rows.append(StepRow(_variant_label(*v), v[0], v[1], iterations, step_s, batch_size / step_s, first_loss[v]))
    reference = next((r for r in rows if r.precision == "fp32" and not r.channels_last), rows[0])
    for r in rows:
        r.ratio_vs_fp32 = r.samples_per_s / reference.samples_per_s
    return rows


# ---------------------------------------------------------------------------------------------------------------
# machine, report


def machine_info(device: torch.device) -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu": harness.cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": str(device),
        "gpu": gpu,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))
    ]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        )
    return "\n".join(lines)


def format_report(results: Mapping[str, Any]) -> str:
    m = results["machine"]
    s = results["settings"]
    threads = f"torch threads {m['torch_threads']}" + (
        f" (OMP_NUM_THREADS={m['omp_num_threads']})" if m["omp_num_threads"] else ""
    )
    out = [
        f"Training throughput of {s['config']} ({s['data']}, batch {s['batch_size']}, patch {s['patch_size']}, "
        f"amp {s['amp']}, {s['iterations']} iterations after {s['warmup']} warm-up x {s['repeats']} repeat(s))",
        f"machine: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), {threads}, "
        f"device {m['device']}, GPU {m['gpu']}",
        f"torch {m['torch']}, monai {m['monai']}, python {m['python']}, {m['date']}",
        "",
    ]
    header = [
        "configuration",
        "samples/s",
        "step ms",
        "wait ms",
        "wait frac",
        "wait frac (total)",
        "vs baseline",
        "setup s",
    ]
    rows = [
        [
            r["name"] + (" (baseline)" if r["baseline"] else ""),
            f"{r['samples_per_s']:.2f}",
            f"{1e3 * r['step_s']:.0f}",
            f"{1e3 * r['wait_s']:.0f}",
            f"{r['wait_fraction']:.2f}",
            f"{r['wait_fraction_total']:.2f}",
            f"{r['ratio_vs_baseline']:.2f}x",
            f"{r['setup_s']:.1f}",
        ]
        for r in results["trainer"]
    ]
    out.append(_table(header, rows))
    out.append(
        "samples/s, step, wait, wait frac: medians over iterations; wait frac (total): sum of waits / sum of steps; "
        "setup: parse + network + CacheDataset fill"
    )
    if results["raw_step"]:
        out += ["", f"raw train step (forward + loss + backward + AdamW step, fixed batch of {s['batch_size']})"]
        header = ["variant", "step ms", "samples/s", "vs fp32", "loss (1st step)"]
        rows = [
            [
                r["name"],
                f"{1e3 * r['step_s']:.0f}",
                f"{r['samples_per_s']:.2f}",
                f"{r['ratio_vs_fp32']:.2f}x",
                f"{r['first_loss']:.4f}",
            ]
            for r in results["raw_step"]
        ]
        out.append(_table(header, rows))
    return "\n".join(out)


def _display_path(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


# ---------------------------------------------------------------------------------------------------------------
# command line


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the empty ones (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/training.py",
        description="Training throughput of the bundle's SupervisedTrainer (samples/s, data-wait fraction) with and "
        "without CacheDataset caching, and the raw train step in fp32 / bf16 / channels_last_3d.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--config-file", type=Path, default=TRAIN_CONFIG, help="the bundle's training config")
    p.add_argument("--iterations", type=int, default=20, help="measured iterations per configuration and repeat")
    p.add_argument("--warmup", type=int, default=3, help="iterations run first and not measured")
    p.add_argument("--repeats", type=int, default=1, help="runs of every configuration (interleaved), pooled")
    p.add_argument("--cache-rates", type=float, nargs="+", default=[0.0, 1.0], help="CacheDataset cache_rate values")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="num_workers values (DataLoader + caching)")
    p.add_argument(
        "--augmentations",
        nargs="+",
        choices=("sample", "device"),
        default=["sample", "device"],
        help="where train.yaml's augmentation runs: per sample in the DataLoader (device_augmentation false) or "
        "batched on the training device (true, the bundle's default); the first is the baseline's",
    )
    p.add_argument(
        "--trainer-variants",
        nargs="*",
        choices=TRAINER_VARIANTS,
        default=None,
        metavar="VARIANT",
        help=f"extra cached trainer rows, of {', '.join(TRAINER_VARIANTS)} (config overrides, see the module "
        f"docstring); none to skip; default CPU: {' '.join(CPU_TRAINER_VARIANTS)}, "
        f"CUDA: {' '.join(CUDA_TRAINER_VARIANTS)}",
    )
    p.add_argument("--batch-size", type=int, default=None, help="batch_size (default: the config's)")
    p.add_argument("--patch-size", type=int, nargs=3, default=None, help="patch_size (default: the config's)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other config override, VALUE as JSON when it parses (e.g. network_def#init_filters=4); repeatable",
    )
    data = p.add_argument_group("data (default: the bundle's built-in synthetic data)")
    data.add_argument("--dataset-dir", default=None, help="a prepared folder with datalist.json (e.g. data/lidc_vois)")
    data.add_argument("--datalist", default=None, help="a datalist JSON")
    data.add_argument("--synthetic-cases", type=int, default=32, help="patients of the synthetic data (train.yaml: 64)")
    data.add_argument(
        "--synthetic-dir", default=None, help="where the synthetic data is made or reused (default: temp)"
    )
    data.add_argument("--max-items", type=int, default=None, help="use only the first N training items")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda when available")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    step = p.add_argument_group("raw train step")
    step.add_argument(
        "--step-variants",
        type=_step_variant,
        nargs="*",
        default=None,
        metavar="VARIANT",
        help="<fp32|bf16|fp16>[-cl] (-cl: channels_last_3d; fp16: CUDA only); none to skip; default CPU: "
        f"{' '.join(CPU_STEP_VARIANTS)}, CUDA: {' '.join(CUDA_STEP_VARIANTS)}",
    )
    step.add_argument("--step-iterations", type=int, default=8, help="timed steps per variant")
    step.add_argument("--step-warmup", type=int, default=2, help="untimed steps per variant (the first gives the loss)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the results as JSON (atomically)")
    p.add_argument("--verbose", action="store_true", help="keep the trainer's logs and progress bars")
    return p


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.iterations < 1 or args.warmup < 0 or args.repeats < 1:
        p.error("--iterations and --repeats must be >= 1, --warmup >= 0")
    if args.step_iterations < 1 or args.step_warmup < 1:
        p.error("--step-iterations and --step-warmup must be >= 1")
    if any(not 0.0 <= c <= 1.0 for c in args.cache_rates) or any(w < 0 for w in args.workers):
        p.error("--cache-rates must be in [0, 1] and --workers >= 0")
    if args.max_items is not None and args.max_items < 1:
        p.error("--max-items must be >= 1")
    for item in args.overrides:
        if "=" not in item:
            p.error(f"--set {item!r}: expected KEY=VALUE")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the report; return the results (as written by ``--json``)."""
    arg_parser = build_arg_parser()
    args = arg_parser.parse_args(argv)
    _check_args(arg_parser, args)
    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return _run(arg_parser, args, argv)
    finally:
        torch.set_num_threads(threads)


def _run(arg_parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    if args.device == "auto":
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device("cuda:0" if args.device == "cuda" else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        arg_parser.error("--device cuda: no CUDA device")
    variants = args.step_variants
    if variants is None:
        variants = [_step_variant(v) for v in (CUDA_STEP_VARIANTS if device.type == "cuda" else CPU_STEP_VARIANTS)]
    if device.type != "cuda" and any(prec == "fp16" for prec, _ in variants):
        arg_parser.error("fp16 step variants need CUDA (GradScaler)")
    trainer_variants = args.trainer_variants
    if trainer_variants is None:
        trainer_variants = CUDA_TRAINER_VARIANTS if device.type == "cuda" else CPU_TRAINER_VARIANTS

    cudnn_flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    with tempfile.TemporaryDirectory(prefix="lnm_train_bench_") as tmp:
        overrides: dict[str, Any] = {
            "resume": False,
            "epochs": 10_000,  # the timer stops the run; only the cosine schedule's T_max depends on it
            "device": f"$torch.device('{device}')",
            "synthetic_dir": args.synthetic_dir or os.path.join(tmp, "synthetic"),
            "synthetic_cases": args.synthetic_cases,
        }
        if args.dataset_dir is not None:
            overrides["dataset_dir"] = args.dataset_dir
        if args.datalist is not None:
            overrides["datalist"] = args.datalist
        if args.batch_size is not None:
            overrides["batch_size"] = args.batch_size
        if args.patch_size is not None:
            overrides["patch_size"] = list(args.patch_size)
        if args.max_items is not None:
            overrides["train#dataset#data"] = f"$@datalist_splits['training'][:{args.max_items}]"
        if not args.verbose:
            overrides["train#dataset#progress"] = False
        for item in args.overrides:
            key, _, value = item.partition("=")
            overrides[key] = _parse_value(value)

        probe = bundle_parser(args.config_file, {**overrides, "bundle_root": os.path.join(tmp, "probe")})
        t0 = time.perf_counter()
        probe.get_parsed_content("prepare_data")  # the bundle's initialize: makes the synthetic data when it is used
        datalist_file = probe.get_parsed_content("datalist_file")
        data_s = time.perf_counter() - t0
        synthetic = args.dataset_dir is None and args.datalist is None
        data = (f"synthetic data, {args.synthetic_cases} patients" if synthetic else f"datalist {datalist_file}") + (
            f", first {args.max_items} training items" if args.max_items else ""
        )
        print(f"data: {datalist_file} ({data_s:.1f} s)", file=sys.stderr)

        configs = [
            TrainerConfig(c, w, device_augmentation=a == "device")
            for a in args.augmentations
            for w in args.workers
            for c in args.cache_rates
        ]
        for variant in trainer_variants:
            configs.append(
                TrainerConfig(
                    max(args.cache_rates), args.workers[0], bf16="bf16" in variant, channels_last="cl" in variant
                )
            )
        timers: dict[int, list[StepTimer]] = {i: [] for i in range(len(configs))}
        setups: dict[int, list[float]] = {i: [] for i in range(len(configs))}
        items: dict[int, int] = {}
        try:
            run = 0
            for repeat in range(args.repeats):
                for i, config in enumerate(configs):
                    run += 1
                    print(f"[{repeat + 1}/{args.repeats}] trainer: {config.name} ...", file=sys.stderr, flush=True)
                    run_overrides = {**overrides, "bundle_root": os.path.join(tmp, f"run{run}")}
                    run_overrides.update(config.overrides(device))
                    timer, setup_s, items[i] = run_trainer(
                        args.config_file, run_overrides, args.warmup, args.iterations, args.verbose
                    )
                    timers[i].append(timer)
                    setups[i].append(setup_s)
            rows = [
                summarize(config, timers[i], statistics.median(setups[i]), items[i]) for i, config in enumerate(configs)
            ]
            baseline = next(
                (
                    r
                    for r in rows
                    if r.cache_rate == 0.0
                    and r.num_workers == args.workers[0]
                    and not (r.bf16 or r.channels_last)
                    and r.device_augmentation == (args.augmentations[0] == "device")
                ),
                rows[0],
            )
            baseline.baseline = True
            for r in rows:
                r.ratio_vs_baseline = r.samples_per_s / baseline.samples_per_s

            step_rows: list[StepRow] = []
            if variants:
                print(f"raw train step: {', '.join(_variant_label(*v) for v in variants)} ...", file=sys.stderr)
                step_overrides = {**overrides, "bundle_root": os.path.join(tmp, "step"), "cache_rate": 0.0}
                step_overrides["num_workers"] = 0
                step_rows = run_raw_steps(
                    lambda: bundle_parser(args.config_file, step_overrides),
                    device,
                    variants,
                    args.step_iterations,
                    args.step_warmup,
                    int(probe.get_parsed_content("seed")),
                )
        finally:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_flags

    results: dict[str, Any] = {
        "machine": machine_info(device),
        "settings": {
            "config": _display_path(args.config_file),
            "data": data,
            "batch_size": probe["batch_size"],
            "amp": bool(probe.get_parsed_content("amp")),
            "patch_size": probe["patch_size"],
            "iterations": args.iterations,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "overrides": {k: v for k, v in overrides.items() if k not in ("synthetic_dir",)},
            "dropped_handlers": list(DROPPED_HANDLERS),
            "command": shlex.join(["python", "benchmarks/training.py", *(argv if argv is not None else sys.argv[1:])]),
        },
        "trainer": [asdict(r) for r in rows],
        "raw_step": [asdict(r) for r in step_rows],
    }
    print(format_report(results))
    if args.json is not None:
        harness.write_json(args.json, results)
        print(f"results written to {args.json}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
