"""Exponential moving average (EMA) of model weights, built on Lightning's ``WeightAveraging``.

Why a subclass instead of ``lightning.pytorch.callbacks.EMAWeightAveraging``: we want timm-style decay warm-up,
correct handling of integer buffers (``BatchNorm.num_batches_tracked``) and the averaged copy living on the training
device (Lightning builds it in ``setup``, before the strategy moves the model, so by default it would stay on CPU),
and an update without walking the module tree: ``AveragedModel.update_parameters`` collects the parameters and
buffers of both models afresh every step (four traversals, a ``detach`` and ``to`` per tensor: 5.6 ms a step for the
YOLO-n task on the CPU, against 2 ms for the averaging itself); here the tensor lists are collected once per training
epoch and the averaging kernels run on them directly, with the same arithmetic.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

__all__ = ["EMA"]


def _ema_multi_avg_fn(decay: float, warmup: bool,
                      warmup_tau: float | None = None) -> Callable[[list[Tensor], list[Tensor], Tensor | int], None]:
    """Build a ``multi_avg_fn`` for :class:`torch.optim.swa_utils.AveragedModel`.

    ``AveragedModel`` calls it once per (device, dtype) group with ``num_averaged`` = number of updates already folded
    into the average (``n >= 1`` here: the very first update is a plain copy done by ``AveragedModel`` itself).
    The warm-up decay is computed as a tensor on the parameters' device, so no host/device sync happens per step.
    """

    @torch.no_grad()
    def ema_update(ema_params: list[Tensor], current_params: list[Tensor], num_averaged: Tensor | int) -> None:
        if not (torch.is_floating_point(ema_params[0]) or torch.is_complex(ema_params[0])):
            # Integer buffers (e.g. BatchNorm's num_batches_tracked) cannot be averaged meaningfully (and would be
            # truncated back to the old value); keep them in sync with the live model instead, like timm does.
            torch._foreach_copy_(ema_params, current_params)
            return
        if warmup_tau is not None:
            # Ultralytics' ModelEMA: d = decay * (1 - exp(-updates / tau)), its updates counted from 1 at the first
            # update, which is our copy (n = 0); so our update n is its update n + 1.
            n = torch.as_tensor(num_averaged, device=ema_params[0].device).to(torch.float32)
            effective_decay = decay * -torch.expm1(-(n + 1.0) / warmup_tau)
            weight = (1.0 - effective_decay).to(ema_params[0].dtype)
        elif warmup:
            n = torch.as_tensor(num_averaged, device=ema_params[0].device).to(torch.float32)
            effective_decay = torch.clamp((1.0 + n) / (10.0 + n), max=decay)
            weight: Tensor | float = (1.0 - effective_decay).to(ema_params[0].dtype)
        else:
            weight = 1.0 - decay
        # lerp: ema + w * (current - ema) == (1 - w) * ema + w * current == d * ema + (1 - d) * current
        torch._foreach_lerp_(ema_params, current_params, weight)

    return ema_update


class EMA(WeightAveraging):
    r"""Keep an exponential moving average of the weights; validate, checkpoint and finish training with it.

    Update rule, applied after selected optimizer steps (see below) to every parameter and, with
    ``use_buffers=True``, every floating-point buffer (BatchNorm running stats)::

        update 0:             ema = w                                   (AveragedModel copies on its first update)
        update n (n >= 1):    ema = d_n * ema + (1 - d_n) * w
        d_n = decay                                   if warmup is False
        d_n = min(decay, (1 + n) / (10 + n))          if warmup is True   (TF's ``ExponentialMovingAverage``
                                                                           with ``num_updates``; timm's ModelEmaV3)
        d_n = decay * (1 - exp(-(n + 1) / tau))       if warmup_tau = tau (Ultralytics' ``ModelEMA``, tau 2000)

    where ``w`` is the live weight right after the optimizer step and ``n`` is the number of updates already folded
    into the average (``AveragedModel.n_averaged``; it is saved in checkpoints, so warm-up continues on resume). Note
    ``n`` counts EMA *updates*, not optimizer steps, so with ``update_every_n_steps=k`` the warm-up lasts ``k`` times
    as many optimizer steps. Integer buffers (``num_batches_tracked``) are copied from the live model, not averaged.

    When to update: after the optimizer step with zero-based index ``i`` (``trainer.global_step - 1``) iff
    ``i >= update_starting_at_step`` (0 when ``None``) and ``(i - update_starting_at_step) % update_every_n_steps == 0``.
    With gradient accumulation ``i`` counts optimizer steps, not batches (``WeightAveraging`` checks that
    ``global_step`` advanced).

    What ``WeightAveraging`` does for us (verified in ``tests/callbacks/test_ema.py``):

    * validation inside ``fit`` runs on the EMA weights (swapped in ``on_validation_epoch_start``, back in
      ``on_validation_epoch_end``);
    * checkpoints written during ``fit`` store the EMA weights under ``"state_dict"`` (so ``load_from_checkpoint``
      gives the EMA model), the live weights under ``"current_model_state"`` and ``n_averaged`` under
      ``"averaging_state"``; resuming with ``ckpt_path`` restores both and continues the same average;
    * at the end of ``fit`` the EMA weights are *copied* into the module; the live weights are kept aside
      (:meth:`on_train_end`) so that a checkpoint written after that still holds them for resuming.

    Distributed training (DDP): every rank holds identical weights after each optimizer step (gradients are
    all-reduced before the step and optimizer states start identical), so each rank updating its own EMA copy from
    its own module yields bit-identical averages everywhere. No communication is needed. Sharded strategies
    (FSDP/DeepSpeed stage 3, ``configure_model`` with sharding) are not supported by ``WeightAveraging``.

    Args:
        decay: EMA decay ``d`` in ``[0, 1]`` (upper bound when ``warmup`` is on). ``0.9999`` suits ~100k+ steps;
            use ~``0.999`` for short runs.
        warmup: use the ``min(decay, (1 + n) / (10 + n))`` warm-up so early, random weights are forgotten fast.
        warmup_tau: use Ultralytics' exponential ramp ``decay * (1 - exp(-(n + 1) / tau))`` instead (implies a
            warm-up; YOLOv8 uses ``tau = 2000``). The two ramps differ most in short runs: after 1,400 updates timm's
            averages over ~160 steps, the exponential one over ~2, i.e. it follows the live weights until
            ``n`` is a few ``tau`` (docs/detection.md).
        update_every_n_steps: update after every ``k``-th optimizer step (saves time for large models).
        update_starting_at_step: first zero-based optimizer step index that updates the EMA; earlier steps are ignored
            (the first update then copies the weights).
        use_buffers: also average floating-point buffers (BatchNorm statistics). If ``False`` buffers are copied from
            the live model at every update.
        device: where to keep the EMA copy (e.g. ``"cpu"`` to save accelerator memory). ``None`` keeps it on the
            module's device (moved there in ``on_fit_start``).
    """

    def __init__(
        self,
        decay: float = 0.9999,
        warmup: bool = False,
        warmup_tau: float | None = None,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        use_buffers: bool = True,
        device: torch.device | str | int | None = None,
    ) -> None:
        if not 0.0 <= float(decay) <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}.")
        if int(update_every_n_steps) < 1:
            raise ValueError(f"EMA update_every_n_steps must be >= 1, got {update_every_n_steps}.")
        if update_starting_at_step is not None and int(update_starting_at_step) < 0:
            raise ValueError(f"EMA update_starting_at_step must be >= 0 or None, got {update_starting_at_step}.")
        if isinstance(device, int):
            # WeightAveraging does ``self._device or pl_module.device``, which would silently ignore device index 0.
            device = torch.device(device)
        if warmup_tau is not None and not float(warmup_tau) > 0.0:
            raise ValueError(f"EMA warmup_tau must be > 0 or None, got {warmup_tau}.")
        warmup_tau = None if warmup_tau is None else float(warmup_tau)
        self._multi_avg_fn = _ema_multi_avg_fn(float(decay), warmup, warmup_tau)
        super().__init__(device=device, use_buffers=use_buffers, multi_avg_fn=self._multi_avg_fn)
        self._tensors: _Tensors | None = None  # collected lazily, dropped at every epoch start (see _pairs)
        self._live_at_end: dict[str, Tensor] | None = None  # the live weights when fit ended (on_train_end)
        self.decay = float(decay)
        self.warmup = bool(warmup) or warmup_tau is not None
        self.warmup_tau = warmup_tau
        self.update_every_n_steps = int(update_every_n_steps)
        self.update_starting_at_step = update_starting_at_step

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Step-based schedule only; epoch ends never trigger an extra update (that would double-count a step)."""
        if step_idx is None:
            return False
        start = self.update_starting_at_step or 0
        return step_idx >= start and (step_idx - start) % self.update_every_n_steps == 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Move the EMA copy next to the module.

        ``WeightAveraging.setup`` deep-copies the module before the strategy moves it to the accelerator, so without
        this the average would live on CPU and every update would copy all weights device-to-host.
        """
        if self._device is None and self._average_model is not None:
            self._average_model.to(pl_module.device)
        self._tensors = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self._live_at_end = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Finish with the average in the module, as ``WeightAveraging`` does, keeping the live weights aside.

        A checkpoint written after this point (``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` in its own
        ``on_train_end``, which Lightning runs after ours; ``trainer.save_checkpoint`` after ``fit``) must still store
        the live weights of the last step under ``current_model_state``: without them such a file held the average
        twice, and a run resumed from it continued from the average. One copy of the weights, until the next fit.
        """
        self._live_at_end = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """``WeightAveraging``'s layout (average in ``state_dict``, live weights in ``current_model_state``), also
        after :meth:`on_train_end` put the average into the module."""
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._live_at_end is not None and self._average_model is not None:
            checkpoint["current_model_state"] = self._live_at_end

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._tensors = None  # collected again: a callback may have swapped modules or tensors between epochs

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Restore the average when resuming a fit. Outside fit (``trainer.test(ckpt_path=...)`` on the Trainer that
        trained) the file's ``state_dict``, the EMA weights, is what the module must evaluate: ``WeightAveraging``
        would put the file's live weights into the module instead, because the fit's average still exists."""
        if trainer.state.fn != TrainerFn.FITTING:
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        self._tensors = None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # after fit the module holds the EMA weights already
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """``WeightAveraging``'s schedule; the update itself on the collected tensor lists (:meth:`_update`)."""
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=trainer.global_step - 1):
            self._update(pl_module)
            self._latest_update_step = trainer.global_step

    def _update(self, pl_module: pl.LightningModule) -> None:
        """``AveragedModel.update_parameters(pl_module)``, same arithmetic, on the cached lists."""
        model = self._average_model
        assert model is not None
        tensors = self._pairs(pl_module)
        if tensors is None:
            model.update_parameters(pl_module)
            return
        if tensors.updates == 0:  # the first update is a copy, as in AveragedModel
            torch._foreach_copy_(tensors.average, tensors.live)
        else:
            for average, live in tensors.groups:  # per (device, dtype), as AveragedModel groups them
                self._multi_avg_fn(average, live, model.n_averaged)
        model.n_averaged += 1
        tensors.updates += 1

    def _swap_models(self, pl_module: pl.LightningModule) -> None:
        """The EMA weights into the module and the live ones into the average (validation), with foreach copies."""
        tensors = self._pairs(pl_module)
        if tensors is None:
            super()._swap_models(pl_module)
            return
        held = [t.clone() for t in tensors.average]
        torch._foreach_copy_(tensors.average, tensors.live)
        torch._foreach_copy_(tensors.live, held)

    def _pairs(self, pl_module: pl.LightningModule) -> _Tensors | None:
        """Parameters and buffers of the average and of the module, detached, in ``AveragedModel``'s order; ``None``
        (use ``AveragedModel``'s own per-tensor path) unless every pair has the same device, dtype and shape and
        buffers are averaged. Collected once, after the strategy placed the module (``on_fit_start``), and again
        at every training epoch start and after a checkpoint load."""
        model = self._average_model
        if model is None:
            return None
        if self._tensors is not None and self._tensors.module is pl_module and self._tensors.model is model:
            return self._tensors
        if not self._use_buffers:
            return None
        average = [t.detach() for t in itertools.chain(model.module.parameters(), model.module.buffers())]
        live = [t.detach() for t in itertools.chain(pl_module.parameters(), pl_module.buffers())]
        if len(average) != len(live) or any(a.device != b.device or a.dtype != b.dtype or a.shape != b.shape
                                            for a, b in zip(average, live)):
            return None
        groups: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor]]] = {}
        for a, b in zip(average, live):
            pair = groups.setdefault((a.device, a.dtype), ([], []))
            pair[0].append(a)
            pair[1].append(b)
        self._tensors = _Tensors(pl_module, model, average, live, list(groups.values()), int(model.n_averaged))
        return self._tensors

    def decay_at(self, n: int) -> float:
        """Effective decay used by the ``n``-th update (``n >= 1``; update 0 is a copy). Handy for logging/tests."""
        if self.warmup_tau is not None:
            return self.decay * -math.expm1(-(n + 1.0) / self.warmup_tau)
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @property
    def num_updates(self) -> int:
        """Number of EMA updates done so far (0 before ``fit``)."""
        return 0 if self._average_model is None else int(self._average_model.n_averaged)

    def state_dict(self) -> dict[str, Any]:
        """Also record the hyper-parameters, for provenance when inspecting a checkpoint."""
        return {**super().state_dict(), "decay": self.decay, "warmup": self.warmup, "warmup_tau": self.warmup_tau}


class _Tensors:
    """The cached tensor lists of :class:`EMA` and the host-side count of updates (no device sync per step)."""

    def __init__(self, module: pl.LightningModule, model: Any, average: list[Tensor], live: list[Tensor],
                 groups: list[tuple[list[Tensor], list[Tensor]]], updates: int) -> None:
        self.module, self.model, self.average, self.live, self.groups = module, model, average, live, groups
        self.updates = updates
