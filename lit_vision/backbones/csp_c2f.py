"""The CSP-Darknet backbone with C2f stages (the YOLOv8 layout), at YOLOv8's n / s / m / l / x scales.

Registry names ``lv/csp_c2f_n`` ... ``lv/csp_c2f_x`` (``lv/`` = lit_vision's own code). With the YOLO-style detector
(:class:`~lit_vision.models.detection.YOLO`: PAN neck + decoupled head) they make the published YOLOv8 detectors layer
for layer, so lit_vision can be compared with Ultralytics model for model (YOLOv8n: 3.16 M parameters at 80 classes).
Neither torchvision nor timm ships this backbone (timm's ``cspdarknet53`` is the YOLOv4-era CSP design, and
Ultralytics is AGPL and not a component library), so it is written here from the published layout:

    stage 0  conv 3x3 s2                               stride 2
    stage 1  conv 3x3 s2, C2f x d1 (shortcut)          stride 4
    stage 2  conv 3x3 s2, C2f x d2 (shortcut)          stride 8
    stage 3  conv 3x3 s2, C2f x d3 (shortcut)          stride 16
    stage 4  conv 3x3 s2, C2f x d4 (shortcut), SPPF    stride 32

with widths ``64, 128, 256, 512, 1024`` times the scale's width multiple (capped at its ``max_channels``, rounded up
to a multiple of 8) and depths ``3, 6, 6, 3`` times its depth multiple (rounded, at least 1). Every conv is
conv-BN(eps 1e-3, momentum 0.03)-SiLU. Each scale also states its YOLOv8 neck (:attr:`CSPC2fBackbone.neck_channels`,
:attr:`~CSPC2fBackbone.neck_depth`), which the YOLO architecture uses when the recipe does not set one.

No pretrained weights are published for these names: ``pretrained=True`` fails; a local file holding this backbone's
own state dict (e.g. from a lit_vision checkpoint's ``backbone.`` entries) loads strictly.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from lit_vision.layers import SPPF, C2f, conv_bn_silu

from .base import Backbone, resolve_out_indices
from .weights import check_state_dict, load_weight_file

__all__ = ["SCALES", "CSPC2fBackbone", "CSPScale", "build_csp_c2f_backbone", "csp_c2f_names"]


@dataclass(frozen=True)
class CSPScale:
    """YOLOv8's compound scaling: depth and width multiples, and the width cap."""

    depth: float
    width: float
    max_channels: int

    def channels(self, c: int) -> int:
        return int(math.ceil(min(c, self.max_channels) * self.width / 8) * 8)

    def repeats(self, n: int) -> int:
        return max(round(n * self.depth), 1)


SCALES: dict[str, CSPScale] = {
    "n": CSPScale(0.33, 0.25, 1024),
    "s": CSPScale(0.33, 0.50, 1024),
    "m": CSPScale(0.67, 0.75, 768),
    "l": CSPScale(1.00, 1.00, 512),
    "x": CSPScale(1.00, 1.25, 512),
}
_WIDTHS = (64, 128, 256, 512, 1024)
_DEPTHS = (3, 6, 6, 3)
_NECK_WIDTHS, _NECK_DEPTH = (256, 512, 1024), 3


def csp_c2f_names() -> tuple[str, ...]:
    """The registry's architecture names (without the ``lv/`` source)."""
    return tuple(f"csp_c2f_{s}" for s in SCALES)


class CSPC2fBackbone(Backbone):
    """The five stages above; returns the maps of ``out_indices`` (default all: strides 2, 4, 8, 16, 32).

    Attributes:
        neck_channels, neck_depth: the YOLOv8 PAN of this scale (n: 64/128/256 and 1 bottleneck per C2f).
    """

    def __init__(self, scale: str, out_indices: Sequence[int] | None = None, in_channels: int = 3) -> None:
        if scale not in SCALES:
            raise ValueError(f"unknown CSP-C2f scale {scale!r}; one of {list(SCALES)}")
        sc = SCALES[scale]
        widths = [sc.channels(c) for c in _WIDTHS]
        name = f"lv/csp_c2f_{scale}"
        idx = resolve_out_indices(out_indices, len(widths), name)
        super().__init__(name, [widths[i] for i in idx], [2 ** (i + 1) for i in idx], idx)
        stages: list[nn.Module] = [conv_bn_silu(in_channels, widths[0], 3, stride=2)]
        for k, (c_in, c_out, n) in enumerate(zip(widths, widths[1:], _DEPTHS), start=1):
            layers = [conv_bn_silu(c_in, c_out, 3, stride=2), C2f(c_out, c_out, sc.repeats(n), shortcut=True)]
            if k == len(_DEPTHS):
                layers.append(SPPF(c_out, c_out, 5))
            stages.append(nn.Sequential(*layers))
        # Only the stages up to the deepest one returned are built (a detector asking for strides 8-32 needs all).
        self.stages = nn.ModuleList(stages[: max(idx) + 1])
        self.num_stages = len(widths)
        # Every module (BatchNorms included: freezing converts them by name) mapped to its stage.
        self.module_stages = {f"stages.{k}" + (f".{n}" if n else ""): k
                              for k, stage in enumerate(self.stages) for n, _ in stage.named_modules()}
        self.neck_channels = [sc.channels(c) for c in _NECK_WIDTHS]
        self.neck_depth = sc.repeats(_NECK_DEPTH)

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for k, stage in enumerate(self.stages):
            x = stage(x)
            if k in self.out_indices:
                out.append(x)
        return out


def build_csp_c2f_backbone(arch: str, pretrained: bool | str | os.PathLike | Mapping[str, Any],
                           out_indices: Sequence[int] | None = None, output_stride: int | None = None,
                           **kwargs: Any) -> CSPC2fBackbone:
    """Build ``lv/csp_c2f_<scale>``; ``pretrained`` may only be False or a local file / state dict of this backbone."""
    name = f"lv/{arch}"
    if output_stride is not None:
        raise ValueError(f"{name} cannot be dilated (output_stride={output_stride}); it is a detection backbone "
                         "with its natural strides 2-32")
    if pretrained is True:
        raise ValueError(f"no published pretrained weights exist for {name}: train from scratch (pretrained=False) "
                         "or pass a local file holding this backbone's state dict")
    backbone = CSPC2fBackbone(arch.removeprefix("csp_c2f_"), out_indices, **kwargs)
    if pretrained is not False and pretrained is not None:
        state = load_weight_file(pretrained)
        if all(k.startswith("backbone.") for k in state):
            state = {k[len("backbone."):]: v for k, v in state.items()}
        needed = {k: v.shape for k, v in backbone.state_dict().items()}
        # A file of the full backbone loads into one built for fewer stages: the deeper stages are dropped.
        full = {k: v.shape for k, v in CSPC2fBackbone(backbone.name[len("lv/csp_c2f_"):], **kwargs).state_dict().items()}
        check_state_dict(state, needed, full, source=pretrained, arch=name)
        backbone.load_state_dict({k: state[k] for k in needed if k in state}, strict=False)
    return backbone
