"""Segmentation building blocks shared by the decoders, and the FCN head (Long et al., 2015).

Every segmentation head takes the backbone's list of maps (shallow to deep) and returns class
logits at some stride; :class:`~lit_vision.models.segmenters.Segmenter` resizes them to the
input. Heads pick maps by *position* (``features[-1]``, ``features[-2]``), never by stride,
because a dilated backbone reports repeated strides (``[2, 4, 8, 8, 8]`` at output stride 8).

FCN after the paper: class scores from the deepest map, refined coarse to fine with scores of
the stride-16 (16s) and stride-8 (8s) maps; intermediate 2x upsamplings are bilinear or learned
transposed convolutions initialised to bilinear interpolation, and the final upsampling to the
input is fixed bilinear, as the paper does ("the final layer deconvolutional filters are fixed to
bilinear interpolation"). The deepest map goes through torchvision's ``FCNHead`` (3x3 conv-BN-
ReLU-dropout-1x1) in place of VGG's fc6/fc7, which registry backbones do not have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.fcn import FCNHead

__all__ = [
    "FCN",
    "FCNHead",
    "ConvBNReLU",
    "SeparableConvBNReLU",
    "BilinearConvTranspose2d",
    "bilinear_kernel",
    "resize_to",
    "pad_to",
]

FCN_VARIANTS = ("32s", "16s", "8s")


def resize_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize to an exact ``(h, w)`` (no-op when already there): any input size works."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def pad_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Zero-pad or crop the bottom/right edges to ``(h, w)``.

    After a 2x upsampling the map is at most one pixel off its skip: a max-pool floors (the
    skip is one longer) and a padded strided conv ceils (one shorter). Either way the odd
    pixel is the last row/column, so the edit belongs there, keeping pixel grids aligned.
    """
    dh, dw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    return F.pad(x, [0, dw, 0, dh]) if dh or dw else x


class ConvBNReLU(nn.Sequential):
    """``k x k`` conv (no bias: BN follows) -> BN -> ReLU; ``dilation`` keeps the size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise (dilated) 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU.

    DeepLabv3+'s atrous separable convolution, with the BN + ReLU after the depthwise step that
    the paper's reference (``split_separable_conv2d`` in tensorflow/models/research/deeplab)
    uses. It costs about ``1/C_out + 1/9`` of a dense 3x3 at the same width.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, dilation=dilation,
                      groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def bilinear_kernel(channels: int, factor: int) -> Tensor:
    """``ConvTranspose2d`` weight ``[C, 1, 2f, 2f]`` that upsamples each channel bilinearly by ``f``.

    The FCN paper's initialisation. With stride ``f`` and padding ``f // 2`` it reproduces
    ``F.interpolate(scale_factor=f, mode="bilinear", align_corners=False)`` away from the borders.
    """
    k = 2 * factor
    centre = (k - 1) / 2
    ramp = 1 - (torch.arange(k, dtype=torch.float32) - centre).abs() / factor
    return (ramp[:, None] * ramp[None, :]).expand(channels, 1, k, k).clone()


class BilinearConvTranspose2d(nn.ConvTranspose2d):
    """Learnable per-channel ``f``-times upsampling, initialised to bilinear interpolation.

    Depthwise (``groups=channels``) so the initial state is exactly bilinear per class score;
    training may then sharpen it, as in FCN's learned 2x layers. Output is ``f`` times the input.
    """

    def __init__(self, channels: int, factor: int) -> None:
        if factor < 2 or factor % 2:
            raise ValueError(f"learned upsampling needs an even factor >= 2, got {factor}")
        super().__init__(channels, channels, 2 * factor, stride=factor, padding=factor // 2,
                         groups=channels, bias=False)
        with torch.no_grad():
            self.weight.copy_(bilinear_kernel(channels, factor))


class FCN(nn.Module):
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
