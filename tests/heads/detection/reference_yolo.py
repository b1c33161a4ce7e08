"""The YOLO assigner's target padding and the detector's post-processing as they were before issue 12 vectorised them
(commit 3b81c83: a Python loop over images in ``pad_targets``, one ``box_iou`` per image, one NMS per image), kept
verbatim as the reference the batched versions must reproduce."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms, box_iou


def pad_targets(targets: list[dict[str, Tensor]], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
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


def assign(scores: Tensor, pred_boxes: Tensor, points: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_valid: Tensor,
           top_k: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9) -> tuple[Tensor, ...]:
    b, a, c = scores.shape
    m = gt_boxes.shape[1]
    if m == 0:
        return (torch.zeros(b, a, dtype=torch.long), torch.zeros_like(pred_boxes), torch.zeros_like(scores),
                torch.zeros(b, a, dtype=torch.bool))
    x, y = points[:, 0].view(1, 1, a), points[:, 1].view(1, 1, a)
    x0, y0, x1, y1 = (gt_boxes[..., k].unsqueeze(-1) for k in range(4))
    inside = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=-1).amin(-1) > eps
    candidates = inside & gt_valid.unsqueeze(-1)
    ious = torch.stack([box_iou(g, p) for g, p in zip(gt_boxes, pred_boxes)]).clamp(min=0)
    class_scores = scores.gather(2, gt_labels.unsqueeze(1).expand(b, a, m)).transpose(1, 2)
    align = class_scores.pow(alpha) * ious.pow(beta) * candidates
    k = min(top_k, a)
    top = torch.where(candidates, align, -1.0).topk(k, dim=-1).indices
    positive = torch.zeros_like(candidates).scatter_(-1, top, True) & candidates
    multi = positive.sum(1, keepdim=True) > 1
    best = F.one_hot((ious * candidates).argmax(1), m).transpose(1, 2).bool()
    positive = torch.where(multi, best & candidates, positive)
    foreground = positive.any(1)
    gt_index = positive.float().argmax(1)
    labels = gt_labels.gather(1, gt_index)
    boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(b, a, 4))
    align = align * positive
    max_align = align.amax(-1, keepdim=True)
    max_iou = (ious * positive).amax(-1, keepdim=True)
    norm = (align * max_iou / (max_align + eps)).amax(1)
    soft = F.one_hot(labels, c).float() * (norm * foreground).unsqueeze(-1)
    return labels, boxes, soft, foreground


def postprocess(scores: Tensor, boxes: Tensor, points: Tensor, sizes: Sequence[tuple[int, int]], score_thresh: float,
                nms_thresh: float, detections_per_img: int, pre_nms_top_n: int) -> list[dict[str, Tensor]]:
    out = []
    k = scores.shape[-1]
    for s, b, (h, w) in zip(scores, boxes, sizes):
        inside = (points[:, 0] < w) & (points[:, 1] < h)
        s = s * inside.unsqueeze(-1)
        flat = s.flatten()
        keep = (flat > score_thresh).nonzero().squeeze(1)
        if keep.numel() > pre_nms_top_n:
            keep = keep[flat[keep].topk(pre_nms_top_n).indices]
        point_idx, labels = keep // k, keep % k
        cand = b[point_idx].clone()
        cand[:, 0::2] = cand[:, 0::2].clamp(0, w)
        cand[:, 1::2] = cand[:, 1::2].clamp(0, h)
        cand_scores = flat[keep]
        valid = (cand[:, 2] > cand[:, 0]) & (cand[:, 3] > cand[:, 1])
        cand, cand_scores, labels = cand[valid], cand_scores[valid], labels[valid]
        kept = batched_nms(cand, cand_scores, labels, nms_thresh)[:detections_per_img]
        out.append({"boxes": cand[kept], "labels": labels[kept], "scores": cand_scores[kept]})
    return out
