"""What a checkpoint needs beyond Lightning's own state for a resumed run to equal the uninterrupted one.

Lightning saves the weights, optimizers, schedulers, loop progress, callbacks (EMA, warm-up) and the training
loader's state (``lit_vision.data.resumable``). Not saved by it, and saved here by :class:`VisionTask`:

* the global random states (torch, CUDA, Python, NumPy) of **every rank**, as of the moment the checkpoint was
  written; they are put back when training restarts (``on_train_start``), after everything the restart itself
  does, so dropout, MixUp/CutMix and proposal sampling draw the same numbers as the uninterrupted run;
* the accumulated state of the task's torchmetrics (epoch-level training accuracy and the like);
* the epoch sums of values logged with ``self.log(..., on_epoch=True)`` during training (Lightning keeps them
  in its result collection and starts it empty on resume): added back after the first resumed step logs
  (addition is commutative in IEEE arithmetic, so the epoch mean is bit-identical).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics import Metric

KEY = "lit_vision_resume"


def rng_states() -> dict[str, Any]:
    """The process's random states, as plain tensors and numbers (checkpoints load with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "torch.cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": version, "state": list(py_state), "gauss": gauss}}


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("torch.cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def _gather(obj: Any, trainer: Trainer) -> list[Any]:
    """``obj`` of every rank (one collective; every rank writes the checkpoint dict, rank 0 the file)."""
    if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def _metric_states(module: LightningModule) -> dict[str, dict[str, Any]]:
    states = {}
    for name, metric in module.named_modules():
        if isinstance(metric, Metric) and metric._update_count:
            states[name] = {"state": {k: (v.detach().cpu().clone() if isinstance(v, torch.Tensor) else [t.cpu() for t in v])
                                      for k, v in metric.metric_state.items()},
                            "update_count": metric._update_count}
    return states


def _logged_epoch_sums(trainer: Trainer) -> dict[str, dict[str, Any]]:
    if not trainer.training:
        return {}
    sums = {}
    for key, result in trainer.fit_loop.epoch_loop._results.items():
        if result.is_tensor and result.meta.on_epoch and result._update_count:
            entry = {"value": result.value.detach().cpu().clone()}
            if result.meta.is_mean_reduction:
                entry["cumulated_batch_size"] = result.cumulated_batch_size.detach().cpu().clone()
            sums[key] = entry
    return sums


def capture(module: LightningModule) -> dict[str, Any]:
    """The resume state to put in a checkpoint (called from ``on_save_checkpoint`` on every rank).

    Random states, metric states and logged sums differ between ranks (each sees its own shard), so every
    rank's are gathered into the one file rank 0 writes.
    """
    trainer = module.trainer
    own = {"rng": rng_states(), "metrics": _metric_states(module), "logged": _logged_epoch_sums(trainer)}
    return {"ranks": _gather(own, trainer), "world_size": trainer.world_size,
            "epoch_done": bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)}


class Restorer:
    """Puts a checkpoint's resume state back at the right moments of the restarted run."""

    def __init__(self, saved: dict[str, Any]) -> None:
        self.saved = saved
        # An epoch that was complete when saved is not continued: its training metrics and sums are not carried.
        self.mid_epoch = not saved.get("epoch_done", False)
        self.own: dict[str, Any] = {}

    def on_train_start(self, module: LightningModule) -> None:
        """Random states and metric states: restored after the restart's own work, before the first step."""
        trainer, saved = module.trainer, self.saved
        # Lightning hands the loader its saved state when it sets the training data up, but a
        # ``configure_optimizers`` that reads ``trainer.estimated_stepping_batches`` (ours, for the cosine
        # schedule) sets it up before the loops are restored, and the state is then never applied. Our loader
        # starts iterating lazily, at the first batch, so applying the pending state here is still in time.
        trainer.fit_loop._load_combined_loader_states()
        ranks = saved.get("ranks") or []
        if not ranks:
            return
        if len(ranks) != trainer.world_size:
            rank_zero_warn(f"resuming on {trainer.world_size} process(es) from a checkpoint of {len(ranks)}: "
                           "random states and data shards differ from the interrupted run, so it is not exact")
        self.own = ranks[trainer.global_rank % len(ranks)]
        set_rng_states(self.own["rng"])
        modules = dict(module.named_modules())
        for name, entry in (self.own.get("metrics") or {}).items() if self.mid_epoch else ():
            metric = modules.get(name)
            if isinstance(metric, Metric):
                for k, v in entry["state"].items():
                    setattr(metric, k, v.to(module.device) if isinstance(v, torch.Tensor) else [t.to(module.device) for t in v])
                metric._update_count = entry["update_count"]
                metric._computed = None

    def after_first_log(self, module: LightningModule) -> None:
        """Add the saved epoch sums once the resumed run's first training step has created its entries."""
        logged, self.own["logged"] = self.own.get("logged"), None
        if not logged or not self.mid_epoch:
            return
        results = module.trainer.fit_loop.epoch_loop._results
        for key, entry in logged.items():
            result = results.get(key)
            if result is None:
                continue
            value = entry["value"].to(result.value.device)
            if result.meta.is_max_reduction or result.meta.is_min_reduction:
                result.value = result.meta.reduce_fx(result.value, value)
            else:
                result.value = result.value + value
            if result.meta.is_mean_reduction:
                result.cumulated_batch_size = result.cumulated_batch_size + entry["cumulated_batch_size"].to(value.device)
