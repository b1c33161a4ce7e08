"""Task-aligned assignment (TOOD, Feng et al. 2021), as the YOLOv8-style loss uses it.

Neither torchvision nor timm provides one, so it is written here from the paper's description: for every
ground-truth box, the candidate anchor points are those whose centre lies inside the box; each gets the
alignment ``t = s^alpha * IoU^beta`` (``s`` = predicted score of the box's class, ``IoU`` = predicted box vs
the ground truth); the ``top_k`` candidates by ``t`` become positives. A point claimed by several boxes keeps
the one it overlaps most. Classification targets are soft: per box, ``t`` is rescaled so that its largest
value equals the largest IoU among that box's positives. Batched: ground truths are padded to the batch's
largest count with a validity mask (:func:`pad_targets`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou


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


__all__ = ["TaskAlignedAssigner", "pad_targets"]
