"""RetinaNet (Lin et al., 2017): torchvision's model on any registry backbone, with a configurable focal loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision.models.detection import RetinaNet as TorchvisionRetinaNet

from lit_vision.backbones import Backbone
from lit_vision.heads.detection import FocalRetinaNetHead
from lit_vision.models.detection.base import Detector
from lit_vision.models.detection.torchvision_base import AnchorBasedArchitecture


class RetinaNet(AnchorBasedArchitecture):
    """FPN + P6/P7, anchor boxes, classification head trained with the focal loss, box regression head.

    Defaults are torchvision's ``retinanet_resnet50_fpn`` (v1): the FPN over the last three stages (P3-P5) with
    P6/P7 computed from P5, anchors 32 .. 512 x 3 scales (truncated to integers) x 3 ratios, up to 300
    detections per image.

    Args:
        focal_alpha, focal_gamma: the focal loss of the default head (torchvision fixes 0.25 and 2).
        head: ``(in_channels, num_anchors, num_classes) -> module`` with torchvision's ``RetinaNetHead``
            interface (default :class:`~lit_vision.heads.detection.FocalRetinaNetHead`).
        **kwargs: anchors, FPN width, resizing, post-processing: see
            :class:`~lit_vision.models.detection.torchvision_base.AnchorBasedArchitecture`.
    """

    name = "retinanet"

    def __init__(
        self,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        head: Callable[[int, int, int], nn.Module] | None = None,
        detections_per_img: int = 300,
        **kwargs: Any,
    ) -> None:
        super().__init__(detections_per_img=detections_per_img, **kwargs)
        self.focal_alpha, self.focal_gamma, self.head = focal_alpha, focal_gamma, head

    def build(self, backbone: Backbone, num_classes: int, image_size: int | None = None) -> Detector:
        neck = self.neck(backbone)
        anchors = self.anchor_generator(neck.strides)
        per_location = anchors.num_anchors_per_location()[0]
        if self.head is not None:
            head = self.head(self.fpn_channels, per_location, num_classes)
        else:
            head = FocalRetinaNetHead(self.fpn_channels, per_location, num_classes, self.focal_alpha, self.focal_gamma)
        model = TorchvisionRetinaNet(neck, num_classes, anchor_generator=anchors, head=head,
                                     score_thresh=self.score_thresh, nms_thresh=self.nms_thresh,
                                     detections_per_img=self.detections_per_img,
                                     **self.common_kwargs(image_size, backbone))
        return Detector(model, self.name, num_classes, class_dependent=("head.classification_head.cls_logits",),
                        float_outputs=("head",))
