"""The YOLOv8-style loss: BCE classification, CIoU box and distribution focal loss on assigned points.

Neither torchvision nor timm provides distribution focal loss, so it is written here from the paper:

* **Assignment**: an injectable assigner, by default the :class:`~lit_vision.heads.detection.assigner.
  TaskAlignedAssigner`.
* **Distribution focal loss** (Generalized Focal Loss, Li et al. 2020): each side's distance (in stride
  units) is a discrete distribution over ``0..reg_max-1``; the loss is the cross-entropy towards the two
  bins bracketing the true distance, weighted by proximity, so the expectation can hit any real value.
* Box loss: ``1 - CIoU`` (``torchvision.ops.complete_box_iou_loss``), weighted by the soft targets.

"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import complete_box_iou_loss

from lit_vision.heads.detection.assigner import TaskAlignedAssigner, pad_targets


def bbox_to_distances(points: Tensor, boxes: Tensor, strides: Tensor, reg_max: int) -> Tensor:
    """``[N, 4]`` left/top/right/bottom distances in stride units, clipped to the DFL support."""
    ltrb = torch.cat([points - boxes[:, :2], boxes[:, 2:] - points], dim=-1) / strides.unsqueeze(-1)
    return ltrb.clamp(0, reg_max - 1 - 0.01)


def distribution_focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """DFL per box: ``logits [N, 4, R]``, ``target [N, 4]`` real distances in ``[0, R-1)``; returns ``[N]``."""
    left = target.floor().long()
    right = left + 1
    w_left = right.float() - target
    w_right = 1.0 - w_left
    r = logits.shape[-1]
    flat = logits.reshape(-1, r)
    loss = (F.cross_entropy(flat, left.reshape(-1), reduction="none") * w_left.reshape(-1)
            + F.cross_entropy(flat, right.reshape(-1).clamp(max=r - 1), reduction="none") * w_right.reshape(-1))
    return loss.view(target.shape).mean(-1)


class YOLOLoss(nn.Module):
    """Classification (BCE on soft targets) + box (1 - CIoU) + DFL, each normalised by the soft-target sum.

    Args:
        num_classes, reg_max: as in the head.
        box_gain, cls_gain, dfl_gain: weights of the three terms (YOLOv8: 7.5, 0.5, 1.5); the logged loss
            terms are already weighted, so their sum is what is optimised.
        assigner: which points learn which box (default: :class:`TaskAlignedAssigner` with YOLOv8's
            ``top_k=10, alpha=0.5, beta=6.0``); any module with its call signature.
    """

    def __init__(self, num_classes: int, reg_max: int = 16, box_gain: float = 7.5, cls_gain: float = 0.5,
                 dfl_gain: float = 1.5, assigner: nn.Module | None = None) -> None:
        super().__init__()
        self.num_classes, self.reg_max = num_classes, reg_max
        self.box_gain, self.cls_gain, self.dfl_gain = box_gain, cls_gain, dfl_gain
        self.assigner = assigner if assigner is not None else TaskAlignedAssigner()

    def forward(self, cls_logits: Tensor, box_logits: Tensor, pred_boxes: Tensor, points: Tensor, strides: Tensor,
                targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """``cls_logits [B, A, C]``, ``box_logits [B, A, 4, R]``, ``pred_boxes [B, A, 4]`` (pixels),
        ``points [A, 2]``, ``strides [A]``; returns ``{"loss_cls", "loss_box", "loss_dfl"}``."""
        cls_logits, box_logits, pred_boxes = cls_logits.float(), box_logits.float(), pred_boxes.float()
        gt_boxes, gt_labels, gt_valid = pad_targets(targets, cls_logits.device)
        _, boxes, soft, fg = self.assigner(cls_logits.detach().sigmoid(), pred_boxes.detach(), points, gt_boxes,
                                           gt_labels, gt_valid)
        normaliser = soft.sum().clamp(min=1.0)
        loss_cls = F.binary_cross_entropy_with_logits(cls_logits, soft, reduction="sum") / normaliser
        if fg.any():
            weight = soft.sum(-1)[fg]
            a_idx = fg.nonzero(as_tuple=True)[1]
            loss_box = (complete_box_iou_loss(pred_boxes[fg], boxes[fg], reduction="none") * weight).sum() / normaliser
            distances = bbox_to_distances(points[a_idx], boxes[fg], strides[a_idx], self.reg_max)
            loss_dfl = (distribution_focal_loss(box_logits[fg], distances) * weight).sum() / normaliser
        else:  # no object in the batch: zero, but still attached to the graph (DDP needs every parameter used)
            loss_box = loss_dfl = box_logits.sum() * 0.0
        return {"loss_cls": loss_cls * self.cls_gain, "loss_box": loss_box * self.box_gain,
                "loss_dfl": loss_dfl * self.dfl_gain}


__all__ = ["YOLOLoss", "bbox_to_distances", "distribution_focal_loss"]
