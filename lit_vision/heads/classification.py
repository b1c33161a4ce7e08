"""Classification head: global pooling -> dropout -> linear, on the deepest feature map."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ClassificationHead(nn.Module):
    """Pools the last feature map and classifies it.

    Args:
        in_channels: channels of the last backbone feature map.
        num_classes: number of output logits.
        dropout: dropout before the linear layer (0 disables it).
        pool: ``"avg"`` (ResNet, ConvNeXt, ...), ``"max"``, or ``"avgmax"`` (concatenation, 2x features).
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0, pool: str = "avg") -> None:
        super().__init__()
        if pool not in ("avg", "max", "avgmax"):
            raise ValueError(f"pool must be 'avg', 'max' or 'avgmax', got {pool!r}")
        self.pool = pool
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels * (2 if pool == "avgmax" else 1), num_classes)

    def forward_features(self, features: list[Tensor]) -> Tensor:
        """Pooled embedding of the deepest map (useful for retrieval, linear probes, t-SNE)."""
        x = features[-1]
        if x.ndim == 2:  # a backbone that already pooled
            return x
        if self.pool == "avg":
            return x.mean(dim=(-2, -1))
        if self.pool == "max":
            return x.amax(dim=(-2, -1))
        return torch.cat([x.mean(dim=(-2, -1)), x.amax(dim=(-2, -1))], dim=1)

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.fc(self.dropout(self.forward_features(features)))
