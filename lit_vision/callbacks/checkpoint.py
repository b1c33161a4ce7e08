"""``last.ckpt`` as the latest state, written atomically: what a killed run resumes from.

Lightning's ``ModelCheckpoint(save_last=True)`` only refreshes ``last.ckpt`` when it writes another checkpoint
(with a monitored metric: when the metric improves), and its step, epoch and time triggers are mutually
exclusive. :class:`LastCheckpoint` writes ``last.ckpt`` at every epoch end *and* every N optimizer steps
and/or minutes; every checkpoint file of the run goes through :class:`AtomicCheckpointIO`, so a kill during a
write leaves the previous file intact, and the disk work after a write (``fsync``, freeing the replaced file)
happens off the training thread, as do, while the fit trains, serialising and writing the file
(``background_writes``).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning.pytorch as pl
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lit_vision.callbacks.checkpoint_io import AtomicCheckpointIO, WrittenCheckpoint, remove_stale_temporaries

__all__ = ["AtomicCheckpointIO", "LastCheckpoint", "Requeued", "WrittenCheckpoint", "remove_stale_temporaries"]


def _equal(a: Any, b: Any) -> bool:
    """``a == b`` for nested states; ``False`` where a comparison is not a plain bool (e.g. a loader state with
    tensors: then the state is written again rather than risk linking a different one)."""
    try:
        return bool(a == b)
    except Exception:
        return False


def _uploads_each_save(trainer: pl.Trainer) -> bool:
    """Whether a logger reads every checkpoint file right after its save (Lightning's W&B ``log_model="all"``, or
    ``True`` with ``save_top_k=-1``): those files must be complete when the save returns."""
    for logger in trainer.loggers:
        mode = getattr(logger, "_log_model", False)
        if mode == "all" or (mode is True and any(getattr(cb, "save_top_k", None) == -1
                                                   for cb in trainer.checkpoint_callbacks)):
            return True
    return False


class _FileExistsAfterQueuedWrite:
    """``ModelCheckpoint.file_exists`` (which picks ``-v1`` names and decides top-k removals) for a file that a
    background write will create: wait for that write first, so the check sees what a synchronous save left."""

    def __init__(self, callback: ModelCheckpoint, io: AtomicCheckpointIO) -> None:
        self.original = type(callback).file_exists.__get__(callback)
        self.io = io

    def __call__(self, filepath: Any, trainer: pl.Trainer) -> bool:
        if trainer.is_global_zero and self.io.queued(filepath):
            self.io.wait(raise_errors=False)  # an error is raised at the next save or at teardown
        return self.original(filepath, trainer)


class Requeued(SystemExit):
    """Raised on every rank once ``last.ckpt`` holds the state after a requeue signal (and the job was requeued).

    A ``SystemExit`` with code 0: the process ends cleanly (Lightning tears down first), and ``lit-vision fit``
    exits 0 with the message; the requeued job resumes with ``--ckpt_path last``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(0)
        self.message = message

    def __str__(self) -> str:
        return self.message


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
        background_writes: from the first training step to the end of training, every checkpoint of the run (this
            one's and the other callbacks') is serialised and written on a background thread: the save copies the
            state into reused host buffers (one more copy of the checkpoint in host memory) and training goes on.
            The files are complete when ``fit`` returns (on every rank: the others wait for rank 0 at the end of
            training); in between, ``trainer.strategy.checkpoint_io.wait()`` waits for them. Off while a logger
            uploads each checkpoint as it is saved (W&B ``log_model: all``), and
            with ``False``.
    """

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int = 0, every_n_minutes: float = 0,
                 background_writes: bool = True) -> None:
        if every_n_train_steps < 0 or every_n_minutes < 0:
            raise ValueError(f"LastCheckpoint cadence must be >= 0, got every_n_train_steps={every_n_train_steps}, "
                             f"every_n_minutes={every_n_minutes}")
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, save_last=False,
                         enable_version_counter=False)
        self.every_n_train_steps_last = int(every_n_train_steps)
        self.every_n_minutes = float(every_n_minutes)
        self.background_writes = bool(background_writes)
        self._last_write_time = time.monotonic()
        self._requeue_signal: int | None = None
        self._requeue_command: list[str] | None = None
        self._check_every: int | None = None
        self._signalled = False  # set by the signal handler (this process only)
        self._stop_now = False  # every rank agreed: write, requeue, stop
        self._requeue_pending: str | None = None  # last.ckpt written after the signal: requeue at the next batch
        self._previous_handler: Any = None

    def requeue_on(self, signum: int, command: list[str] | None = None, check_every_n_steps: int | None = None) -> None:
        """On signal ``signum`` (SLURM's ``--signal=SIGUSR1@90`` warning before the time limit): write ``last.ckpt``
        at the next optimizer step that every rank agrees on (or at the epoch end when the signal comes during
        validation), then, before the next batch, run ``command`` on rank 0 (``scontrol requeue <job>``) and stop
        every rank (:class:`Requeued`). A run that ends first (that was its last step) is not requeued.

        The signal handler only sets a flag: the state is written between two steps, exactly as a step checkpoint,
        so the requeued job resumes bit for bit (``--ckpt_path last``). One process checks the flag every step;
        under DDP the ranks agree (one all-reduce) every ``check_every_n_steps`` steps (default: the logging
        interval, ``log_every_n_steps``) and at every write of ``last.ckpt``.
        """
        self._requeue_signal = int(signum)
        self._requeue_command = list(command) if command else None
        self._check_every = check_every_n_steps

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
        self._signalled = self._stop_now = False
        self._requeue_pending = None
        if self._requeue_signal is not None and stage == "fit" and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(self._requeue_signal, self._on_signal)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        io = trainer.strategy.checkpoint_io
        if isinstance(io, AtomicCheckpointIO) and self.background_writes and not _uploads_each_save(trainer):
            io.background_writes = True
            for callback in trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint) and "file_exists" not in vars(callback):
                    callback.file_exists = _FileExistsAfterQueuedWrite(callback, io)  # type: ignore[method-assign]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        io = self._stop_background_writes(trainer)
        if io is not None and trainer.world_size > 1:
            # Only rank 0 writes, and its teardown waits for the writes: the other ranks would return from fit
            # (and may read best_model_path) before the files exist. Rank 0 waits here and tells them how it went.
            error = None
            if trainer.is_global_zero:
                io.wait(raise_errors=False)  # rank 0 raises its own error at teardown
                error = io.first_error()
            error = trainer.strategy.broadcast(None if error is None else repr(error))
            if error is not None and not trainer.is_global_zero:
                raise RuntimeError(f"rank 0 failed to write a checkpoint of this run: {error}")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)  # Lightning's save_on_exception, if set
        self._stop_background_writes(trainer)  # the writes already queued still complete (teardown waits); no
        # collective here: the other ranks may not be in an exception

    @staticmethod
    def _stop_background_writes(trainer: pl.Trainer) -> AtomicCheckpointIO | None:
        io = trainer.strategy.checkpoint_io
        if not isinstance(io, AtomicCheckpointIO):
            return None
        io.background_writes = False  # a save after the fit (trainer.save_checkpoint) is complete at return
        for callback in trainer.checkpoint_callbacks:
            if isinstance(vars(callback).get("file_exists"), _FileExistsAfterQueuedWrite):
                del callback.file_exists
        return io

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous_handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(self._requeue_signal, self._previous_handler)
            self._previous_handler = None
        super().teardown(trainer, pl_module, stage)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signalled = True  # acted on between two steps (on_train_batch_end / the next last.ckpt write)
        if callable(self._previous_handler):
            self._previous_handler(signum, frame)

    def _agree_to_stop(self, trainer: pl.Trainer) -> bool:
        """Whether any rank got the requeue signal (a collective under DDP: every rank calls it at the same point)."""
        if not self._stop_now:
            self._stop_now = bool(trainer.strategy.reduce_boolean_decision(self._signalled, all=False))
        return self._stop_now

    def _requeue_check_due(self, trainer: pl.Trainer) -> bool:
        if self._requeue_signal is None:
            return False
        if trainer.world_size == 1:
            return True
        return trainer.global_step % max(1, self._check_every or trainer.log_every_n_steps) == 0

    def _requeue_and_stop(self, trainer: pl.Trainer, filepath: str) -> None:
        io = trainer.strategy.checkpoint_io
        if trainer.is_global_zero and isinstance(io, AtomicCheckpointIO):
            io.wait()  # the file is durable before the job is given back
        trainer.strategy.barrier("LastCheckpoint.requeue")
        name = signal.Signals(self._requeue_signal).name
        action = "stopping (no requeue command)"
        if self._requeue_command:
            action = f"requeued with `{' '.join(self._requeue_command)}`"
            if trainer.is_global_zero:
                try:
                    code = subprocess.call(self._requeue_command)
                except OSError as err:
                    code = f"{type(err).__name__}: {err}"
                if code != 0:
                    action = f"`{' '.join(self._requeue_command)}` failed ({code}): resubmit the job with --ckpt_path last"
                    rank_zero_warn(action)
        message = f"{name} received: stopped at step {trainer.global_step}, {filepath} written; {action}"
        rank_zero_info(message)
        raise Requeued(message)

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
        if not due and self._requeue_check_due(trainer):
            due = self._agree_to_stop(trainer)
        if due:
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # Flush the loggers first, so the curves on disk reach the step the checkpoint holds (a resumed CSV log
        # then continues without a gap).
        for logger in trainer.loggers:
            logger.save()
        source = self._same_state_file(trainer, filepath)
        if source is None:
            super()._save_checkpoint(trainer, filepath)
        else:
            # Another checkpoint callback (the best one) just wrote this very state: name it last.ckpt too
            # instead of serialising it again (like Lightning's save_last="link", with a hard link, atomically).
            if trainer.is_global_zero:
                trainer.strategy.checkpoint_io.link_checkpoint(source, filepath)
            trainer.strategy.barrier("LastCheckpoint.link")
            self._last_global_step_saved = trainer.global_step
            self._last_checkpoint_saved = filepath
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.after_save_checkpoint(proxy(self))
        self._last_write_time = time.monotonic()
        if self._requeue_signal is not None and self._agree_to_stop(trainer):
            # Stop at the start of the next batch, not here: Lightning logs this step's metrics after the
            # callbacks' on_train_batch_end, and they belong to the run (the resumed one starts a step later).
            # When training ends instead (the last step), there is nothing to requeue.
            self._requeue_pending = filepath

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._requeue_pending is not None:
            self._requeue_and_stop(trainer, self._requeue_pending)

    @staticmethod
    def _same_state_file(trainer: pl.Trainer, filepath: str) -> str | None:
        """The file another callback wrote at this same point of training (same step and loop counters, with
        optimizer states), which holds what this save would write; ``None`` if there is none. The same on
        every rank: rank 0 decides and broadcasts (only rank 0 writes files)."""
        io = trainer.strategy.checkpoint_io
        source = None
        if trainer.is_global_zero and isinstance(io, AtomicCheckpointIO) and io.last_written is not None:
            written = io.last_written
            if (written.full and written.global_step == trainer.global_step and written.path != filepath
                    and _equal(written.loops, trainer._checkpoint_connector._get_loops_state_dict())
                    and io.holds(written.path) and Path(written.path).parent == Path(filepath).parent):
                source = written.path
        return trainer.strategy.broadcast(source)
