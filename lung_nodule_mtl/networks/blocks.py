"""Building blocks of :class:`~lung_nodule_mtl.networks.LNMSNet`: residual blocks, MSConv, decoder stages.

All blocks are 3D, take MONAI layer-factory specs for ``act`` and ``norm`` (e.g. ``("relu", {"inplace": True})``,
``("instance", {"affine": True})``) and are TorchScript-compatible.

References:
    He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition." CVPR 2016 (basic residual block).
    LNMSNet (2026): joint nodule segmentation and malignancy classification with multi-scale convolutions (MSConv).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets.resnet import ResNetBlock
from torch import nn

__all__ = ["BasicResBlock", "ConvNormAct", "DecoderStage", "MSConv", "make_res_layer"]

ActSpec = str | tuple
NormSpec = str | tuple


class ConvNormAct(nn.Sequential):
    """``Conv3d → norm → act`` (no bias: the normalisation has one).

    The same computation as ``monai.networks.blocks.Convolution(..., bias=False, adn_ordering="NA")``; kept as a
    plain ``nn.Sequential`` because its state-dict keys (``0.weight``, ``1.weight``, ...) are those of the released
    weights, which MONAI's block would name ``conv.weight``, ``adn.N.weight``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: cubic kernel size (odd; "same" padding).
        act: MONAI activation spec.
        norm: MONAI normalisation spec.
        dilation: dilation of the convolution (padding follows so the size is kept).
        spatial_dims: number of spatial dimensions (3).

    Shapes:
        ``(B, in_channels, H, W, D) → (B, out_channels, H, W, D)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        act: ActSpec = ("relu", {"inplace": True}),
        norm: NormSpec = ("instance", {"affine": True}),
        dilation: int = 1,
        spatial_dims: int = 3,
    ) -> None:
        conv_type = Conv[Conv.CONV, spatial_dims]
        super().__init__(
            conv_type(
                in_channels,
                out_channels,
                kernel_size=kernel_size,
                padding=dilation * (kernel_size - 1) // 2,
                dilation=dilation,
                bias=False,
            ),
            get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=out_channels),
            get_act_layer(name=act),
        )


class BasicResBlock(ResNetBlock):
    """ResNet basic block (He et al. 2016): MONAI's :class:`monai.networks.nets.resnet.ResNetBlock` (two 3×3×3
    convolutions, each normalised, and the shortcut), with its projection shortcut (1×1×1 convolution + norm, where
    the stride or the width changes) built here and any MONAI norm (instance norm by default, batch in MONAI's).

    The attribute names are MONAI's (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample``), so ResNet-18
    checkpoints (e.g. MedicalNet through ``monai.networks.nets.resnet18``) map onto the encoder key for key.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (2 halves each spatial size).
        act: MONAI activation spec.
        norm: MONAI normalisation spec.
        spatial_dims: number of spatial dimensions (3).

    Shapes:
        ``(B, in_channels, H, W, D) → (B, out_channels, H/stride, W/stride, D/stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        act: ActSpec = ("relu", {"inplace": True}),
        norm: NormSpec = ("instance", {"affine": True}),
        spatial_dims: int = 3,
    ) -> None:
        downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(
                Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=out_channels),
            )
        super().__init__(in_channels, out_channels, spatial_dims, stride, downsample, act, norm)


def make_res_layer(
    in_channels: int,
    out_channels: int,
    blocks: int,
    stride: int,
    act: ActSpec,
    norm: NormSpec,
    spatial_dims: int = 3,
) -> nn.Sequential:
    """A ResNet stage: ``blocks`` :class:`BasicResBlock` s, the first one with ``stride``."""
    layers = [BasicResBlock(in_channels, out_channels, stride, act, norm, spatial_dims)]
    layers += [BasicResBlock(out_channels, out_channels, 1, act, norm, spatial_dims) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class MSConv(nn.Module):
    """Multi-scale convolution (LNMSNet 2026): parallel dilated 3×3×3 convolutions fused by a 1×1×1 convolution.

    Each branch ``i`` is ``Conv(k=3, dilation=d_i) → norm → act`` with ``channels`` outputs, so the branches see
    receptive fields of ``2·d_i + 1`` voxels (3, 5, 7 for the default dilations 1, 2, 3): fine texture and wider
    context at once. The concatenated branches are fused by ``Conv(k=1) → norm`` and added to the input
    (residual path) before the activation, so an MSConv starts close to the identity map's behaviour.

    Args:
        channels: input and output channels.
        dilations: one branch per dilation (all ``>= 1``).
        act: MONAI activation spec.
        norm: MONAI normalisation spec.
        spatial_dims: number of spatial dimensions (3).

    Shapes:
        ``(B, channels, H, W, D) → (B, channels, H, W, D)``.
    """

    def __init__(
        self,
        channels: int,
        dilations: Sequence[int] = (1, 2, 3),
        act: ActSpec = ("relu", {"inplace": True}),
        norm: NormSpec = ("instance", {"affine": True}),
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        conv_type = Conv[Conv.CONV, spatial_dims]
        self.branches = nn.ModuleList(
            [ConvNormAct(channels, channels, 3, act, norm, int(d), spatial_dims) for d in dilations]
        )
        self.fuse = nn.Sequential(
            conv_type(channels * len(self.branches), channels, kernel_size=1, bias=False),
            get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=channels),
        )
        self.act = get_act_layer(name=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        for branch in self.branches:
            outs.append(branch(x))
        return self.act(self.fuse(torch.cat(outs, dim=1)) + x)


class DecoderStage(nn.Module):
    """U-Net decoder stage: ×2 upsampling, concatenation with the skip, two ``Conv → norm → act``.

    Args:
        in_channels: channels of the coarser input.
        skip_channels: channels of the skip connection (also the output channels).
        act: MONAI activation spec.
        norm: MONAI normalisation spec.
        upsample: ``"deconv"`` (transposed convolution, kernel 2, stride 2) or ``"nontrainable"`` (trilinear
            interpolation followed by a 1×1×1 convolution).
        spatial_dims: number of spatial dimensions (3).

    Shapes:
        ``x (B, in_channels, h, w, d), skip (B, skip_channels, 2h, 2w, 2d) → (B, skip_channels, 2h, 2w, 2d)``.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        act: ActSpec = ("relu", {"inplace": True}),
        norm: NormSpec = ("instance", {"affine": True}),
        upsample: str = "deconv",
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        up: nn.Module
        if upsample == "deconv":
            up = Conv[Conv.CONVTRANS, spatial_dims](in_channels, skip_channels, kernel_size=2, stride=2)
        else:
            up = nn.Sequential(
                nn.Upsample(scale_factor=2.0, mode="trilinear", align_corners=False),
                Conv[Conv.CONV, spatial_dims](in_channels, skip_channels, kernel_size=1),
            )
        self.up = up
        self.conv1 = ConvNormAct(2 * skip_channels, skip_channels, 3, act, norm, 1, spatial_dims)
        self.conv2 = ConvNormAct(skip_channels, skip_channels, 3, act, norm, 1, spatial_dims)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        return self.conv2(self.conv1(torch.cat([x, skip], dim=1)))
