"""A callback the multi-node tests load into ``lit-vision`` subprocesses: send this process a signal at a step."""

from __future__ import annotations

import os
import signal

from lightning.pytorch import Callback, LightningModule, Trainer


class SignalAt(Callback):
    """Send ``signum`` (SIGUSR1: SLURM's ``--signal=SIGUSR1@90`` warning) to this process after optimizer step
    ``step``, as SLURM would at an arbitrary moment; the checkpoint callbacks of that step run after this one."""

    def __init__(self, step: int, signum: int = int(signal.SIGUSR1), rank: int | None = None,
                 in_validation: bool = False) -> None:
        self.step, self.signum, self.rank = step, signum, rank  # rank: only this global rank gets it
        self.in_validation = in_validation  # at the first validation batch after that step instead

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        if not self.in_validation:
            self._maybe_send(trainer)

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        if self.in_validation and not trainer.sanity_checking:
            self._maybe_send(trainer)

    def _maybe_send(self, trainer: Trainer) -> None:
        if trainer.global_step == self.step and self.rank in (None, trainer.global_rank):
            self.step = -1  # once
            os.kill(os.getpid(), self.signum)
