"""FCOS (Tian et al., 2019): torchvision's anchor-free detector on any registry backbone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision.models.detection import FCOS as TorchvisionFCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator

from lit_vision.backbones import Backbone
from lit_vision.models.detection.base import Detector
from lit_vision.models.detection.torchvision_base import TorchvisionDetectorArchitecture


class FCOS(TorchvisionDetectorArchitecture):
    """FPN + P6/P7, one stride-sized point per location (as torchvision's FCOS expects), centerness branch.

    Post-processing defaults are torchvision's ``fcos_resnet50_fpn``: score threshold 0.2, NMS at 0.6.

    Args:
        head: ``(in_channels, num_anchors, num_classes) -> module`` with torchvision's ``FCOSHead`` interface
            (default ``FCOSHead``: four GroupNorm(32) convs per branch, so ``fpn_channels`` must be a
            multiple of 32; with exactly 32, a lone image whose coarsest level is 1x1 cannot be normalised).
        **kwargs: FPN width, resizing, post-processing: see
            :class:`~lit_vision.models.detection.torchvision_base.TorchvisionDetectorArchitecture`.
    """

    name = "fcos"

    def __init__(self, head: Callable[[int, int, int], nn.Module] | None = None, score_thresh: float = 0.2,
                 nms_thresh: float = 0.6, **kwargs: Any) -> None:
        super().__init__(score_thresh=score_thresh, nms_thresh=nms_thresh, **kwargs)
        if head is None and self.fpn_channels % 32:
            raise ValueError("FCOS's head uses GroupNorm(32, fpn_channels): fpn_channels must be a multiple of 32, "
                             f"got {self.fpn_channels}")
        self.head = head

    def build(self, backbone: Backbone, num_classes: int, image_size: int | None = None) -> Detector:
        neck = self.neck(backbone)
        anchors = AnchorGenerator(tuple((float(s),) for s in neck.strides), ((1.0,),) * len(neck.strides))
        extra = {"head": self.head(self.fpn_channels, 1, num_classes)} if self.head is not None else {}
        model = TorchvisionFCOS(neck, num_classes, anchor_generator=anchors, score_thresh=self.score_thresh,
                                nms_thresh=self.nms_thresh, detections_per_img=self.detections_per_img, **extra,
                                **self.common_kwargs(image_size, backbone))
        return Detector(model, self.name, num_classes, class_dependent=("head.classification_head.cls_logits",),
                        float_outputs=("head",))
