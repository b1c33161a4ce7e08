"""FCN (Long et al., 2015): skip-fused class scores on any registry backbone."""

from __future__ import annotations

from typing import Literal

from lit_vision.backbones import Backbone
from lit_vision.heads.segmentation import FCNDecoder
from lit_vision.models.segmentation.base import SegmentationArchitecture


class FCN(SegmentationArchitecture):
    """FCN-8s / 16s / 32s (see :class:`~lit_vision.heads.segmentation.FCNDecoder`).

    Args:
        fcn_variant: ``"8s"`` (the paper's best), ``"16s"`` or ``"32s"`` (torchvision's ``fcn_resnet50`` is
            ``"32s"`` on an output-stride-8 backbone).
        upsampling: ``"bilinear"`` (fixed) or ``"learned"`` (transposed convs initialised to bilinear).
    """

    name = "fcn"

    def __init__(self, fcn_variant: Literal["32s", "16s", "8s"] = "8s",
                 upsampling: Literal["bilinear", "learned"] = "bilinear") -> None:
        self.fcn_variant, self.upsampling = fcn_variant, upsampling

    def build_head(self, backbone: Backbone, num_classes: int) -> FCNDecoder:
        return FCNDecoder(backbone.channels, backbone.reductions, num_classes, self.fcn_variant, self.upsampling)
