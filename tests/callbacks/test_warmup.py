"""LRWarmup callback: the lr each optimizer step really used, against ``scheduler_lr(s) * factor(s)`` by hand."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from tests.callbacks._cb_helpers import loader, trainer_kwargs
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from lit_vision.callbacks import LRWarmup

BASE_LRS = (0.1, 0.02)  # two param groups
T_MAX, ETA_MIN = 10, 0.01


def cosine_lr(base: float, s: int) -> float:
    return ETA_MIN + (base - ETA_MIN) * (1 + math.cos(math.pi * s / T_MAX)) / 2


def warmup_factor(s: int, warmup_steps: int, start_factor: float) -> float:
    return start_factor + (1 - start_factor) * s / warmup_steps if s < warmup_steps else 1.0


class LRModule(pl.LightningModule):
    """Plain SGD (no momentum) so that ``w_after = w_before - lr_used * grad`` exposes the lr really used."""

    def __init__(self, scheduler: str | None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(3, 3)
        self.scheduler = scheduler
        self.num_classes = 3

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self.b(torch.relu(self.a(batch["image"]))), batch["label"])

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(
            [{"params": self.a.parameters(), "lr": BASE_LRS[0]}, {"params": self.b.parameters(), "lr": BASE_LRS[1]}]
        )
        if self.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T_MAX, eta_min=ETA_MIN)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if self.scheduler == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        return opt


class UsedLR(Callback):
    """Record, per optimizer step, the group lrs the optimizer sees and check the SGD update really used them."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.batch_end_lrs: list[tuple[int, float]] = []
        self._before: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.lrs.append([g["lr"] for g in optimizer.param_groups])
        w = pl_module.a.weight
        self._before = (w.detach().clone(), w.grad.detach().clone())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.batch_end_lrs.append((trainer.global_step, trainer.optimizers[0].param_groups[0]["lr"]))
        if self._before is not None:
            w0, grad = self._before
            torch.testing.assert_close(pl_module.a.weight.detach(), w0 - self.lrs[-1][0] * grad)
            self._before = None


def run(scheduler: str | None, callbacks: list[Callback], **kw: Any) -> tuple[UsedLR, pl.Trainer]:
    used = UsedLR()
    trainer = pl.Trainer(**trainer_kwargs(callbacks=[*callbacks, used], **kw))
    trainer.fit(LRModule(scheduler), train_dataloaders=loader(16, 4))
    return used, trainer


def test_warmup_scales_per_step_cosine_lr_and_leaves_scheduler_undisturbed() -> None:
    warm, start = 4, 0.1
    used, trainer = run("cosine", [LRWarmup(warmup_steps=warm, start_factor=start)], max_steps=10)
    baseline, base_trainer = run("cosine", [], max_steps=10)

    assert len(used.lrs) == 10
    for s, lrs in enumerate(used.lrs):
        for g, base in enumerate(BASE_LRS):
            assert lrs[g] == pytest.approx(cosine_lr(base, s) * warmup_factor(s, warm, start), rel=1e-9), (s, g)
            assert baseline.lrs[s][g] == pytest.approx(cosine_lr(base, s), rel=1e-9)
    assert used.lrs[0][0] == pytest.approx(BASE_LRS[0] * start)
    # After warm-up the sequence is *exactly* the one without the callback: the recursive cosine was not disturbed.
    assert used.lrs[warm:] == baseline.lrs[warm:]
    assert trainer.optimizers[0].param_groups[0]["lr"] == base_trainer.optimizers[0].param_groups[0]["lr"]
    assert trainer.callback_metrics["lr_warmup_factor"].item() == 1.0


