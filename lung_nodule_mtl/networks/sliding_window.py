"""Make a multi-task network's outputs stitchable by MONAI's :func:`~monai.inferers.sliding_window_inference`.

``sliding_window_inference`` accepts a predictor that returns a dict, but it stitches every value as a spatial map
``(N, C, h, w, d)``: a classification output ``(N, C)`` has no spatial axes and makes it fail (``F.interpolate``
of the importance map to an empty size). :class:`SlidingWindowAdapter` fixes this in one of two ways:

* ``heads="dense"``: every head output ``(N, C)`` of a window is broadcast over the window as a constant map
  ``(N, C, h, w, d)``. After blending, the value at a voxel is the importance-weighted average (Gaussian weights with
  ``mode="gaussian"``) of the head outputs of all the windows that contain it: a per-voxel malignancy/attribute map
  from which a per-nodule prediction is read at the nodule's centre (:func:`sample_heads`). Head outputs are logits
  (and the score/diameter in their units), so logits are averaged. ``head_stride`` keeps these maps coarse to save
  memory (``C`` = 42 channels with all heads).
* ``heads="none"``: only the mask, through ``network.segment`` when it exists (the heads are not even computed).

MONAI (1.6) stitches dict outputs in *sorted key order* and, once it has resized the importance map for a coarser
output, reuses the resized map for the following outputs: a full-resolution ``"mask"`` sorted after a coarse
``"calcification"`` map then fails. With ``head_stride > 1`` the adapter therefore prefixes the head keys with
:data:`HEAD_KEY_PREFIX` (``"~"`` sorts after every lower-case name); :func:`sliding_window_predict` strips it.

For whole-scan inference, the heads were trained on nodule-centred crops while sliding windows see nodules anywhere
in the window; the recommended per-nodule path is ``heads="none"`` for the mask, then one forward pass of the
network on a crop centred on each detected nodule. The dense mode is for small volumes or a quick overview.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from lung_nodule_mtl.constants import OutputKeys
from lung_nodule_mtl.networks.lnmsnet import DEEP_SUPERVISION_PREFIX

__all__ = ["HEAD_KEY_PREFIX", "SlidingWindowAdapter", "sample_heads", "sliding_window_predict"]

HEAD_KEY_PREFIX = "~"
"""Prefix of the head keys of :class:`SlidingWindowAdapter` with ``head_stride > 1`` (see the module docstring)."""

_HEAD_MODES = ("dense", "none")


class SlidingWindowAdapter(nn.Module):
    """Wrap a network that returns ``{"mask": (N, C, h, w, d), head: (N, C), ...}`` for sliding-window inference.

    Args:
        network: the multi-task network (e.g. :class:`~lung_nodule_mtl.networks.LNMSNet`), in eval mode.
        heads: ``"dense"`` (head outputs broadcast over the window) or ``"none"`` (mask only).
        head_stride: the dense head maps have size ``roi_size / head_stride``; ``roi_size`` and the scan interval
            ``roi_size · (1 - overlap)`` must be multiples of it (MONAI's multi-resolution stitching); the head
            keys then carry :data:`HEAD_KEY_PREFIX` (see the module docstring).

    Shapes:
        ``x (N, C_in, h, w, d)`` → ``{"mask": (N, out_channels, h, w, d),
        head: (N, C_head, h/head_stride, w/head_stride, d/head_stride)}``; deep-supervision outputs are dropped.

    Raises:
        ValueError: for an unknown ``heads`` or a ``head_stride`` below 1.
    """

    def __init__(self, network: nn.Module, heads: str = "dense", head_stride: int = 1) -> None:
        super().__init__()
        if heads not in _HEAD_MODES:
            raise ValueError(f"SlidingWindowAdapter: heads must be one of {_HEAD_MODES}, got {heads!r}.")
        if isinstance(head_stride, bool) or not isinstance(head_stride, int) or head_stride < 1:
            raise ValueError(f"SlidingWindowAdapter: head_stride must be a positive integer, got {head_stride!r}.")
        self.network = network
        self.heads = heads
        self.head_stride = head_stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mask_key = str(OutputKeys.MASK)
        if self.heads == "none":
            segment = getattr(self.network, "segment", None)
            mask = segment(x) if callable(segment) else self.network(x)[mask_key]
            return {mask_key: mask}
        out = self.network(x)
        size = [max(s // self.head_stride, 1) for s in x.shape[2:]]
        prefix = HEAD_KEY_PREFIX if self.head_stride > 1 else ""
        dense: dict[str, torch.Tensor] = {}
        for key, value in out.items():
            if key.startswith(DEEP_SUPERVISION_PREFIX):
                continue
            if value.dim() == 2:  # (N, C) head output → constant (N, C, *size) map; contiguous: MONAI writes in place
                value = value.reshape(*value.shape, *([1] * len(size))).expand(-1, -1, *size).contiguous()
            dense[key if key == mask_key else prefix + key] = value
        return dense


def sliding_window_predict(
    inputs: torch.Tensor,
    network: nn.Module,
    roi_size: Sequence[int] | int,
    sw_batch_size: int = 1,
    overlap: float = 0.5,
    mode: str = "gaussian",
    heads: str = "dense",
    head_stride: int = 1,
    **kwargs: Any,
) -> dict[str, torch.Tensor]:
    """Sliding-window inference of a multi-task network on a whole volume.

    Args:
        inputs: image ``(N, C_in, H, W, D)``.
        network: the network (its ``eval()`` state is the caller's business).
        roi_size: window size in voxels.
        sw_batch_size: windows per forward pass.
        overlap: window overlap fraction.
        mode: MONAI blending, ``"gaussian"`` or ``"constant"``.
        heads: see :class:`SlidingWindowAdapter`.
        head_stride: see :class:`SlidingWindowAdapter`.
        **kwargs: passed to :func:`monai.inferers.sliding_window_inference` (``sw_device``, ``device``, ...).

    Returns:
        ``{"mask": (N, out_channels, H, W, D), head: (N, C_head, H', W', D')}`` (heads only with ``"dense"``).
    """
    adapter = SlidingWindowAdapter(network, heads=heads, head_stride=head_stride)
    out = sliding_window_inference(inputs, roi_size, sw_batch_size, adapter, overlap=overlap, mode=mode, **kwargs)
    if not isinstance(out, dict):  # pragma: no cover - the adapter always returns a dict
        raise TypeError(f"expected a dict from sliding_window_inference, got {type(out).__name__}.")
    return {
        str(k).removeprefix(HEAD_KEY_PREFIX): v.as_tensor() if hasattr(v, "as_tensor") else v for k, v in out.items()
    }


def sample_heads(
    outputs: dict[str, torch.Tensor], voxel: Sequence[int], image_size: Sequence[int] | None = None
) -> dict[str, torch.Tensor]:
    """Read the dense head maps of :func:`sliding_window_predict` at one voxel, e.g. a nodule centre.

    Args:
        outputs: the dict from :func:`sliding_window_predict` with ``heads="dense"``.
        voxel: index ``(i, j, k)`` in the input volume (voxels, not mm).
        image_size: input spatial size ``(H, W, D)``; defaults to the mask's, needed to rescale ``voxel`` to
            coarser head maps (``head_stride > 1``).

    Returns:
        ``{head: (N, C_head)}`` (the mask is left out).

    Raises:
        ValueError: if ``voxel`` is not 3 indices inside the volume.
    """
    mask_key = str(OutputKeys.MASK)
    if image_size is None:
        if mask_key not in outputs:
            raise ValueError("sample_heads: image_size is needed when outputs have no mask.")
        image_size = outputs[mask_key].shape[2:]
    if len(voxel) != 3 or any(not 0 <= int(v) < int(s) for v, s in zip(voxel, image_size, strict=True)):
        raise ValueError(f"sample_heads: voxel must be 3 indices inside {list(image_size)}, got {list(voxel)!r}.")
    result: dict[str, torch.Tensor] = {}
    for key, value in outputs.items():
        if key == mask_key:
            continue
        idx = [
            min(int(v) * int(m) // int(s), int(m) - 1)
            for v, m, s in zip(voxel, value.shape[2:], image_size, strict=True)
        ]
        result[key] = value[:, :, idx[0], idx[1], idx[2]]
    return result
