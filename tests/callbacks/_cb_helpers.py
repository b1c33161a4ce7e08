"""Tiny modules/data shared by the callback tests (independent of the rest of lit_vision on purpose)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

NUM_CLASSES = 3


class DictDataset(Dataset):
    """Fixed classification samples as ``{"image", "label", "path"}`` dicts."""

    def __init__(self, n: int, shape: tuple[int, ...] = (4,), seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, *shape, generator=g)
        self.labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "label": self.labels[i], "path": f"img_{i}.png"}


def loader(n: int, batch_size: int, shape: tuple[int, ...] = (4,), seed: int = 0) -> DataLoader:
    return DataLoader(DictDataset(n, shape, seed), batch_size=batch_size, shuffle=False, num_workers=0)


class TinyClassifier(pl.LightningModule):
    """Linear -> BatchNorm -> ReLU -> Linear on flat features; SGD with momentum (so optimizer state matters)."""

    def __init__(self, in_features: int = 4, lr: float = 0.1, momentum: float = 0.9) -> None:
        super().__init__()
        torch.manual_seed(123)
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, NUM_CLASSES)
        )
        self.num_classes = NUM_CLASSES
        self.lr = lr
        self.momentum = momentum
        self.val_weights: list[tuple[int, dict[str, torch.Tensor]]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self(batch["image"]), batch["label"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if batch_idx == 0:
            self.val_weights.append((self.global_step, clone_state(self)))
        loss = F.cross_entropy(self(batch["image"]), batch["label"])
        self.log("val_loss", loss, batch_size=len(batch["label"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


def clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def trainer_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    kwargs.update(overrides)
    return kwargs
