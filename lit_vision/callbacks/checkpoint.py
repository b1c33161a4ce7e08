"""``last.ckpt`` as the latest state, written atomically: what a killed run resumes from.

Lightning's ``ModelCheckpoint(save_last=True)`` only refreshes ``last.ckpt`` when it writes another checkpoint
(with a monitored metric: when the metric improves), and its step, epoch and time triggers are mutually
exclusive. :class:`LastCheckpoint` writes ``last.ckpt`` at every epoch end *and* every N optimizer steps
and/or minutes; every checkpoint file of the run goes through :class:`AtomicCheckpointIO`, so a kill during a
write leaves the previous file intact.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol, get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["AtomicCheckpointIO", "LastCheckpoint", "remove_stale_temporaries"]

_TMP_MARK = ".tmp-"


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")


def remove_stale_temporaries(directory: str | Path) -> int:
    """Delete partial files left by a writer that was killed mid-write; returns how many were removed."""
    removed = 0
    directory = Path(directory)
    if directory.is_dir():
        for tmp in directory.glob(f".*{_TMP_MARK}*"):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a hidden temporary next to the target, ``fsync``, then ``os.replace``.

    Lightning's own writer serialises to memory and then writes the target in place, so a SIGKILL during the
    write truncates the very file a restart needs. A rename within a directory is atomic on POSIX filesystems:
    readers see the old file or the new one. Remote (fsspec) paths keep Lightning's behaviour.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        get_filesystem(str(target)).makedirs(str(target.parent), exist_ok=True)
        tmp = _temporary_name(target)
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class LastCheckpoint(ModelCheckpoint):
    """Keep ``<dirpath>/last.ckpt`` = the latest training state (weights, optimizer, loops, loader, RNG).

    Written at the end of every epoch (after validation, when it runs) and, optionally, every
    ``every_n_train_steps`` optimizer steps and/or every ``every_n_minutes`` minutes of training (the clock is
    read at the logging interval, ``log_every_n_steps``), never twice
    for one step, and not on an epoch's last batch (the epoch-end write follows). ``lit-vision fit`` adds one
    to every run (put one in the recipe to set the cadence); ``--ckpt_path last`` resumes from it.

    Setting up also makes the trainer's checkpoint writer atomic (:class:`AtomicCheckpointIO`) and removes
    temporaries that a killed write left in ``dirpath``.

    Args:
        dirpath: where to write; default: the logger's ``<version>/checkpoints`` (like ``ModelCheckpoint``).
        every_n_train_steps: also write every this many optimizer steps (0: only at epoch ends).
        every_n_minutes: also write when this many minutes passed since the last write (0: off).
    """

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int = 0, every_n_minutes: float = 0) -> None:
        if every_n_train_steps < 0 or every_n_minutes < 0:
            raise ValueError(f"LastCheckpoint cadence must be >= 0, got every_n_train_steps={every_n_train_steps}, "
                             f"every_n_minutes={every_n_minutes}")
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, save_last=False,
                         enable_version_counter=False)
        self.every_n_train_steps_last = int(every_n_train_steps)
        self.every_n_minutes = float(every_n_minutes)
        self._last_write_time = time.monotonic()

    @property
    def state_key(self) -> str:
        return self._generate_state_key(filename="last")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.is_global_zero and self.dirpath is not None and _is_local_file_protocol(self.dirpath):
            remove_stale_temporaries(self.dirpath)
        self._last_write_time = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._should_skip_saving_checkpoint(trainer) or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        due = bool(self.every_n_train_steps_last) and trainer.global_step % self.every_n_train_steps_last == 0
        if self.every_n_minutes and not due and trainer.global_step % trainer.log_every_n_steps == 0:
            # Every rank must agree, or one would wait for the others in the collective save; the clock is
            # read (and broadcast, one collective under DDP) only at the logging interval, not every step.
            timed = time.monotonic() - self._last_write_time >= 60 * self.every_n_minutes
            due = trainer.strategy.broadcast(timed)
        if due:
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # Flush the loggers first, so the curves on disk reach the step the checkpoint holds (a resumed CSV log
        # then continues without a gap).
        for logger in trainer.loggers:
            logger.save()
        super()._save_checkpoint(trainer, filepath)
        self._last_write_time = time.monotonic()
