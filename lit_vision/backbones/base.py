"""The contract every backbone honours, whatever library it comes from.

Heads never look inside a backbone: a classifier pools ``features[-1]``, a detector or
segmenter reads several maps and sizes its layers from ``channels`` and ``reductions``.
Keeping that contract in one base class is what lets recipes swap ``tv/resnet50`` for
``timm/convnext_tiny`` without touching head code.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["Backbone", "resolve_out_indices"]


class Backbone(nn.Module):
    """Feature extractor returning one map per selected stage, shallow to deep.

    Attributes:
        name: the registry name it was built from, e.g. ``"tv/resnet50"``.
        channels: channel count of each returned map.
        reductions: stride of each returned map relative to the input, e.g.
            ``[4, 8, 16, 32]``. A map of an ``H x W`` input is about ``H / r`` pixels tall;
            padding-free stems (AlexNet, Inception) give a bit less. Strictly increasing,
            except on a dilated backbone (``output_stride`` set), where they are
            non-decreasing and capped: the stages that would have gone deeper than
            ``output_stride`` stay at it (``[2, 4, 8, 8, 8]`` for a ResNet at 8), so
            heads must pick maps by position (``features[-2]``), not by stride.
        out_indices: which of the architecture's stages were selected (non-negative,
            ascending); ``channels``/``reductions`` describe exactly those maps.
        output_stride: ``None`` for the architecture's natural strides, else the cap
            (8 or 16) its last stages were dilated to, for dense prediction.
        module_stages: module name (relative to the backbone) -> the architecture's stage it
            belongs to (0 = the first stage, stem included), set by the builders; what
            :meth:`freeze` and layer-wise learning-rate decay read. Empty when unknown.
        frozen_stages: how many leading stages :meth:`freeze` froze (``num_stages`` = all).
    """

    module_stages: dict[str, int]
    frozen_stages: int = 0

    name: str
    channels: list[int]
    reductions: list[int]
    out_indices: tuple[int, ...]
    output_stride: int | None

    def __init__(
        self,
        name: str,
        channels: Sequence[int],
        reductions: Sequence[int],
        out_indices: Sequence[int],
        output_stride: int | None = None,
    ) -> None:
        super().__init__()
        channels, reductions = [int(c) for c in channels], [int(r) for r in reductions]
        if not channels or len(channels) != len(reductions) or len(channels) != len(out_indices):
            raise ValueError(
                f"{name}: channels {channels}, reductions {reductions} and out_indices "
                f"{list(out_indices)} must be non-empty and of equal length"
            )
        if output_stride is not None:
            # Dilated stages keep the stride they are capped at; nothing else may repeat.
            bad = any(b < a or (b == a and b != output_stride) for a, b in zip(reductions, reductions[1:]))
            if bad or max(reductions) > output_stride:
                raise ValueError(
                    f"{name}: reductions {reductions} are not those of a backbone dilated to "
                    f"output_stride={output_stride} (non-decreasing, repeats only at {output_stride})"
                )
        elif any(b <= a for a, b in zip(reductions, reductions[1:])):
            raise ValueError(
                f"{name}: reductions {reductions} are not strictly increasing; this architecture "
                "has several maps at one resolution (e.g. a plain ViT), so select one map per "
                "resolution with out_indices, e.g. out_indices=[-1]"
            )
        self.name = name
        self.channels = channels
        self.reductions = reductions
        self.out_indices = tuple(int(i) for i in out_indices)
        self.output_stride = output_stride
        self.module_stages = {}
        self.num_stages = max(self.out_indices) + 1  # builders that know deeper stages set the full count

    def freeze(self, stages: int | None = None) -> None:
        """Freeze the first ``stages`` stages (``None``: the whole backbone): gradients off *and* their
        BatchNorm layers made ``FrozenBatchNorm2d``, so their statistics stay put in train mode too.

        ``stages`` counts the architecture's stages as :attr:`module_stages` does (for a ResNet: 0 stem, 1
        ``layer1`` ... 4 ``layer4``, so torchvision's ``trainable_backbone_layers=3`` is ``stages=2``).
        """
        from .freeze import freeze_stages

        if stages is not None:
            if isinstance(stages, bool) or not 0 <= stages <= self.num_stages:
                raise ValueError(f"{self.name}: frozen_stages must be 0..{self.num_stages} (its stages), got {stages!r}")
            if stages == self.num_stages:
                stages = None
            elif stages and not self.module_stages:
                raise ValueError(f"{self.name}: which layers form each stage is not known for this architecture; "
                                 "freeze the whole backbone (freeze_backbone=True) instead")
        if stages == 0:
            return
        freeze_stages(self, self.module_stages, stages)
        self.frozen_stages = self.num_stages if stages is None else stages

    @property
    def num_features(self) -> int:
        """Channels of the last map: what a classification head pools."""
        return self.channels[-1]

    def forward(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        extra = f", output_stride={self.output_stride}" if self.output_stride else ""
        return f"name={self.name!r}, channels={self.channels}, reductions={self.reductions}{extra}"


def resolve_out_indices(out_indices: Sequence[int] | None, num_stages: int, name: str) -> list[int]:
    """Map timm-style indices (negative allowed, ``None`` = all) to sorted non-negative ones.

    Sorting is deliberate: maps always come back shallow to deep, so ``[-1, 0]`` and
    ``[0, -1]`` select the same two maps in the same order.
    """
    if out_indices is None:
        return list(range(num_stages))
    if not isinstance(out_indices, Sequence):
        out_indices = [out_indices]  # a bare int
    resolved = []
    for i in out_indices:
        if isinstance(i, bool):
            raise TypeError(f"{name}: out_indices must be integers, got {out_indices!r}")
        try:
            i = operator.index(i)  # accepts numpy integers, rejects floats and strings
        except TypeError:
            raise TypeError(f"{name}: out_indices must be integers, got {out_indices!r}") from None
        if not -num_stages <= i < num_stages:
            raise IndexError(
                f"{name}: out_index {i} is out of range; this backbone has {num_stages} stages "
                f"(valid: {-num_stages}..{num_stages - 1})"
            )
        resolved.append(i % num_stages)
    if not resolved:
        raise ValueError(f"{name}: out_indices is empty; pass None for all stages")
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"{name}: out_indices {list(out_indices)} select a stage twice")
    return sorted(resolved)
