"""LNMSNet: a 3D ResNet-18 U-Net with multi-scale convolutions and multi-task heads for lung nodules.

References:
    LNMSNet (2026): joint pulmonary-nodule segmentation and benign/malignant classification from low-dose CT; U-shaped
    encoder–decoder with a ResNet-18 encoder, multi-scale convolutions (MSConv), a classification head on the shared
    encoder features (``docs/SEEDS.md``, system 1).
    Joint segmentation + classification with feature-combination blocks, a size prior and transfer learning with
    frozen layers (``docs/SEEDS.md``, system 2).
    End-to-end multi-task learning of the mask, the eight LIDC-IDRI attributes and malignancy from a multi-window
    input (``docs/SEEDS.md``, system 5).
    He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition." CVPR 2016.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES, ATTRIBUTE_NAMES, Keys, OutputKeys
from lung_nodule_mtl.networks.blocks import ActSpec, DecoderStage, MSConv, NormSpec, make_res_layer

__all__ = [
    "DEEP_SUPERVISION_PREFIX",
    "DEFAULT_HEADS",
    "HEAD_CLASSES",
    "LNMSNet",
    "ResNetEncoder",
    "deep_supervision_key",
]

logger = logging.getLogger(__name__)

DEFAULT_HEADS: tuple[str, ...] = (str(Keys.MALIGNANCY), str(Keys.MALIGNANCY_SCORE), *ATTRIBUTE_NAMES)
"""Heads built when ``heads=None``: malignancy, malignancy score and the eight LIDC-IDRI attributes."""

HEAD_CLASSES: dict[str, int] = {
    str(Keys.MALIGNANCY): 1,
    str(Keys.MALIGNANCY_SCORE): 1,
    **{str(k): v for k, v in ATTRIBUTE_CLASSES.items()},
    str(Keys.DIAMETER): 1,
    str(Keys.NODULE): 1,
}
"""Output size of every head a ``heads`` list may name (``diameter_mm`` and ``nodule``, the detection logit that
rejects false-positive candidates, are optional, not in the defaults)."""

SCORE_RANGE: tuple[float, float] = (1.0, 5.0)
"""LIDC malignancy rating range; the score head is squashed into it by ``tanh``."""

DIAMETER_REFERENCE_MM = 10.0
"""The diameter head predicts ``log(diameter / DIAMETER_REFERENCE_MM)``; the output is in mm."""

DEEP_SUPERVISION_PREFIX = f"{OutputKeys.MASK}_ds"
"""Deep-supervision outputs are keyed ``mask_ds1`` (1/2 resolution), ``mask_ds2`` (1/4), ..."""

_STAGE_STEM = "stem"
_MAX_LEVELS = 6


def deep_supervision_key(level: int) -> str:
    """Output key of the deep-supervision logits at ``1 / 2**level`` resolution (``level >= 1``)."""
    return f"{DEEP_SUPERVISION_PREFIX}{level}"


def _bad(name: str, expected: str, got: object, owner: str = "LNMSNet") -> ValueError:
    return ValueError(f"{owner}: {name} must be {expected}, got {got!r}.")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_encoder_arguments(
    owner: str,
    spatial_dims: int,
    in_channels: int,
    init_filters: int,
    blocks: Sequence[int],
    msconv_dilations: Sequence[int],
    upsample: str,
    act: ActSpec,
    norm: NormSpec,
) -> None:
    """The checks of the arguments every network on :class:`ResNetEncoder` shares (``LNMSNet``,
    ``NoduleGrowthNet``).

    Raises:
        ValueError: ``"<owner>: <name> must be ..., got ..."`` for the first bad argument.
    """
    if spatial_dims != 3:
        raise _bad("spatial_dims", "3 (only 3D is supported)", spatial_dims, owner)
    for name, value in (("in_channels", in_channels), ("init_filters", init_filters)):
        if not _is_int(value) or value < 1:
            raise _bad(name, "a positive integer", value, owner)
    if (
        isinstance(blocks, str)
        or not isinstance(blocks, Sequence)
        or not 1 <= len(blocks) <= _MAX_LEVELS
        or not all(_is_int(b) and b >= 1 for b in blocks)
    ):
        raise _bad("blocks", f"a list of 1 to {_MAX_LEVELS} positive integers (e.g. [2, 2, 2, 2])", blocks, owner)
    if (
        isinstance(msconv_dilations, str)
        or not isinstance(msconv_dilations, Sequence)
        or len(msconv_dilations) == 0
        or not all(_is_int(d) and d >= 1 for d in msconv_dilations)
    ):
        raise _bad(
            "msconv_dilations", "a non-empty list of positive integers (e.g. [1, 2, 3])", msconv_dilations, owner
        )
    if upsample not in ("deconv", "nontrainable"):
        raise _bad("upsample", "'deconv' or 'nontrainable'", upsample, owner)
    for name, spec, factory in (
        ("act", act, lambda s: get_act_layer(name=s)),
        ("norm", norm, lambda s: get_norm_layer(name=s, spatial_dims=3, channels=init_filters)),
    ):
        try:
            factory(spec)
        except Exception as e:  # MONAI raises several types for an unknown name or bad arguments
            raise _bad(
                name, "a MONAI layer-factory spec such as 'relu' or ('instance', {'affine': True})", spec, owner
            ) from e


class ResNetEncoder(nn.Sequential):
    """3D ResNet encoder (He et al. 2016) that returns the feature map of every stage.

    ``conv1`` (3×3×3, stride 1) → ``bn1`` → ``act`` (the *stem*, full resolution), then ``layer1`` … ``layerN`` of
    :class:`~lung_nodule_mtl.networks.blocks.BasicResBlock` s, each halving the spatial size, with widths
    ``init_filters · (1, 2, 4, 8, …)``. ``blocks=(2, 2, 2, 2)`` and ``init_filters=64`` give ResNet-18's stages and
    widths; the key names are MONAI ResNet's (``conv1``, ``bn1``, ``layer1.0.conv1`` …) so a ResNet-18 checkpoint
    loads into ``encoder.`` (its 7×7×7 stride-2 ``conv1`` is skipped as shape-mismatched).

    Args:
        in_channels: input channels.
        init_filters: width of the stem and of ``layer1``.
        blocks: number of basic blocks per stage.
        act: MONAI activation spec.
        norm: MONAI normalisation spec.

    Shapes:
        ``(B, in_channels, H, W, D)`` with ``H, W, D`` divisible by ``2**len(blocks)`` → a list of
        ``len(blocks) + 1`` maps, the ``i``-th ``(B, widths[i], H/2**i, W/2**i, D/2**i)``, finest first.
    """

    def __init__(
        self,
        in_channels: int,
        init_filters: int,
        blocks: Sequence[int],
        act: str | tuple,
        norm: str | tuple,
    ) -> None:
        conv_type = Conv[Conv.CONV, 3]
        modules: dict[str, nn.Module] = {
            "conv1": conv_type(in_channels, init_filters, kernel_size=3, padding=1, bias=False),
            "bn1": get_norm_layer(name=norm, spatial_dims=3, channels=init_filters),
            "act": get_act_layer(name=act),
        }
        in_ch = init_filters
        for i, n in enumerate(blocks):
            out_ch = init_filters * 2**i
            modules[f"layer{i + 1}"] = make_res_layer(in_ch, out_ch, int(n), 2, act, norm)
            in_ch = out_ch
        super().__init__()
        for name, m in modules.items():
            self.add_module(name, m)
        self.widths = [init_filters] + [init_filters * 2**i for i in range(len(blocks))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        feats: list[torch.Tensor] = []
        for i, m in enumerate(self):
            x = m(x)
            if i >= 2:  # after the stem's activation, then after every stage
                feats.append(x)
        return feats

    def stage_names(self) -> list[str]:
        """Names accepted by :meth:`LNMSNet.freeze_stages`: ``"stem"``, ``"layer1"`` … ``"layerN"``."""
        return [_STAGE_STEM] + [f"layer{i + 1}" for i in range(len(self.widths) - 1)]

    def stage_modules(self, stage: str) -> list[nn.Module]:
        """Modules of one stage (``"stem"`` is ``conv1``, ``bn1``, ``act``)."""
        children = dict(self.named_children())
        if stage == _STAGE_STEM:
            return [children["conv1"], children["bn1"], children["act"]]
        return [children[stage]]


class LNMSNet(nn.Module):
    """LNMSNet: multi-task 3D U-Net on a ResNet-18 encoder with MSConv, for nodule masks, malignancy and attributes.

    Architecture (LNMSNet 2026; seed 2; He et al. 2016):

    * **Encoder** :meth:`encode`: :class:`ResNetEncoder` — a full-resolution stem then ``len(blocks)`` residual
      stages, each halving the size (total stride ``2**len(blocks)``, 16 for ResNet-18). The last map (the
      bottleneck) goes through an :class:`~lung_nodule_mtl.networks.blocks.MSConv` when ``msconv``.
    * **Decoder** :meth:`decode`: one :class:`~lung_nodule_mtl.networks.blocks.DecoderStage` per stage; every skip
      goes through its own MSConv when ``msconv``. A 1×1×1 convolution gives the mask logits; with
      ``deep_supervision`` further 1×1×1 convolutions give logits at 1/2, 1/4, … resolution.
    * **Heads** :meth:`classify`: the bottleneck is average-pooled; with ``feature_combination`` (seed 2) the
      bottleneck and every decoder map are also pooled *mask-guided* — weighted by the predicted foreground
      probability (detached, so the heads do not reshape the mask) — and concatenated, so the segmentation
      branch's features inform the heads. A shared ``Linear → act → dropout`` neck feeds one small MLP per head:
      malignancy (one logit), malignancy score (``3 + 2·tanh``, on 1–5), each LIDC attribute
      (``ATTRIBUTE_CLASSES[name]`` logits over the 0-based classes), optionally ``diameter_mm`` (mm, positive).

    Inputs of any size are padded at the end (replicate) to a multiple of the total stride, and to at least twice
    the stride (the bottleneck keeps 2+ voxels per axis for instance norm), and every output is cropped back;
    pooling ignores the padding.

    ``forward(x)`` returns a dict (TorchScript: ``Dict[str, Tensor]``):

    * ``OutputKeys.MASK``: mask logits ``(B, out_channels, H, W, D)`` (absent when ``segmentation=False``);
    * ``"mask_ds1"``, ``"mask_ds2"``, …: deep-supervision logits ``(B, out_channels, ⌈H/2^k⌉, ⌈W/2^k⌉, ⌈D/2^k⌉)``,
      **only in training mode** with ``deep_supervision=True`` (see :func:`deep_supervision_key`);
    * ``OutputKeys.MALIGNANCY``: logit ``(B, 1)``; ``OutputKeys.MALIGNANCY_SCORE``: ``(B, 1)`` in (1, 5);
      each attribute name (:class:`~lung_nodule_mtl.constants.Attribute`): logits ``(B, ATTRIBUTE_CLASSES[name])``;
      ``Keys.DIAMETER`` if requested: ``(B, 1)`` in mm.

    Deviation from the ImageNet ResNet-18: the stem is one 3×3×3 stride-1 convolution (no 7×7×7 stride-2 convolution
    and max-pooling), and every stage, ``layer1`` included, halves the size; small nodules keep full-resolution
    skips. Stage widths, block layout and parameter names are ResNet-18's, so a MONAI/MedicalNet ResNet-18
    checkpoint loads into the encoder with :func:`~lung_nodule_mtl.networks.transfer.load_partial_state`
    (``dst_prefix="encoder."``, ``init_filters=64``, ``norm="batch"`` for its batch-norm statistics).

    TorchScript: ``torch.jit.script(net)`` works (``forward`` and :meth:`segment`) and matches eager mode.
    Sliding-window inference: wrap the network in :class:`~lung_nodule_mtl.networks.SlidingWindowAdapter` (MONAI
    cannot stitch the ``(B, n)`` head outputs).

    Ablations are configurations of this class, not copies:

    ==========================================  ==========================================================
    model                                       arguments
    ==========================================  ==========================================================
    LNMSNet (multi-task, full)                  defaults
    segmentation-only baseline (same backbone)  ``heads=[]``
    classification-only baseline                ``segmentation=False, feature_combination=False``
    without MSConv (plain ResNet U-Net)         ``msconv=False``
    without feature combination (GAP heads)     ``feature_combination=False``
    plain U-Net segmentation baseline           ``heads=[], msconv=False``
    malignancy only (seed 1)                    ``heads=["malignancy"]``
    mask + attributes + score (seed 5)          defaults (``in_channels=3`` for three windows)
    ==========================================  ==========================================================

    Parameters and FLOPs per 64³ patch (``python -m lung_nodule_mtl.networks.profile``; defaults otherwise: all ten
    heads, MSConv, feature combination, eval mode, batch 1; FLOPs = 2 × multiply–accumulates as counted by
    ``torch.utils.flop_counter.FlopCounterMode``):

    ======================================  ==========  ======================  =======================
    variant                                 params (M)  GFLOPs, 64³, 1 channel  GFLOPs, 64³, 3 channels
    ======================================  ==========  ======================  =======================
    small (``init_filters=8``, CPU)         1.142       7.8                     8.0
    medium (``init_filters=16``)            4.562       30.8                    31.3
    full (``init_filters=32``, GPU)         18.233      122.8                   123.7
    ResNet-18 widths (``init_filters=64``)  72.901      490.3                   492.1
    small, ``msconv=False``                 0.679       4.3                     4.5
    full, ``msconv=False``                  10.831      67.1                    68.0
    full, ``heads=[]``                      17.869      122.8                   123.7
    full, classification only               14.029      14.1                    15.0
    ======================================  ==========  ======================  =======================

    Parameters are for 1 input channel (3 channels add ``2 · 27 · init_filters``). MSConv roughly doubles the cost
    (three dilated branches on every skip, the full-resolution one included); the heads cost < 0.1 GFLOPs.

    Args:
        spatial_dims: number of spatial dimensions; only 3 is supported.
        in_channels: input channels (several intensity windows are several channels, seed 5).
        out_channels: mask channels: 1 for a sigmoid mask, ``>= 2`` for softmax classes (channel 0 background).
        init_filters: width of the stem and the first stage (8: small CPU variant; 32: GPU; 64: ResNet-18 widths).
        blocks: basic blocks per encoder stage; ``(2, 2, 2, 2)`` is ResNet-18, ``(3, 4, 6, 3)`` ResNet-34.
        act: MONAI activation spec, e.g. ``("relu", {"inplace": True})`` or ``"leakyrelu"``.
        norm: MONAI normalisation spec, e.g. ``("instance", {"affine": True})`` or ``"batch"``.
        dropout: dropout probability in the classification neck and heads, in ``[0, 1)``.
        msconv: use MSConv on the skips and the bottleneck (``False``: plain ResNet U-Net).
        msconv_dilations: dilations of the MSConv branches (receptive fields ``2·d + 1``).
        feature_combination: pool the decoder maps under the predicted mask into the heads (seed 2); requires
            ``segmentation=True``.
        heads: names of the heads (keys of :data:`HEAD_CLASSES`); ``None`` for :data:`DEFAULT_HEADS`, ``[]`` for a
            segmentation-only network.
        head_channels: width of the shared classification neck; ``None`` for the bottleneck width.
        segmentation: build the decoder and return the mask (``False``: classification-only network).
        deep_supervision: in training mode also return lower-resolution mask logits.
        deep_supr_num: number of deep-supervision outputs (``1 .. len(blocks) - 1``).
        upsample: decoder upsampling: ``"deconv"`` (transposed convolution) or ``"nontrainable"`` (trilinear).
        frozen_stages: encoder stages to freeze at construction (see :meth:`freeze_stages`), for transfer learning.

    Raises:
        ValueError: for an argument outside its domain; the message names it, the expected and the received value.
    """

    __jit_ignored_attributes__ = ("frozen_stages", "head_names")  # Python-side state

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        init_filters: int = 32,
        blocks: Sequence[int] = (2, 2, 2, 2),
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
        dropout: float = 0.0,
        msconv: bool = True,
        msconv_dilations: Sequence[int] = (1, 2, 3),
        feature_combination: bool = True,
        heads: Sequence[str] | None = None,
        head_channels: int | None = None,
        segmentation: bool = True,
        deep_supervision: bool = False,
        deep_supr_num: int = 2,
        upsample: str = "deconv",
        frozen_stages: Sequence[str | int] = (),
    ) -> None:
        super().__init__()
        check_encoder_arguments(
            "LNMSNet", spatial_dims, in_channels, init_filters, blocks, msconv_dilations, upsample, act, norm
        )
        if not _is_int(out_channels) or out_channels < 1:
            raise _bad("out_channels", "a positive integer", out_channels)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise _bad("dropout", "a probability in [0, 1)", dropout)
        for name, value in (
            ("msconv", msconv),
            ("feature_combination", feature_combination),
            ("segmentation", segmentation),
            ("deep_supervision", deep_supervision),
        ):
            if not isinstance(value, bool):
                raise _bad(name, "a bool", value)
        head_names = list(DEFAULT_HEADS) if heads is None else heads
        if isinstance(head_names, str) or not isinstance(head_names, Sequence):
            raise _bad("heads", f"None or a list of names among {sorted(HEAD_CLASSES)}", heads)
        head_names = [str(h) for h in head_names]
        unknown = [h for h in head_names if h not in HEAD_CLASSES]
        if unknown or len(set(head_names)) != len(head_names):
            raise _bad("heads", f"distinct names among {sorted(HEAD_CLASSES)}", heads)
        if head_channels is not None and (not _is_int(head_channels) or head_channels < 1):
            raise _bad("head_channels", "None or a positive integer", head_channels)
        if not segmentation and not head_names:
            raise _bad("heads", "non-empty when segmentation=False (the network would predict nothing)", heads)
        if not segmentation and feature_combination:
            raise _bad(
                "feature_combination",
                "False when segmentation=False (it pools decoder features; use both for the classification-only "
                "baseline)",
                feature_combination,
            )
        if deep_supervision and not segmentation:
            raise _bad("deep_supervision", "False when segmentation=False", deep_supervision)
        if deep_supervision and (not _is_int(deep_supr_num) or not 1 <= deep_supr_num <= len(blocks) - 1):
            raise _bad(
                "deep_supr_num", f"an integer in [1, {len(blocks) - 1}] for blocks={list(blocks)}", deep_supr_num
            )

        self.spatial_dims = 3
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.segmentation = segmentation
        self.deep_supervision = deep_supervision and segmentation
        self.deep_supr_num = int(deep_supr_num) if self.deep_supervision else 0
        self.feature_combination = feature_combination and segmentation and bool(head_names)
        self.use_msconv = msconv
        self.head_names = head_names
        self.stride = 2 ** len(blocks)
        self.num_levels = len(blocks)
        self._score_key = str(Keys.MALIGNANCY_SCORE)
        self._diameter_key = str(Keys.DIAMETER)
        self._mask_key = str(OutputKeys.MASK)
        self._ds_prefix = DEEP_SUPERVISION_PREFIX
        self._has_heads = bool(head_names)
        self._score_mid = (SCORE_RANGE[0] + SCORE_RANGE[1]) / 2
        self._score_half = (SCORE_RANGE[1] - SCORE_RANGE[0]) / 2
        self._diameter_ref = float(DIAMETER_REFERENCE_MM)

        self.encoder = ResNetEncoder(in_channels, init_filters, blocks, act, norm)
        widths = self.encoder.widths
        self.bottleneck_ms = MSConv(widths[-1], msconv_dilations, act, norm) if msconv else nn.Identity()

        self.skip_ms = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.ds_heads = nn.ModuleList()
        if segmentation:
            for w in widths[:-1]:
                self.skip_ms.append(MSConv(w, msconv_dilations, act, norm) if msconv else nn.Identity())
            # decoder stages, coarse to fine: the i-th maps widths[-1 - i] to widths[-2 - i]
            for i in range(len(widths) - 1):
                self.decoder.append(DecoderStage(widths[-1 - i], widths[-2 - i], act, norm, upsample))
            for k in range(self.deep_supr_num):
                self.ds_heads.append(Conv[Conv.CONV, 3](widths[k + 1], out_channels, kernel_size=1))
        # 1×1×1 output convolution (an unused identity in a classification-only network, for TorchScript)
        self.seg_head = Conv[Conv.CONV, 3](widths[0], out_channels, kernel_size=1) if segmentation else nn.Identity()

        self.heads = nn.ModuleDict()
        neck: nn.Module = nn.Identity()
        if head_names:
            in_features = widths[-1]
            if self.feature_combination:
                in_features += widths[-1] + sum(widths[:-1])
            hidden = widths[-1] if head_channels is None else head_channels
            head_hidden = max(hidden // 4, 8)
            neck = nn.Sequential(nn.Linear(in_features, hidden), get_act_layer(name=act), nn.Dropout(dropout))
            for h in head_names:
                self.heads[h] = nn.Sequential(
                    nn.Linear(hidden, head_hidden),
                    get_act_layer(name=act),
                    nn.Dropout(dropout),
                    nn.Linear(head_hidden, HEAD_CLASSES[h]),
                )
        self.neck = neck
        self.frozen_stages = list[str]()  # ignored by TorchScript
        if frozen_stages:
            self.freeze_stages(frozen_stages)

    # ------------------------------------------------------------------ transfer learning
    def freeze_stages(self, stages: Sequence[str | int]) -> list[str]:
        """Freeze encoder stages for transfer learning (seed 2): ``requires_grad=False`` and norm layers kept in eval.

        Args:
            stages: stage names (``"stem"``, ``"layer1"`` …) or indices (0 = stem, ``i`` = ``layer{i}``);
                ``"encoder"`` freezes them all.

        Returns:
            The names of all frozen stages so far.

        Raises:
            ValueError: for an unknown stage.
        """
        names = self.encoder.stage_names()
        chosen: list[str] = []
        for s in [stages] if isinstance(stages, (str, int)) else stages:
            if s == "encoder":
                chosen.extend(names)
            elif _is_int(s) and 0 <= int(s) < len(names):
                chosen.append(names[int(s)])
            elif isinstance(s, str) and s in names:
                chosen.append(s)
            else:
                raise ValueError(
                    f"LNMSNet.freeze_stages: stage must be one of {names}, 'encoder' or an index "
                    f"0..{len(names) - 1}, got {s!r}."
                )
        for name in chosen:
            for m in self.encoder.stage_modules(name):
                for p in m.parameters():
                    p.requires_grad_(False)
            if name not in self.frozen_stages:
                self.frozen_stages.append(name)
        self.train(self.training)
        logger.info("LNMSNet: frozen encoder stages %s", self.frozen_stages)
        return list(self.frozen_stages)

    def unfreeze_stages(self) -> None:
        """Undo :meth:`freeze_stages` for every stage."""
        for name in self.frozen_stages:
            for m in self.encoder.stage_modules(name):
                for p in m.parameters():
                    p.requires_grad_(True)
        self.frozen_stages = list[str]()
        self.train(self.training)

    def train(self, mode: bool = True) -> LNMSNet:
        """Set training mode; frozen encoder stages stay in eval mode (their batch-norm statistics do not move)."""
        super().train(mode)
        for name in getattr(self, "frozen_stages", []):
            for m in self.encoder.stage_modules(name):
                m.eval()
        return self

    # ------------------------------------------------------------------ seams
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Shared encoding.

        Args:
            x: ``(B, in_channels, H, W, D)``, sizes divisible by :attr:`stride` (``forward`` pads for you).

        Returns:
            ``len(blocks) + 1`` maps, finest first: the stem ``(B, w0, H, W, D)``, then stage ``i``
            ``(B, w_i, H/2^i, W/2^i, D/2^i)``; the last (bottleneck) has gone through MSConv.
        """
        feats = self.encoder(x)
        feats[-1] = self.bottleneck_ms(feats[-1])
        return feats

    def decode(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Segmentation decoder.

        Args:
            features: output of :meth:`encode`.

        Returns:
            ``(logits, decoder_features)``: mask logits ``(B, out_channels, H, W, D)`` at the encoder's input size
            and the decoder maps, coarse to fine (the last at full resolution).
        """
        n = len(features)
        x = features[n - 1]
        dec: list[torch.Tensor] = []
        skips: list[torch.Tensor] = []
        for i, ms in enumerate(self.skip_ms):
            skips.append(ms(features[i]))
        for i, stage in enumerate(self.decoder):
            x = stage(x, skips[n - 2 - i])
            dec.append(x)
        return self.seg_head(x), dec

    def classify(
        self,
        features: list[torch.Tensor],
        decoder_features: list[torch.Tensor] | None = None,
        mask_logits: torch.Tensor | None = None,
        region: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Classification heads on the shared encoding (and the decoder maps with feature combination).

        Args:
            features: output of :meth:`encode`.
            decoder_features: output of :meth:`decode` (used with ``feature_combination``).
            mask_logits: mask logits ``(B, out_channels, H, W, D)`` that weight the mask-guided pooling.
            region: ``(1, 1, H, W, D)`` float, 1 inside the original image and 0 on the padding (``None``: all 1).

        Returns:
            ``{head name: (B, n_outputs)}``; see the class docstring for the scales.
        """
        out: dict[str, torch.Tensor] = {}
        if not self._has_heads:
            return out
        bottleneck = features[len(features) - 1]
        level = len(features) - 1
        region_b = None if region is None else F.avg_pool3d(region, 1 << level)
        pooled = [_weighted_mean(bottleneck, region_b)]
        if self.feature_combination and decoder_features is not None and mask_logits is not None:
            fg = _foreground(mask_logits.detach().float())
            w = fg if region is None else fg * region
            pooled.append(_weighted_mean(bottleneck, F.avg_pool3d(w, 1 << level)))
            n_dec = len(decoder_features)
            for i, f in enumerate(decoder_features):
                k = n_dec - 1 - i  # decoder map i is at 1/2^k resolution
                pooled.append(_weighted_mean(f, F.avg_pool3d(w, 1 << k) if k > 0 else w))
        z = self.neck(torch.cat(pooled, dim=1).to(bottleneck.dtype))
        for name, head in self.heads.items():
            y = head(z)
            if name == self._score_key:
                y = self._score_mid + self._score_half * torch.tanh(y)
            elif name == self._diameter_key:
                y = self._diameter_ref * torch.exp(y.clamp(-4.0, 4.0))
            out[name] = y
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the network.

        Args:
            x: image ``(B, in_channels, H, W, D)``, any spatial size.

        Returns:
            dict of outputs keyed by the ``OutputKeys`` / head names (see the class docstring).
        """
        xp, region = self._pad(x)
        h, w, d = x.shape[2], x.shape[3], x.shape[4]
        feats = self.encode(xp)
        out: dict[str, torch.Tensor] = {}
        if self.segmentation:
            logits, dec = self.decode(feats)
            out[self._mask_key] = logits[:, :, :h, :w, :d]
            if self.training and self.deep_supervision:
                for k, ds_head in enumerate(self.ds_heads):
                    s = 1 << (k + 1)
                    y = ds_head(dec[len(dec) - 2 - k])
                    out[self._ds_prefix + str(k + 1)] = y[
                        :, :, : (h + s - 1) // s, : (w + s - 1) // s, : (d + s - 1) // s
                    ]
            out.update(self.classify(feats, dec, logits, region))
        else:
            out.update(self.classify(feats, None, None, region))
        return out

    @torch.jit.export
    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Mask logits only ``(B, out_channels, H, W, D)``, skipping the heads (segmentation-only inference)."""
        if not self.segmentation:
            raise ValueError("LNMSNet.segment: this network was built with segmentation=False.")
        xp, _ = self._pad(x)
        logits, _ = self.decode(self.encode(xp))
        return logits[:, :, : x.shape[2], : x.shape[3], : x.shape[4]]

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pad the end of each spatial axis (replicate) to a multiple of the stride, at least twice the stride (so
        the bottleneck has 2+ voxels per axis: instance norm needs more than one); also return the valid region."""
        if x.dim() != 5:
            raise ValueError(f"LNMSNet: input must be (B, C, H, W, D), got shape {list(x.shape)}.")
        s = self.stride
        h, w, d = x.shape[2], x.shape[3], x.shape[4]
        ph = max((h + s - 1) // s, 2) * s - h
        pw = max((w + s - 1) // s, 2) * s - w
        pd = max((d + s - 1) // s, 2) * s - d
        if ph == 0 and pw == 0 and pd == 0:
            return x, None
        xp = F.pad(x, [0, pd, 0, pw, 0, ph], mode="replicate")
        region = torch.zeros([1, 1, h + ph, w + pw, d + pd], dtype=torch.float32, device=x.device)
        region[:, :, :h, :w, :d] = 1.0
        return xp, region


def _foreground(logits: torch.Tensor) -> torch.Tensor:
    """Foreground probability ``(B, 1, ...)``: sigmoid for one channel, ``1 - p(background)`` for softmax classes."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return 1.0 - torch.softmax(logits, dim=1)[:, :1]


def _weighted_mean(f: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Spatial mean of ``f (B, C, h, w, d)`` weighted by ``w (B or 1, 1, h, w, d)``, in float32 → ``(B, C)``."""
    f32 = f.float()
    if w is None:
        return f32.mean(dim=[2, 3, 4])
    num = (f32 * w).sum(dim=[2, 3, 4])
    den = w.sum(dim=[2, 3, 4]).clamp_min(1e-6)
    return num / den
