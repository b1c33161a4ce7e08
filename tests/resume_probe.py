"""A callback the resume tests load into ``lit-vision`` subprocesses: SIGKILL the process at a given step."""

from __future__ import annotations

import os
import signal

from lightning.pytorch import Callback, LightningModule, Trainer


class KillAt(Callback):
    """Kill this process (every rank that reaches it) with SIGKILL after optimizer step ``step``.

    It runs before the checkpoint callbacks of that step (Lightning orders those last), so what survives is the
    ``last.ckpt`` of an earlier step: the state a pre-empted job leaves behind. It first waits for the checkpoint
    writes already queued (they run in the background while training goes on): the kill then comes after the
    last write finished, so which file survives does not depend on the thread's timing. (A write still under way
    at a kill is lost and leaves the previous file intact: tests/callbacks/test_checkpoint.py.)
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        if trainer.global_step == self.step:
            wait = getattr(trainer.strategy.checkpoint_io, "wait", None)
            if wait is not None:
                wait()
            os.kill(os.getpid(), signal.SIGKILL)


class FailOnRank(Callback):
    """Raise on one rank only at step ``step``: a bad batch that only one process sees."""

    def __init__(self, rank: int, step: int) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            raise RuntimeError(f"bad batch on rank {self.rank} at step {self.step}")
