"""Classifier = registry backbone + classification head, as a plain ``nn.Module``."""

from __future__ import annotations

from torch import Tensor, nn

from lit_vision.backbones import Backbone
from lit_vision.heads import ClassificationHead


class Classifier(nn.Module):
    """``logits = head(backbone(x))``; the head sees the list of stage features.

    Kept free of Lightning so it can be exported, scripted or dropped into another training loop.
    """

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @classmethod
    def build(cls, backbone: Backbone, num_classes: int, dropout: float = 0.0, pool: str = "avg") -> "Classifier":
        return cls(backbone, ClassificationHead(backbone.channels[-1], num_classes, dropout=dropout, pool=pool))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))
