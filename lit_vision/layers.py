"""Small building blocks shared by backbones, necks and heads (kept here so none imports another)."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

# YOLO's BatchNorm: eps 1e-3, momentum 0.03 (PyTorch's momentum convention), as the YOLOv5/v8 models use.
yolo_batch_norm = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03)


def conv_bn_silu(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1) -> Conv2dNormActivation:
    """Conv2d (no bias) + BatchNorm + SiLU, "same" padding: the basic unit of the YOLO-style neck and head."""
    return Conv2dNormActivation(in_channels, out_channels, kernel_size, stride, norm_layer=yolo_batch_norm,
                                activation_layer=nn.SiLU)


class Bottleneck(nn.Module):
    """Two 3x3 conv_bn_silu, with a residual connection when ``shortcut`` (the backbone uses it, the neck not)."""

    def __init__(self, channels: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = conv_bn_silu(channels, channels, 3)
        self.cv2 = conv_bn_silu(channels, channels, 3)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.shortcut else y


class C2f(nn.Module):
    """CSP block of YOLOv8: split a 1x1 projection in two, run ``depth`` bottlenecks on one half, and fuse
    the two halves plus every bottleneck output with a 1x1 conv (more gradient paths than a plain CSP)."""

    def __init__(self, in_channels: int, out_channels: int, depth: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.hidden = out_channels // 2
        self.cv1 = conv_bn_silu(in_channels, 2 * self.hidden, 1)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden, shortcut) for _ in range(depth))
        self.cv2 = conv_bn_silu((2 + depth) * self.hidden, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        parts = list(self.cv1(x).chunk(2, dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, dim=1))

class SPPF(nn.Module):
    """Spatial pyramid pooling, fast (YOLOv5/v8): a 1x1 halving conv, three chained ``k x k`` stride-1 max-pools
    (receptive fields k, 2k-1, 3k-2 at the cost of one), the four maps concatenated and fused by a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = conv_bn_silu(in_channels, hidden, 1)
        self.pool = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)
        self.cv2 = conv_bn_silu(4 * hidden, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        maps = [self.cv1(x)]
        for _ in range(3):
            maps.append(self.pool(maps[-1]))
        return self.cv2(torch.cat(maps, dim=1))


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU. Padded (unlike the paper's valid convs) so maps keep their size and
    skips need no cropping; BN as in nearly every modern U-Net, for faster, steadier training."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(Conv2dNormActivation(in_channels, out_channels, 3),
                         Conv2dNormActivation(out_channels, out_channels, 3))
