"""The YOLOv8-style decoupled head and its anchor-free box coding (cell centres + distance distributions).

* **Decoupled head**: per level, a box branch (two 3x3 conv-BN-SiLU + 1x1 conv to ``4 x reg_max`` logits)
  and a separate classification branch (two 3x3 conv-BN-SiLU + 1x1 conv to ``num_classes`` logits).
* **Anchor-free boxes**: each grid cell centre ``(x + 0.5, y + 0.5) * stride`` predicts its distances to
  the four box sides as a distribution over ``0..reg_max-1`` stride units; the distance is the
  distribution's expectation (so 16 bins reach 15 x 32 = 480 px at stride 32).

No library ships these (Ultralytics is AGPL and not a component library), so they are written here after
the published YOLOv8 design.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_vision.layers import conv_bn_silu


class DecoupledHead(nn.Module):
    """Separate box and classification branches per pyramid level (weights not shared across levels).

    Branch widths follow YOLOv8: ``max(16, C/4, 4 * reg_max)`` for boxes and ``max(C, min(K, 100))`` for
    classes, with ``C`` the finest level's channels.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, reg_max: int = 16) -> None:
        super().__init__()
        self.num_classes, self.reg_max = num_classes, reg_max
        c_box = max(16, in_channels[0] // 4, 4 * reg_max)
        c_cls = max(in_channels[0], min(num_classes, 100))
        self.box = nn.ModuleList(
            nn.Sequential(conv_bn_silu(c, c_box, 3), conv_bn_silu(c_box, c_box, 3), nn.Conv2d(c_box, 4 * reg_max, 1))
            for c in in_channels)
        self.cls = nn.ModuleList(
            nn.Sequential(conv_bn_silu(c, c_cls, 3), conv_bn_silu(c_cls, c_cls, 3), nn.Conv2d(c_cls, num_classes, 1))
            for c in in_channels)
        self.init_bias((8, 16, 32)[: len(self.box)], 640)

    @torch.no_grad()
    def init_bias(self, strides: Sequence[int], image_size: int) -> None:
        """YOLOv8's prior: about 5 objects per ``image_size`` image spread over each level's cells, so the first
        losses are sane. The detector calls it with its real strides and image size once it knows them."""
        for box, cls, stride in zip(self.box, self.cls, strides):
            nn.init.constant_(box[-1].bias, 1.0)
            nn.init.constant_(cls[-1].bias, math.log(5 / self.num_classes / (image_size / stride) ** 2))

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: box logits ``[B, 4 * reg_max, H, W]`` and class logits ``[B, K, H, W]``."""
        return [b(f) for b, f in zip(self.box, feats)], [c(f) for c, f in zip(self.cls, feats)]


def make_points(sizes: Sequence[tuple[int, int]], strides: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
    """Cell centres ``[A, 2]`` (x, y pixels) and their strides ``[A]``, levels concatenated fine to coarse."""
    points, point_strides = [], []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        points.append((torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * s)
        point_strides.append(torch.full((h * w,), float(s), device=device))
    return torch.cat(points), torch.cat(point_strides)


def decode_boxes(box_logits: Tensor, points: Tensor, strides: Tensor) -> Tensor:
    """Expected side distances of ``box_logits [B, A, 4, R]`` -> XYXY pixel boxes ``[B, A, 4]``, in float32.

    Outside autocast: under ``bf16-mixed`` the matmul would run in bf16 and quantise every distance to 2^-8 of
    its value (up to ~2 px at stride 32), in the boxes the assigner, the CIoU loss and evaluation all use.
    """
    with torch.autocast(box_logits.device.type, enabled=False):
        bins = torch.arange(box_logits.shape[-1], device=box_logits.device, dtype=torch.float32)
        dist = box_logits.float().softmax(-1).matmul(bins) * strides.view(1, -1, 1)  # [B, A, 4]
        return torch.cat([points - dist[..., :2], points + dist[..., 2:]], dim=-1)


__all__ = ["DecoupledHead", "decode_boxes", "make_points"]
