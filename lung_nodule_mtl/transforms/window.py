"""CT intensity windows: clip Hounsfield units to ``[low, high]`` and scale to ``[0, 1]``, one channel per window.

A window ``(low, high)`` in HU maps ``low`` (and anything below) to ``0`` and ``high`` (and anything
above) to ``1``, linearly in between. Several windows (e.g. lung, mediastinal, wide) are stacked as
channels, in the order given, so the network sees the same voxel with several contrasts.

After windowing, the value of air padding is ``0`` (the window's minimum) in every channel
(:data:`WINDOWED_PAD_VALUE`), which is why augmentations that pad after this step pad with zeros.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from monai.utils import convert_to_tensor
from numpy.typing import NDArray

from lung_nodule_mtl.constants import DEFAULT_WINDOWS

__all__ = ["WINDOWED_PAD_VALUE", "LungWindow", "LungWindowd", "WindowsLike", "normalise_windows"]

WindowsLike = Mapping[str, Sequence[float]] | Sequence[Sequence[float]]
"""Windows as ``{name: (low, high)}`` or ``[(low, high), ...]``, HU."""

WINDOWED_PAD_VALUE = 0.0
"""Value of air / padding after windowing (every window's minimum)."""


def normalise_windows(windows: WindowsLike | None) -> dict[str, tuple[float, float]]:
    """Check windows and return them as an ordered ``{name: (low, high)}`` dict in HU.

    Args:
        windows: ``{name: (low, high)}``, a sequence of ``(low, high)`` (named ``"window0"``,
            ``"window1"``, ...), or ``None`` for :data:`~lung_nodule_mtl.constants.DEFAULT_WINDOWS`.

    Returns:
        The windows, in the given order (that is the channel order).

    Raises:
        ValueError: no window, a window that is not two finite numbers, or ``low >= high``.
    """
    if windows is None:
        windows = DEFAULT_WINDOWS
    if isinstance(windows, str | bytes) or not isinstance(windows, Mapping | Sequence):
        raise ValueError(f"windows must be {{name: (low, high)}} or [(low, high), ...] in HU, got {windows!r}.")
    items = (
        list(windows.items()) if isinstance(windows, Mapping) else [(f"window{i}", w) for i, w in enumerate(windows)]
    )
    if not items:
        raise ValueError(f"windows must hold at least one (low, high) window in HU, got {windows!r}.")
    out: dict[str, tuple[float, float]] = {}
    for name, window in items:
        try:
            low, high = (float(v) for v in window)
        except (TypeError, ValueError):
            raise ValueError(f"windows[{name!r}] must be two numbers (low, high) in HU, got {window!r}.") from None
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"windows[{name!r}] must be finite (low, high) in HU, got {window!r}.")
        if not low < high:
            raise ValueError(f"windows[{name!r}] must have low < high (HU), got low={low}, high={high}.")
        out[str(name)] = (low, high)
    return out


class LungWindow(Transform):
    """Clip and scale a CT volume in HU to ``[0, 1]`` for each window, stacked as channels.

    Args:
        windows: ``{name: (low, high)}`` or ``[(low, high), ...]`` in HU; ``None`` gives
            :data:`~lung_nodule_mtl.constants.DEFAULT_WINDOWS` (lung, mediastinal, wide).

    Example:
        ``LungWindow({"lung": (-1000, 400)})`` maps -1000 HU and below to 0, -300 HU to 0.5,
        400 HU and above to 1.
    """

    backend = ScaleIntensityRange.backend

    def __init__(self, windows: WindowsLike | None = None) -> None:
        self.windows = normalise_windows(windows)
        self._scalers = [
            ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True, dtype=np.float32)
            for low, high in self.windows.values()
        ]

    @property
    def window_names(self) -> list[str]:
        """Names of the windows, in channel order."""
        return list(self.windows)

    def __call__(self, img: torch.Tensor | NDArray) -> torch.Tensor:
        """Window ``img``.

        Args:
            img: ``(1, H, W, D)`` CT in HU (tensor, ``MetaTensor`` or numpy array).

        Returns:
            ``(n_windows, H, W, D)`` float32 in ``[0, 1]``; a ``MetaTensor`` keeps its meta and affine.

        Raises:
            ValueError: ``img`` does not have exactly one channel.
        """
        if img.ndim < 2 or img.shape[0] != 1:
            raise ValueError(f"img must be (1, H, W, D) CT in HU (one channel), got shape {tuple(img.shape)}.")
        img_t = convert_to_tensor(img, track_meta=get_track_meta())
        return torch.cat([torch.as_tensor(scale(img_t)) for scale in self._scalers], dim=0)


class LungWindowd(MapTransform):
    """Dictionary version of :class:`LungWindow`: window the CT of each key (typically only the image).

    Args:
        keys: keys of ``(1, H, W, D)`` CT volumes in HU.
        windows: see :class:`LungWindow`.
        allow_missing_keys: do not raise if a key is missing.
    """

    backend = LungWindow.backend

    def __init__(
        self, keys: KeysCollection, windows: WindowsLike | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.window = LungWindow(windows)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Replace each key's ``(1, H, W, D)`` HU volume with its ``(n_windows, H, W, D)`` windows in ``[0, 1]``."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window(d[key])
        return d
