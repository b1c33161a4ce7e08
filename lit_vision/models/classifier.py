"""Classifier = registry backbone + classification head, as a plain ``nn.Module``."""

from __future__ import annotations

from torch import Tensor, nn

from lit_vision.backbones import Backbone
from lit_vision.heads import ClassificationHead


class Classifier(nn.Module):
    """``logits = head(backbone(x))``; the head sees the list of stage features.

    Kept free of Lightning so it can be exported, scripted or dropped into another training loop.
    """

    class_dependent = ("head.fc",)  # what loading another dataset's classifier re-initialises

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def reference_key(self, key: str) -> str | None:
        """This module's name for a key of torchvision's classification model: every backbone tensor is in our
        torchvision backbone's ``body`` under its own name; the final ``fc`` is our head's."""
        if key.startswith("fc."):
            return "head." + key
        return "backbone.body." + key if hasattr(self.backbone, "body") else None

    @classmethod
    def build(cls, backbone: Backbone, num_classes: int, dropout: float = 0.0, pool: str = "avg") -> "Classifier":
        return cls(backbone, ClassificationHead(backbone.channels[-1], num_classes, dropout=dropout, pool=pool))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))
