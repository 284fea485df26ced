"""NoduleGrowthNet: predict the follow-up image and mask of a nodule from its baseline crop and the interval.

Growth is decoupled into a **deformation** (a spatial-transformer decoder: the change of shape and volume) and a
**texture evolution** (a decoder with interval-conditioned adaptive normalisation: the change of density), on the
shared residual/MSConv encoder of :class:`~lung_nodule_mtl.networks.LNMSNet`; a **cross-task attention** lets
each branch see the other's features, so shape change and density change stay consistent.

References:
    MT-NoGNet: multi-task nodule growth prediction from a baseline CT, deformation + texture decoders with
    cross-task attention (``docs/SEEDS.md``, system 4).
    Arsigny, Commowick, Pennec, Ayache. "A Log-Euclidean Framework for Statistics on Diffeomorphisms." MICCAI 2006
    (stationary velocity fields, scaling and squaring).
    Jaderberg, Simonyan, Zisserman, Kavukcuoglu. "Spatial Transformer Networks." NeurIPS 2015.
    Huang, Belongie. "Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization." ICCV 2017.
    Balakrishnan et al. "VoxelMorph: A Learning Framework for Deformable Medical Image Registration." TMI 2019.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import DVF2DDF, Warp
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer
from torch import nn

from lung_nodule_mtl.constants import GrowthBatchKeys, GrowthOutputKeys  # re-exported here
from lung_nodule_mtl.networks.blocks import ActSpec, ConvNormAct, DecoderStage, MSConv
from lung_nodule_mtl.networks.lnmsnet import ResNetEncoder, _is_int, check_encoder_arguments
from lung_nodule_mtl.networks.transfer import LoadReport, load_partial_state

__all__ = [
    "AdaptiveDecoderStage",
    "AdaptiveInstanceNorm",
    "CrossTaskAttention",
    "GrowthBatchKeys",
    "GrowthOutputKeys",
    "IntervalEmbedding",
    "NoduleGrowthNet",
]

logger = logging.getLogger(__name__)

_FIELDS = ("svf", "ddf")
ENCODER_PREFIXES: tuple[str, ...] = ("encoder.", "bottleneck_ms.")
"""State-dict prefixes of the shared encoder; identical in :class:`~lung_nodule_mtl.networks.LNMSNet`."""
_STEM_KEY = "encoder.conv1.weight"


def _bad(name: str, expected: str, got: object) -> ValueError:
    return ValueError(f"NoduleGrowthNet: {name} must be {expected}, got {got!r}.")


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _make_warp(mode: str, padding_mode: str) -> Warp:
    with warnings.catch_warnings():  # MONAI warns at every construction when its C++ extension is not compiled
        warnings.filterwarnings("ignore", message=".*native grid_sample.*")
        return Warp(mode=mode, padding_mode=padding_mode)


def _make_dvf2ddf(num_steps: int) -> DVF2DDF:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*native grid_sample.*")
        return DVF2DDF(num_steps=num_steps, mode="bilinear", padding_mode="zeros")


def _reset_stale_grid(warp: Warp, ddf: torch.Tensor) -> None:
    """MONAI's ``Warp`` caches its reference grid by shape only: drop it when the device/dtype changed, or when it
    was made under ``torch.inference_mode`` and is now needed outside it (inference tensors cannot enter autograd)."""
    grid = warp.ref_grid
    if grid is None:
        return
    if (
        grid.device != ddf.device
        or grid.dtype != ddf.dtype
        or (grid.is_inference() and not torch.is_inference_mode_enabled())
    ):
        warp.ref_grid = None


def _soft_logit(p: torch.Tensor, eps: float) -> torch.Tensor:
    """``logit(eps + (1 - 2·eps)·p)``: finite logits of a probability (``p = 0.5`` ↦ 0, so thresholds are kept)."""
    q = eps + (1.0 - 2.0 * eps) * p
    return torch.log(q) - torch.log1p(-q)


class IntervalEmbedding(nn.Module):
    """Embed the follow-up interval: ``MLP(log(1 + interval_days / scale_days))``.

    Args:
        channels: embedding width.
        scale_days: time unit of the log transform (365: years).
        act: MONAI activation spec.

    Shapes:
        ``(N,)`` days → ``(N, channels)``.
    """

    def __init__(self, channels: int, scale_days: float = 365.0, act: ActSpec = ("relu", {"inplace": True})) -> None:
        super().__init__()
        self.scale_days = float(scale_days)
        self.mlp = nn.Sequential(
            nn.Linear(1, channels), get_act_layer(name=act), nn.Linear(channels, channels), get_act_layer(name=act)
        )

    def forward(self, interval_days: torch.Tensor) -> torch.Tensor:
        t = torch.log1p(interval_days.reshape(-1, 1) / self.scale_days)
        return self.mlp(t)


class AdaptiveInstanceNorm(nn.Module):
    """Instance norm whose scale and shift come from a conditioning vector (AdaIN, Huang & Belongie 2017).

    ``y = IN(x) · (1 + γ(c)) + β(c)`` with ``(γ, β) = Linear(c)``.

    Args:
        channels: feature channels.
        cond_channels: width of the conditioning vector.

    Shapes:
        ``x (N, channels, D, H, W), c (N, cond_channels) → (N, channels, D, H, W)``.
    """

    def __init__(self, channels: int, cond_channels: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm3d(channels, affine=False)
        self.proj = nn.Linear(cond_channels, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond).chunk(2, dim=1)
        shape = (x.shape[0], x.shape[1], 1, 1, 1)
        return self.norm(x) * (1.0 + gamma.reshape(shape)) + beta.reshape(shape)


class AdaptiveDecoderStage(nn.Module):
    """:class:`~lung_nodule_mtl.networks.blocks.DecoderStage` with :class:`AdaptiveInstanceNorm` normalisation.

    ×2 upsampling, concatenation with the skip, then twice ``Conv(3) → AdaIN(c) → act``.

    Args:
        in_channels: channels of the coarser input.
        skip_channels: channels of the skip connection (also the output channels).
        cond_channels: width of the conditioning vector.
        act: MONAI activation spec.
        upsample: ``"deconv"`` or ``"nontrainable"`` (as :class:`DecoderStage`).

    Shapes:
        ``x (N, in_channels, d, h, w), skip (N, skip_channels, 2d, 2h, 2w), c (N, cond_channels)
        → (N, skip_channels, 2d, 2h, 2w)``.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        cond_channels: int,
        act: ActSpec = ("relu", {"inplace": True}),
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        up: nn.Module
        if upsample == "deconv":
            up = Conv[Conv.CONVTRANS, 3](in_channels, skip_channels, kernel_size=2, stride=2)
        else:
            up = nn.Sequential(
                nn.Upsample(scale_factor=2.0, mode="trilinear", align_corners=False),
                Conv[Conv.CONV, 3](in_channels, skip_channels, kernel_size=1),
            )
        self.up = up
        self.conv1 = Conv[Conv.CONV, 3](2 * skip_channels, skip_channels, kernel_size=3, padding=1, bias=False)
        self.norm1 = AdaptiveInstanceNorm(skip_channels, cond_channels)
        self.conv2 = Conv[Conv.CONV, 3](skip_channels, skip_channels, kernel_size=3, padding=1, bias=False)
        self.norm2 = AdaptiveInstanceNorm(skip_channels, cond_channels)
        self.act = get_act_layer(name=act)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.up(x), skip], dim=1)
        x = self.act(self.norm1(self.conv1(x), cond))
        return self.act(self.norm2(self.conv2(x), cond))


