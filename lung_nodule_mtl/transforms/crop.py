"""Fixed-size crops centred on a nodule given in world millimetres (RAS), padded where they leave the volume.

The centre ``center_world_mm`` (RAS mm, see :mod:`lung_nodule_mtl.constants`) is converted to a voxel
through the image's own affine (``MetaTensor.affine``, RAS after MONAI's ``LoadImage``; use these
transforms after ``Orientation``/``Spacing`` so the ROI size in voxels is a size in mm). The voxel
nearest to the centre becomes voxel ``roi_size // 2`` of the crop, i.e. the crop covers input voxels
``round(c) - roi_size // 2 ... round(c) - roi_size // 2 + roi_size - 1`` on each axis.

Edges: the part of the ROI inside the volume is cropped with MONAI's :class:`~monai.transforms.Crop`,
the rest is padded with a constant by MONAI's :class:`~monai.transforms.Pad` (default air, -1000 HU,
for CT; use ``0`` for masks and for already-windowed images). A ROI that lies **entirely** outside
the volume raises ``ValueError``: it is almost always a centre in the wrong space (LPS instead of
RAS) or for another image, and a crop of pure padding would train on nothing.

Both MONAI steps update the ``MetaTensor`` affine, so every output voxel has the world position of
the input voxel it was copied from, and a prediction made on the crop can be put back into the scan.
The two steps are recorded as one invertible operation: :meth:`NoduleCenteredCrop.inverse` removes
the padding and pads the crop back to the input grid **with zeros** (MONAI's ``Crop.inverse``), so
it is meant for masks and probability maps (e.g. through ``monai.transforms.Invertd``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import Crop, InvertibleTransform, MapTransform, Pad, Randomizable
from monai.utils import TraceKeys, convert_to_tensor, deprecated
from numpy.typing import NDArray

from lung_nodule_mtl._version import __version__
from lung_nodule_mtl.constants import AIR_HU, Keys
from lung_nodule_mtl.io.geometry import world_to_voxel
from lung_nodule_mtl.utils.deprecation import RENAMED_IN

__all__ = [
    "MASK_PAD_VALUE",
    "NoduleCenteredCrop",
    "NoduleCenteredCropd",
    "NoduleCentredCrop",
    "NoduleCentredCropd",
    "RandNoduleCenteredCrop",
    "RandNoduleCenteredCropd",
    "RandNoduleCentredCrop",
    "RandNoduleCentredCropd",
    "nodule_roi",
]

MASK_PAD_VALUE = 0.0
"""Pad value of masks (background) and of every key other than the image in the dict transforms."""

_SPATIAL_DIMS = 3


def _roi_size(roi_size: Sequence[int] | int) -> tuple[int, int, int]:
    """Check ``roi_size`` (voxels): an int or three ints, all ``>= 1``."""
    sizes = [roi_size] * _SPATIAL_DIMS if isinstance(roi_size, int | np.integer) else list(roi_size)
    if len(sizes) != _SPATIAL_DIMS or not all(isinstance(s, int | np.integer) and s >= 1 for s in sizes):
        raise ValueError(f"roi_size must be an int or 3 ints >= 1 (voxels), got {roi_size!r}.")
    return (int(sizes[0]), int(sizes[1]), int(sizes[2]))


def _centre(center_world_mm: Any, name: str = Keys.CENTER_WORLD) -> NDArray[np.float64]:
    """Check a centre: 3 finite numbers (RAS mm); returns float64 ``(3,)``."""
    if isinstance(center_world_mm, torch.Tensor):
        center_world_mm = center_world_mm.detach().cpu().numpy()
    try:
        c = np.asarray(center_world_mm, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 3 finite numbers (x, y, z) in RAS mm, got {center_world_mm!r}.") from None
    if c.shape != (_SPATIAL_DIMS,) or not np.all(np.isfinite(c)):
        raise ValueError(f"{name} must be 3 finite numbers (x, y, z) in RAS mm, got {center_world_mm!r}.")
    return c


def _finite(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number, got {value!r}.") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    return v


def _max_shift(max_shift_mm: Sequence[float] | float) -> NDArray[np.float64]:
    """Check ``max_shift_mm``: a number or 3 numbers, finite and ``>= 0`` (mm per RAS axis)."""
    try:
        values = np.broadcast_to(np.asarray(max_shift_mm, dtype=np.float64), (_SPATIAL_DIMS,)).copy()
    except (TypeError, ValueError):
        values = np.full(_SPATIAL_DIMS, np.nan)
    if not (np.all(np.isfinite(values)) and np.all(values >= 0)):
        raise ValueError(f"max_shift_mm must be a number or 3 numbers >= 0 (mm per axis), got {max_shift_mm!r}.")
    return values


def nodule_roi(
    spatial_shape: Sequence[int],
    affine: Any,
    center_world_mm: Sequence[float] | NDArray | torch.Tensor,
    roi_size: Sequence[int],
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Voxel box of the ROI of ``roi_size`` voxels centred on a world point.

    Args:
        spatial_shape: ``(H, W, D)`` of the image, voxels.
        affine: ``(4, 4)`` voxel → RAS-mm affine of the image.
        center_world_mm: ``(x, y, z)`` centre in RAS mm.
        roi_size: ``(h, w, d)`` ROI size in voxels.

    Returns:
        ``(start, end)`` voxel indices, ``end`` exclusive, possibly outside ``[0, shape]``: the
        ROI is ``start .. end - 1`` and voxel ``round(centre)`` is at ``start + roi_size // 2``.

    Raises:
        ValueError: the ROI does not overlap the volume at all.
    """
    centre_vox = world_to_voxel(affine, _centre(center_world_mm))
    size = np.asarray(roi_size, dtype=np.int64)
    start = np.floor(centre_vox + 0.5).astype(np.int64) - size // 2  # round half up, not to even
    end = start + size
    shape = np.asarray(spatial_shape, dtype=np.int64)
    if np.any(end <= 0) or np.any(start >= shape):
        raise ValueError(
            f"center_world_mm={np.round(_centre(center_world_mm), 3).tolist()} (voxel "
            f"{np.round(centre_vox, 2).tolist()}) puts the {tuple(size.tolist())}-voxel ROI entirely outside the image "
            f"of shape {tuple(shape.tolist())}: expected a centre in the image's RAS world mm (LPS tables need "
            "x, y negated)."
        )
    return start, end


