"""Task-aligned assignment and the YOLOv8-style loss (BCE classification, CIoU box, distribution focal loss).

Neither torchvision nor timm provides a task-aligned assigner or distribution focal loss, so both are
written here from the papers' descriptions:

* **Task-aligned assignment** (TOOD, Feng et al. 2021): for every ground-truth box, the candidate anchor
  points are those whose centre lies inside the box; each gets the alignment ``t = s^alpha * IoU^beta``
  (``s`` = predicted score of the box's class, ``IoU`` = predicted box vs the ground truth); the ``top_k``
  candidates by ``t`` become positives. A point claimed by several boxes keeps the one it overlaps most.
  Classification targets are soft: per box, ``t`` is rescaled so that its largest value equals the
  largest IoU among that box's positives.
* **Distribution focal loss** (Generalized Focal Loss, Li et al. 2020): each side's distance (in stride
  units) is a discrete distribution over ``0..reg_max-1``; the loss is the cross-entropy towards the two
  bins bracketing the true distance, weighted by proximity, so the expectation can hit any real value.
* Box loss: ``1 - CIoU`` (``torchvision.ops.complete_box_iou_loss``), weighted by the soft targets.

Everything is batched: ground truths are padded to the batch's largest count with a validity mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou, complete_box_iou_loss


def pad_targets(targets: list[dict[str, Tensor]], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-image ``boxes``/``labels`` into ``[B, M, 4]`` / ``[B, M]`` plus a ``[B, M]`` validity mask."""
    m = max((len(t["labels"]) for t in targets), default=0)
    b = len(targets)
    boxes = torch.zeros(b, m, 4, device=device)
    labels = torch.zeros(b, m, dtype=torch.long, device=device)
    valid = torch.zeros(b, m, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t["labels"])
        if n:
            boxes[i, :n] = t["boxes"].to(device).float().reshape(-1, 4)
            labels[i, :n] = t["labels"].to(device).long()
            valid[i, :n] = True
    return boxes, labels, valid


class TaskAlignedAssigner(nn.Module):
    """Assigns anchor points to ground-truth boxes by ``score^alpha * IoU^beta`` (see the module docstring).

    Args:
        top_k: positives per ground-truth box (YOLOv8: 10).
        alpha, beta: exponents of the classification score and the IoU (YOLOv8: 0.5 and 6.0).
        eps: numerical floor.
    """

    def __init__(self, top_k: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9) -> None:
        super().__init__()
        self.top_k, self.alpha, self.beta, self.eps = top_k, alpha, beta, eps

    @torch.no_grad()
    def forward(self, scores: Tensor, pred_boxes: Tensor, points: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                gt_valid: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Assign.

        Args:
            scores: ``[B, A, C]`` predicted class probabilities (after sigmoid).
            pred_boxes: ``[B, A, 4]`` decoded XYXY boxes in pixels.
            points: ``[A, 2]`` anchor-point centres in pixels.
            gt_boxes, gt_labels, gt_valid: ``[B, M, 4]``, ``[B, M]``, ``[B, M]`` (see :func:`pad_targets`).

        Returns:
            ``labels [B, A]``, ``boxes [B, A, 4]``, ``soft scores [B, A, C]`` (zero off the foreground) and the
            foreground mask ``[B, A]``.
        """
        b, a, c = scores.shape
        m = gt_boxes.shape[1]
        if m == 0:
            return (torch.zeros(b, a, dtype=torch.long, device=scores.device), torch.zeros_like(pred_boxes),
                    torch.zeros_like(scores), torch.zeros(b, a, dtype=torch.bool, device=scores.device))
        # Candidates: anchor centres strictly inside the ground-truth box.
        x, y = points[:, 0].view(1, 1, a), points[:, 1].view(1, 1, a)
        x0, y0, x1, y1 = (gt_boxes[..., k].unsqueeze(-1) for k in range(4))
        inside = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=-1).amin(-1) > self.eps  # [B, M, A]
        candidates = inside & gt_valid.unsqueeze(-1)

        ious = torch.stack([box_iou(g, p) for g, p in zip(gt_boxes, pred_boxes)]).clamp(min=0)  # [B, M, A]
        class_scores = scores.gather(2, gt_labels.unsqueeze(1).expand(b, a, m)).transpose(1, 2)  # [B, M, A]
        align = class_scores.pow(self.alpha) * ious.pow(self.beta) * candidates

        k = min(self.top_k, a)
        # Candidates rank above every non-candidate even when their alignment underflows to 0.
        top = torch.where(candidates, align, -1.0).topk(k, dim=-1).indices
        positive = torch.zeros_like(candidates).scatter_(-1, top, True) & candidates  # [B, M, A]
        # A point claimed by several boxes keeps the one it overlaps most.
        multi = positive.sum(1, keepdim=True) > 1
        best = F.one_hot((ious * candidates).argmax(1), m).transpose(1, 2).bool()  # [B, M, A]
        positive = torch.where(multi, best & candidates, positive)

        foreground = positive.any(1)  # [B, A]
        gt_index = positive.float().argmax(1)  # [B, A]
        labels = gt_labels.gather(1, gt_index)
        boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(b, a, 4))

        align = align * positive
        max_align = align.amax(-1, keepdim=True)
        max_iou = (ious * positive).amax(-1, keepdim=True)
        norm = (align * max_iou / (max_align + self.eps)).amax(1)  # [B, A]
        soft = F.one_hot(labels, c).float() * (norm * foreground).unsqueeze(-1)
        return labels, boxes, soft, foreground


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
        top_k, alpha, beta: the :class:`TaskAlignedAssigner`'s.
    """

    def __init__(self, num_classes: int, reg_max: int = 16, box_gain: float = 7.5, cls_gain: float = 0.5,
                 dfl_gain: float = 1.5, top_k: int = 10, alpha: float = 0.5, beta: float = 6.0) -> None:
        super().__init__()
        self.num_classes, self.reg_max = num_classes, reg_max
        self.box_gain, self.cls_gain, self.dfl_gain = box_gain, cls_gain, dfl_gain
        self.assigner = TaskAlignedAssigner(top_k, alpha, beta)

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


__all__ = ["TaskAlignedAssigner", "YOLOLoss", "bbox_to_distances", "distribution_focal_loss", "pad_targets"]
