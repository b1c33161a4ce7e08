"""U-Net decoder (Ronneberger et al., 2015) over any list of maps, shallow to deep.

segmentation_models_pytorch's layout: starting from the deepest map, each block upsamples,
concatenates the next shallower map (the skip) and applies two 3x3 conv-BN-ReLU; blocks beyond
the shallowest skip upsample 2x without one, so five blocks over a ResNet's strides
``2 4 8 16 32`` end at stride 1. The same decoder, with transposed-conv upsampling that halves
the channels, is the classic U-Net's expanding path (:mod:`lit_vision.backbones.unet_encoder`).

Sizes never need to be multiples of anything: upsampled maps are resized (bilinear/nearest) or
padded/cropped (transposed conv) to their skip, see :func:`~lit_vision.heads.segmentation.pad_to`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_vision.heads.segmentation.common import pad_to
from lit_vision.layers import DoubleConv

__all__ = ["DoubleConv", "UNetDecoder", "UNetDecoderBlock", "UPSAMPLING_MODES"]

Upsampling = Literal["bilinear", "nearest", "transposed"]
UPSAMPLING_MODES = ("bilinear", "nearest", "transposed")


class UNetDecoderBlock(nn.Module):
    """Upsample to the skip's size (2x without a skip), concatenate it, :class:`DoubleConv`.

    ``"transposed"`` is the paper's 2x2 up-convolution, which also halves the channels.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, upsampling: Upsampling) -> None:
        super().__init__()
        if upsampling not in UPSAMPLING_MODES:
            raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}, got {upsampling!r}")
        self.mode = upsampling
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2) if upsampling == "transposed" else None
        up_channels = in_channels // 2 if self.up is not None else in_channels
        self.conv = DoubleConv(up_channels + skip_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if self.up is not None:
            x = self.up(x)
            if skip is not None:
                x = pad_to(x, skip.shape[-2:])
        else:
            size = skip.shape[-2:] if skip is not None else (2 * x.shape[-2], 2 * x.shape[-1])
            if tuple(size) != tuple(x.shape[-2:]):  # equal on a dilated backbone: nothing to do
                align = False if self.mode == "bilinear" else None
                x = F.interpolate(x, size=tuple(size), mode=self.mode, align_corners=align)
        return self.conv(x if skip is None else torch.cat([x, skip], dim=1))


class UNetDecoder(nn.Module):
    """U-Net decoder: one block per entry of ``decoder_channels``, then a 1x1 conv to classes.

    Args:
        in_channels: channels of the backbone maps, shallow to deep; all are used as skips.
        num_classes: output logits.
        decoder_channels: width of each block, deepest first. There must be at least one block per
            skip (``len(in_channels) - 1``); extra blocks upsample 2x without a skip. The smp default
            ``(256, 128, 64, 32, 16)`` on strides ``2 4 8 16 32`` ends at stride 1.
        upsampling: ``"bilinear"`` (default), ``"nearest"`` (smp's) or ``"transposed"`` (the paper's).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int,
                 decoder_channels: Sequence[int] = (256, 128, 64, 32, 16), upsampling: Upsampling = "bilinear") -> None:
        super().__init__()
        skips = list(in_channels[:-1])[::-1]  # deep to shallow
        if len(decoder_channels) < len(skips):
            raise ValueError(
                f"decoder_channels {tuple(decoder_channels)} has {len(decoder_channels)} blocks, but the backbone "
                f"gives {len(skips)} skip maps; pass at least one width per skip"
            )
        blocks, c = [], in_channels[-1]
        for k, out in enumerate(decoder_channels):
            blocks.append(UNetDecoderBlock(c, skips[k] if k < len(skips) else 0, out, upsampling))
            c = out
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Conv2d(c, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        skips = features[:-1][::-1]
        x = features[-1]
        for k, block in enumerate(self.blocks):
            x = block(x, skips[k] if k < len(skips) else None)
        return self.classifier(x)
