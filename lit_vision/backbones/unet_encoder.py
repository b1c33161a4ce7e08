"""The classic U-Net's own contracting path (Ronneberger et al., 2015), as a registry-style backbone.

``build_segmenter("unet", backbone=None, ...)`` selects it: a symmetric encoder-decoder trained from
scratch, widths ``64 -> 128 -> 256 -> 512 -> 1024`` (``base_channels`` doubles at each of ``depth``
2x2 max-pools). Exposing the contracting path as a :class:`~lit_vision.backbones.Backbone` (maps at
strides ``1 2 4 8 16``) lets the expanding path be the ordinary
:class:`~lit_vision.heads.segmentation.unet.UNetDecoder` with transposed-conv upsampling, and lets the auxiliary
head read ``features[-2]`` exactly as it does on any other backbone.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lit_vision.backbones import Backbone
from lit_vision.layers import DoubleConv

__all__ = ["UNetEncoder"]


class UNetEncoder(Backbone):
    """``DoubleConv`` at full resolution, then ``depth`` times: max-pool 2x2 -> ``DoubleConv`` (2x wider).

    Max-pooling floors odd sizes (75 -> 37 -> 18 -> 9 -> 4); the decoder pads back to each skip.
    Inputs need at least ``2 ** depth`` pixels per side.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, depth: int = 4) -> None:
        if depth < 1 or base_channels < 1:
            raise ValueError(f"classic U-Net needs depth >= 1 and base_channels >= 1, got {depth}, {base_channels}")
        channels = [base_channels * 2**k for k in range(depth + 1)]
        super().__init__("classic_unet", channels, [2**k for k in range(depth + 1)], list(range(depth + 1)))
        self.stages = nn.ModuleList(
            DoubleConv(c_in, c_out) for c_in, c_out in zip([in_channels] + channels[:-1], channels)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for k, stage in enumerate(self.stages):
            x = stage(x if k == 0 else F.max_pool2d(x, 2))
            features.append(x)
        return features
