"""Linear learning-rate warm-up layered on top of whatever scheduler the config uses.

Why a callback: recipes configure their main scheduler (cosine, step, ...) in YAML; warm-up should compose with any
of them without ``SequentialLR``/``ChainedScheduler`` plumbing and without disturbing the scheduler's own state.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

__all__ = ["LRWarmup"]


class LRWarmup(Callback):
    r"""Scale every param group's lr by a linear warm-up factor, only while the optimizer steps.

    For optimizer step ``s`` (zero-based)::

        factor(s) = start_factor + (1 - start_factor) * s / warmup_steps     if s < warmup_steps
        factor(s) = 1                                                         otherwise (nothing is touched)
        lr used by step s = lr_scheduler(s) * factor(s)

    where ``lr_scheduler(s)`` is the value the configured scheduler put in ``group["lr"]`` (or the constant lr).

    Mechanism: a ``torch.optim`` step *pre-hook* remembers each ``group["lr"]`` and multiplies it by ``factor(s)``;
    the matching *post-hook* restores the remembered values right after the update. So outside ``optimizer.step()``
    ``group["lr"]`` always holds the scheduler's value: recursive schedulers (``CosineAnnealingLR``'s chainable form
    reads ``group["lr"]``), checkpoints (optimizer state) and ``LearningRateMonitor`` never see the warm-up factor,
    and after warm-up the lr sequence is exactly that of a run without this callback. (Restoring in
    ``on_train_batch_end`` would be too late: Lightning 2.6 calls ``lr_scheduler.step()`` *before*
    ``on_train_batch_end``, see ``training_epoch_loop.advance``.) If AMP's ``GradScaler`` skips a step (inf grads),
    ``optimizer.step`` is not called and nothing is changed.

    Step counting: with one optimizer ``s = trainer.global_step`` when the step starts, i.e. optimizer steps (with
    ``accumulate_grad_batches=k`` one step per ``k`` batches), restored from the loop state on resume. With several
    optimizers (manual optimization) ``global_step`` counts the steps of all of them, so each optimizer gets its own
    counter of the steps it took (saved in this callback's checkpoint state) and warms up over its own
    ``warmup_steps`` steps.

    ``warmup_epochs`` is converted when training starts: ``warmup_steps = max(1, round(warmup_epochs *
    ceil(trainer.num_training_batches / accumulate_grad_batches)))`` (optimizer steps per epoch, honouring
    ``limit_train_batches``).

    Logging: ``LearningRateMonitor`` logs ``group["lr"]`` at batch start, i.e. the scheduler's lr *without* warm-up.
    With ``log_factor=True`` this callback logs ``lr_warmup_factor`` (step-level) during warm-up and once at 1.0
    afterwards; the effective lr is ``logged lr * lr_warmup_factor``.

    Args:
        warmup_steps: number of warm-up optimizer steps.
        warmup_epochs: warm-up length in (possibly fractional) epochs. Exactly one of the two must be > 0.
        start_factor: lr multiplier at step 0, in ``[0, 1]``.
        log_factor: log ``lr_warmup_factor`` via ``pl_module.log``.
    """

    def __init__(
        self,
        warmup_steps: int = 0,
        warmup_epochs: float = 0,
        start_factor: float = 0.001,
        log_factor: bool = True,
    ) -> None:
        if warmup_steps < 0 or warmup_epochs < 0:
            raise ValueError(
                f"LRWarmup warmup_steps/warmup_epochs must be >= 0, got {warmup_steps} / {warmup_epochs}."
            )
        if int(warmup_steps) != warmup_steps:
            raise ValueError(f"LRWarmup warmup_steps must be an integer, got {warmup_steps}.")
        if (warmup_steps > 0) == (warmup_epochs > 0):
            raise ValueError(
                "LRWarmup needs exactly one of warmup_steps > 0 or warmup_epochs > 0, got "
                f"warmup_steps={warmup_steps}, warmup_epochs={warmup_epochs}."
            )
        if not 0.0 <= start_factor <= 1.0:
            raise ValueError(f"LRWarmup start_factor must be in [0, 1], got {start_factor}.")
        self.warmup_steps = int(warmup_steps)
        self.warmup_epochs = float(warmup_epochs)
        self.start_factor = float(start_factor)
        self.log_factor = log_factor

        self._total_steps: int | None = self.warmup_steps or None  # resolved from epochs in on_train_start
        self._trainer: pl.Trainer | None = None
        self._handles: list[RemovableHandle] = []
        self._opt_index: dict[int, int] = {}  # id(optimizer) -> index in trainer.optimizers
        self._opt_steps: list[int] = []  # per-optimizer steps taken (used with several optimizers)
        self._depth: dict[int, int] = {}  # nesting depth of step() calls per optimizer (subclass -> super().step())
        self._saved: dict[int, list[Any]] = {}  # id(optimizer) -> lrs to restore after the step
        self._last_factor: float | None = None
        self._logged_final = False
        self._resumed_logged_final = False

    # ------------------------------------------------------------------ formula
    @property
    def total_warmup_steps(self) -> int:
        """Warm-up length in optimizer steps (known once training started when given in epochs)."""
        if self._total_steps is None:
            raise RuntimeError("LRWarmup.warmup_epochs is converted to steps when training starts.")
        return self._total_steps

    def factor(self, step: int) -> float:
        """lr multiplier for zero-based optimizer step ``step``."""
        total = self.total_warmup_steps
        if step >= total:
            return 1.0
        return self.start_factor + (1.0 - self.start_factor) * step / total

    # ------------------------------------------------------------------ lifecycle
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Resolve ``warmup_epochs`` and attach the step hooks to the (raw torch) optimizers."""
        if self.warmup_epochs > 0:
            num_batches = trainer.num_training_batches
            if math.isinf(num_batches):
                raise ValueError(
                    "LRWarmup(warmup_epochs=...) needs a sized train dataloader; use warmup_steps instead."
                )
            steps_per_epoch = math.ceil(num_batches / trainer.accumulate_grad_batches)
            self._total_steps = max(1, round(self.warmup_epochs * steps_per_epoch))
        self._remove_hooks()
        self._trainer = trainer
        self._opt_index.clear()
        self._saved.clear()
        # A resumed run has logged the final factor already if the interrupted one had (see load_state_dict).
        self._logged_final, self._resumed_logged_final = self._resumed_logged_final, False
        optimizers = trainer.optimizers
        if len(self._opt_steps) != len(optimizers):
            self._opt_steps = [0] * len(optimizers)
        for idx, opt in enumerate(optimizers):
            self._opt_index[id(opt)] = idx
            self._depth[id(opt)] = 0
            self._handles.append(opt.register_step_pre_hook(self._pre_step))
            self._handles.append(opt.register_step_post_hook(self._post_step))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Log the factor of the last step while it is < 1 (and once when it reaches 1)."""
        if not self.log_factor or self._last_factor is None or self._logged_final:
            return
        pl_module.log("lr_warmup_factor", self._last_factor, on_step=True, on_epoch=False, batch_size=1)
        # Stays at 1 from here on; the last logged value remains in callback_metrics.
        self._logged_final = self._last_factor >= 1.0

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """An exception inside ``optimizer.step`` skips the post-hook: put the scheduler's lrs back anyway."""
        for opt in trainer.optimizers:
            self._restore(opt)
        self._remove_hooks()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._remove_hooks()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer_steps": list(self._opt_steps), "logged_final": self._logged_final}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._opt_steps = list(state_dict.get("optimizer_steps", []))
        self._resumed_logged_final = bool(state_dict.get("logged_final", False))

    # ------------------------------------------------------------------ optimizer hooks
    def _step_index(self, opt_idx: int) -> int:
        assert self._trainer is not None
        if len(self._opt_steps) == 1:
            return self._trainer.global_step  # not yet incremented for the step in progress
        return self._opt_steps[opt_idx]

    def _pre_step(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        key = id(optimizer)
        self._depth[key] = self._depth.get(key, 0) + 1
        if self._depth[key] > 1 or key not in self._opt_index:
            return  # nested step() call: the outermost one already applied the factor
        idx = self._opt_index[key]
        factor = self.factor(self._step_index(idx))
        if idx == 0:
            self._last_factor = factor
        if factor >= 1.0:
            return
        self._saved[key] = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * factor

    def _post_step(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        key = id(optimizer)
        self._depth[key] = max(0, self._depth.get(key, 0) - 1)
        if self._depth[key] > 0 or key not in self._opt_index:
            return
        self._restore(optimizer)
        self._opt_steps[self._opt_index[key]] += 1

    def _restore(self, optimizer: Optimizer) -> None:
        saved = self._saved.pop(id(optimizer), None)
        self._depth[id(optimizer)] = 0
        if saved is not None:
            for group, lr in zip(optimizer.param_groups, saved):
                group["lr"] = lr

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
