"""Loaded into the ``lit-vision`` subprocesses of the non-finite DDP test: a NaN loss on one rank only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from lit_vision.tasks import ImageClassifier


class NaNLossOnRank(ImageClassifier):
    """From ``nan_step`` on, rank ``nan_rank``'s loss *value* is NaN; its gradients stay finite (the NaN term is
    detached), so only that rank's own loss check can see it: the other rank must be told."""

    def __init__(self, nan_rank: int = 1, nan_step: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nan_rank, self.nan_step = nan_rank, nan_step

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        if self.global_rank == self.nan_rank and self.global_step >= self.nan_step:
            loss = loss + loss.detach() * float("nan")
        return loss


class ExceptionDump(Callback):
    """Each rank writes the exception that ended its run (and the last global step it started)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.last_step = -1

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.last_step = trainer.global_step

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        text = f"{type(exception).__name__}\nlast step {self.last_step}\n{exception}"
        (self.out_dir / f"rank{trainer.global_rank}.txt").write_text(text)
