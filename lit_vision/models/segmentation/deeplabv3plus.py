"""DeepLabv3+ (Chen et al., 2018): separable ASPP plus a stride-4 decoder on any registry backbone."""

from __future__ import annotations

from collections.abc import Sequence

from lit_vision.backbones import Backbone
from lit_vision.heads.segmentation import DeepLabV3PlusHead, default_atrous_rates
from lit_vision.models.segmentation.base import SegmentationArchitecture


class DeepLabV3Plus(SegmentationArchitecture):
    """Separable ASPP on the deepest map, fused with projected stride-4 features, two separable 3x3 convs.

    Args:
        atrous_rates: ASPP dilations; default (6, 12, 18) scaled by 16 / the deep map's stride.
        aspp_channels: ASPP width.
        low_level_channels: width of the projected stride-4 features (the paper: 48).
        decoder_channels: width of the decoder convolutions.
        dropout: after the ASPP projection.
        decoder_convs: separable 3x3 convs in the decoder (the paper: 2; segmentation_models_pytorch: 1).
        depthwise_norm: BN + ReLU after each depthwise step (the paper's TF reference; smp: False). With
            ``decoder_convs=1, depthwise_norm=False`` the head costs what smp's ``DeepLabV3Plus`` does
            (benchmarks/README.md: the segmentation quickstart against smp).
    """

    name = "deeplabv3plus"

    def __init__(self, atrous_rates: Sequence[int] | None = None, aspp_channels: int = 256,
                 low_level_channels: int = 48, decoder_channels: int = 256, dropout: float = 0.1,
                 decoder_convs: int = 2, depthwise_norm: bool = True) -> None:
        self.atrous_rates = list(atrous_rates) if atrous_rates is not None else None
        self.aspp_channels, self.low_level_channels = aspp_channels, low_level_channels
        self.decoder_channels, self.dropout = decoder_channels, dropout
        self.decoder_convs, self.depthwise_norm = decoder_convs, depthwise_norm

    def build_head(self, backbone: Backbone, num_classes: int) -> DeepLabV3PlusHead:
        rates = self.atrous_rates or default_atrous_rates(max(backbone.reductions))
        return DeepLabV3PlusHead(backbone.channels, backbone.reductions, num_classes, rates, self.aspp_channels,
                                 self.low_level_channels, self.decoder_channels, self.dropout,
                                 self.decoder_convs, self.depthwise_norm)
