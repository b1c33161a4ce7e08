"""A YOLOv8-style PAN neck (top-down FPN path + bottom-up path, C2f blocks) over any registry backbone.

torchvision ships an FPN but no path-aggregation neck, and timm has none either, so the few blocks are
written here after the published YOLOv8 design (Conv-BN-SiLU units; C2f = a CSP block whose chain of
bottlenecks has every intermediate output concatenated). Over backbone maps C3, C4, C5 (strides 8, 16, 32):

    top-down:   N4 = C2f(cat(up(C5), C4))       P3 = C2f(cat(up(N4), C3))
    bottom-up:  P4 = C2f(cat(down(P3), N4))     P5 = C2f(cat(down(P4), C5))

The C2f block lives in :mod:`lit_vision.layers` (the CSP-C2f backbone uses it too). ``up`` is 2x nearest
upsampling and ``down`` a stride-2 3x3 conv_bn_silu; the outputs are P3, P4, P5.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_vision.layers import Bottleneck, C2f, conv_bn_silu


class PAN(nn.Module):
    """Path-aggregation neck over three maps (fine to coarse), returning three maps of ``out_channels``.

    Args:
        in_channels: channels of the three input maps (e.g. a backbone's stages at strides 8, 16, 32).
        out_channels: width of each output level (one int for all, or three, fine to coarse; YOLOv8-s
            uses 128, 256, 512).
        depth: bottlenecks per C2f block (YOLOv8 scales it with the model size: 1 for n/s, 2 for m, 3 for l).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int | Sequence[int] = 256, depth: int = 1) -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"the PAN neck takes three feature maps (strides 8, 16, 32), got {len(in_channels)}")
        c3, c4, c5 = in_channels
        o3, o4, o5 = [out_channels] * 3 if isinstance(out_channels, int) else list(out_channels)
        self.out_channels = [o3, o4, o5]
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top_down4 = C2f(c5 + c4, o4, depth)          # N4 = C2f(cat(up(C5), C4))
        self.top_down3 = C2f(o4 + c3, o3, depth)          # P3 = C2f(cat(up(N4), C3))
        self.down3 = conv_bn_silu(o3, o3, 3, stride=2)
        self.bottom_up4 = C2f(o3 + o4, o4, depth)         # P4 = C2f(cat(down(P3), N4))
        self.down4 = conv_bn_silu(o4, o4, 3, stride=2)
        self.bottom_up5 = C2f(o4 + c5, o5, depth)         # P5 = C2f(cat(down(P4), C5))

    @staticmethod
    def _cat(a: Tensor, b: Tensor) -> Tensor:
        # Odd input sizes: a 2x upsampled / stride-2 map can be one pixel off its partner; crop or pad to it.
        if a.shape[-2:] != b.shape[-2:]:
            a = nn.functional.interpolate(a, size=b.shape[-2:], mode="nearest")
        return torch.cat([a, b], dim=1)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        c3, c4, c5 = feats
        n4 = self.top_down4(self._cat(self.up(c5), c4))
        p3 = self.top_down3(self._cat(self.up(n4), c3))
        p4 = self.bottom_up4(self._cat(self.down3(p3), n4))
        p5 = self.bottom_up5(self._cat(self.down4(p4), c5))
        return [p3, p4, p5]


__all__ = ["PAN", "C2f", "Bottleneck"]
