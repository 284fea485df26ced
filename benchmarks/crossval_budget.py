"""What the full cross-validation recipe costs: its FLOPs counted, this device's training rate measured.

The recipe of the real-data issues: 5 folds, each training on the other four folds' nodules (4/5 of ``--items``)
for ``--epochs`` epochs at ``--patch``³ crops with LNMSNet of ``--init-filters``, then evaluating its fold.

* **Counted**: the FLOPs of one training sample (forward and backward, by ``torch.utils.flop_counter`` on a real
  step of the network, batch 1) and of one evaluation crop (forward).
* **Measured here**: the raw training step (forward, loss, backward, AdamW) of that network on this device,
  bfloat16 autocast and channels-last 3D (the bundle's GPU defaults; float32 on a CPU without native bfloat16,
  where oneDNN would emulate it), medians over ``--iterations``; the FLOP/s it reaches, and the device's dense rate
  in the same precision (a large 3D convolution, as in ``inference.py``).
* **Estimated**: the recipe's time on this device at the measured rate; on a GPU of ``--gpu-peak-tflops`` dense
  bfloat16 TFLOP/s at the share of peak this network reaches here (an assumption: small 3D convolutions
  reach a smaller share of a GPU's peak than of a CPU's, so this is optimistic), at 100% (a hard floor), and the
  share of that peak the recipe needs to fit in ``--budget-s``. Data loading is not in the estimate: the samples
  per second a fit needs are printed beside it.

    python benchmarks/crossval_budget.py                         # 64³, init_filters 16, 50 epochs; ~2 min here
    python benchmarks/crossval_budget.py --device cuda --json gpu.json   # on a GPU: measured, not estimated
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
from inference import device_rate

LIDC_VOIS = 655
"""LIDC-IDRI nodule VOIs with a rating and a mask (of the 818), the cross-validation's items."""


def _network(init_filters: int, device: Any) -> Any:
    from lung_nodule_mtl.networks import DEFAULT_HEADS, LNMSNet

    with device:
        return LNMSNet(
            spatial_dims=3, in_channels=3, out_channels=1, init_filters=init_filters, heads=list(DEFAULT_HEADS)
        )


def _loss(out: dict[str, Any]) -> Any:
    return sum(v.float().mean() for v in out.values() if v.is_floating_point())


def count_flops(init_filters: int, patch: int) -> dict[str, float]:
    """FLOPs of one training sample (forward + backward) and one evaluation crop (forward), batch 1, on ``meta``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = _network(init_filters, torch.device("meta")).train()
    x = torch.zeros(1, 3, patch, patch, patch, device="meta")
    train = FlopCounterMode(display=False)
    with train:
        _loss(net(x)).backward()
    forward = FlopCounterMode(display=False)
    with forward, torch.no_grad():
        net.eval()(x)
    return {"train_sample": float(train.get_total_flops()), "eval_crop": float(forward.get_total_flops())}


def measure_step(
    init_filters: int, patch: int, batch: int, device: str, warmup: int, iterations: int
) -> tuple[float, str]:
    """Seconds per raw training step (median), channels-last 3D, bfloat16 autocast where the device computes it
    natively (else float32); and that precision (``"bf16"`` / ``"fp32"``)."""
    import torch

    from lung_nodule_mtl.engines import bf16_native, place_network
    from lung_nodule_mtl.inference.pipeline import resolve_device

    dev = resolve_device(device)
    torch.manual_seed(0)
    net = place_network(_network(init_filters, torch.device("cpu")), dev, True).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, patch, patch, patch, device=dev).contiguous(memory_format=torch.channels_last_3d)
    bf16 = bf16_native(dev)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = _loss(net(x))
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return float(harness.median(times) or float("nan")), "bf16" if bf16 else "fp32"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--items", type=int, default=LIDC_VOIS, help=f"nodules in the study (default {LIDC_VOIS})")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--patch", type=int, default=64, help="crop edge, voxels (default 64)")
    p.add_argument("--init-filters", type=int, default=16)
    p.add_argument("--batch", type=int, default=2, help="batch of the measured step")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--gpu-peak-tflops", type=float, default=790.0, help="the GPU's dense bfloat16 TFLOP/s (H100/H200)")
    p.add_argument("--budget-s", type=float, default=600.0, help="the time the recipe should fit in (default 600)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    for name in ("items", "folds", "epochs", "patch", "init_filters", "batch", "iterations"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.folds < 2:
        p.error("--folds must be >= 2")

    machine = harness.machine()
    print(harness.machine_line(machine), flush=True)
    flops = count_flops(args.init_filters, args.patch)
    train_items = args.items * (args.folds - 1) // args.folds
    samples = args.folds * args.epochs * train_items
    total = samples * flops["train_sample"] + args.items * flops["eval_crop"]  # every nodule evaluated once
    step_s, precision = measure_step(
        args.init_filters, args.patch, args.batch, args.device, args.warmup, args.iterations
    )
    achieved = args.batch * flops["train_sample"] / step_s
    rates = device_rate(args.device)
    share = achieved / rates[f"conv3d_{precision}"]
    gpu_peak = args.gpu_peak_tflops * 1e12
    result = {
        "machine": machine,
        "settings": vars(args) | {"json": str(args.json) if args.json else None},
        "gflop_per_train_sample": flops["train_sample"] / 1e9,
        "gflop_per_eval_crop": flops["eval_crop"] / 1e9,
        "train_samples": samples,
        "total_pflop": total / 1e15,
        "step_s": step_s,
        "samples_per_s": args.batch / step_s,
        "achieved_tflops": achieved / 1e12,
        "precision": precision,
        "device_conv_tflops": rates[f"conv3d_{precision}"] / 1e12,
        "share_of_device_rate": share,
        "this_device_hours": total / achieved / 3600.0,
        "gpu_s_at_same_share": total / (share * gpu_peak),
        "gpu_s_at_peak": total / gpu_peak,
        "gpu_share_needed": total / args.budget_s / gpu_peak,
        "samples_per_s_needed": samples / args.budget_s,
    }
    rows = [
        ["recipe", f"{args.folds} folds x {args.epochs} epochs x {train_items} crops of {args.patch}^3, "
         f"init_filters {args.init_filters}"],
        ["FLOPs per training sample (fwd + bwd) / eval crop", f"{result['gflop_per_train_sample']:.1f} / "
         f"{result['gflop_per_eval_crop']:.1f} GFLOP"],
        ["training samples; total", f"{samples:,}; {result['total_pflop']:.2f} PFLOP"],
        [f"measured step (batch {args.batch}, {precision}, channels-last)", f"{step_s:.2f} s = "
         f"{result['samples_per_s']:.2f} samples/s = {result['achieved_tflops']:.3f} TFLOP/s"],
        [f"device {precision} convolution rate; share reached", f"{result['device_conv_tflops']:.2f} TFLOP/s; "
         f"{share:.1%}"],
        ["this device, whole recipe", f"{result['this_device_hours']:.1f} h"],
        [f"GPU of {args.gpu_peak_tflops:.0f} TFLOP/s at the same share", f"{result['gpu_s_at_same_share']:.0f} s"],
        ["same GPU at 100% of peak (floor)", f"{result['gpu_s_at_peak']:.0f} s"],
        [f"share of its peak needed for {args.budget_s:.0f} s", f"{result['gpu_share_needed']:.1%}, with "
         f"{result['samples_per_s_needed']:.0f} samples/s from the data loader"],
    ]  # fmt: skip
    print(harness.table(["", "value"], rows), flush=True)
    if args.json:
        harness.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
