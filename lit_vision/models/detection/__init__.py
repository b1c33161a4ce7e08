"""Detector architectures: one class per file, registered by being defined (see :mod:`.base`).

    faster_rcnn.py   FasterRCNN   torchvision's, FPN + RPN + RoIAlign box head
    retinanet.py     RetinaNet    torchvision's, FPN + focal-loss head (alpha, gamma configurable)
    fcos.py          FCOS         torchvision's, anchor-free, FPN + centerness
    yolo.py          YOLO         ours: PAN neck, decoupled head, task-aligned DFL + CIoU loss

:func:`build_detector` is the one-call form (``build_detector("yolo", "tv/resnet18", 3, neck_channels=64)``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lit_vision.backbones import create_backbone
from lit_vision.models.detection.base import (
    Detector,
    DetectorArchitecture,
    anchors_per_level,
)
from lit_vision.models.detection.faster_rcnn import FasterRCNN
from lit_vision.models.detection.fcos import FCOS
from lit_vision.models.detection.retinanet import RetinaNet
from lit_vision.models.detection.yolo import YOLO, YOLODetector


def build_detector(
    architecture: DetectorArchitecture | str,
    backbone: str,
    num_classes: int,
    pretrained: bool | str = False,
    backbone_kwargs: dict[str, Any] | None = None,
    image_size: int | None = None,
    **options: Any,
) -> nn.Module:
    """Build a detector on a registry backbone.

    Args:
        architecture: a registered name (``"faster_rcnn"``, ``"retinanet"``, ``"fcos"``, ``"yolo"``, or one of
            your own) or an architecture object (then ``options`` must be empty).
        backbone: registry name, e.g. ``"tv/resnet50"``, ``"timm/efficientnet_b0"``.
        num_classes: object classes, without background (labels ``0..K-1``).
        pretrained, backbone_kwargs: see :func:`~lit_vision.backbones.create_backbone`.
        image_size: the longer side the data is resized to (see the architecture's docs).
        **options: the architecture's constructor arguments (e.g. ``fpn_channels``, ``anchor_sizes``).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    arch = DetectorArchitecture.with_options(architecture, options)
    body = create_backbone(backbone, pretrained=pretrained, out_indices=list(arch.backbone_out_indices),
                           **(backbone_kwargs or {}))
    return arch.build(body, num_classes, image_size)


__all__ = ["FCOS", "YOLO", "Detector", "DetectorArchitecture", "FasterRCNN", "RetinaNet", "YOLODetector",
           "anchors_per_level", "build_detector"]