class NoduleCenteredCrop(InvertibleTransform):
    """Crop a ``roi_size`` ROI (voxels) around a world centre (RAS mm), padding outside the volume.

    The deterministic twin of :class:`RandNoduleCenteredCrop`. See the module docstring for the
    voxel convention, the edges and the inverse.

    Args:
        roi_size: output spatial size ``(h, w, d)`` in voxels, or one int for a cube.
        pad_value: constant for voxels of the ROI outside the volume, in the image's units
            (default :data:`~lung_nodule_mtl.constants.AIR_HU`, -1000 HU; ``0`` for masks and
            windowed images).
    """

    backend = Crop.backend

    def __init__(self, roi_size: Sequence[int] | int, pad_value: float = AIR_HU) -> None:
        self.roi_size = _roi_size(roi_size)
        self.pad_value = _finite(pad_value, "pad_value")
        self.cropper = Crop()
        self.padder = Pad(mode="constant")

    def __call__(  # type: ignore[override]
        self,
        img: MetaTensor,
        center_world_mm: Sequence[float] | NDArray | torch.Tensor,
        pad_value: float | None = None,
    ) -> torch.Tensor:
        """Crop ``img`` around ``center_world_mm``.

        Args:
            img: ``(C, H, W, D)`` ``MetaTensor`` whose ``affine`` maps voxels to RAS mm.
            center_world_mm: ``(x, y, z)`` centre in RAS mm.
            pad_value: overrides the constructor's ``pad_value`` for this call.

        Returns:
            ``(C, *roi_size)`` crop, same dtype; a ``MetaTensor`` whose affine places every voxel
            where it was in ``img``, with the crop recorded for :meth:`inverse`.

        Raises:
            TypeError: ``img`` is not a ``MetaTensor`` (the centre needs its affine).
            ValueError: ``img`` is not ``(C, H, W, D)``, the centre is not 3 finite numbers, or
                the ROI lies entirely outside the volume.
        """
        if not isinstance(img, MetaTensor):
            raise TypeError(
                "img must be a MetaTensor with its voxel -> RAS mm affine (e.g. from LoadImage), "
                f"got {type(img).__name__}."
            )
        if img.ndim != _SPATIAL_DIMS + 1:
            raise ValueError(f"img must be (C, H, W, D), got shape {tuple(img.shape)}.")
        value = self.pad_value if pad_value is None else _finite(pad_value, "pad_value")
        shape = np.asarray(img.shape[1:], dtype=np.int64)
        start, end = nodule_roi(shape.tolist(), img.affine, center_world_mm, self.roi_size)
        slices = tuple(slice(int(max(s, 0)), int(min(e, n))) for s, e, n in zip(start, end, shape, strict=True))
        to_pad = [(0, 0)] + [(int(max(-s, 0)), int(max(e - n, 0))) for s, e, n in zip(start, end, shape, strict=True)]
        img_t = convert_to_tensor(img, track_meta=get_track_meta())
        out = self.padder(self.cropper(img_t, slices), to_pad=to_pad, value=value)  # type: ignore[arg-type]
        if get_track_meta() and isinstance(out, MetaTensor):
            pad_info = out.applied_operations.pop()
            crop_info = out.applied_operations.pop()
            self.push_transform(
                out,
                orig_size=crop_info.get(TraceKeys.ORIG_SIZE),
                extra_info={
                    "crop_info": crop_info,
                    "pad_info": pad_info,
                    "center_world_mm": _centre(center_world_mm).tolist(),
                    "roi_start_voxel": start.tolist(),
                    "pad_value": value,
                },
            )
        return out

    def inverse(self, data: MetaTensor) -> MetaTensor:
        """Put a crop back on the grid it was cut from, zeros outside the ROI.

        Args:
            data: ``(C, *roi_size)`` ``MetaTensor`` output by this transform (possibly changed
                voxel-wise since, e.g. a prediction that inherited its meta).

        Returns:
            ``(C, H, W, D)`` on the input grid (same affine as the input).
        """
        transform = self.pop_transform(data)
        extra = transform[TraceKeys.EXTRA_INFO]
        data.applied_operations.append(extra["crop_info"])
        data.applied_operations.append(extra["pad_info"])
        return self.cropper.inverse(self.padder.inverse(data))


