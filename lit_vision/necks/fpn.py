"""Backbone + FPN in the form torchvision's detectors take (``out_channels``, ``OrderedDict`` output).

torchvision's Faster R-CNN / RetinaNet / FCOS accept any ``nn.Module`` with an ``out_channels`` attribute
that maps a batch to an ``OrderedDict[str, Tensor]`` of equally wide maps. This wrapper builds that from a
registry backbone (``forward(x) -> list[Tensor]``, ``.channels``, ``.reductions``) and
``torchvision.ops.FeaturePyramidNetwork``, so every registry backbone feeds every torchvision detector.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import (
    ExtraFPNBlock,
    LastLevelMaxPool,
    LastLevelP6P7,
)

ExtraLevels = Literal["maxpool", "p6p7", "none"]


class BackboneWithFPN(nn.Module):
    """A registry backbone followed by an FPN over some of its stages.

    Args:
        backbone: registry backbone (``forward(x) -> list[Tensor]`` shallow to deep, ``.channels``,
            ``.reductions``).
        in_indices: which of the backbone's maps feed the FPN (negatives allowed); ``None`` = all of them
            (build the backbone with ``out_indices`` to choose stages without computing unused outputs).
        out_channels: width of every pyramid level.
        extra: extra coarser levels: ``"maxpool"`` (one stride-2 max-pooled level named ``"pool"``, as
            Faster R-CNN uses), ``"p6p7"`` (two stride-2 conv levels from P5, as RetinaNet and FCOS use)
            or ``"none"``.

    Attributes:
        out_channels: what torchvision's detectors read.
        level_names: output keys, fine to coarse (``"0", "1", ...`` then ``"pool"`` or ``"p6", "p7"``).
        strides: stride of each output level, in ``level_names`` order.
    """

    def __init__(
        self,
        backbone: nn.Module,
        in_indices: Sequence[int] | None = None,
        out_channels: int = 256,
        extra: ExtraLevels = "maxpool",
    ) -> None:
        super().__init__()
        n = len(backbone.channels)
        indices = list(range(n)) if in_indices is None else sorted({i % n for i in in_indices})
        if not indices or any(not -n <= i < n for i in (in_indices or [])):
            raise ValueError(f"in_indices {in_indices} do not select maps of a backbone with {n} outputs")
        self.backbone = backbone
        self.in_indices = indices
        self.out_channels = out_channels
        extra_block: ExtraFPNBlock | None
        if extra == "maxpool":
            extra_block, extra_names = LastLevelMaxPool(), ["pool"]
        elif extra == "p6p7":
            # in_channels == out_channels: P6 is computed from P5 (torchvision's RetinaNet v2 / FCOS choice).
            extra_block, extra_names = LastLevelP6P7(out_channels, out_channels), ["p6", "p7"]
        elif extra == "none":
            extra_block, extra_names = None, []
        else:
            raise ValueError(f"extra must be 'maxpool', 'p6p7' or 'none', got {extra!r}")
        self.fpn = FeaturePyramidNetwork([backbone.channels[i] for i in indices], out_channels, extra_block)
        self.feature_names = [str(k) for k in range(len(indices))]
        self.level_names = self.feature_names + extra_names
        base = [int(backbone.reductions[i]) for i in indices]
        self.strides = base + [base[-1] * 2 ** (k + 1) for k in range(len(extra_names))]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feats = self.backbone(x)
        maps = OrderedDict((name, feats[i]) for name, i in zip(self.feature_names, self.in_indices))
        return self.fpn(maps)
