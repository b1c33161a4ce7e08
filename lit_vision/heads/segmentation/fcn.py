"""The FCN decoder (Long et al., 2015): class scores from the deepest map, refined with shallower ones.

Class scores come from the deepest map and are refined coarse to fine with scores of the stride-16 (16s)
and stride-8 (8s) maps; intermediate 2x upsamplings are bilinear or learned transposed convolutions
initialised to bilinear interpolation, and the final upsampling to the input is fixed bilinear, as the
paper does ("the final layer deconvolutional filters are fixed to bilinear interpolation"). The deepest map
goes through torchvision's ``FCNHead`` (3x3 conv-BN-ReLU-dropout-1x1) in place of VGG's fc6/fc7, which
registry backbones do not have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from lit_vision.heads.segmentation.common import (
    BilinearConvTranspose2d,
    FCNHead,
    pad_to,
    resize_to,
)

FCN_VARIANTS = ("32s", "16s", "8s")


class FCNDecoder(nn.Module):
    """FCN-32s/16s/8s on the last one/two/three backbone maps (natural strides 32, 16, 8).

    Args:
        in_channels: channels of every backbone map (only the last three are used).
        reductions: the maps' strides; they size the learned upsamplings (factor 1 on a dilated
            backbone, where the fused maps already share a resolution).
        num_classes: output logits.
        variant: ``"8s"`` (default: the paper's best, 62.7 vs 59.4 mIoU for 32s on VOC), ``"16s"``
            or ``"32s"``. torchvision's ``fcn_resnet50`` is ``"32s"`` on an output-stride-8 backbone.
        upsampling: ``"bilinear"`` (fixed) or ``"learned"`` (transposed convs initialised to bilinear)
            for the fusion steps (so ``"32s"``, with none, ignores it); the final resize to the
            input is always fixed bilinear.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        reductions: Sequence[int],
        num_classes: int,
        variant: Literal["32s", "16s", "8s"] = "8s",
        upsampling: Literal["bilinear", "learned"] = "bilinear",
    ) -> None:
        super().__init__()
        if variant not in FCN_VARIANTS:
            raise ValueError(f"fcn_variant must be one of {FCN_VARIANTS}, got {variant!r}")
        if upsampling not in ("bilinear", "learned"):
            raise ValueError(f"upsampling must be 'bilinear' or 'learned', got {upsampling!r}")
        levels = FCN_VARIANTS.index(variant) + 1
        if len(in_channels) < levels:
            raise ValueError(f"FCN-{variant} fuses the last {levels} backbone maps; the backbone returns {len(in_channels)}")
        self.levels = levels
        # FCN-32s is torchvision's ``fcn_resnet50`` head: its ``classifier.<k>`` is our ``score_deep.<k>``.
        self.reference_prefix = "score_deep." if variant == "32s" else None
        self.score_deep = FCNHead(in_channels[-1], num_classes)
        # Skip scores (coarse to fine: stride 16, then 8) start at zero, as in the paper, so
        # training starts from the coarser net's predictions.
        self.score_skips = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in in_channels[-2:-levels - 1:-1])
        for conv in self.score_skips:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.upsample = nn.ModuleList()  # one per fusion, coarse to fine
        for k in range(levels - 1):
            coarse, fine = reductions[-1 - k], reductions[-2 - k]
            factor = max(1, coarse // fine)
            learned = upsampling == "learned" and factor > 1
            self.upsample.append(BilinearConvTranspose2d(num_classes, factor) if learned else nn.Identity())

    def forward(self, features: list[Tensor]) -> Tensor:
        score = self.score_deep(features[-1])
        skips = features[-2:-self.levels - 1:-1]  # coarse to fine: stride 16, then 8
        for up, conv, skip in zip(self.upsample, self.score_skips, skips):
            size = skip.shape[-2:]
            # Learned: exact 2x grid, cropped/padded to the skip; fixed: bilinear straight to it.
            score = pad_to(up(score), size) if isinstance(up, BilinearConvTranspose2d) else resize_to(score, size)
            score = score + conv(skip)
        return score