def _missing_centre(center_key: str, data: Mapping[Hashable, Any]) -> ValueError:
    return ValueError(
        f"data has no {center_key!r} (the nodule centre, RAS mm) to crop around; keys: {sorted(map(str, data))}."
    )


def _pad_values(keys: Sequence[Hashable], pad_value: Sequence[float] | float | None) -> tuple[float, ...]:
    """Per-key pad values: ``None`` → air HU for ``Keys.IMAGE`` and 0 for the others."""
    if pad_value is None:
        return tuple(AIR_HU if str(k) == Keys.IMAGE else MASK_PAD_VALUE for k in keys)
    if isinstance(pad_value, int | float | np.number):
        return tuple(_finite(pad_value, "pad_value") for _ in keys)
    values = list(pad_value)
    if len(values) != len(keys):
        raise ValueError(f"pad_value must be a number or one number per key ({len(keys)} keys), got {pad_value!r}.")
    return tuple(_finite(v, f"pad_value[{i}]") for i, v in enumerate(values))


class NoduleCenteredCropd(MapTransform, InvertibleTransform):
    """Dictionary version of :class:`NoduleCenteredCrop`: the same world centre for every key.

    The centre is read from ``data[center_key]`` (RAS mm). Each key is converted through its own
    affine, so keys on different grids still get the same world region.

    Args:
        keys: keys of ``(C, H, W, D)`` ``MetaTensor`` volumes (e.g. image and mask).
        roi_size: output spatial size in voxels (int or 3 ints).
        center_key: key of the ``(x, y, z)`` RAS-mm centre in the data dictionary.
        pad_value: pad constant per key (a sequence, one per key), one number for all keys, or
            ``None`` (default) for :data:`~lung_nodule_mtl.constants.AIR_HU` on ``"image"`` and
            :data:`MASK_PAD_VALUE` (0) on every other key. Use 0 for an image already windowed.
        allow_missing_keys: do not raise if a key is missing.
    """

    backend = NoduleCenteredCrop.backend

    def __init__(
        self,
        keys: KeysCollection,
        roi_size: Sequence[int] | int,
        center_key: str = Keys.CENTER_WORLD,
        pad_value: Sequence[float] | float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.center_key = str(center_key)
        self.pad_values = _pad_values(self.keys, pad_value)
        self.cropper = NoduleCenteredCrop(roi_size)

    def __call__(
        self, data: Mapping[Hashable, Any], center_world_mm: Sequence[float] | NDArray | None = None
    ) -> dict[Hashable, Any]:
        """Crop every key around the centre.

        Args:
            data: dictionary with the keys and ``center_key``.
            center_world_mm: overrides ``data[center_key]`` (RAS mm); this is how
                :class:`RandNoduleCenteredCropd` replays a drawn centre.

        Returns:
            A new dictionary with each key cropped to ``(C, *roi_size)``; ``center_key`` unchanged.

        Raises:
            ValueError: the centre is missing or malformed, or the ROI misses the volume.
        """
        d = dict(data)
        if center_world_mm is None:
            if d.get(self.center_key) is None:
                raise _missing_centre(self.center_key, d)
            center_world_mm = d[self.center_key]
        centre = _centre(center_world_mm, self.center_key)
        for key, value in self.key_iterator(d, self.pad_values):
            d[key] = self.cropper(d[key], centre, pad_value=value)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Put each key's crop back on its original grid (zeros outside the ROI)."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.cropper.inverse(d[key])
        return d


class RandNoduleCenteredCrop(Randomizable, InvertibleTransform):
    """:class:`NoduleCenteredCrop` around a jittered centre, for training.

    Each call draws an offset uniformly in ``[-max_shift_mm, max_shift_mm]`` per RAS axis (mm),
    adds it to the centre and calls the deterministic twin; the centre used is kept in
    :attr:`last_center_world_mm`, so ``NoduleCenteredCrop(roi_size)(img, last_center_world_mm)``
    replays the result.

    Args:
        roi_size: output spatial size in voxels (int or 3 ints).
        max_shift_mm: largest shift of the centre, mm, one number or one per axis ``(x, y, z)``.
        pad_value: see :class:`NoduleCenteredCrop`.
    """

    backend = NoduleCenteredCrop.backend

    def __init__(
        self, roi_size: Sequence[int] | int, max_shift_mm: Sequence[float] | float = 0.0, pad_value: float = AIR_HU
    ) -> None:
        self.cropper = NoduleCenteredCrop(roi_size, pad_value)
        self.max_shift_mm = _max_shift(max_shift_mm)
        self.offset_mm: NDArray[np.float64] = np.zeros(_SPATIAL_DIMS)
        self.last_center_world_mm: NDArray[np.float64] | None = None

    def randomize(self, data: Any = None) -> None:
        """Draw the centre offset (mm) for the next call."""
        self.offset_mm = self.R.uniform(-self.max_shift_mm, self.max_shift_mm)

    def __call__(  # type: ignore[override]
        self,
        img: MetaTensor,
        center_world_mm: Sequence[float] | NDArray | torch.Tensor,
        randomize: bool = True,
        pad_value: float | None = None,
    ) -> torch.Tensor:
        """Crop ``img`` (``(C, H, W, D)`` ``MetaTensor``) around ``center_world_mm`` + a random offset.

        Args:
            img: see :meth:`NoduleCenteredCrop.__call__`.
            center_world_mm: ``(x, y, z)`` nodule centre in RAS mm, before jitter.
            randomize: draw a new offset (``False`` reuses the last one).
            pad_value: overrides the pad constant for this call.

        Returns:
            ``(C, *roi_size)`` crop.
        """
        if randomize:
            self.randomize()
        self.last_center_world_mm = _centre(center_world_mm) + self.offset_mm
        return self.cropper(img, self.last_center_world_mm, pad_value=pad_value)

    def inverse(self, data: MetaTensor) -> MetaTensor:
        """See :meth:`NoduleCenteredCrop.inverse`."""
        return self.cropper.inverse(data)


class RandNoduleCenteredCropd(Randomizable, MapTransform, InvertibleTransform):
    """Dictionary version of :class:`RandNoduleCenteredCrop`: one offset per call, the same for every key.

    Replay: ``NoduleCenteredCropd(keys, roi_size, ...)(data, center_world_mm=t.last_center_world_mm)``.

    Args:
        keys: keys of ``(C, H, W, D)`` ``MetaTensor`` volumes (e.g. image and mask).
        roi_size: output spatial size in voxels (int or 3 ints).
        max_shift_mm: largest shift of the centre, mm, one number or one per RAS axis.
        center_key: key of the ``(x, y, z)`` RAS-mm centre in the data dictionary.
        pad_value: see :class:`NoduleCenteredCropd`.
        allow_missing_keys: do not raise if a key is missing.
    """

    backend = NoduleCenteredCrop.backend

    def __init__(
        self,
        keys: KeysCollection,
        roi_size: Sequence[int] | int,
        max_shift_mm: Sequence[float] | float = 0.0,
        center_key: str = Keys.CENTER_WORLD,
        pad_value: Sequence[float] | float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.cropper = NoduleCenteredCropd(keys, roi_size, center_key, pad_value, allow_missing_keys)
        self.center_key = str(center_key)
        self.max_shift_mm = _max_shift(max_shift_mm)
        self.offset_mm: NDArray[np.float64] = np.zeros(_SPATIAL_DIMS)
        self.last_center_world_mm: NDArray[np.float64] | None = None

    def randomize(self, data: Any = None) -> None:
        """Draw the centre offset (mm) for the next call."""
        self.offset_mm = self.R.uniform(-self.max_shift_mm, self.max_shift_mm)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Draw one offset and crop every key around ``data[center_key]`` + offset (RAS mm)."""
        if data.get(self.center_key) is None:
            raise _missing_centre(self.center_key, data)
        self.randomize()
        self.last_center_world_mm = _centre(data[self.center_key], self.center_key) + self.offset_mm
        return self.cropper(data, center_world_mm=self.last_center_world_mm)

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """See :meth:`NoduleCenteredCropd.inverse`."""
        return self.cropper.inverse(data)


# Deprecated aliases: the former spelling of the classes. Each is the new class under its old name and warns
# (FutureWarning, MONAI's ``deprecated``) when built, so code and bundle configs naming the old class still run.


@deprecated(since=RENAMED_IN, version_val=__version__, msg_suffix="Use NoduleCenteredCrop (same transform).")
class NoduleCentredCrop(NoduleCenteredCrop):
    """Deprecated alias of :class:`NoduleCenteredCrop`."""


@deprecated(since=RENAMED_IN, version_val=__version__, msg_suffix="Use NoduleCenteredCropd (same transform).")
class NoduleCentredCropd(NoduleCenteredCropd):
    """Deprecated alias of :class:`NoduleCenteredCropd`."""


@deprecated(since=RENAMED_IN, version_val=__version__, msg_suffix="Use RandNoduleCenteredCrop (same transform).")
class RandNoduleCentredCrop(RandNoduleCenteredCrop):
    """Deprecated alias of :class:`RandNoduleCenteredCrop`."""


@deprecated(since=RENAMED_IN, version_val=__version__, msg_suffix="Use RandNoduleCenteredCropd (same transform).")
class RandNoduleCentredCropd(RandNoduleCenteredCropd):
    """Deprecated alias of :class:`RandNoduleCenteredCropd`."""