def test_warmup_epochs_on_top_of_per_epoch_step_lr() -> None:
    cb = LRWarmup(warmup_epochs=1.5, start_factor=0.2)
    used, _ = run("step", [cb], max_epochs=3)  # 16 samples / 4 = 4 steps per epoch

    assert cb.total_warmup_steps == 6
    assert len(used.lrs) == 12
    for s, lrs in enumerate(used.lrs):
        step_lr = BASE_LRS[0] * 0.5 ** (s // 4)
        assert lrs[0] == pytest.approx(step_lr * warmup_factor(s, 6, 0.2), rel=1e-9), s


def test_warmup_counts_optimizer_steps_under_gradient_accumulation() -> None:
    cb = LRWarmup(warmup_epochs=1, start_factor=0.0)
    # 8 batches of 2 per epoch, accumulate 2 -> 4 optimizer steps per epoch.
    used = UsedLR()
    trainer = pl.Trainer(**trainer_kwargs(callbacks=[cb, used], max_epochs=2, accumulate_grad_batches=2))
    trainer.fit(LRModule(None), train_dataloaders=loader(16, 2))

    assert cb.total_warmup_steps == 4
    assert [lrs[0] for lrs in used.lrs] == pytest.approx([BASE_LRS[0] * f for f in (0, 0.25, 0.5, 0.75, 1, 1, 1, 1)])


def test_checkpoints_and_batch_end_see_scheduler_lr_not_warmed_lr(tmp_path: Any) -> None:
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1, filename="{step}")
    used, _ = run("cosine", [LRWarmup(warmup_steps=5)], max_steps=4)
    used_ckpt, _ = run(
        "cosine", [LRWarmup(warmup_steps=5), ckpt], max_steps=4, enable_checkpointing=True, default_root_dir=tmp_path
    )

    state = torch.load(tmp_path / "step=2.ckpt", weights_only=False)
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(cosine_lr(BASE_LRS[0], 2))
    # Lightning steps the scheduler *before* on_train_batch_end (so restoring the lr there would be too late):
    # after step s the group already holds the scheduler's lr for step s + 1, not the warmed lr.
    for global_step, lr in used.batch_end_lrs:
        assert lr == pytest.approx(cosine_lr(BASE_LRS[0], global_step), rel=1e-9)
    assert used_ckpt.lrs == used.lrs


class TwoOptimizers(pl.LightningModule):
    """Manual optimization: optimizer A steps every batch, optimizer B every second batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(4, 3)
        self.used: dict[str, list[float]] = {"a": [], "b": []}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        opt_a, opt_b = self.optimizers()
        for name, opt, layer in (("a", opt_a, self.a), ("b", opt_b, self.b)):
            if name == "b" and batch_idx % 2:
                continue
            loss = F.cross_entropy(layer(batch["image"]), batch["label"])
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            self.used[name].append(self._last_lr)

    def configure_optimizers(self) -> Any:
        return [torch.optim.SGD(self.a.parameters(), lr=0.1), torch.optim.SGD(self.b.parameters(), lr=0.01)]

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        self._last_lr = optimizer.param_groups[0]["lr"]


def test_each_optimizer_warms_up_over_its_own_steps() -> None:
    model = TwoOptimizers()
    cb = LRWarmup(warmup_steps=3, start_factor=0.4)
    trainer = pl.Trainer(**trainer_kwargs(callbacks=[cb], max_epochs=1))
    trainer.fit(model, train_dataloaders=loader(24, 4))  # 6 batches: A steps 6 times, B 3 times

    factors = [warmup_factor(s, 3, 0.4) for s in range(6)]
    assert model.used["a"] == pytest.approx([0.1 * f for f in factors])
    assert model.used["b"] == pytest.approx([0.01 * f for f in factors[:3]])
    assert trainer.global_step == 9  # Lightning counts both optimizers' steps, hence the per-optimizer counters
    assert [g["lr"] for opt in trainer.optimizers for g in opt.param_groups] == [0.1, 0.01]
    assert cb.state_dict() == {"optimizer_steps": [6, 3], "logged_final": True}


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"warmup_steps": 5, "warmup_epochs": 1.0},
        {"warmup_steps": -1},
        {"warmup_epochs": -0.5},
        {"warmup_steps": 2.5},
        {"warmup_steps": 5, "start_factor": 1.5},
        {"warmup_steps": 5, "start_factor": -0.1},
    ],
)
def test_lr_warmup_rejects_invalid_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LRWarmup(**kwargs)
