"""Semantic-segmentation metrics from one confusion matrix accumulated over the whole evaluation set.

mIoU "done right" means: accumulate pixel counts over every image first (torchmetrics'
``MulticlassConfusionMatrix``, which also sums across DDP ranks), then derive per-class IoU once. Never a
mean of per-batch or per-image IoUs, which over-weights small images and classes. A class with no pixel in
either the prediction or the ground truth has an undefined IoU (0/0): it is left out of the mean (it
counts neither as 0 nor as 1) and reported as NaN. Ignore pixels (255) never enter the matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix


def segmentation_confusion_matrix(num_classes: int, ignore_index: int = 255) -> MulticlassConfusionMatrix:
    """A torchmetrics confusion matrix (rows = ground truth, columns = prediction) that skips ``ignore_index``.

    ``update(preds [B,H,W] class indices, target [B,H,W])``; states are summed across processes.
    """
    return MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index, normalize=None, validate_args=False)


def metrics_from_confusion(confusion: Tensor, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """mIoU, pixel accuracy, mean class accuracy and per-class IoU from a ``[K, K]`` count matrix.

    Returns ``{"miou", "pixel_acc", "mean_acc", "iou/<name>"...}``; classes absent from both prediction
    and ground truth give ``iou/<name> = nan`` and are excluded from ``miou``; ``mean_acc`` averages the
    recall of the classes present in the ground truth.
    """
    cm = confusion.double()
    k = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    tp = cm.diag()
    gt = cm.sum(1)
    pred = cm.sum(0)
    union = gt + pred - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    recall = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, math.nan))
    total = cm.sum()
    present = ~iou.isnan()
    out = {
        "miou": float(iou[present].mean()) if present.any() else math.nan,
        "pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
        "mean_acc": float(recall[~recall.isnan()].mean()) if (~recall.isnan()).any() else math.nan,
    }
    out |= {f"iou/{name}": float(v) for name, v in zip(names, iou)}
    return out


__all__ = ["metrics_from_confusion", "segmentation_confusion_matrix"]
