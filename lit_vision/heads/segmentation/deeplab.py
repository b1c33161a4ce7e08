"""DeepLabv3 (Chen et al., 2017) and DeepLabv3+ (Chen et al., 2018) heads with our own ASPP.

Written here rather than taken from ``torchvision.models.segmentation`` for two reasons:

* torchvision's ``ASPPPooling`` puts a BatchNorm after global pooling, i.e. on a ``B x C x 1 x 1``
  tensor, which raises "Expected more than 1 value per channel" for a batch of one in training
  (and normalises over only ``B`` numbers for small batches). Our image-pooling branch is a 1x1
  conv *with bias* and a ReLU, no norm, as detectron2's ASPP does.
* DeepLabv3+ needs atrous *separable* convolutions in ASPP and the decoder, which torchvision
  does not have.

Atrous rates are the paper's ``(6, 12, 18)`` at output stride 16; by default they scale with the
output stride (``(12, 24, 36)`` at 8, as the paper and torchvision use, ``(3, 6, 9)`` at 32) so
the branches keep the same field of view in input pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

from lit_vision.heads.segmentation.common import SeparableConvBNReLU, resize_to

__all__ = ["ASPP", "ASPPPooling", "DeepLabV3Head", "DeepLabV3PlusHead", "TorchvisionDeepLabHead", "default_atrous_rates"]

PAPER_RATES = (6, 12, 18)  # at output stride 16


def default_atrous_rates(output_stride: int | None) -> tuple[int, ...]:
    """The paper's rates for output stride 16, scaled by ``16 / output_stride`` (None = 32)."""
    os_ = output_stride or 32
    return tuple(max(1, r * 16 // os_) for r in PAPER_RATES)


class ASPPPooling(nn.Module):
    """Image-level features: global average -> 1x1 conv (bias) -> ReLU -> broadcast back.

    No normalisation on purpose (see the module docstring): a BatchNorm here breaks batch-1
    training, and the bias gives the branch the offset the norm would have learned.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=True)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.act(self.conv(x.mean(dim=(-2, -1), keepdim=True)))
        return pooled.expand(-1, -1, *x.shape[-2:])  # bilinear from 1x1 is a broadcast


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, one 3x3 per rate, image pooling; concat; 1x1 project.

    Args:
        in_channels: channels of the deep map.
        atrous_rates: dilation of each 3x3 branch.
        out_channels: width of every branch and of the projection (256 in the papers).
        separable: depthwise-separable 3x3 branches (DeepLabv3+) instead of dense ones (v3).
        dropout: after the projection; 0.1 as the TF reference and detectron2 (torchvision: 0.5).
        depthwise_norm: BN + ReLU after the depthwise step of a separable branch (see
            :class:`~lit_vision.heads.segmentation.common.SeparableConvBNReLU`).
    """

    def __init__(self, in_channels: int, atrous_rates: Sequence[int], out_channels: int = 256,
                 separable: bool = False, dropout: float = 0.1, depthwise_norm: bool = True) -> None:
        super().__init__()
        rates = tuple(int(r) for r in atrous_rates)
        if not rates or min(rates) < 1:
            raise ValueError(f"atrous_rates must be positive integers, got {atrous_rates!r}")
        self.atrous_rates = rates
        def conv3x3(rate: int) -> nn.Module:
            if separable:
                return SeparableConvBNReLU(in_channels, out_channels, 3, dilation=rate, depthwise_norm=depthwise_norm)
            return Conv2dNormActivation(in_channels, out_channels, 3, dilation=rate)

        self.branches = nn.ModuleList(
            [Conv2dNormActivation(in_channels, out_channels, 1)]
            + [conv3x3(r) for r in rates]
            + [ASPPPooling(in_channels, out_channels)]
        )
        self.project = nn.Sequential(
            Conv2dNormActivation(len(self.branches) * out_channels, out_channels, 1), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class DeepLabV3Head(nn.Module):
    """ASPP on the deepest map -> 3x3 conv-BN-ReLU -> 1x1 to classes (torchvision's DeepLabHead)."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, atrous_rates: Sequence[int] = PAPER_RATES,
                 aspp_channels: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels[-1], atrous_rates, aspp_channels, dropout=dropout)
        self.classifier = nn.Sequential(Conv2dNormActivation(aspp_channels, aspp_channels, 3),
                                        nn.Conv2d(aspp_channels, num_classes, 1))

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.classifier(self.aspp(features[-1]))


class TorchvisionDeepLabHead(nn.Module):
    """torchvision's own ``DeepLabHead`` on the deepest map: the module (and so the weights) of
    ``deeplabv3_resnet50``, for reproducing it and fine-tuning its published COCO-VOC weights.

    It differs from :class:`DeepLabV3Head` where the module docstring says: BatchNorm in the pooling branch
    (training needs more than one image per device) and dropout 0.5.
    """

    reference_prefix = "head."  # torchvision's ``classifier.<k>`` is our ``head.head.<k>``

    def __init__(self, in_channels: Sequence[int], num_classes: int, atrous_rates: Sequence[int] = (12, 24, 36)) -> None:
        super().__init__()
        from torchvision.models.segmentation.deeplabv3 import DeepLabHead

        self.head = DeepLabHead(in_channels[-1], num_classes, tuple(atrous_rates))

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.head(features[-1])


def low_level_index(reductions: Sequence[int]) -> int:
    """Position of DeepLabv3+'s low-level map: the first at stride >= 4 (ResNet's ``layer1``)."""
    index = next((i for i, r in enumerate(reductions) if r >= 4), None)
    if index is None or index == len(reductions) - 1:
        raise ValueError(f"DeepLabv3+ needs a stride-4 map before the deepest one; backbone reductions are {list(reductions)}")
    return index


class DeepLabV3PlusHead(nn.Module):
    """Separable ASPP on the deepest map, fused with the stride-4 map by a light decoder.

    The paper's decoder: low-level features -> 1x1 conv to 48 channels (so they do not outweigh
    the 256 ASPP channels); ASPP output upsampled (4x from output stride 16) to their size;
    concat; two 3x3 separable convs; 1x1 to classes. Logits come out at stride 4 and
    :class:`~lit_vision.models.segmentation.Segmenter` does the final bilinear upsampling.

    Args:
        in_channels, reductions: of every backbone map; the low-level one is the first at stride >= 4.
        num_classes: output logits.
        atrous_rates, aspp_channels, dropout: see :class:`ASPP` (separable here, as in the paper).
        low_level_channels: projection width of the stride-4 map (48 in the paper).
        decoder_channels: width of the separable 3x3 convs of the decoder (256 in the paper).
        decoder_convs: how many of them (the paper: 2; segmentation_models_pytorch: 1).
        depthwise_norm: BN + ReLU after every depthwise step (the paper's reference; smp: False).
    """

    def __init__(self, in_channels: Sequence[int], reductions: Sequence[int], num_classes: int,
                 atrous_rates: Sequence[int] = PAPER_RATES, aspp_channels: int = 256, low_level_channels: int = 48,
                 decoder_channels: int = 256, dropout: float = 0.1, decoder_convs: int = 2,
                 depthwise_norm: bool = True) -> None:
        super().__init__()
        if decoder_convs < 1:
            raise ValueError(f"decoder_convs must be >= 1, got {decoder_convs}")
        self.low_level_index = low_level_index(reductions)
        self.aspp = ASPP(in_channels[-1], atrous_rates, aspp_channels, separable=True, dropout=dropout,
                         depthwise_norm=depthwise_norm)
        self.low_level = Conv2dNormActivation(in_channels[self.low_level_index], low_level_channels, 1)
        widths = [aspp_channels + low_level_channels] + [decoder_channels] * decoder_convs
        self.decoder = nn.Sequential(*(SeparableConvBNReLU(a, b, depthwise_norm=depthwise_norm)
                                       for a, b in zip(widths, widths[1:])))
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        low = self.low_level(features[self.low_level_index])
        deep = resize_to(self.aspp(features[-1]), low.shape[-2:])
        return self.classifier(self.decoder(torch.cat([deep, low], dim=1)))
