"""Networks: :class:`LNMSNet` (multi-task 3D ResNet U-Net with MSConv), its blocks, sliding-window, transfer helpers."""

from lung_nodule_mtl.networks.blocks import BasicResBlock, ConvNormAct, DecoderStage, MSConv
from lung_nodule_mtl.networks.growth import GrowthBatchKeys, GrowthOutputKeys, NoduleGrowthNet
from lung_nodule_mtl.networks.lnmsnet import (
    DEEP_SUPERVISION_PREFIX,
    DEFAULT_HEADS,
    HEAD_CLASSES,
    LNMSNet,
    ResNetEncoder,
    deep_supervision_key,
)
from lung_nodule_mtl.networks.sliding_window import SlidingWindowAdapter, sample_heads, sliding_window_predict
from lung_nodule_mtl.networks.transfer import LoadReport, freeze_encoder_stages, load_partial_state

__all__ = [
    "DEEP_SUPERVISION_PREFIX",
    "DEFAULT_HEADS",
    "HEAD_CLASSES",
    "BasicResBlock",
    "ConvNormAct",
    "DecoderStage",
    "GrowthBatchKeys",
    "GrowthOutputKeys",
    "LNMSNet",
    "LoadReport",
    "MSConv",
    "NoduleGrowthNet",
    "ResNetEncoder",
    "SlidingWindowAdapter",
    "deep_supervision_key",
    "freeze_encoder_stages",
    "load_partial_state",
    "sample_heads",
    "sliding_window_predict",
]
