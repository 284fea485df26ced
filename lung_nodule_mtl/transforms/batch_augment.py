"""The training augmentation as batched tensor operations on the batch's device (GPU when training on one).

MONAI's dictionary transforms augment one sample at a time in the DataLoader's worker processes. On a GPU that
leaves the device waiting for the CPU; :class:`BatchAugmentation` runs the same augmentations on a whole
``(B, C, X, Y, Z)`` batch where the batch already is, each sample drawing its own parameters:

* it is **built from the bundle's own** ``augmentation`` ``Compose`` (:meth:`BatchAugmentation.from_compose`), so
  the augmentations, their order, probabilities and ranges are defined once (``train.yaml``) and the same in
  distribution whichever path runs them; a transform it does not know is an error, never skipped;
* spatial draws are shared by the image and the mask (the mask resampled by nearest neighbour), as with MONAI's
  dictionary transforms on ``keys: [image, label]``;
* the parameters follow MONAI's: ``RandFlipd`` (one axis, ``prob``), ``RandRotate90d`` (``k`` uniform in
  ``1..max_k`` on ``spatial_axes``), ``RandAffined`` (rotation angles uniform in ``±rotate_range`` composed as
  MONAI's ``create_rotate``, scale ``1 + U(±scale_range)``, about the centre, zeros outside; no shear or
  translation), ``RandScaleIntensityd`` (``x * (1 + U(factors))``), ``RandShiftIntensityd`` (``x + U(offsets)``),
  ``RandGaussianNoised`` (``N(mean, std)``, ``std ~ U(0, std)`` with ``sample_std``) and ``ScaleIntensityRanged``.

It is what ``MultiTaskPrepareBatch(augmentation=...)`` applies after moving a batch to the training device
(``train.yaml``: ``device_augmentation``). Randomness comes from torch's generator on that device (seeded by
``monai.utils.set_determinism``), so a run is reproducible on one device but draws differently from the
per-sample MONAI path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.transforms import (
    Compose,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
)
from monai.transforms.utils import create_rotate
from torch import nn

from lung_nodule_mtl.constants import Keys

__all__ = ["BatchAugmentation"]

_Op = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]]


def _chosen(prob: float, batch: int, device: torch.device) -> torch.Tensor:
    """``(B,)`` bool: which samples a transform of probability ``prob`` applies to."""
    return torch.rand(batch, device=device) < prob


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


def _uniform(low: float, high: float, batch: int, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(batch, device=device)


class _Flip:
    def __init__(self, prob: float, axes: Sequence[int]) -> None:
        self.prob, self.dims = float(prob), [int(a) + 2 for a in axes]

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        chosen = _chosen(self.prob, image.shape[0], image.device)
        image = _where(chosen, image.flip(self.dims), image)
        return image, None if label is None else _where(chosen, label.flip(self.dims), label)


class _Rot90:
    def __init__(self, prob: float, max_k: int, axes: Sequence[int]) -> None:
        self.prob, self.max_k, self.dims = float(prob), int(max_k), (int(axes[0]) + 2, int(axes[1]) + 2)

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        b = image.shape[0]
        chosen = _chosen(self.prob, b, image.device)
        k = torch.randint(1, self.max_k + 1, (b,), device=image.device)
        square = image.shape[self.dims[0]] == image.shape[self.dims[1]]
        for turn in range(1, self.max_k + 1):
            pick = chosen & (k == turn)
            if square:  # batched: every sample keeps its shape
                image = _where(pick, torch.rot90(image, turn, self.dims), image)
                if label is not None:
                    label = _where(pick, torch.rot90(label, turn, self.dims), label)
            elif bool(pick.any()):
                raise ValueError(
                    f"RandRotate90d on axes {[d - 2 for d in self.dims]} of a batch of shape {list(image.shape)}: a "
                    "batch needs the two axes of equal size (rotated samples keep the batch's shape)"
                )
        return image, label


class _Affine:
    def __init__(self, prob: float, rotate_range: Sequence[float], scale_range: Sequence[float]) -> None:
        self.prob = float(prob)
        self.rotate = [float(r) for r in rotate_range]
        self.scale = [float(s) for s in scale_range]

    def _matrices(self, n: int, device: torch.device) -> torch.Tensor:
        """``(n, 3, 3)`` matrices ``R @ S`` in voxel axes (MONAI's ``AffineGrid`` order)."""
        angles = torch.stack([_uniform(-r, r, n, device) for r in self.rotate], dim=1).cpu()
        scales = 1.0 + torch.stack([_uniform(-s, s, n, device) for s in self.scale], dim=1)
        rot = torch.stack(
            [
                torch.as_tensor(create_rotate(3, a.tolist(), backend="torch"), dtype=torch.float32)[:3, :3]
                for a in angles
            ]
        ).to(device)
        return rot * scales[:, None, :]  # R @ diag(s)

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        chosen = torch.nonzero(_chosen(self.prob, image.shape[0], image.device)).flatten()
        if chosen.numel() == 0:
            return image, label
        size = image.shape[2:]
        # output voxel p (centred) samples input voxel A p; in grid_sample's normalised coordinates (align_corners:
        # -1 and 1 are the centres of the first and last voxel) that is H^-1 A H, H = diag((size - 1) / 2), and the
        # grid's coordinates are ordered (z, y, x) against the tensor's (x, y, z)
        half = torch.tensor([(s - 1) / 2.0 for s in size], device=image.device, dtype=torch.float32)
        a = self._matrices(int(chosen.numel()), image.device)
        theta = a * half[None, None, :] / half[None, :, None]
        theta = theta.flip(1).flip(2)  # reverse the axis order of rows and columns
        theta = torch.cat([theta, theta.new_zeros(theta.shape[0], 3, 1)], dim=2)
        grid = F.affine_grid(theta, [int(chosen.numel()), 1, *size], align_corners=True)
        image = image.clone()
        moved = F.grid_sample(image[chosen].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        image[chosen] = moved.to(image.dtype)
        if label is not None:
            label = label.clone()
            moved = F.grid_sample(label[chosen].float(), grid, mode="nearest", padding_mode="zeros", align_corners=True)
            label[chosen] = moved.to(label.dtype)
        return image, label


class _Intensity:
    """Per-sample ``x * (1 + f)`` (``kind="scale"``), ``x + o`` (``"shift"``) or ``x + N(mean, std)`` (``"noise"``)."""

    def __init__(self, kind: str, prob: float, low: float, high: float, sample_std: bool = False) -> None:
        self.kind, self.prob, self.low, self.high, self.sample_std = kind, float(prob), low, high, sample_std

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, device = image.shape[0], image.device
        chosen = _chosen(self.prob, b, device)
        shape = (b, *([1] * (image.dim() - 1)))
        if self.kind == "noise":  # low: mean, high: std
            std = _uniform(0.0, self.high, b, device) if self.sample_std else torch.full((b,), self.high, device=device)
            noise = self.low + std.view(shape) * torch.randn_like(image, dtype=torch.float32)
            return _where(chosen, image + noise.to(image.dtype), image), label
        value = _uniform(self.low, self.high, b, device).view(shape).to(image.dtype)
        changed = image * (1 + value) if self.kind == "scale" else image + value
        return _where(chosen, changed, image), label


class _Range:
    def __init__(self, a_min: float, a_max: float, b_min: float, b_max: float, clip: bool) -> None:
        self.a_min, self.a_max, self.b_min, self.b_max, self.clip = a_min, a_max, b_min, b_max, clip

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.a_max - self.a_min == 0.0:
            image = image - self.a_min + self.b_min  # MONAI's rule for an empty input range
        else:
            image = (image - self.a_min) / (self.a_max - self.a_min) * (self.b_max - self.b_min) + self.b_min
        if self.clip:
            image = image.clamp(min(self.b_min, self.b_max), max(self.b_min, self.b_max))
        return image, label


def _keys(t: Any) -> set[str]:
    return {str(k) for k in t.keys}


def _op_for(t: Any, image_key: str, label_key: str) -> _Op:
    """The batched operation of one MONAI dictionary transform (``ValueError`` for one it does not know)."""
    name = type(t).__name__
    spatial, intensity = {image_key, label_key}, {image_key}
    if isinstance(t, (RandFlipd, RandRotate90d, RandAffined)) and not (_keys(t) == spatial or _keys(t) == intensity):
        raise ValueError(f"{name} on keys {sorted(_keys(t))}: batched, a spatial transform acts on {sorted(spatial)}")
    if isinstance(t, (RandScaleIntensityd, RandShiftIntensityd, RandGaussianNoised, ScaleIntensityRanged)) and (
        _keys(t) != intensity
    ):
        raise ValueError(f"{name} on keys {sorted(_keys(t))}: batched, an intensity transform acts on {image_key!r}")
    if isinstance(t, RandFlipd):
        axis = t.flipper.spatial_axis
        axes = [0, 1, 2] if axis is None else [int(axis)] if isinstance(axis, int) else [int(a) for a in axis]
        return _Flip(t.prob, axes)
    if isinstance(t, RandRotate90d):
        return _Rot90(t.prob, t.max_k, t.spatial_axes)
    if isinstance(t, RandAffined):
        grid = t.rand_affine.rand_affine_grid
        for what in ("shear_range", "translate_range"):
            if any(r not in (None, 0, 0.0) for r in _flat(getattr(grid, what))):
                raise ValueError(f"RandAffined with {what}: not supported batched (rotation and scale only)")
        if any(str(m) != "zeros" for m in _flat(t.padding_mode)):
            raise ValueError(f"RandAffined padding_mode {t.padding_mode}: batched, only 'zeros'")
        return _Affine(t.prob, _per_axis(grid.rotate_range), _per_axis(grid.scale_range))
    if isinstance(t, RandScaleIntensityd):
        scaler = t.scaler
        if scaler.channel_wise:
            raise ValueError("RandScaleIntensityd channel_wise: not supported batched")
        return _Intensity("scale", t.prob, float(scaler.factors[0]), float(scaler.factors[1]))
    if isinstance(t, RandShiftIntensityd):
        shifter = t.shifter
        if shifter.channel_wise:
            raise ValueError("RandShiftIntensityd channel_wise: not supported batched")
        return _Intensity("shift", t.prob, float(shifter.offsets[0]), float(shifter.offsets[1]))
    if isinstance(t, RandGaussianNoised):
        g = t.rand_gaussian_noise
        return _Intensity("noise", t.prob, float(g.mean), float(g.std), bool(g.sample_std))
    if isinstance(t, ScaleIntensityRanged):
        r = t.scaler
        return _Range(float(r.a_min), float(r.a_max), float(r.b_min or 0.0), float(r.b_max or 1.0), bool(r.clip))
    raise ValueError(
        f"{name} has no batched version: device augmentation runs RandFlipd, RandRotate90d, RandAffined, "
        "RandScaleIntensityd, RandShiftIntensityd, RandGaussianNoised and ScaleIntensityRanged (set "
        "device_augmentation false to run this chain per sample)"
    )


def _flat(value: Any) -> list[Any]:
    if value is None or isinstance(value, (str, int, float)):
        return [value]
    out: list[Any] = []
    for v in value:
        out.extend(_flat(v))
    return out


def _per_axis(ranges: Any) -> list[float]:
    """MONAI's per-axis range (a number, or ``(low, high)`` per axis) as the half-width per axis (symmetric only)."""
    values = list(ranges) if isinstance(ranges, Iterable) else [ranges]
    values = [*values, 0.0, 0.0, 0.0][:3]  # MONAI: an axis without a range is not rotated / scaled
    out = []
    for r in values:
        if r is None:
            out.append(0.0)
        elif isinstance(r, (int, float)):
            out.append(abs(float(r)))
        elif len(r) == 2 and math.isclose(-float(r[0]), float(r[1])):
            out.append(abs(float(r[1])))
        else:
            raise ValueError(f"RandAffined range {r}: batched, only symmetric ranges")
    return out


class BatchAugmentation(nn.Module):
    """A chain of batched augmentations (:meth:`from_compose`); ``forward(image, label)`` on ``(B, C, X, Y, Z)``.

    Only active in training mode (``module.train()``, the default); in eval mode it returns its inputs.
    """

    def __init__(self, ops: Sequence[_Op], names: Sequence[str] = ()) -> None:
        super().__init__()
        self.ops = list(ops)
        self.names = list(names)

    @classmethod
    def from_compose(
        cls, augmentation: Compose | Sequence[Any], image_key: str = Keys.IMAGE, label_key: str = Keys.LABEL
    ) -> BatchAugmentation:
        """The batched equivalent of a MONAI ``Compose`` of dictionary transforms (nested ``Compose`` flattened).

        Raises:
            ValueError: a transform without a batched version, or options it does not support.
        """
        transforms = augmentation.transforms if isinstance(augmentation, Compose) else list(augmentation)
        flat: list[Any] = []
        for t in transforms:
            flat.extend(t.transforms if isinstance(t, Compose) else [t])
        ops = [_op_for(t, str(image_key), str(label_key)) for t in flat]
        return cls(ops, [type(t).__name__ for t in flat])

    def forward(
        self, image: torch.Tensor, label: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if image.dim() != 5:
            raise ValueError(f"BatchAugmentation: expected (B, C, X, Y, Z), got shape {list(image.shape)}")
        if label is not None and (label.shape[0], *label.shape[2:]) != (image.shape[0], *image.shape[2:]):
            raise ValueError(f"BatchAugmentation: label {list(label.shape)} does not match image {list(image.shape)}")
        if not self.training:
            return image, label
        with torch.no_grad():
            for op in self.ops:
                image, label = op(image, label)
        return image, label

    def extra_repr(self) -> str:
        return ", ".join(self.names)
