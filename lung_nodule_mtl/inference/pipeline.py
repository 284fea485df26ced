"""Whole-scan inference: a CT volume in, a nodule label map on its own grid and per-nodule predictions out.

:class:`ScanPredictor` runs, for one scan (a ``(1, H, W, D)`` ``MetaTensor`` in HU with its RAS affine):

1. **Geometry**: the grid of MONAI ``Orientation`` (RAS) and ``Spacing`` at the isotropic voxel the network was
   trained at (``spacing_mm``, bilinear), as the training transforms do; for the usual axial scan as a separable
   interpolation along each axis (:mod:`~lung_nodule_mtl.transforms.resample`: same values, a fraction of the
   memory and time).
2. **Lung region**: :func:`~lung_nodule_mtl.transforms.lung.lung_mask` (HU threshold + morphology); the
   network only runs inside the mask's bounding box and detections outside the mask are dropped. No
   lung found (a phantom, a crop): the whole image, with a warning.
3. **Sliding window**: MONAI's :class:`~monai.inferers.SlidingWindowInferer` (Gaussian blending computed once,
   ``sw_roi_size`` / ``overlap`` / ``sw_batch_size``) over the windowed image, mask logits only
   (:class:`~lung_nodule_mtl.networks.SlidingWindowAdapter` with ``heads="none"``); windows holding no lung
   voxel are not run (they only cover voxels the lung mask zeroes: the result is unchanged). Windows run on the
   ``device`` in ``channels_last_3d`` with mixed precision where the hardware has it (float16 on CUDA, bfloat16
   on CPUs with native bfloat16, e.g. AMX or AVX512-BF16), stitching on the CPU to bound GPU memory.
4. **Candidates**: sigmoid > ``threshold``, 26-connected components, those with an equivalent diameter
   below ``min_diameter_mm`` dropped; at most ``max_candidates`` (highest voxel probability first). Or, with given
   centres (``centres_ras``, e.g. from a LUNA16 table), one nodule per centre: the network's mask on a crop
   centred there, the component under (or within ``snap_mm`` of) the centre.
5. **Heads and false-positive reduction**: one forward pass of the whole network on a ``patch_size`` crop centred
   on each candidate (the regime the heads were trained in) → malignancy probability, 1-5 score, the attributes
   and, when the network has the detection head ``nodule`` (trained on whole-scan windows against hard
   negatives, ``bundle/configs/train_scans.yaml``), the **detection probability**; without that head it is the
   component's highest mask probability. Candidates below ``detection_threshold`` are dropped (the operating
   point), the rest ranked by it, at most ``max_nodules``. With ``mirror_tta`` the reported nodules' heads (and, for
   given centres, their masks) are the mean over the crop's 8 mirror images (nnU-Net's test-time mirroring,
   :class:`~lung_nodule_mtl.engines.MirrorInferer`); the detection probability stays the single pass's, so the
   operating point means what it meant. With a ``candidate_classifier``
   (:mod:`~lung_nodule_mtl.inference.candidates`), blob proposals (LoG maxima inside the lungs, ranked by their
   Hessian features) away from the mask's candidates are scored too, and every candidate's detection probability is
   the classifier's: measured features at its centre (Hessian eigenvalues, HU, the shape of its bright component)
   and the head's logit.
6. **Back to the input grid**: the label map (one label per nodule, 1 = most probable) is resampled
   to exactly the input's grid and affine by nearest neighbour (MONAI's ``ResampleToMatch`` for oblique grids).
   Volumes and diameters are measured on the isotropic grid, before that resampling.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.utils import convert_to_tensor, deprecated_arg
from numpy.typing import NDArray
from scipy import ndimage
from torch import nn

from lung_nodule_mtl import __version__
from lung_nodule_mtl.constants import AIR_HU, ATTRIBUTE_CLASSES, OutputKeys, ras_to_lps
from lung_nodule_mtl.engines.inferer import MirrorInferer, cpu_bf16_native
from lung_nodule_mtl.inference.candidates import (
    CANDIDATE_FEATURES,
    CandidateClassifier,
    blob_proposals,
    candidate_features,
)
from lung_nodule_mtl.inference.candidates import (
    head_logits as _head_logits,
)
from lung_nodule_mtl.inference.fusion import MalignancyFusion
from lung_nodule_mtl.io.geometry import equivalent_diameter_mm, outside_image, voxel_to_world, world_to_voxel
from lung_nodule_mtl.metrics.measurements import nodule_measurements
from lung_nodule_mtl.networks.sliding_window import SlidingWindowAdapter
from lung_nodule_mtl.reports.evaluation import head_predictions
from lung_nodule_mtl.transforms.chains import AXIS_LABELS, DEFAULT_SPACING_MM, ORIENTATION
from lung_nodule_mtl.transforms.crop import NoduleCenteredCrop, nodule_roi
from lung_nodule_mtl.transforms.lung import bounding_box, lung_mask
from lung_nodule_mtl.transforms.resample import IsotropicResampler
from lung_nodule_mtl.transforms.window import LungWindow, WindowsLike
from lung_nodule_mtl.utils.flags import as_bool

__all__ = ["NodulePrediction", "ScanPrediction", "ScanPredictor", "autocast_dtype", "resolve_device"]

logger = logging.getLogger(__name__)

_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)
_MIRROR = MirrorInferer()  # test-time mirroring along the three axes
_NODULE_PROB = "nodule_prob"  # the detection head's probability in head_predictions


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → ``cuda:0`` when available, else ``cpu``; ``"cuda"`` without a GPU is an error.

    Raises:
        ValueError: for an unknown name or ``cuda`` requested on a machine without CUDA.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here (use --device cpu or auto).")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}.")


def autocast_dtype(device: torch.device, amp: bool | None = None) -> torch.dtype | None:
    """The mixed-precision type for ``device``: float16 on CUDA, bfloat16 on a CPU with native bfloat16 (AMX,
    AVX512-BF16); ``None`` (float32) otherwise or when ``amp`` is ``False``. ``amp=True`` on a CPU without native
    bfloat16 still gives bfloat16 (emulated: slower)."""
    if amp is False:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and (amp or cpu_bf16_native()):
        return torch.bfloat16
    return None


class _LungWindows(nn.Module):
    """MONAI sliding-window predictor (``with_coord=True``) that runs only the windows holding a lung voxel.

    The others get a constant logit ``fill``: they cover no lung voxel, and every voxel outside the lungs is zeroed
    after stitching, so skipping them changes nothing. Counts the windows run and skipped.
    """

    def __init__(
        self, predictor: Callable[[torch.Tensor], torch.Tensor], lung: torch.Tensor | None, fill: float = -20.0
    ) -> None:
        super().__init__()
        self.predictor = predictor
        self.lung = lung
        self.fill = fill
        self.run = 0
        self.skipped = 0

    def forward(self, x: torch.Tensor, coords: Sequence[Sequence[slice]]) -> torch.Tensor:
        keep = [i for i, c in enumerate(coords) if self.lung is None or bool(self.lung[tuple(c[2:])].any())]
        self.run += len(keep)
        self.skipped += len(coords) - len(keep)
        if len(keep) == len(coords):
            return self.predictor(x.contiguous(memory_format=torch.channels_last_3d))
        out = x.new_full((x.shape[0], 1, *x.shape[2:]), self.fill)
        if keep:
            index = torch.as_tensor(keep)
            y = self.predictor(x[index].contiguous(memory_format=torch.channels_last_3d))
            out[index] = y.to(out.dtype)
        return out


@dataclass
class NodulePrediction:
    """One nodule of a scan. Coordinates: world mm in RAS (NIfTI/MONAI) and LPS (DICOM/LUNA16), voxel indices
    of the **input** image; sizes measured on the isotropic grid."""

    label: int
    center_world_mm_ras: list[float]
    center_world_mm_lps: list[float]
    center_voxel: list[int]
    diameter_mm: float | None
    volume_mm3: float
    voxels_in_label_map: int
    detection_probability: float | None
    malignancy_probability: float | None
    malignancy_score: float | None
    attributes: dict[str, int]
    source: str
    """``"detected"`` (from the sliding window) or ``"given"`` (a centre passed in)."""
    malignancy_probability_network: float | None = None
    """The network's own malignancy output when ``malignancy_probability`` is the fusion's (else ``None``)."""
    attributes_network: dict[str, int] | None = None
    """The network's own ratings of the attributes the fusion rates (else ``None``)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScanPrediction:
    """What :meth:`ScanPredictor.predict` returns for one scan."""

    labels: NDArray[np.integer]
    """``(H, W, D)`` label map on the input grid: 0 background, ``k`` the nodule with ``label == k``."""
    affine: NDArray[np.float64]
    """The input's voxel → RAS-mm affine (the label map's)."""
    nodules: list[NodulePrediction]
    lung_volume_ml: float | None
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    isotropic_image: MetaTensor | None = None
    """The resampled HU image ``(1, h, w, d)`` (for QC figures), when kept."""
    isotropic_labels: NDArray[np.integer] | None = None
    """The label map on the isotropic grid (for QC figures), when kept."""
    isotropic_probability: NDArray[np.float32] | None = None
    """The mask probability on the isotropic grid (0 outside the lung mask), when kept and nodules were detected."""
    isotropic_lung: NDArray[np.bool_] | None = None
    """The lung mask on the isotropic grid, when kept and one was found."""
    lungs_center_ras: list[float] | None = None
    """The lung mask's centre of mass, RAS mm, when one was found: a nodule's side of the chest is told against it."""
    counts: dict[str, int] = field(default_factory=dict)
    """Work done: ``windows`` run by the sliding window, ``windows_skipped`` (no lung in them), ``voxels_isotropic``."""


