"""DeepLabv3 (Chen et al., 2017): atrous spatial pyramid pooling on the deepest map of any registry backbone."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lit_vision.backbones import Backbone
from lit_vision.heads.segmentation import (
    DeepLabV3Head,
    TorchvisionDeepLabHead,
    default_atrous_rates,
)
from lit_vision.models.segmentation.base import SegmentationArchitecture


class DeepLabV3(SegmentationArchitecture):
    """ASPP -> 3x3 conv-BN-ReLU -> 1x1 to classes (torchvision's ``DeepLabHead``); train it at output stride 16 or 8.

    Args:
        atrous_rates: ASPP dilations; default (6, 12, 18) scaled by 16 / the deep map's stride.
        aspp_channels: ASPP width.
        dropout: after the ASPP projection.
        torchvision_head: build torchvision's own ``DeepLabHead`` instead (BatchNorm after image pooling,
            dropout 0.5; ``aspp_channels``/``dropout`` do not apply): exactly ``deeplabv3_resnet50``'s head, so its
            published weights load and its outputs are reproduced (see docs/reference_parity.md).
    """

    name = "deeplabv3"

    def __init__(self, atrous_rates: Sequence[int] | None = None, aspp_channels: int = 256,
                 dropout: float = 0.1, torchvision_head: bool = False) -> None:
        self.atrous_rates = list(atrous_rates) if atrous_rates is not None else None
        self.aspp_channels, self.dropout, self.torchvision_head = aspp_channels, dropout, torchvision_head

    def build_head(self, backbone: Backbone, num_classes: int) -> nn.Module:
        rates = self.atrous_rates or default_atrous_rates(max(backbone.reductions))
        if self.torchvision_head:
            return TorchvisionDeepLabHead(backbone.channels, num_classes, rates)
        return DeepLabV3Head(backbone.channels, num_classes, rates, self.aspp_channels, self.dropout)
