"""Rigid registration of a pair's follow-up to its baseline crop (SimpleITK), and its report.

The follow-up is aligned to the baseline crop by a rigid transform (:class:`RegistrationSettings`): a SimpleITK
``Euler3DTransform`` about the baseline centre, initialised with the translation *follow-up centre - baseline
centre* (the centres coincide), refined by a multi-resolution registration of the follow-up's neighbourhood to
the baseline crop (Mattes mutual information on HU clipped to a window, all voxels of a sphere around the
nodule inside the baseline scan: deterministic). A result that rotates or shifts more than the settings allow,
or whose metric is not better than the centres' alignment, is rejected: the pair keeps the centre alignment,
with a warning. ``register=False`` (``--no-register``) uses the centre alignment only (scans registered
before).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from lung_nodule_mtl.constants import DEFAULT_WINDOWS
from lung_nodule_mtl.data.growth_pairs.grid import RAS_LPS, to_lps

__all__ = ["RegistrationSettings", "register_followup", "rigid_parts"]


@dataclass(frozen=True)
class RegistrationSettings:
    """How the follow-up crop is registered to the baseline crop (rigid, SimpleITK); stored in each record.

    Attributes:
        window_hu: both images are clipped to this HU range before the metric (air .. dense soft tissue: bone
            and contrast would otherwise take most histogram bins).
        histogram_bins: bins of Mattes mutual information.
        shrink_factors: the multi-resolution pyramid, coarse to fine (voxels of the baseline crop).
        smoothing_sigmas_mm: Gaussian smoothing at each level, mm.
        iterations: most iterations per level of the regular-step gradient descent.
        learning_rate: its first (largest) step, mm (scales from physical shift: a step moves no voxel more
            than this).
        min_step: it stops when the step falls below this, mm.
        relaxation: step shrink factor when the gradient turns.
        metric_radius_fraction: the metric uses the baseline crop's voxels inside the baseline scan within this
            fraction of ``crop_mm / 2`` of the nodule centre (a sphere: local alignment around the nodule).
        margin_mm: the follow-up is read this far beyond the rotated crop's reach, so the moving image covers it.
        max_rotation_deg: a result that rotates more is rejected (centre alignment kept).
        max_shift_mm: a result that moves the baseline centre more than this from the given follow-up centre is
            rejected (at most ``margin_mm``).
        threads: ITK threads (``None``: ITK's default, all cores); the result depends on it only at round-off.
    """

    window_hu: tuple[float, float] = DEFAULT_WINDOWS["lung"]
    histogram_bins: int = 32
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_mm: tuple[float, ...] = (2.0, 1.0, 0.0)
    iterations: int = 200
    learning_rate: float = 1.0
    min_step: float = 0.001
    relaxation: float = 0.5
    metric_radius_fraction: float = 1.0
    margin_mm: float = 10.0
    max_rotation_deg: float = 15.0
    max_shift_mm: float = 10.0
    threads: int | None = None

    def __post_init__(self) -> None:
        lo, hi = self.window_hu
        if not lo < hi:
            raise ValueError(
                f"RegistrationSettings.window_hu must be (low, high) with low < high, got {self.window_hu}."
            )
        if len(self.shrink_factors) != len(self.smoothing_sigmas_mm) or not self.shrink_factors:
            raise ValueError(
                "RegistrationSettings: shrink_factors and smoothing_sigmas_mm must have the same (non-zero) length, "
                f"got {self.shrink_factors} and {self.smoothing_sigmas_mm}."
            )
        if any(int(f) < 1 for f in self.shrink_factors):
            raise ValueError(f"RegistrationSettings.shrink_factors must be >= 1, got {self.shrink_factors}.")
        for name in ("histogram_bins", "iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"RegistrationSettings.{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("learning_rate", "min_step", "relaxation", "metric_radius_fraction", "margin_mm"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"RegistrationSettings.{name} must be a finite number > 0, got {value!r}.")
        if not 0 < self.relaxation < 1:
            raise ValueError(f"RegistrationSettings.relaxation must be in (0, 1), got {self.relaxation}.")
        if not 0 < self.max_shift_mm <= self.margin_mm:
            raise ValueError(
                f"RegistrationSettings.max_shift_mm must be in (0, margin_mm={self.margin_mm}], "
                f"got {self.max_shift_mm}."
            )
        if not 0 < self.max_rotation_deg <= 90:
            raise ValueError(f"RegistrationSettings.max_rotation_deg must be in (0, 90], got {self.max_rotation_deg}.")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"RegistrationSettings.threads must be >= 1 or None, got {self.threads}.")


def _registration_method(
    settings: RegistrationSettings, fixed_mask: sitk.Image, multi_resolution: bool
) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(settings.histogram_bins))
    reg.SetMetricSamplingStrategy(reg.NONE)  # every voxel under the mask: deterministic
    reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    if multi_resolution:
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=float(settings.learning_rate),
            minStep=float(settings.min_step),
            numberOfIterations=int(settings.iterations),
            relaxationFactor=float(settings.relaxation),
            gradientMagnitudeTolerance=1e-8,
        )
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([int(f) for f in settings.shrink_factors])
        reg.SetSmoothingSigmasPerLevel([float(s) for s in settings.smoothing_sigmas_mm])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    if settings.threads is not None:
        reg.SetNumberOfThreads(int(settings.threads))
    return reg


def rigid_parts(tx: sitk.Euler3DTransform) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(R, t)`` of ``y = R (x - c) + c + t`` in RAS (``c`` the transform's centre), from ITK's LPS."""
    rotation = RAS_LPS @ np.asarray(tx.GetMatrix(), dtype=np.float64).reshape(3, 3) @ RAS_LPS
    return rotation, RAS_LPS @ np.asarray(tx.GetTranslation(), dtype=np.float64)


def _rotation_deg(rotation: NDArray[np.float64]) -> float:
    return math.degrees(math.acos(float(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))


def register_followup(
    fixed: sitk.Image,
    fixed_mask: sitk.Image,
    moving: sitk.Image,
    baseline_center: Sequence[float],
    followup_center: Sequence[float],
    settings: RegistrationSettings,
    register: bool,
) -> tuple[sitk.Euler3DTransform, dict[str, Any], list[str]]:
    """The rigid transform (baseline crop world → follow-up world) and its report."""
    initial = sitk.Euler3DTransform()
    initial.SetCenter(to_lps(baseline_center))
    initial.SetTranslation(to_lps(np.asarray(followup_center) - np.asarray(baseline_center)))
    lo, hi = settings.window_hu
    fixed_w = sitk.Clamp(sitk.Cast(fixed, sitk.sitkFloat32), sitk.sitkFloat32, float(lo), float(hi))
    moving_w = sitk.Clamp(sitk.Cast(moving, sitk.sitkFloat32), sitk.sitkFloat32, float(lo), float(hi))
    warnings: list[str] = []
    info: dict[str, Any] = {"method": "centres", "status": "centres only (requested)"}

    def metric(tx: sitk.Transform) -> float | None:
        evaluator = _registration_method(settings, fixed_mask, multi_resolution=False)
        evaluator.SetInitialTransform(tx)
        try:
            return float(evaluator.MetricEvaluate(fixed_w, moving_w))
        except RuntimeError:
            return None

    initial_metric = metric(initial)
    final, final_metric = initial, initial_metric
    if register:
        tx = sitk.Euler3DTransform(initial)
        reg = _registration_method(settings, fixed_mask, multi_resolution=True)
        reg.SetInitialTransform(tx, inPlace=True)
        reason = None
        try:
            reg.Execute(fixed_w, moving_w)
        except RuntimeError as exc:
            reason = f"SimpleITK failed: {' '.join(str(exc).split())[-200:]}"
        info = {"method": "rigid", "status": "registered"}
        if reason is None:
            rotation, _ = rigid_parts(tx)
            moved = np.asarray(tx.TransformPoint(to_lps(baseline_center)))
            shift = float(np.linalg.norm(RAS_LPS @ moved - np.asarray(followup_center)))
            tx_metric = metric(tx)
            info.update(
                iterations=int(reg.GetOptimizerIteration()), stop_condition=reg.GetOptimizerStopConditionDescription()
            )
            if _rotation_deg(rotation) > settings.max_rotation_deg:
                reason = f"rotation {_rotation_deg(rotation):.1f} deg > {settings.max_rotation_deg:g}"
            elif shift > settings.max_shift_mm:
                reason = f"centre moved {shift:.1f} mm from the given follow-up centre > {settings.max_shift_mm:g}"
            elif tx_metric is None or (initial_metric is not None and tx_metric >= initial_metric):
                reason = f"metric {tx_metric} not better than the centres' alignment ({initial_metric})"
            else:
                final, final_metric = tx, tx_metric
        if final is initial:
            info.update(method="centres", status=f"centres only: registration rejected ({reason})")
            warnings.append(f"registration rejected ({reason}): the centres' alignment is used")
    rotation, translation = rigid_parts(final)
    correction = np.asarray(baseline_center) + translation - np.asarray(followup_center)
    angle = _rotation_deg(rotation)
    axis = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], rotation[1, 0] - rotation[0, 1]])
    norm = float(np.linalg.norm(axis))
    info.update(
        {
            "metric": "mattes_mutual_information",
            "rotation_deg": round(angle, 4),
            "rotation_axis": [round(float(a), 5) for a in axis / norm] if norm > 1e-12 else None,
            "rotation_matrix": [[round(float(v), 7) for v in r] for r in rotation],
            "translation_mm": [round(float(v), 4) for v in translation],
            "center_mm": [round(float(v), 4) for v in baseline_center],
            "centre_correction_mm": [round(float(v), 4) for v in correction],
            "initial_metric": None if initial_metric is None else round(initial_metric, 6),
            "final_metric": None if final_metric is None else round(final_metric, 6),
            "convention": "RAS mm: a baseline-crop point x shows the follow-up scan's point "
            "rotation_matrix @ (x - center_mm) + center_mm + translation_mm",
        }
    )
    return final, info, warnings
