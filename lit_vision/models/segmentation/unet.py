"""U-Net (Ronneberger et al., 2015): the classic encoder-decoder, or its decoder over any registry backbone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from lit_vision.backbones import Backbone
from lit_vision.backbones.unet_encoder import UNetEncoder
from lit_vision.heads.segmentation import UNetDecoder
from lit_vision.models.segmentation.base import SegmentationArchitecture

Upsampling = Literal["bilinear", "nearest", "transposed"]


class UNet(SegmentationArchitecture):
    """A :class:`~lit_vision.heads.segmentation.UNetDecoder` over every backbone map.

    With ``backbone=None`` it is the classic U-Net, with its own encoder
    (:class:`~lit_vision.backbones.unet_encoder.UNetEncoder`: ``base_channels`` doubling at each of ``depth``
    max-pools, 64 -> 1024 by default) trained from scratch.

    Args:
        decoder_channels: width of each decoder block; default ``(256, 128, 64, 32, 16)`` on a registry
            backbone, the encoder's widths mirrored (512 256 128 64) for the classic U-Net.
        upsampling: ``"bilinear"``, ``"nearest"`` or ``"transposed"``; default bilinear on a registry
            backbone, transposed convolutions (the paper's up-convolutions) for the classic U-Net.
        base_channels, depth: the classic U-Net's encoder (ignored with a registry backbone).
    """

    name = "unet"

    def __init__(self, decoder_channels: Sequence[int] | None = None, upsampling: Upsampling | None = None,
                 base_channels: int = 64, depth: int = 4) -> None:
        self.decoder_channels = list(decoder_channels) if decoder_channels is not None else None
        self.upsampling, self.base_channels, self.depth = upsampling, base_channels, depth

    def own_backbone(self) -> UNetEncoder:
        return UNetEncoder(3, self.base_channels, self.depth)

    def build_head(self, backbone: Backbone, num_classes: int) -> UNetDecoder:
        if isinstance(backbone, UNetEncoder):
            widths = self.decoder_channels or backbone.channels[-2::-1]
            return UNetDecoder(backbone.channels, num_classes, widths, self.upsampling or "transposed")
        widths = self.decoder_channels or (256, 128, 64, 32, 16)
        return UNetDecoder(backbone.channels, num_classes, widths, self.upsampling or "bilinear")
