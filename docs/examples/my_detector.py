"""A detector of your own, defined outside lit_vision and trained through ``lit-vision``.

``LiteYOLO`` is the YOLO-style detector with two parts swapped: a plain FPN top-down neck
(:class:`TopDownNeck`) instead of the PAN, and one head shared by every pyramid level
(:class:`SharedHead`) instead of one head per level. Everything else is reused from lit_vision: the
backbone registry, the detector module that batches, decodes and runs NMS (``YOLODetector``) and the loss
with its task-aligned assigner (``YOLOLoss``). That is the honest way to try an idea: change the part the
idea is about and keep the parts that are already tested.

How it plugs in (see docs/architecture.md, "A detector and a segmenter of your own"):

* ``LiteYOLO`` subclasses :class:`~lit_vision.models.detection.DetectorArchitecture`. Its typed constructor
  arguments become ``--model.architecture.<option>`` flags and YAML keys; ``name`` registers it as a
  choice (the short name works from Python once this module is imported; from the command line give the
  class, ``my_detector.LiteYOLO``).
* ``build(backbone, num_classes, image_size)`` returns an ``nn.Module`` with the detector contract:
  ``forward(images, targets)`` takes a list of float images in ``[0, 1]``; in training it returns a dict of
  loss terms (each is logged as ``train/<term>``, their sum is optimised), in evaluation a list of
  ``{"boxes" (XYXY pixels of the given image), "labels" (0..K-1), "scores"}``.

Run it on the embedded shapes (from the repository root)::

    PYTHONPATH=docs/examples lit-vision fit --config experiments/detection/quickstart.yaml \\
        --model.architecture my_detector.LiteYOLO --model.architecture.neck_channels 64
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_vision.backbones import Backbone
from lit_vision.heads.detection import YOLOLoss
from lit_vision.layers import conv_bn_silu
from lit_vision.models.detection import DetectorArchitecture, YOLODetector


class TopDownNeck(nn.Module):
    """The FPN top-down path (Lin et al., 2017) on conv-BN-SiLU units: no bottom-up path, one width for all levels.

    Each map gets a 1x1 lateral projection, the coarser result is upsampled (nearest) and added, and a 3x3
    unit smooths the sum. One width everywhere is what lets :class:`SharedHead` use the same weights on
    every level. The constructor's first argument is the backbone's channel list, so this class also fits
    the built-in YOLO's ``neck`` factory (``--model.architecture.neck my_detector.TopDownNeck``).

    Args:
        in_channels: channels of the backbone maps, fine to coarse.
        channels: width of every output map.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 64) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn_silu(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(conv_bn_silu(channels, channels, 3) for _ in in_channels)
        self.out_channels = [channels] * len(in_channels)  # what a head is sized from

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        maps = [lateral(f) for lateral, f in zip(self.lateral, feats)]
        for i in range(len(maps) - 2, -1, -1):  # coarse to fine
            maps[i] = maps[i] + F.interpolate(maps[i + 1], size=maps[i].shape[-2:], mode="nearest")
        return [smooth(m) for smooth, m in zip(self.smooth, maps)]


class SharedHead(nn.Module):
    """One box branch and one class branch applied to every level (as RetinaNet and FCOS share theirs).

    Sharing is sound here because the box coding is scale-free: each cell predicts its distances to the box
    sides in units of its level's stride, so one set of weights means the same thing at every level.
    ``YOLODetector`` reads ``num_classes`` and ``reg_max`` from the head.

    Args:
        in_channels: channels of the neck's maps (all equal).
        num_classes: object classes.
        reg_max: bins of each side's distance distribution (see ``lit_vision.heads.detection.yolo``).
        prior: initial foreground probability of the class logits (RetinaNet's 0.01), so the first losses
            are not dominated by the many background cells.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, reg_max: int = 16, prior: float = 0.01) -> None:
        super().__init__()
        if len(set(in_channels)) != 1:
            raise ValueError(f"a head shared by all levels needs maps of one width, got {list(in_channels)}")
        c = in_channels[0]
        self.num_classes, self.reg_max = num_classes, reg_max
        self.box = nn.Sequential(conv_bn_silu(c, c, 3), conv_bn_silu(c, c, 3), nn.Conv2d(c, 4 * reg_max, 1))
        self.cls = nn.Sequential(conv_bn_silu(c, c, 3), conv_bn_silu(c, c, 3), nn.Conv2d(c, num_classes, 1))
        nn.init.constant_(self.box[-1].bias, 1.0)
        nn.init.constant_(self.cls[-1].bias, -math.log((1 - prior) / prior))

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: box logits ``[B, 4 * reg_max, H, W]`` and class logits ``[B, K, H, W]``."""
        return [self.box(f) for f in feats], [self.cls(f) for f in feats]


class LiteYOLO(DetectorArchitecture):
    """YOLO-style detector with an FPN top-down neck and a head shared across levels.

    Args:
        neck_channels: width of the neck and of the shared head.
        reg_max: bins of each side's distance distribution.
        box_gain: weight of the box term (1 - CIoU); YOLOv8's by default.
        cls_gain: weight of the classification term (BCE on the assigner's soft targets).
        dfl_gain: weight of the distribution focal loss.
        **kwargs: ``backbone_out_indices`` (three stages whose strides double, default the last three),
            ``score_thresh``, ``nms_thresh``, ``detections_per_img``: see ``DetectorArchitecture``.
    """

    name = "lite_yolo"

    def __init__(
        self,
        neck_channels: int = 64,
        reg_max: int = 16,
        box_gain: float = 7.5,
        cls_gain: float = 0.5,
        dfl_gain: float = 1.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Options are kept as attributes: the task saves them in the checkpoint as {class_path, init_args}.
        self.neck_channels, self.reg_max = neck_channels, reg_max
        self.box_gain, self.cls_gain, self.dfl_gain = box_gain, cls_gain, dfl_gain

    def build(self, backbone: Backbone, num_classes: int, image_size: int | None = None) -> YOLODetector:
        """``backbone`` was created with ``out_indices=self.backbone_out_indices`` (three maps)."""
        neck = TopDownNeck(backbone.channels, self.neck_channels)
        head = SharedHead(neck.out_channels, num_classes, self.reg_max)
        loss = YOLOLoss(num_classes, self.reg_max, self.box_gain, self.cls_gain, self.dfl_gain)
        return YOLODetector(backbone, neck, head, loss, self.score_thresh, self.nms_thresh, self.detections_per_img)


if __name__ == "__main__":  # a quick check of the contract without the CLI: one training step, one prediction
    from lit_vision.models.detection import build_detector

    torch.manual_seed(0)
    model = build_detector(LiteYOLO(neck_channels=32), "tv/resnet18", num_classes=3)
    images = [torch.rand(3, 96, 128), torch.rand(3, 128, 96)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    losses = model(images, targets)
    sum(losses.values()).backward()
    print({k: round(v.item(), 4) for k, v in losses.items()})
    model.eval()
    with torch.no_grad():
        print([{k: tuple(v.shape) for k, v in p.items()} for p in model(images)])