class CrossTaskAttention(nn.Module):
    """Gated cross-task attention between the shape (deformation) and texture branches.

    Each branch receives a projection of the other branch's features, gated voxel- and channel-wise by a sigmoid of
    both::

        s' = s + σ(W_gs [s, t]) ⊙ W_ms t
        t' = t + σ(W_gt [t, s]) ⊙ W_mt s

    (``W`` are 1×1×1 convolutions; both updates use the inputs, not each other's result.)

    Args:
        channels: channels of both branches at this scale.

    Shapes:
        ``s, t (N, channels, D, H, W) → s', t'`` of the same shapes.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, 3]
        self.gate_shape = conv(2 * channels, channels, kernel_size=1)
        self.message_shape = conv(channels, channels, kernel_size=1)
        self.gate_texture = conv(2 * channels, channels, kernel_size=1)
        self.message_texture = conv(channels, channels, kernel_size=1)

    def forward(self, shape: torch.Tensor, texture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g_s = torch.sigmoid(self.gate_shape(torch.cat([shape, texture], dim=1)))
        g_t = torch.sigmoid(self.gate_texture(torch.cat([texture, shape], dim=1)))
        return shape + g_s * self.message_shape(texture), texture + g_t * self.message_texture(shape)


class NoduleGrowthNet(nn.Module):
    """MT-NoGNet-style nodule growth network: deformation + texture decoders on the LNMSNet encoder (seed 4).

    Architecture:

    * **Shared encoder** :meth:`encode`: :class:`~lung_nodule_mtl.networks.ResNetEncoder` then an
      :class:`~lung_nodule_mtl.networks.MSConv` on the bottleneck, with the attribute names, constructor arguments
      and state-dict keys (``encoder.*``, ``bottleneck_ms.*``) of :class:`~lung_nodule_mtl.networks.LNMSNet`, so an
      LNMSNet checkpoint's encoder loads with :meth:`load_encoder_from`.
    * **Deformation (shape) decoder**: U-Net :class:`~lung_nodule_mtl.networks.DecoderStage` s (normalised by
      ``norm``) from the bottleneck and the encoder's skips. A 3×3×3 convolution gives a **velocity** ``v`` in
      voxels per ``interval_scale_days`` (a growth *rate*, independent of the interval), which is multiplied by
      ``interval_days / interval_scale_days`` and, with ``field="svf"``, integrated as a stationary velocity field
      by scaling and squaring (MONAI :class:`~monai.networks.blocks.DVF2DDF`, ``integration_steps`` squarings) into
      a diffeomorphic displacement; with ``field="ddf"`` the scaled output *is* the displacement (linear in time).
      A 1×1×1 convolution also gives baseline mask logits (used when no baseline mask is given).
    * **Spatial transformer**: MONAI :class:`~monai.networks.blocks.Warp` (bilinear, border padding) warps the
      baseline crop and the baseline mask (as a soft mask) with the DDF.
    * **Texture decoder**: :class:`AdaptiveDecoderStage` s whose instance norms take scale and shift from an MLP of
      ``log(1 + interval_days / interval_scale_days)`` (:class:`IntervalEmbedding`); a 3×3×3 convolution gives a
      residual intensity change, gated by the warped mask dilated by ``residual_margin`` voxels (max-pooling), and
      added to the warped crop.
    * **Cross-task attention** (:class:`CrossTaskAttention`) after the decoder stages at ``cross_attention_levels``
      (level ``k`` = ``1/2**k`` resolution).
    * **Follow-up mask**: ``logit(warped mask) + Δ`` where ``Δ`` comes from a small head (``ConvNormAct`` then
      1×1×1 conv) on both decoders' full-resolution features, the warped mask and the predicted crop.

    With ``identity_init=True`` (default) the field, residual and mask-refinement output convolutions start at
    zero: the untrained network returns the baseline crop and mask (mask logits ``logit(mask)``, with
    probabilities pulled into ``[mask_eps, 1 - mask_eps]``). Training then moves away from the identity.

    **Displacement convention** (MONAI ``Warp``, a backward/pull mapping): ``out[p] = in[p + ddf[p]]``, where
    ``ddf[:, i]`` is the displacement along spatial axis ``i`` of the tensor (``dim = 2 + i``, the same order as the
    crop's axes) **in voxels**. A constant ``ddf = +d`` along axis ``i`` therefore moves the content by ``-d`` voxels
    along that axis. Multiply by the voxel size for mm.

    ``forward(x, interval_days, mask=None)`` returns a dict keyed by
    :class:`~lung_nodule_mtl.constants.GrowthOutputKeys`: ``image`` ``(N, C, ...)`` (not clamped to ``[0, 1]``),
    ``mask`` logits ``(N, 1, ...)``, ``ddf`` ``(N, 3, ...)``, ``warped_image`` ``(N, C, ...)``, ``warped_mask``
    ``(N, 1, ...)`` in ``[0, 1]``, ``residual`` ``(N, C, ...)`` and ``baseline_mask`` logits ``(N, 1, ...)``, all at
    the input's spatial size.

    Export: ``torch.export.export(net, (x, interval_days, mask))`` works (for the traced shapes) and matches eager
    mode; ``torch.jit.script`` does not (MONAI's ``Warp`` is not scriptable).

    Inputs of any size are padded at the end (replicate) to a multiple of the total stride ``2**len(blocks)``, at
    least twice the stride, and every output is cropped back. 32³ and 48³ crops need no padding.

    Parameters and FLOPs per crop (3 input channels, batch 1, eval mode; FLOPs = 2 × multiply–accumulates of the
    convolutions and linear layers as counted by ``torch.utils.flop_counter.FlopCounterMode``, as in
    :mod:`lung_nodule_mtl.networks.profile`; the warps are not counted):

    ====================================  ==========  ===========  ===========
    variant                               params (M)  GFLOPs, 32³  GFLOPs, 48³
    ====================================  ==========  ===========  ===========
    small (``init_filters=8``, default)   1.154       1.36         4.60
    small, ``msconv=False``               0.809       –            4.58
    ``init_filters=32`` (GPU)             18.283      19.6         66.1
    ====================================  ==========  ===========  ===========

    ``use_mask_input`` adds ``27 · init_filters`` parameters. Two full-resolution decoders make most of the cost.

    Args:
        spatial_dims: number of spatial dimensions; only 3 is supported.
        in_channels: image channels ``C`` (3 for the project's three HU windows).
        init_filters: width of the stem and the first stage (8: small CPU variant, as the released LNMSNet).
        blocks: basic blocks per encoder stage (LNMSNet's ``blocks``).
        act: MONAI activation spec.
        norm: MONAI normalisation spec of the encoder and the deformation decoder (the texture decoder always uses
            :class:`AdaptiveInstanceNorm`).
        msconv: MSConv on the bottleneck (as LNMSNet's ``msconv``; the skips are used without MSConv here).
        msconv_dilations: dilations of the MSConv branches.
        upsample: decoder upsampling, ``"deconv"`` or ``"nontrainable"``.
        use_mask_input: also feed the baseline mask to the encoder as one more channel; ``forward`` then requires
            ``mask`` (the network concatenates it; callers pass image and mask separately).
        field: ``"svf"`` (stationary velocity field integrated by scaling and squaring) or ``"ddf"`` (direct
            displacement).
        integration_steps: scaling-and-squaring steps for ``field="svf"``.
        interval_scale_days: time unit in days: the velocity is per this many days, and the texture conditioning
            is ``log(1 + interval_days / interval_scale_days)``.
        cond_channels: width of the interval embedding.
        cross_attention_levels: decoder levels ``k`` (``1/2**k`` resolution, ``0 .. len(blocks) - 1``) with a
            cross-task attention; ``()`` for none (ablation).
        residual_margin: voxels by which the warped mask is dilated to gate the texture residual; ``None`` lets the
            residual act on the whole crop.
        mask_eps: probabilities are mapped into ``[mask_eps, 1 - mask_eps]`` before the logit of the warped mask.
        identity_init: start the output convolutions at zero (the untrained network returns the baseline).

    Raises:
        ValueError: for an argument outside its domain; the message names it, the expected and the received value.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 3,
        init_filters: int = 8,
        blocks: Sequence[int] = (2, 2, 2, 2),
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
        msconv: bool = True,
        msconv_dilations: Sequence[int] = (1, 2, 3),
        upsample: str = "deconv",
        use_mask_input: bool = False,
        field: str = "svf",
        integration_steps: int = 7,
        interval_scale_days: float = 365.0,
        cond_channels: int = 32,
        cross_attention_levels: Sequence[int] = (1, 2),
        residual_margin: int | None = 3,
        mask_eps: float = 1e-4,
        identity_init: bool = True,
    ) -> None:
        super().__init__()
        check_encoder_arguments(
            "NoduleGrowthNet", spatial_dims, in_channels, init_filters, blocks, msconv_dilations, upsample, act, norm
        )
        for name, value in (("integration_steps", integration_steps), ("cond_channels", cond_channels)):
            if not _is_int(value) or value < 1:
                raise _bad(name, "a positive integer", value)
        for name, flag in (("msconv", msconv), ("use_mask_input", use_mask_input), ("identity_init", identity_init)):
            if not isinstance(flag, bool):
                raise _bad(name, "a bool", flag)
        if field not in _FIELDS:
            raise _bad("field", "'svf' (stationary velocity field) or 'ddf' (direct displacement)", field)
        if not _is_number(interval_scale_days) or interval_scale_days <= 0:
            raise _bad("interval_scale_days", "a positive number of days", interval_scale_days)
        if (
            isinstance(cross_attention_levels, str)
            or not isinstance(cross_attention_levels, Sequence)
            or not all(_is_int(k) and 0 <= k < len(blocks) for k in cross_attention_levels)
            or len(set(cross_attention_levels)) != len(cross_attention_levels)
        ):
            raise _bad(
                "cross_attention_levels",
                f"distinct decoder levels in [0, {len(blocks) - 1}] (k = 1/2**k resolution)",
                cross_attention_levels,
            )
        if residual_margin is not None and (not _is_int(residual_margin) or residual_margin < 0):
            raise _bad("residual_margin", "None or a non-negative number of voxels", residual_margin)
        if not _is_number(mask_eps) or not 0 < mask_eps < 0.5:
            raise _bad("mask_eps", "a number in (0, 0.5)", mask_eps)

        self.in_channels = in_channels
        self.use_mask_input = use_mask_input
        self.field = field
        self.num_levels = len(blocks)
        self.stride = 2 ** len(blocks)
        self.interval_scale_days = float(interval_scale_days)
        self.cross_attention_levels = [int(k) for k in cross_attention_levels]
        self.residual_margin = residual_margin
        self.mask_eps = float(mask_eps)

        # shared encoder: same classes, arguments and attribute names as LNMSNet (encoder.*, bottleneck_ms.*)
        self.encoder = ResNetEncoder(in_channels + int(use_mask_input), init_filters, blocks, act, norm)
        widths = self.encoder.widths
        self.widths = list(widths)
        self.bottleneck_ms = MSConv(widths[-1], msconv_dilations, act, norm) if msconv else nn.Identity()

        conv = Conv[Conv.CONV, 3]
        w0 = widths[0]
        self.interval_embedding = IntervalEmbedding(cond_channels, interval_scale_days, act)
        self.shape_decoder = nn.ModuleList()
        self.texture_decoder = nn.ModuleList()
        for i in range(len(widths) - 1):  # coarse to fine: stage i maps widths[-1 - i] to widths[-2 - i]
            self.shape_decoder.append(DecoderStage(widths[-1 - i], widths[-2 - i], act, norm, upsample))
            self.texture_decoder.append(
                AdaptiveDecoderStage(widths[-1 - i], widths[-2 - i], cond_channels, act, upsample)
            )
        self.cross_attention = nn.ModuleDict(
            {str(k): CrossTaskAttention(widths[k]) for k in sorted(self.cross_attention_levels)}
        )
        self.field_head = conv(w0, 3, kernel_size=3, padding=1)
        self.baseline_head = conv(w0, 1, kernel_size=1)
        self.residual_head = conv(w0, in_channels, kernel_size=3, padding=1)
        mask_out = conv(w0, 1, kernel_size=1)
        self.mask_head = nn.Sequential(ConvNormAct(2 * w0 + 1 + in_channels, w0, 3, act, norm), mask_out)
        if identity_init:
            for layer in (self.field_head, self.residual_head, mask_out):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.integrate = _make_dvf2ddf(integration_steps)
        self.warp_image = _make_warp("bilinear", "border")
        self.warp_mask = _make_warp("bilinear", "border")

    # ------------------------------------------------------------------ transfer
    def load_encoder_from(
        self,
        checkpoint: str | PathLike[str] | Mapping[str, Any],
        key: str | None = None,
        src_prefix: str = "",
    ) -> LoadReport:
        """Copy the shared encoder (``encoder.*``, ``bottleneck_ms.*``) from an LNMSNet state dict or checkpoint.

        Uses :func:`~lung_nodule_mtl.networks.transfer.load_partial_state` restricted to the encoder keys; the
        decoders and heads are left as they are (reported as ``excluded``). With ``use_mask_input`` the stem has
        one more input channel than LNMSNet's: the image channels are copied and the mask channel's weights are
        set to zero, so the loaded encoder initially ignores the mask. The LNMSNet must have the same
        ``in_channels``, ``init_filters``, ``blocks`` and ``msconv`` for every tensor to load; mismatches are
        skipped and reported.

        Args:
            checkpoint: an LNMSNet ``state_dict()``, a checkpoint dict holding one (see ``key``), or a file path
                (read with ``torch.load(weights_only=True)``).
            key: name of the state dict inside the checkpoint dict (``None``: found automatically).
            src_prefix: prefix to remove from the checkpoint keys first (e.g. ``"network."``).

        Returns:
            The :class:`~lung_nodule_mtl.networks.LoadReport`.

        Raises:
            FileNotFoundError: if ``checkpoint`` is a path that does not exist.
            ValueError: if no state dict can be found in the checkpoint.
        """
        if not isinstance(checkpoint, Mapping):
            try:
                checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"NoduleGrowthNet.load_encoder_from: checkpoint not found: {checkpoint}") from e
        exclude = "^(?!" + "|".join(p.replace(".", r"\.") for p in ENCODER_PREFIXES) + ")"
        _, report = load_partial_state(self, checkpoint, key=key, src_prefix=src_prefix, exclude=exclude)
        if self.use_mask_input and _STEM_KEY in report.shape_mismatch:
            # LNMSNet's stem has only the image channels: load it into a stand-in, then copy those channels
            stem_conv = Conv[Conv.CONV, 3](self.in_channels, self.widths[0], kernel_size=3, bias=False)
            stem = nn.ModuleDict({"encoder": nn.ModuleDict({"conv1": stem_conv})})
            _, stem_report = load_partial_state(stem, checkpoint, key=key, src_prefix=src_prefix)
            if _STEM_KEY in stem_report.loaded:
                weight = dict(self.named_parameters())[_STEM_KEY]
                with torch.no_grad():
                    weight[:, : self.in_channels].copy_(stem_conv.weight)
                    weight[:, self.in_channels :].zero_()
                del report.shape_mismatch[_STEM_KEY]
                report.loaded.append(_STEM_KEY)
                logger.info("NoduleGrowthNet: stem image channels loaded, mask channel set to zero")
        return report

    # ------------------------------------------------------------------ seams
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Shared encoding, as :meth:`LNMSNet.encode`.

        Args:
            x: ``(N, in_channels [+ 1 with use_mask_input], D, H, W)``, sizes divisible by :attr:`stride`.

        Returns:
            ``len(blocks) + 1`` maps, finest first; the last (bottleneck) has gone through MSConv.
        """
        feats = self.encoder(x)
        feats[-1] = self.bottleneck_ms(feats[-1])
        return feats

    def decode(self, features: list[torch.Tensor], cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both decoders with their cross-task attention.

        Args:
            features: output of :meth:`encode`.
            cond: interval embedding ``(N, cond_channels)``.

        Returns:
            ``(shape_features, texture_features)``, each ``(N, init_filters, D, H, W)`` at full resolution.
        """
        n = len(features)
        s = features[n - 1]
        t = features[n - 1]
        for i in range(n - 1):
            skip = features[n - 2 - i]
            s = self.shape_decoder[i](s, skip)
            t = self.texture_decoder[i](t, skip, cond)
            level = str(n - 2 - i)
            if level in self.cross_attention:
                s, t = self.cross_attention[level](s, t)
        return s, t

    def field_to_ddf(self, field: torch.Tensor) -> torch.Tensor:
        """Displacement ``(N, 3, D, H, W)`` in voxels from the (interval-scaled) field of the deformation head.

        ``field="svf"``: scaling and squaring of the stationary velocity field (MONAI ``DVF2DDF``); ``"ddf"``: the
        field itself.
        """
        if self.field == "ddf":
            return field
        _reset_stale_grid(self.integrate.warp_layer, field)
        ddf: torch.Tensor = self.integrate(field)
        return ddf

    def warp(self, image: torch.Tensor, ddf: torch.Tensor, mask: bool = False) -> torch.Tensor:
        """Warp ``image (N, C, D, H, W)`` by ``ddf (N, 3, D, H, W)`` (voxels): ``out[p] = image[p + ddf[p]]``.

        Bilinear, border padding (MONAI ``Warp``); ``mask=True`` uses the mask's warp layer (same settings) and
        clamps the result into ``[0, 1]`` (a soft mask).
        """
        layer = self.warp_mask if mask else self.warp_image
        _reset_stale_grid(layer, ddf)
        out: torch.Tensor = layer(image, ddf)
        return out.clamp(0.0, 1.0) if mask else out

    def forward(
        self, x: torch.Tensor, interval_days: torch.Tensor | float, mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Predict the follow-up crop and mask.

        Args:
            x: baseline crop ``(N, in_channels, D, H, W)``, windowed channels (``[0, 1]``).
            interval_days: days to the follow-up, ``(N,)``, ``(N, 1)`` or a scalar (same for the batch), ``>= 0``.
            mask: baseline mask ``(N, 1, D, H, W)`` in ``[0, 1]``; required with ``use_mask_input``. Without it the
                shape decoder's own baseline mask (``sigmoid(baseline_mask)``) is warped.

        Returns:
            dict keyed by :class:`~lung_nodule_mtl.constants.GrowthOutputKeys` (see the class docstring).

        Raises:
            ValueError: for inputs of the wrong shape, a missing mask, or a negative / non-finite interval.
        """
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"NoduleGrowthNet: x must be (N, {self.in_channels}, D, H, W), got shape {list(x.shape)}.")
        n = x.shape[0]
        size = (x.shape[2], x.shape[3], x.shape[4])
        days = torch.as_tensor(interval_days, dtype=x.dtype, device=x.device)
        if days.dim() == 0:
            days = days.expand(n)
        if days.shape not in ((n,), (n, 1)):
            raise ValueError(
                f"NoduleGrowthNet: interval_days must be (N,), (N, 1) or a scalar with N={n}, got shape "
                f"{list(days.shape)}."
            )
        days = days.reshape(n)
        checkable = x.device.type != "meta" and not torch.compiler.is_compiling()  # no data-dependent branch there
        if checkable and not bool(torch.isfinite(days).all() & (days >= 0).all()):
            raise ValueError(f"NoduleGrowthNet: interval_days must be finite and >= 0, got {days.tolist()}.")
        if mask is None and self.use_mask_input:
            raise ValueError("NoduleGrowthNet: mask is required when use_mask_input=True, got None.")
        if mask is not None:
            if mask.dim() != 5 or mask.shape[0] != n or mask.shape[1] != 1 or tuple(mask.shape[2:]) != size:
                raise ValueError(
                    f"NoduleGrowthNet: mask must be (N, 1, D, H, W) = {[n, 1, *size]}, got {list(mask.shape)}."
                )
            mask = mask.to(x.dtype)

        xp = self._pad(x)
        mp = None if mask is None else self._pad(mask)
        enc_in = xp if mp is None or not self.use_mask_input else torch.cat([xp, mp], dim=1)
        feats = self.encode(enc_in)
        cond = self.interval_embedding(days)
        s, t = self.decode(feats, cond)

        baseline_logits = self.baseline_head(s)
        years = (days / self.interval_scale_days).reshape(n, 1, 1, 1, 1)
        ddf = self.field_to_ddf(self.field_head(s) * years)
        warped_image = self.warp(xp, ddf)
        base_prob = torch.sigmoid(baseline_logits) if mp is None else mp
        warped_mask = self.warp(base_prob, ddf, mask=True)

        gate = warped_mask
        if self.residual_margin is None:
            gate = torch.ones_like(warped_mask)
        elif self.residual_margin > 0:
            k = 2 * self.residual_margin + 1
            gate = F.max_pool3d(warped_mask, kernel_size=k, stride=1, padding=self.residual_margin)
        residual = self.residual_head(t) * gate
        image = warped_image + residual
        delta = self.mask_head(torch.cat([s, t, warped_mask, image], dim=1))
        mask_logits = _soft_logit(warped_mask, self.mask_eps) + delta

        d, h, w = size
        out = {
            str(GrowthOutputKeys.IMAGE): image,
            str(GrowthOutputKeys.MASK): mask_logits,
            str(GrowthOutputKeys.DDF): ddf,
            str(GrowthOutputKeys.WARPED_IMAGE): warped_image,
            str(GrowthOutputKeys.WARPED_MASK): warped_mask,
            str(GrowthOutputKeys.RESIDUAL): residual,
            str(GrowthOutputKeys.BASELINE_MASK): baseline_logits,
        }
        return {k: v[:, :, :d, :h, :w] for k, v in out.items()}

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Pad the end of each spatial axis (replicate) to a multiple of the stride, at least twice the stride."""
        s = self.stride
        pads: list[int] = []
        for dim in (4, 3, 2):  # F.pad order: last axis first
            size = x.shape[dim]
            pads += [0, max((size + s - 1) // s, 2) * s - size]
        if not any(pads):
            return x
        return F.pad(x, pads, mode="replicate")
