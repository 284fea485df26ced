"""Mixed precision for training on the CPU, where MONAI's engines have none.

MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator`` with ``amp=True`` autocast on CUDA only. On a CPU with
native bfloat16 (Intel AMX or AVX512-BF16, AMD Zen 4+), bfloat16 autocast halves the training step of LNMSNet
(``benchmarks/training.py``: 2.0x samples/s on 2 cores); :class:`AutocastInferer` gives it through the bundle's
``inferer`` slot without touching the engines.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.inferers import Inferer

from lung_nodule_mtl.utils.flags import as_bool

__all__ = [
    "AutocastInferer",
    "CompiledNetwork",
    "MirrorInferer",
    "bf16_native",
    "cpu_bf16_native",
    "cuda_amp_dtype",
    "place_network",
]


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's check: AMX, AVX512-BF16 or equivalent)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_native(device: str | torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it (Ampere and later), a CPU per
    :func:`cpu_bf16_native`. Elsewhere bfloat16 is emulated, orders of magnitude slower."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return dev.type == "cpu" and cpu_bf16_native()


def cuda_amp_dtype(dtype: str | torch.dtype | None = None) -> torch.dtype:
    """The autocast type of MONAI's engines' ``amp`` on CUDA (their ``amp_kwargs``).

    Args:
        dtype: ``"bfloat16"`` / ``"float16"`` (or the ``torch.dtype``); ``None`` or ``"auto"``: bfloat16 where the
            GPU computes it (Ampere and later: float32's range, so no overflow and no loss scale needed), else
            float16.

    Raises:
        ValueError: any other type.
    """
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if resolved not in (torch.bfloat16, torch.float16):
        raise ValueError(f"amp_dtype must be 'bfloat16', 'float16' or 'auto', got {dtype!r}.")
    return resolved


def place_network(network: torch.nn.Module, device: torch.device | str, channels_last: Any = False) -> torch.nn.Module:
    """``network`` on ``device``, its weights in ``channels_last_3d`` when ``channels_last`` is true (then every
    convolution's output is too: oneDNN's and cuDNN's NDHWC kernels; the same values up to summation order).

    ``channels_last`` may be a bool or its spelling on the bundle's command line (``--channels_last false``).
    """
    if as_bool(channels_last, "channels_last"):
        return network.to(device, memory_format=torch.channels_last_3d)  # type: ignore[call-overload,no-any-return]
    return network.to(device)


def _map_tensors(out: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn`` on every tensor of a tensor, dict or list/tuple of outputs (nested); anything else as it is."""
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, Mapping):
        return {k: _map_tensors(v, fn) for k, v in out.items()}
    if isinstance(out, list | tuple):
        return type(out)(_map_tensors(v, fn) for v in out)
    return out


def _to_float32(out: Any) -> Any:
    return _map_tensors(out, lambda t: t.float() if t.is_floating_point() else t)


class AutocastInferer(Inferer):
    """``network(inputs)`` under ``torch.autocast("cpu", dtype)`` when the inputs are on the CPU; outputs back in
    float32 (the losses and metrics then run as in float32 training). On CUDA it is MONAI's ``SimpleInferer``: use
    the engines' ``amp`` there.

    Args:
        enabled: ``True``, ``False``, or ``None`` for "where the CPU has native bfloat16" (:func:`cpu_bf16_native`).
        dtype: the autocast type (``torch.bfloat16``; float16 on CPU is slower on most hardware).
    """

    def __init__(self, enabled: bool | None = None, dtype: torch.dtype | str = torch.bfloat16) -> None:
        super().__init__()
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        enabled = as_bool(enabled, "cpu_amp", allow_none=True)
        self.enabled = cpu_bf16_native() if enabled is None else enabled

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not (self.enabled and inputs.device.type == "cpu"):
            return network(inputs, *args, **kwargs)
        with torch.autocast("cpu", dtype=self.dtype):
            out = network(inputs, *args, **kwargs)
        return _to_float32(out)


class CompiledNetwork(torch.nn.Module):
    """``torch.compile(network)`` for MONAI's engines, called with plain tensors.

    MONAI's own ``compile`` switch of ``SupervisedTrainer`` wraps the prediction back into a ``MetaTensor``, which
    fails for a network that returns a dict of outputs (LNMSNet's heads). This wrapper compiles the network once,
    unwraps ``MetaTensor`` inputs (tensor subclasses break compiled graphs) and returns what the network returns.
    The wrapped ``network`` stays the one module to checkpoint and to evaluate: the wrapper shares its parameters
    and adds none (its state dict is the network's, under ``network.``).

    Args:
        network: the module to compile.
        compile_kwargs: ``torch.compile`` arguments (``mode``, ``backend``, ``dynamic``, ...).
    """

    def __init__(self, network: torch.nn.Module, **compile_kwargs: Any) -> None:
        super().__init__()
        self.network = network
        # not registered as a submodule: the compiled module holds the same parameters under other names
        self.__dict__["compiled"] = torch.compile(network, **compile_kwargs)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        from monai.data import MetaTensor

        if isinstance(x, MetaTensor):
            x = x.as_tensor()
        return self.__dict__["compiled"](x, *args, **kwargs)


def _add_tensors(total: Any, out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return total + out
    if isinstance(out, Mapping):
        return {k: _add_tensors(total[k], v) for k, v in out.items()}
    if isinstance(out, list | tuple):
        return type(out)(_add_tensors(a, b) for a, b in zip(total, out, strict=True))
    return out


def _unmirror(t: torch.Tensor, dims: list[int], spatial: tuple[int, ...]) -> torch.Tensor:
    """An output with the input's spatial shape mirrored back along ``dims``; any other output as it is."""
    return torch.flip(t, dims) if t.dim() == len(spatial) + 2 and tuple(t.shape[2:]) == spatial else t


class MirrorInferer(Inferer):
    """Test-time mirroring, as nnU-Net predicts: the network on the input and on its mirror images along every
    combination of ``axes`` (8 passes for three axes), each output mirrored back, and the mean of the logits.

    Outputs with the input's spatial shape (the mask logits) are mirrored back; the others (the heads' vectors) are
    averaged as they are. Works for a tensor, a dict or a list of outputs (LNMSNet's dict of heads).

    Args:
        axes: spatial axes to mirror (0, 1, 2 = H, W, D of a ``(B, C, H, W, D)`` input).
        inferer: what runs each pass (e.g. :class:`AutocastInferer`); default ``network(inputs)``.
    """

    def __init__(self, axes: Sequence[int] = (0, 1, 2), inferer: Inferer | None = None) -> None:
        super().__init__()
        self.axes = tuple(int(a) for a in axes)
        if len(set(self.axes)) != len(self.axes) or any(a < 0 for a in self.axes):
            raise ValueError(f"axes must be distinct spatial axes >= 0, got {axes!r}.")
        self.inferer = inferer

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if any(a >= inputs.dim() - 2 for a in self.axes):
            raise ValueError(f"axes {self.axes} do not fit an input of shape {tuple(inputs.shape)}.")
        spatial = tuple(inputs.shape[2:])
        combos = [c for n in range(len(self.axes) + 1) for c in itertools.combinations(self.axes, n)]
        total: Any = None
        for combo in combos:
            dims = [2 + a for a in combo]
            x = torch.flip(inputs, dims) if dims else inputs
            out = self.inferer(x, network, *args, **kwargs) if self.inferer is not None else network(x, *args, **kwargs)
            if dims:
                out = _map_tensors(out, functools.partial(_unmirror, dims=dims, spatial=spatial))
            total = out if total is None else _add_tensors(total, out)
        return _map_tensors(total, lambda t: t / len(combos) if t.is_floating_point() else t)
