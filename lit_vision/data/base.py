"""Loader plumbing shared by every DataModule: one ``DataLoader`` recipe for the four splits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lit_vision.data.checks import DataError


class SplitDataModule(LightningDataModule):
    """Serves ``self.datasets[split]`` (filled by the subclass's ``setup``) for train/val/test/predict.

    Reads ``batch_size``, ``eval_batch_size``, ``num_workers``, ``pin_memory`` (``None``: on when CUDA is
    available), ``persistent_workers`` and optionally ``drop_last`` from the subclass's hyper-parameters.
    """

    collate_fn: ClassVar[Callable[[list[Any]], Any] | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.datasets: dict[str, Dataset] = {}
        self.sources: dict[str, Any] = {}  # split -> checked, untransformed dataset (annotation-backed modules)

    def _split_source(self, split: str) -> Any:
        """The checked source of ``split``; ``test`` falls back to ``val`` when no test data was configured."""
        if split == "test" and "test" not in self.sources:
            split = "val"
        if split not in self.sources:
            raise DataError(f"no {split} data was configured")
        return self.sources[split]

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        hp = self.hparams
        dataset = self.datasets[split]
        return DataLoader(
            dataset,
            batch_size=hp.batch_size if train else (hp.eval_batch_size or hp.batch_size),
            shuffle=train,
            drop_last=train and hp.get("drop_last", False) and len(dataset) > hp.batch_size,
            num_workers=hp.num_workers,
            pin_memory=torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory,
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
            collate_fn=type(self).collate_fn,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
