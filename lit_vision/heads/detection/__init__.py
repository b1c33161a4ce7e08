"""Detection heads and what trains them: the YOLO-style decoupled head, its assigner and loss; RetinaNet's focal head."""

from lit_vision.heads.detection.assigner import TaskAlignedAssigner, pad_targets
from lit_vision.heads.detection.retinanet import (
           FocalRetinaNetClassificationHead,
           FocalRetinaNetHead,
)
from lit_vision.heads.detection.yolo import DecoupledHead, decode_boxes, make_points
from lit_vision.heads.detection.yolo_loss import (
           YOLOLoss,
           bbox_to_distances,
           distribution_focal_loss,
)

__all__ = ["DecoupledHead", "FocalRetinaNetClassificationHead", "FocalRetinaNetHead", "TaskAlignedAssigner",
           "YOLOLoss", "bbox_to_distances", "decode_boxes", "distribution_focal_loss", "make_points", "pad_targets"]
