"""RetinaNet's head with a configurable focal loss (torchvision's fixes alpha 0.25 and gamma 2)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection.retinanet import (
    RetinaNetClassificationHead,
    RetinaNetHead,
)
from torchvision.ops import sigmoid_focal_loss


class FocalRetinaNetClassificationHead(RetinaNetClassificationHead):
    """RetinaNet's classification head with configurable focal-loss ``alpha`` and ``gamma``.

    torchvision's ``compute_loss`` calls ``sigmoid_focal_loss`` with its defaults (alpha 0.25, gamma 2)
    and offers no argument to change them, so this subclass repeats that method (same matching, ignore
    band and normalisation by the number of foreground anchors) with the two values passed through.
    """

    def __init__(self, *args: Any, focal_alpha: float = 0.25, focal_gamma: float = 2.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def compute_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                     matched_idxs: list[Tensor]) -> Tensor:
        losses = []
        for target, logits, matched in zip(targets, head_outputs["cls_logits"], matched_idxs):
            foreground = matched >= 0
            gt = torch.zeros_like(logits)
            gt[foreground, target["labels"][matched[foreground]]] = 1.0
            valid = matched != self.BETWEEN_THRESHOLDS
            loss = sigmoid_focal_loss(logits[valid], gt[valid], alpha=self.focal_alpha, gamma=self.focal_gamma,
                                      reduction="sum")
            losses.append(loss / max(1, int(foreground.sum())))
        return torch.stack(losses).sum() / len(targets)


class FocalRetinaNetHead(RetinaNetHead):
    """torchvision's ``RetinaNetHead`` (same call signature) whose classification head takes ``focal_alpha``
    and ``focal_gamma``: what :class:`~lit_vision.models.detection.RetinaNet` builds unless given a head."""

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0) -> None:
        super().__init__(in_channels, num_anchors, num_classes)
        self.classification_head = FocalRetinaNetClassificationHead(
            in_channels, num_anchors, num_classes, focal_alpha=focal_alpha, focal_gamma=focal_gamma)


__all__ = ["FocalRetinaNetClassificationHead", "FocalRetinaNetHead"]
