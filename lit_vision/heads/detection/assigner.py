"""Task-aligned assignment (TOOD, Feng et al. 2021), as the YOLOv8-style loss uses it.

Neither torchvision nor timm provides one, so it is written here from the paper's description: for every
ground-truth box, the candidate anchor points are those whose centre lies inside the box; each gets the
alignment ``t = s^alpha * IoU^beta`` (``s`` = predicted score of the box's class, ``IoU`` = predicted box vs
the ground truth); the ``top_k`` candidates by ``t`` become positives. A point claimed by several boxes keeps
the one it overlaps most. Classification targets are soft: per box, ``t`` is rescaled so that its largest
value equals the largest IoU among that box's positives. Batched: ground truths are padded to the batch's
largest count with a validity mask (:func:`pad_targets`); no step loops over images or boxes in Python.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pad_targets(targets: list[dict[str, Tensor]], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-image ``boxes``/``labels`` into ``[B, M]``-padded ``[B, M, 4]`` / ``[B, M]`` plus a validity mask.

    One concatenation and one indexed write for the whole batch (no per-image copies to the device): each box's
    slot is its image and its rank within that image.
    """
    b = len(targets)
    counts = torch.tensor([len(t["labels"]) for t in targets], dtype=torch.long)
    m = int(counts.max()) if b else 0
    boxes = torch.zeros(b, m, 4, device=device)
    labels = torch.zeros(b, m, dtype=torch.long, device=device)
    valid = torch.zeros(b, m, dtype=torch.bool, device=device)
    total = int(counts.sum())
    if total:
        image = torch.repeat_interleave(torch.arange(b), counts)
        rank = torch.arange(total) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        image, rank = image.to(device), rank.to(device)
        boxes[image, rank] = torch.cat([t["boxes"].reshape(-1, 4) for t in targets]).to(device).float()
        labels[image, rank] = torch.cat([t["labels"].reshape(-1) for t in targets]).to(device).long()
        valid[image, rank] = True
    return boxes, labels, valid


def batched_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every pair within each batch item: ``[B, M, 4]`` x ``[B, N, 4]`` (XYXY) -> ``[B, M, N]``.

    ``torchvision.ops.box_iou`` takes one image's boxes; this is its batched form with the same arithmetic
    (``inter / union``, no epsilon), so the whole batch is one kernel instead of a Python loop over images.
    """
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    lt = torch.maximum(boxes1[:, :, None, :2], boxes2[:, None, :, :2])
    rb = torch.minimum(boxes1[:, :, None, 2:], boxes2[:, None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, :, None] + area2[:, None, :] - inter)


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

        # Only candidates' overlaps count (as in YOLOv8): a padded slot (zeros) against a zero-area predicted box
        # is 0/0, and one NaN would spread through the amax below to every anchor of its image.
        ious = torch.where(candidates, batched_box_iou(gt_boxes, pred_boxes).clamp(min=0), 0.0)  # [B, M, A]
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


__all__ = ["TaskAlignedAssigner", "batched_box_iou", "pad_targets"]
