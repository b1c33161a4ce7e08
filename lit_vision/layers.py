"""Small building blocks shared by backbones, necks and heads (kept here so none imports another)."""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.ops import Conv2dNormActivation

# YOLO's BatchNorm: eps 1e-3, momentum 0.03 (PyTorch's momentum convention), as the YOLOv5/v8 models use.
yolo_batch_norm = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03)


def conv_bn_silu(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1) -> Conv2dNormActivation:
    """Conv2d (no bias) + BatchNorm + SiLU, "same" padding: the basic unit of the YOLO-style neck and head."""
    return Conv2dNormActivation(in_channels, out_channels, kernel_size, stride, norm_layer=yolo_batch_norm,
                                activation_layer=nn.SiLU)


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU. Padded (unlike the paper's valid convs) so maps keep their size and
    skips need no cropping; BN as in nearly every modern U-Net, for faster, steadier training."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(Conv2dNormActivation(in_channels, out_channels, 3),
                         Conv2dNormActivation(out_channels, out_channels, 3))