@contextlib.contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Add the wall time of the block to ``timings[step]``, s."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = timings.get(step, 0.0) + time.perf_counter() - start


def _center_of_mass_ras(mask: NDArray[np.bool_] | None, affine: NDArray[np.float64]) -> list[float] | None:
    """Centre of mass of a mask, RAS mm (``None`` without voxels); no index list in memory: from the mask's
    projections on each axis (one pass over the mask per axis, faster than ``ndimage.center_of_mass``)."""
    if mask is None or not mask.any():
        return None
    total = float(np.count_nonzero(mask))
    ijk = np.asarray(
        [
            float(np.arange(mask.shape[a]) @ np.count_nonzero(mask, axis=tuple(b for b in range(3) if b != a))) / total
            for a in range(3)
        ],
        dtype=np.float64,
    )
    return [float(v) for v in affine[:3, :3] @ ijk + affine[:3, 3]]


@dataclass
class _Lungs:
    """The lungs on the isotropic grid: mask (``None``: not found or not used), the box analysed, volume, notes."""

    mask: NDArray[np.bool_] | None
    box: tuple[slice, slice, slice]
    volume_ml: float | None
    warnings: list[str]


@dataclass
class _Found:
    """Candidates on the isotropic grid: labels ``1..n``, RAS centres, head outputs, detection scores, how found."""

    iso_labels: NDArray[np.integer]
    centres: list[list[float]]
    heads: list[dict]
    detection: list[float | None]
    source: str
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    kept_probability: NDArray[np.float32] | None = None
    crop_probs: torch.Tensor | None = None
    """Mask probability ``(n, h, w, d)`` of the crop centred on each nodule (what the fusion's measurements read)."""


