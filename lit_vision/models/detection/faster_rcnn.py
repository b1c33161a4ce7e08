"""Faster R-CNN (Ren et al., 2015) with an FPN: torchvision's model on any registry backbone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from lit_vision.backbones import Backbone
from lit_vision.models.detection.base import Detector
from lit_vision.models.detection.torchvision_base import AnchorBasedArchitecture


class FasterRCNN(AnchorBasedArchitecture):
    """FPN + max-pooled extra level, RPN, RoIAlign (7x7) box head; labels shifted past background inside.

    Defaults are torchvision's ``fasterrcnn_resnet50_fpn``: the FPN over the last four stages (P2-P5, + P6 by
    max-pooling; P2 is the level that carries small objects), one anchor size per level (32 .. 512) x 3 ratios.

    Args:
        backbone_out_indices: backbone stages feeding the FPN (default the last four).
        rpn_head: ``(in_channels, num_anchors) -> module`` (default torchvision's ``RPNHead``).
        box_predictor: ``(representation size, num_classes + 1) -> module`` (default torchvision's
            ``FastRCNNPredictor``).
        **kwargs: anchors, FPN width, resizing, ``torchvision_kwargs`` (e.g. ``rpn_batch_size_per_image``),
            post-processing: see :class:`~lit_vision.models.detection.torchvision_base.AnchorBasedArchitecture`.
    """

    name = "faster_rcnn"
    extra_levels = "maxpool"
    anchor_factor = 8
    default_scales_per_octave = 1

    def __init__(
        self,
        rpn_head: Callable[[int, int], nn.Module] | None = None,
        box_predictor: Callable[[int, int], nn.Module] | None = None,
        backbone_out_indices: Sequence[int] = (-4, -3, -2, -1),
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone_out_indices=backbone_out_indices, **kwargs)
        self.rpn_head, self.box_predictor = rpn_head, box_predictor

    def build(self, backbone: Backbone, num_classes: int, image_size: int | None = None) -> Detector:
        neck = self.neck(backbone)
        anchors = self.anchor_generator(neck.strides)
        per_location = anchors.num_anchors_per_location()[0]
        make_rpn_head = self.rpn_head or RPNHead
        extra: dict[str, Any] = {}
        if self.box_predictor is not None:  # torchvision's TwoMLPHead has 1024 outputs
            extra["box_predictor"] = self.box_predictor(1024, num_classes + 1)
        model = TorchvisionFasterRCNN(
            neck, None if extra else num_classes + 1, rpn_anchor_generator=anchors,
            rpn_head=make_rpn_head(self.fpn_channels, per_location),
            box_roi_pool=MultiScaleRoIAlign(featmap_names=neck.feature_names, output_size=7, sampling_ratio=2),
            box_score_thresh=self.score_thresh, box_nms_thresh=self.nms_thresh,
            box_detections_per_img=self.detections_per_img, **extra, **self.common_kwargs(image_size, backbone))
        return Detector(model, self.name, num_classes, label_offset=1, class_dependent=("roi_heads.box_predictor",),
                        float_outputs=("rpn.head", "roi_heads.box_predictor"))
