"""How wrong one evaluated image is, so the pictures callback can show the worst ones.

Classification and segmentation rank by their cross-entropy. torchvision's detectors return no losses in
evaluation mode, and per-image AP is undefined for images without objects, so detection ranks by
``1 - F1`` of the confident predictions at IoU 0.5 (class-aware, greedy by score as COCO matches): 0 when
every object is found and nothing else is, 1 when nothing right is predicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import box_iou


def detection_errors(predictions: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Any]],
                     iou_thresh: float = 0.5, score_thresh: float = 0.3) -> Tensor:
    """``1 - F1`` per image (see the module docstring); ``predictions`` as the detectors return them
    (``boxes`` XYXY, ``labels``, ``scores``), ``targets`` with ``boxes``/``labels`` in the same pixels."""
    out = []
    for pred, target in zip(predictions, targets):
        keep = pred["scores"] >= score_thresh
        order = pred["scores"][keep].argsort(descending=True)
        boxes, labels = pred["boxes"][keep][order].float(), pred["labels"][keep][order]
        gt_boxes = torch.as_tensor(target["boxes"], device=boxes.device).float().reshape(-1, 4)
        gt_labels = torch.as_tensor(target["labels"], device=boxes.device)
        n_pred, n_gt = len(boxes), len(gt_boxes)
        if n_pred == 0 or n_gt == 0:
            out.append(0.0 if n_pred == n_gt else 1.0)
            continue
        iou = box_iou(boxes, gt_boxes)
        iou[labels[:, None] != gt_labels[None, :]] = 0.0
        candidates = (iou >= iou_thresh).cpu().tolist()
        ious = iou.cpu().tolist()
        taken: set[int] = set()
        for row, ok in zip(ious, candidates):  # highest score first takes its best free object
            free = [(v, j) for j, v in enumerate(row) if ok[j] and j not in taken]
            if free:
                taken.add(max(free)[1])
        out.append(1.0 - 2.0 * len(taken) / (n_pred + n_gt))
    return torch.tensor(out)