class ScanPredictor:
    """Detect, segment and characterise lung nodules in whole CT scans with a multi-task network.

    Args:
        network: the multi-task network (e.g. :class:`~lung_nodule_mtl.networks.LNMSNet`); put in eval mode.
        checkpoint: weights file (a state dict, or a dict holding one under ``"model"``), read with
            ``torch.load(weights_only=True)``; ``None`` keeps the network's weights.
        patch_size: crop size (voxels) the heads see, as in training.
        spacing_mm: isotropic voxel size the network was trained at, mm.
        windows: HU windows stacked as channels, as in training.
        sw_roi_size: sliding-window size (voxels); default ``patch_size``.
        sw_batch_size: windows per forward pass.
        overlap: sliding-window overlap fraction in ``[0, 1)``.
        blend_mode: MONAI blending, ``"gaussian"`` or ``"constant"``.
        threshold: mask probability threshold.
        min_diameter_mm: candidates with a smaller equivalent diameter are dropped (LIDC: nodules >= 3 mm).
        max_diameter_mm: candidates with a larger equivalent diameter are dropped (``None``: no limit; nodules are
            <= 30 mm by definition, larger lesions are masses).
        max_nodules: most nodules reported per scan (most probable first).
        max_candidates: most mask components scored by the heads per scan (highest mask probability first).
        detection_threshold: candidates whose detection probability is below it are not reported (``None`` or 0:
            all, up to ``max_nodules``).
        use_lung_mask: restrict inference to the lungs (see :mod:`lung_nodule_mtl.transforms.lung`).
        snap_mm: with given centres, how far from the centre the mask component may start, mm.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        amp: mixed precision for the network (see :func:`autocast_dtype`); default (``None``): float16 on CUDA,
            bfloat16 on CPUs with native bfloat16, float32 elsewhere.
        keep_images: keep the isotropic image and label map in the result (for QC figures).
        model_info: provenance written with every report (bundle name and version, weights checksum).
        mirror_tta: test-time mirroring of the nodule-centred crops (the mean of the logits over the 8 mirror
            images): malignancy, score and attributes of the reported nodules, the masks of given centres and, with
            ``mirror_candidates_above``, the detection probability of the likelier candidates.
        mirror_candidates_above: with ``mirror_tta`` and a detection head, every candidate whose one-pass detection
            probability is at least this is scored again with mirroring, and the mirrored probability replaces it
            (and decides the operating point); the others keep their one pass (``None``: every candidate keeps it,
            only the reported nodules' other heads are mirrored). One pass is overconfident on vessels and
            pleura; the mirror images disagree there (README, "Detection on whole scans").
        merge_fragments: two reported candidates are one nodule when each one's centre lies in the mask component
            at the centre of the other's crop (the sliding-window mask split a large nodule, and each crop sees it
            whole): the less probable is not reported and its voxels join the other's label.
        crop_masks: each reported nodule's mask also takes the mask component at the centre of the crop centred on
            it (inside the lungs, on voxels no other nodule claims), as given centres' masks do: the crop sees the
            nodule whole where the sliding window's blend of overlapping windows can cut a large one short.
        malignancy_fusion: a fusion file (:mod:`lung_nodule_mtl.inference.fusion`): each nodule's
            ``malignancy_probability`` is then the network's output fused with its measured size (calibrated on
            out-of-fold predictions) and the network's own is ``malignancy_probability_network``; ``None``: the
            network's output.
    """

    def __init__(
        self,
        network: nn.Module,
        checkpoint: str | None = None,
        patch_size: Sequence[int] = (48, 48, 48),
        spacing_mm: Sequence[float] = DEFAULT_SPACING_MM,
        windows: WindowsLike | None = None,
        sw_roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 4,
        overlap: float = 0.25,
        blend_mode: str = "gaussian",
        threshold: float = 0.5,
        min_diameter_mm: float = 3.0,
        max_diameter_mm: float | None = None,
        max_nodules: int = 20,
        max_candidates: int = 200,
        detection_threshold: float | None = None,
        use_lung_mask: bool = True,
        snap_mm: float = 5.0,
        device: str | torch.device = "auto",
        amp: bool | None = None,
        keep_images: bool = False,
        model_info: Mapping[str, Any] | None = None,
        malignancy_fusion: str | os.PathLike[str] | None = None,
        mirror_tta: bool = False,
        mirror_candidates_above: float | None = 0.5,
        merge_fragments: bool = True,
        crop_masks: bool = True,
        candidate_classifier: str | os.PathLike[str] | None = None,
    ) -> None:
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}.")
        if not 0.0 <= float(overlap) < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap!r}.")
        if int(max_nodules) < 1 or int(sw_batch_size) < 1 or int(max_candidates) < 1:
            raise ValueError(
                f"max_nodules, max_candidates and sw_batch_size must be >= 1, got {max_nodules!r}, "
                f"{max_candidates!r}, {sw_batch_size!r}."
            )
        if detection_threshold is not None and not 0.0 <= float(detection_threshold) < 1.0:
            raise ValueError(f"detection_threshold must be None or in [0, 1), got {detection_threshold!r}.")
        if mirror_candidates_above is not None and not 0.0 <= float(mirror_candidates_above) <= 1.0:
            raise ValueError(f"mirror_candidates_above must be None or in [0, 1], got {mirror_candidates_above!r}.")
        self.device = resolve_device(device)
        self.amp_dtype = autocast_dtype(self.device, as_bool(amp, "amp", allow_none=True))
        self.amp = self.amp_dtype is not None
        self.network = network.to(self.device).eval()
        if checkpoint is not None:
            state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
            if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
                state = state["model"]
            self.network.load_state_dict(state)
        # faster 3D convolutions (oneDNN, cuDNN); Module.to takes memory_format, its type stubs do not say so
        self.network.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        self.patch_size = tuple(int(s) for s in patch_size)
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.window = LungWindow(windows)
        self.sw_roi_size = tuple(int(s) for s in (sw_roi_size or self.patch_size))
        self.sw_batch_size = int(sw_batch_size)
        self.overlap = float(overlap)
        self.blend_mode = blend_mode
        self.threshold = float(threshold)
        self.min_diameter_mm = float(min_diameter_mm)
        self.max_diameter_mm = None if max_diameter_mm is None else float(max_diameter_mm)
        self.max_nodules = int(max_nodules)
        self.max_candidates = max(int(max_candidates), self.max_nodules)
        self.detection_threshold = None if detection_threshold is None else float(detection_threshold)
        self.use_lung_mask = as_bool(use_lung_mask, "use_lung_mask")
        self.snap_mm = float(snap_mm)
        self.keep_images = as_bool(keep_images, "keep_images")
        self.mirror_tta = as_bool(mirror_tta, "mirror_tta")
        self.mirror_candidates_above = None if mirror_candidates_above is None else float(mirror_candidates_above)
        self.merge_fragments = as_bool(merge_fragments, "merge_fragments")
        self.crop_masks = as_bool(crop_masks, "crop_masks")
        self.model_info = dict(model_info or {})
        self.fusion = MalignancyFusion.from_config(malignancy_fusion)
        self.classifier = CandidateClassifier.from_config(candidate_classifier)
        if self.classifier is not None:
            if not self.has_detection_head:
                raise ValueError(
                    f"candidate_classifier {str(candidate_classifier)!r} needs a network with a detection head "
                    "('nodule'); this network has none."
                )
            self.model_info["candidate_classifier"] = {
                "file": str(candidate_classifier),
                "max_proposals": self.classifier.max_proposals,
                "weights": self.classifier.fitted_on.get("weights"),
            }
        if self.fusion is not None:
            self.model_info["malignancy_fusion"] = {
                "file": str(malignancy_fusion),
                "malignancy_features": None if self.fusion.model is None else list(self.fusion.model.features),
                "attributes": sorted(self.fusion.attribute_models),
            }
        self.inferer = SlidingWindowInferer(
            roi_size=self.sw_roi_size,
            sw_batch_size=self.sw_batch_size,
            overlap=self.overlap,
            mode=blend_mode,
            sw_device=self.device,
            device=torch.device("cpu"),
            cache_roi_weight_map=True,
            with_coord=True,
        )
        self._resampler = IsotropicResampler(self.spacing_mm, ORIENTATION, AXIS_LABELS)
        self._crop = NoduleCenteredCrop(self.patch_size, pad_value=AIR_HU)

    @property
    def _mirrors_candidates(self) -> bool:
        return self.mirror_tta and self.mirror_candidates_above is not None and self.has_detection_head

    @property
    def has_detection_head(self) -> bool:
        """Whether the network scores candidates with a detection head (``nodule``)."""
        heads = getattr(self.network, "heads", None)
        return isinstance(heads, nn.ModuleDict) and str(OutputKeys.NODULE) in heads

    def settings(self) -> dict[str, Any]:
        """The parameters that change the results (recorded in every report)."""
        return {
            "patch_size": list(self.patch_size),
            "spacing_mm": list(self.spacing_mm),
            "windows": {k: list(v) for k, v in self.window.windows.items()},
            "sw_roi_size": list(self.sw_roi_size),
            "sw_overlap": self.overlap,
            "sw_blend_mode": self.blend_mode,
            "threshold": self.threshold,
            "min_diameter_mm": self.min_diameter_mm,
            "max_diameter_mm": self.max_diameter_mm,
            "max_nodules": self.max_nodules,
            "max_candidates": self.max_candidates,
            "detection_threshold": self.detection_threshold,
            "detection_score": (
                "candidate classifier"
                if self.classifier is not None
                else "nodule head"
                if self.has_detection_head
                else "mask peak"
            ),
            "blob_proposals": 0 if self.classifier is None else self.classifier.max_proposals,
            "lung_mask": self.use_lung_mask,
            "precision": {None: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[self.amp_dtype],
            "mirror_tta": self.mirror_tta,
            "mirror_candidates_above": self.mirror_candidates_above if self._mirrors_candidates else None,
            "merge_fragments": self.merge_fragments,
            "crop_masks": self.crop_masks,
        }

    # -- steps -------------------------------------------------------------------------------------------------

    def window_aligned_box(self, box: Sequence[slice], shape: Sequence[int]) -> tuple[slice, slice, slice]:
        """The box the sliding window runs on: ``box`` (the lungs) grown to hold every window that MONAI's sliding
        window over the whole ``shape`` (same ROI and overlap) would place over it, at exactly those positions.

        Windows start at multiples of the scan interval (the last one of an axis ends at the volume's end), so a
        lung voxel gets the same blend of the same windows as in a whole-volume sliding window: restricting to the
        lungs (and skipping windows without lung) changes no value inside them.
        """
        from monai.inferers.utils import _get_scan_interval

        interval = _get_scan_interval(tuple(shape), self.sw_roi_size, 3, (self.overlap,) * 3)
        out = []
        for b, n, roi, step in zip(box, shape, self.sw_roi_size, interval, strict=True):
            if n <= roi:
                out.append(slice(0, n))
                continue
            # window starts along this axis, as monai.data.utils.dense_patch_slices places them
            count = next(k for k in range(n) if k * step + roi >= n) + 1
            starts = [min(k * step, n - roi) for k in range(count)]
            over = [p for p in starts if p < b.stop and p + roi > b.start]
            out.append(slice(over[0], over[-1] + roi))
        return (out[0], out[1], out[2])

    def _autocast(self) -> Any:
        return torch.autocast(
            device_type=self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )

    @torch.inference_mode()
    def _mask_probability(
        self, iso: MetaTensor, box: tuple[slice, slice, slice], lung: NDArray[np.bool_] | None
    ) -> tuple[torch.Tensor, dict[str, int]]:
        """Mask probability ``(h, w, d)`` over ``box`` of the isotropic HU image (windowed box only: less memory),
        and the windows run and skipped."""
        x = self.window(iso.as_tensor()[:, box[0], box[1], box[2]]).unsqueeze(0)
        adapter = SlidingWindowAdapter(self.network, heads="none")
        mask_key = str(OutputKeys.MASK)
        windows = _LungWindows(
            lambda w: adapter(w)[mask_key], None if lung is None else torch.from_numpy(np.ascontiguousarray(lung[box]))
        )
        with self._autocast():
            logits = self.inferer(x, windows)
        assert isinstance(logits, torch.Tensor)  # one output: the mask logits (the inferer's union type says more)
        if isinstance(logits, MetaTensor):
            logits = logits.as_tensor()
        return torch.sigmoid(logits[0, 0].float()), {"windows": windows.run, "windows_skipped": windows.skipped}

    def _centred_crops(self, iso: MetaTensor, centres_ras: Sequence[Sequence[float]]) -> torch.Tensor:
        """The windowed crops centred on ``centres_ras``, ``(N, channels, *patch_size)``, as a plain tensor."""
        # windowed at once (the crops side by side along the first axis: element-wise, the same values), then
        # plain tensors into the network: a MetaTensor would carry its meta through every operation (slower)
        hu = torch.cat([cast(MetaTensor, self._crop(iso, c)).as_tensor() for c in centres_ras], dim=1)
        windowed = convert_to_tensor(self.window(hu), track_meta=False)
        return windowed.reshape(windowed.shape[0], len(centres_ras), *self.patch_size).transpose(0, 1)

    @torch.inference_mode()
    def _heads(
        self, iso: MetaTensor, centres_ras: Sequence[Sequence[float]], mirror: bool = False
    ) -> tuple[list[dict], torch.Tensor]:
        """Head predictions and mask probabilities ``(N, h, w, d)`` of the crops centred on ``centres_ras`` (with
        ``mirror``: the mean of the logits over each crop's 8 mirror images)."""
        if not centres_ras:
            return [], torch.zeros((0, *self.patch_size))
        crops = list(self._centred_crops(iso, centres_ras))
        preds: list[dict] = []
        masks: list[torch.Tensor] = []
        for start in range(0, len(crops), self.sw_batch_size):
            batch = torch.stack(crops[start : start + self.sw_batch_size]).to(self.device)
            batch = batch.contiguous(memory_format=torch.channels_last_3d)
            with self._autocast():
                out = _MIRROR(batch, self.network) if mirror else self.network(batch)
            for i in range(batch.shape[0]):
                preds.append(head_predictions({k: v[i] for k, v in out.items() if v.dim() == 2}))
            masks.append(torch.sigmoid(out[str(OutputKeys.MASK)][:, 0].float()).cpu())
        return preds, torch.cat(masks)

    def _given_components(
        self, iso: MetaTensor, centres_ras: Sequence[Sequence[float]], crop_probs: torch.Tensor
    ) -> tuple[NDArray[np.int32], list[float | None]]:
        """Label map on the isotropic grid with the component at each given centre (label = its index + 1)."""
        shape = tuple(int(s) for s in iso.shape[1:])
        labels = np.zeros(shape, dtype=np.int32)
        scores: list[float | None] = []
        for k, centre in enumerate(centres_ras):
            prob = crop_probs[k].numpy()
            component = self._centre_component(prob)
            if component is None:
                scores.append(None)
                continue
            scores.append(float(prob[component].max()))
            self._paste(labels, np.asarray(iso.affine), centre, component, k + 1)
        return labels, scores

    def _paste(
        self,
        labels: NDArray[np.integer],
        affine: NDArray[np.float64],
        centre: Sequence[float],
        component: NDArray[np.bool_],
        label: int,
        within: NDArray[np.bool_] | None = None,
    ) -> None:
        """A component of the crop centred on ``centre`` into ``labels`` as ``label``, on the voxels no other nodule
        has claimed (and inside ``within`` where given)."""
        shape = labels.shape
        start, end = nodule_roi(shape, affine, centre, self.patch_size)
        src = tuple(slice(max(-s, 0), (e - s) - max(e - n, 0)) for s, e, n in zip(start, end, shape, strict=True))
        dst = tuple(slice(max(s, 0), min(e, n)) for s, e, n in zip(start, end, shape, strict=True))
        region = component[src] & ((labels[dst] == 0) | (labels[dst] == label))
        if within is not None:
            region &= within[dst]
        labels[dst][region] = label

    def _centre_component(self, prob: NDArray[np.float32]) -> NDArray[np.bool_] | None:
        """The mask component of a centred crop's probability at its centre, else the nearest within ``snap_mm``;
        ``None`` where there is none."""
        half = tuple(np.asarray(prob.shape) // 2)
        comp, n = ndimage.label(prob > self.threshold, structure=_STRUCTURE_26)
        chosen = int(comp[half]) if n else 0
        if n and chosen == 0:  # nearest component within snap_mm of the centre
            dist, idx = ndimage.distance_transform_edt(comp == 0, sampling=self.spacing_mm, return_indices=True)
            if dist[half] <= self.snap_mm:
                chosen = int(comp[tuple(int(i[half]) for i in idx)])
        return None if chosen == 0 else comp == chosen

    def _detect(
        self, prob: NDArray[np.float32], voxel_mm3: float
    ) -> tuple[NDArray[np.int32], list[float], list[NDArray[np.float64]]]:
        """Connected components of ``prob > threshold`` → label map (1 = most probable), detection scores and
        centres of mass (voxels of ``prob``)."""
        comp, n = ndimage.label(prob > self.threshold, structure=_STRUCTURE_26)
        objects = ndimage.find_objects(comp)
        found: list[tuple[float, int, NDArray[np.float64]]] = []
        for i, box in enumerate(objects):
            if box is None:
                continue
            inside = comp[box] == i + 1
            diameter = equivalent_diameter_mm(float(inside.sum()) * voxel_mm3)
            if diameter < self.min_diameter_mm or (
                self.max_diameter_mm is not None and diameter > self.max_diameter_mm
            ):
                continue
            peak = float(prob[box][inside].max())
            centre = np.asarray([s.start for s in box], dtype=np.float64) + np.argwhere(inside).mean(axis=0)
            found.append((peak, i + 1, centre))
        found.sort(key=lambda f: -f[0])  # stable: ties keep the scan order
        found = found[: self.max_candidates]
        lut = np.zeros(n + 1, dtype=np.int32)
        for rank, (_, index, _) in enumerate(found):
            lut[index] = rank + 1
        return lut[comp], [f[0] for f in found], [f[2] for f in found]

    def _select(
        self,
        labels: NDArray[np.int32],
        centres: list,
        heads: list[dict],
        peaks: Sequence[float],
        classified: Sequence[float] | NDArray[np.float64] | None = None,
    ) -> tuple[NDArray[np.int32], list, list[dict], list[float | None], list[int]]:
        """The operating point: detection probability (``classified``: the candidate classifier's; else the
        ``nodule`` head, else the mask peak) per candidate, those below ``detection_threshold`` dropped, the rest most
        probable first, at most ``max_nodules``; the label map renumbered to match (1 = most probable), and the kept
        candidates' indices."""
        if classified is not None:
            scores = [float(c) for c in classified]
        else:
            scores = [
                float(h.get(_NODULE_PROB, p)) if self.has_detection_head else float(p)
                for h, p in zip(heads, peaks, strict=True)
            ]
        keep = [
            i
            for i in sorted(range(len(scores)), key=lambda i: -scores[i])
            if self.detection_threshold is None or scores[i] >= self.detection_threshold
        ][: self.max_nodules]
        lut = np.zeros(len(scores) + 1, dtype=np.int32)
        for rank, i in enumerate(keep):
            lut[i + 1] = rank + 1
        return lut[labels], [centres[i] for i in keep], [heads[i] for i in keep], [scores[i] for i in keep], keep

    # -- the whole scan ----------------------------------------------------------------------------------------

    @deprecated_arg(
        name="centres_ras",
        new_name="centers_ras",
        since="0.1.0",
        version_val=__version__,
        msg_suffix="spelled centers_ras now.",
    )
    def predict(
        self,
        image: MetaTensor,
        centers_ras: Sequence[Sequence[float]] | None = None,
        *,
        centres_ras: Sequence[Sequence[float]] | None = None,
    ) -> ScanPrediction:
        """Analyse one scan: resample to isotropic voxels, find the lungs, then either detect candidates (sliding
        window, components, heads, the operating point) or analyse the given centres, put the labels back on the
        input's grid and report each nodule. Each step's time is in ``timings_s``.

        Args:
            image: ``(1, H, W, D)`` CT in HU whose ``affine`` maps voxels to RAS mm (as MONAI's ``LoadImage``).
            centers_ras: nodule centres (RAS mm) to analyse instead of detecting nodules; each must lie
                inside the image (``centres_ras``: the same, deprecated spelling).

        Returns:
            A :class:`ScanPrediction` on the input's grid.

        Raises:
            ValueError: a bad image shape, or a given centre outside the image.
        """
        in_shape, in_affine = self._check_input(image, centers_ras)
        timings: dict[str, float] = {}
        with _timed(timings, "resample"):
            iso = self._resampler.to_isotropic(image)
            hu = iso[0].numpy()
        with _timed(timings, "lung_mask"):
            lungs = self._find_lungs(hu)
        if centers_ras is None:
            found = self._detect_candidates(iso, hu, lungs, timings)
        else:
            with _timed(timings, "heads"):
                found = self._analyse_given(iso, centers_ras)
        measurements = []
        if self.fusion is not None:
            with _timed(timings, "measure"):
                measurements = self._measure(iso, hu, found)
        with _timed(timings, "restore_grid"):
            label_dtype = np.uint16 if len(found.centres) >= 255 else np.uint8
            labels = self._resampler.labels_to(found.iso_labels.astype(label_dtype), np.asarray(iso.affine), image)
        return ScanPrediction(
            labels=labels,
            affine=in_affine,
            nodules=self._report(found, labels, in_affine, in_shape, measurements),
            lung_volume_ml=None if lungs.volume_ml is None else round(lungs.volume_ml, 1),
            timings_s={k: round(v, 3) for k, v in timings.items()},
            warnings=lungs.warnings + found.warnings,
            isotropic_image=iso if self.keep_images else None,
            isotropic_labels=found.iso_labels if self.keep_images else None,
            isotropic_probability=found.kept_probability,
            isotropic_lung=lungs.mask if self.keep_images else None,
            lungs_center_ras=_center_of_mass_ras(lungs.mask, np.asarray(iso.affine)),
            counts={**found.counts, "voxels_isotropic": int(np.prod(hu.shape))},
        )

    @property
    def _voxel_mm3(self) -> float:
        return float(np.prod(self.spacing_mm))

    @staticmethod
    def _check_input(
        image: MetaTensor, centers_ras: Sequence[Sequence[float]] | None
    ) -> tuple[tuple[int, ...], NDArray[np.float64]]:
        """The input's shape and voxel-to-RAS affine, after checking the image and that given centres lie inside."""
        if not isinstance(image, MetaTensor) or image.ndim != 4 or image.shape[0] != 1:
            raise ValueError(
                f"image must be a (1, H, W, D) MetaTensor in HU, got {type(image).__name__} "
                f"{list(getattr(image, 'shape', []))}."
            )
        in_shape = tuple(int(s) for s in image.shape[1:])
        in_affine = np.asarray(image.affine, dtype=np.float64)
        for c in centers_ras or []:
            vox = outside_image(in_affine, in_shape, c)
            if vox is not None:
                raise ValueError(
                    f"nodule centre {np.round(c, 2).tolist()} mm (RAS) is outside the image (voxel "
                    f"{np.round(vox, 1).tolist()}, shape {list(in_shape)}); LPS tables need x, y negated."
                )
        return in_shape, in_affine

    def _find_lungs(self, hu: NDArray[np.float32]) -> _Lungs:
        """The lung mask on the isotropic grid, the window-aligned box analysed (the whole image without lungs)."""
        lung = lung_mask(hu, self.spacing_mm) if self.use_lung_mask else None
        warnings = []
        if self.use_lung_mask and lung is None:
            warnings.append("no lung found (no large region below -320 HU inside the body): whole image analysed")
        box = bounding_box(lung) if lung is not None else None
        if box is None:
            box = (slice(0, hu.shape[0]), slice(0, hu.shape[1]), slice(0, hu.shape[2]))
        else:
            box = self.window_aligned_box(box, hu.shape)
        volume_ml = float(lung.sum()) * self._voxel_mm3 / 1000.0 if lung is not None else None
        return _Lungs(lung, box, volume_ml, warnings)

    def _detect_candidates(
        self, iso: MetaTensor, hu: NDArray[np.float32], lungs: _Lungs, timings: dict[str, float]
    ) -> _Found:
        """Detection: mask probability by sliding window over the lungs' box, its components as candidates, the
        heads on each, and the operating point (:meth:`_select`)."""
        box, lung = lungs.box, lungs.mask
        kept_prob = None
        with _timed(timings, "sliding_window"):
            prob_t, counts = self._mask_probability(iso, box, lung)
            prob = prob_t.numpy()
            if lung is not None:
                prob *= lung[box]
            if self.keep_images:
                kept_prob = np.zeros(hu.shape, dtype=np.float32)
                kept_prob[box] = prob
        with _timed(timings, "components"):
            box_labels, scores, centres_box = self._detect(prob, self._voxel_mm3)
            del prob
            iso_labels = np.zeros(hu.shape, dtype=np.int32)
            iso_labels[box] = box_labels
            offset = np.asarray([s.start for s in box], dtype=np.float64)
            centres = [voxel_to_world(np.asarray(iso.affine), c + offset).tolist() for c in centres_box]
        if self.classifier is not None:
            with _timed(timings, "proposals"):
                added = self._proposals(iso, hu, lungs, [np.asarray(c) + offset for c in centres_box])
                centres += added
                scores += [0.0] * len(added)
                counts["candidates_proposed"] = len(added)
        with _timed(timings, "heads"):
            heads, crop_probs, mirrored_done, n_mirrored = self._candidate_heads(iso, centres)
            n_mask = len(centres_box)
            if self.classifier is not None and self.classifier.proposals_need_mask and len(centres) > n_mask:
                kept = [i for i in range(len(centres)) if i < n_mask or self._centre_component(crop_probs[i].numpy())
                        is not None]  # fmt: skip
                centres, heads, scores = [centres[i] for i in kept], [heads[i] for i in kept], [scores[i] for i in kept]
                crop_probs, mirrored_done = crop_probs[kept], mirrored_done[kept]
                counts["candidates_proposed"] = len(kept) - n_mask
            if self._mirrors_candidates:
                counts["candidates_mirrored"] = n_mirrored
            classified = None
            if self.classifier is not None:
                classified = self.classifier.score(self._candidate_features(iso, hu, centres), _head_logits(heads))
            iso_labels, centres, heads, detection, keep = self._select(iso_labels, centres, heads, scores, classified)
            crop_probs = crop_probs[keep]
            todo = [k for k, i in enumerate(keep) if not mirrored_done[i]] if self.mirror_tta else []
            if todo:  # the other reported nodules again, mirrored; their (one-pass) detection score kept
                mirrored, again_probs = self._heads(iso, [centres[k] for k in todo], mirror=True)
                for m, k in zip(mirrored, todo, strict=True):
                    h = heads[k]
                    heads[k] = {**m, **({_NODULE_PROB: h[_NODULE_PROB]} if _NODULE_PROB in h else {})}
                crop_probs = crop_probs.clone()
                crop_probs[todo] = again_probs
            components = [self._centre_component(p.numpy()) for p in crop_probs] if centres else []
            if self.merge_fragments and len(centres) > 1:
                owner = self._fragment_owners(iso, centres, components)
                kept = [i for i, o in enumerate(owner) if o == i]
                counts["fragments_merged"] = len(centres) - len(kept)
                lut = np.zeros(len(centres) + 1, dtype=np.int32)
                for i, o in enumerate(owner):
                    lut[i + 1] = kept.index(o) + 1
                iso_labels = lut[iso_labels]
                centres = [centres[i] for i in kept]
                heads = [heads[i] for i in kept]
                detection = [detection[i] for i in kept]
                components = [components[i] for i in kept]
                crop_probs = crop_probs[kept]
            if self.crop_masks:
                for k, (centre, component) in enumerate(zip(centres, components, strict=True)):
                    if component is not None:
                        self._paste(iso_labels, np.asarray(iso.affine), centre, component, k + 1, within=lung)
        return _Found(iso_labels, centres, heads, detection, "detected", counts=counts, kept_probability=kept_prob,
                      crop_probs=crop_probs)  # fmt: skip

    def _candidate_heads(
        self, iso: MetaTensor, centres: Sequence[Sequence[float]]
    ) -> tuple[list[dict], torch.Tensor, NDArray[np.bool_], int]:
        """The heads and crop masks of candidates as the operating point sees them: one pass each, then, with
        ``mirror_tta`` and ``mirror_candidates_above``, the likelier ones again over their 8 mirror images (their
        scores replaced). Returns the heads, the crop probabilities, which were mirrored and how many."""
        heads, crop_probs = self._heads(iso, centres)
        mirrored_done = np.zeros(len(centres), dtype=bool)
        if not self._mirrors_candidates:
            return heads, crop_probs, mirrored_done, 0
        floor = float(self.mirror_candidates_above)  # type: ignore[arg-type]
        likely = [i for i, h in enumerate(heads) if float(h[_NODULE_PROB]) >= floor]
        if likely:
            again, again_probs = self._heads(iso, [centres[i] for i in likely], mirror=True)
            for j, i in enumerate(likely):
                heads[i] = again[j]
            crop_probs = crop_probs.clone()  # an inference tensor: updated in place out of inference mode
            crop_probs[likely] = again_probs
            mirrored_done[likely] = True
        return heads, crop_probs, mirrored_done, len(likely)

    def _blob_proposals(self, hu: NDArray[np.float32], lungs: _Lungs) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """:func:`~lung_nodule_mtl.inference.candidates.blob_proposals` inside the lungs' box: voxels of the
        isotropic grid and their features."""
        box = lungs.box
        points, feats = blob_proposals(hu[box], None if lungs.mask is None else lungs.mask[box])
        return points + np.asarray([b.start for b in box], dtype=np.int64), feats

    def _proposals(
        self, iso: MetaTensor, hu: NDArray[np.float32], lungs: _Lungs, taken: Sequence[NDArray[np.float64]]
    ) -> list[list[float]]:
        """The blob proposals the candidate classifier adds (RAS mm): away from the ``taken`` mask candidates
        (isotropic voxels), best ranked first."""
        assert self.classifier is not None
        points, feats = self._blob_proposals(hu, lungs)
        chosen = self.classifier.propose(points, feats, np.asarray(taken).reshape(-1, 3), self.spacing_mm)
        affine = np.asarray(iso.affine)
        return [voxel_to_world(affine, points[i].astype(np.float64)).tolist() for i in chosen]

    def _candidate_features(
        self, iso: MetaTensor, hu: NDArray[np.float32], centres: Sequence[Sequence[float]]
    ) -> NDArray[np.float32]:
        """:func:`~lung_nodule_mtl.inference.candidates.candidate_features` at each centre (RAS mm)."""
        affine = np.asarray(iso.affine)
        rows = [candidate_features(hu, world_to_voxel(affine, np.asarray(c, dtype=np.float64))) for c in centres]
        return np.stack(rows) if rows else np.zeros((0, len(CANDIDATE_FEATURES)), dtype=np.float32)

    def _fragment_owners(
        self,
        iso: MetaTensor,
        centres: Sequence[Sequence[float]],
        components: Sequence[NDArray[np.bool_] | None],
    ) -> list[int]:
        """For candidates in rank order, the index of the nodule each belongs to: itself, or the most probable
        candidate before it with which it shares one object (each centre in the other's crop component at its
        centre, ``components`` as :meth:`_centre_component` gives them; see ``merge_fragments``)."""
        shape = tuple(int(s) for s in iso.shape[1:])
        starts = [nodule_roi(shape, np.asarray(iso.affine), c, self.patch_size)[0] for c in centres]
        half = np.asarray(self.patch_size, dtype=np.int64) // 2  # a crop's centre voxel: its start + half

        def holds(k: int, j: int) -> bool:  # candidate j's centre in the component at the centre of k's crop
            comp = components[k]
            if comp is None:
                return False
            idx = starts[j] + half - starts[k]
            return bool(np.all(idx >= 0) and np.all(idx < comp.shape) and comp[tuple(idx)])

        owner = list(range(len(centres)))
        for j in range(len(centres)):
            for k in range(j):
                if owner[k] == k and holds(k, j) and holds(j, k):
                    owner[j] = k
                    break
        return owner

    def _analyse_given(self, iso: MetaTensor, centers_ras: Sequence[Sequence[float]]) -> _Found:
        """Given centres: the heads and the mask component at each (detection score: the head's, where it has one)."""
        centres = [list(map(float, c)) for c in centers_ras]
        heads, crop_probs = self._heads(iso, centres, mirror=self.mirror_tta)
        iso_labels, detection = self._given_components(iso, centres, crop_probs)
        if self.has_detection_head:
            detection = [h.get(_NODULE_PROB) if d is not None else None for h, d in zip(heads, detection, strict=True)]
        warnings = [
            f"nodule {k + 1}: no mask above threshold {self.threshold} near the given centre"
            for k, d in enumerate(detection)
            if d is None
        ]
        return _Found(iso_labels, centres, heads, detection, "given", warnings=warnings, crop_probs=crop_probs)

    def _measure(self, iso: MetaTensor, hu: NDArray[np.float32], found: _Found) -> list[dict[str, float] | None]:
        """Each nodule's :func:`~lung_nodule_mtl.metrics.measurements.nodule_measurements`, taken as ``evaluating``
        takes them (and the fusion was fitted): on the mask of the crop centred on the nodule (its component at the
        centre); where that crop has none, on the nodule's component of the label map; ``None`` without either."""
        n = len(found.centres)
        out: list[dict[str, float] | None] = [None] * n
        if found.crop_probs is not None:
            for k, centre in enumerate(found.centres):
                component = self._centre_component(found.crop_probs[k].numpy())
                if component is not None:
                    crop = cast(MetaTensor, self._crop(iso, centre)).as_tensor()[0].numpy()
                    out[k] = nodule_measurements(crop, component, self.spacing_mm)
        labels = found.iso_labels
        for k, box in enumerate(ndimage.find_objects(labels, max_label=n)):
            if box is not None and out[k] is None:
                grown = tuple(
                    slice(max(s.start - 3, 0), min(s.stop + 3, size)) for s, size in zip(box, labels.shape, strict=True)
                )
                out[k] = nodule_measurements(hu[grown], labels[grown] == k + 1, self.spacing_mm)
        return out

    def _report(
        self,
        found: _Found,
        labels: NDArray[np.integer],
        in_affine: NDArray[np.float64],
        in_shape: tuple[int, ...],
        measurements: Sequence[dict[str, float] | None] = (),
    ) -> list[NodulePrediction]:
        """One :class:`NodulePrediction` per candidate: centre (RAS, LPS, input voxel), size from its isotropic
        component, scores, the malignancy and attributes of the fusion (told the nodule's ``measurements``:
        :meth:`_measure`) where one is given, else the network's."""
        n = len(found.centres)
        measurements = list(measurements) + [None] * (n - len(measurements))
        counts_iso = np.bincount(found.iso_labels.ravel(), minlength=n + 1)
        counts_out = np.bincount(labels.ravel().astype(np.int64), minlength=n + 1)
        nodules: list[NodulePrediction] = []
        for k, centre in enumerate(found.centres):
            volume = float(counts_iso[k + 1]) * self._voxel_mm3
            vox = world_to_voxel(in_affine, np.asarray(centre))
            network = found.heads[k] if k < len(found.heads) else {}
            diameter = round(equivalent_diameter_mm(volume), 3) if volume > 0 else None
            head = network if self.fusion is None else self.fusion.fuse_heads(network, measurements[k])
            nodules.append(
                NodulePrediction(
                    label=k + 1,
                    center_world_mm_ras=[round(float(v), 3) for v in centre],
                    center_world_mm_lps=[round(float(v), 3) for v in ras_to_lps(centre)],
                    center_voxel=[
                        int(np.clip(np.floor(v + 0.5), 0, m - 1)) for v, m in zip(vox, in_shape, strict=True)
                    ],
                    diameter_mm=diameter,
                    volume_mm3=round(volume, 3),
                    voxels_in_label_map=int(counts_out[k + 1]),
                    detection_probability=None if (d := found.detection[k]) is None else round(float(d), 6),
                    malignancy_probability=None if (p := head.get("malignancy_prob")) is None else round(p, 6),
                    malignancy_score=head.get(str(OutputKeys.MALIGNANCY_SCORE)),
                    attributes={name: int(head[name]) for name in ATTRIBUTE_CLASSES if name in head},
                    source=found.source,
                    malignancy_probability_network=None
                    if (q := head.get("malignancy_prob_network")) is None
                    else round(q, 6),
                    attributes_network={
                        name: int(head[f"{name}_network"]) for name in ATTRIBUTE_CLASSES if f"{name}_network" in head
                    }
                    or None,
                )
            )
        return nodules
