"""EMA callback: weights checked against an EMA computed by hand from per-step weight snapshots."""

from __future__ import annotations

import math
from typing import Any, Callable

import lightning.pytorch as pl
import pytest
import torch
from tests.callbacks._cb_helpers import TinyClassifier, clone_state, loader, trainer_kwargs
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lit_vision.callbacks import EMA

State = dict[str, torch.Tensor]


class StepSnapshots(Callback):
    """Record the live weights after every optimizer step: ``by_step[i]`` = weights after step ``i`` (zero-based)."""

    def __init__(self) -> None:
        self.by_step: dict[int, State] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step > 0 and trainer.global_step - 1 not in self.by_step:  # skip accumulation batches
            self.by_step[trainer.global_step - 1] = clone_state(pl_module)

    @property
    def snapshots(self) -> list[State]:
        assert sorted(self.by_step) == list(range(len(self.by_step))), "recorded from step 0 without gaps"
        return [self.by_step[i] for i in range(len(self.by_step))]


def reference_ema(
    snapshots: list[State],
    decay_for_update: Callable[[int], float],
    update_steps: set[int] | None = None,
    average_buffers: bool = True,
) -> list[State | None]:
    """Hand EMA: ``ema = d_n * ema + (1 - d_n) * w`` at update ``n >= 1``; update 0 copies ``w``.

    Returns the EMA after each step (``None`` before the first update). Integer tensors (and, without
    ``average_buffers``, buffers) follow the live weights at each update.
    """
    ema: State | None = None
    n = 0
    out: list[State | None] = []
    for i, w in enumerate(snapshots):
        if update_steps is None or i in update_steps:
            if ema is None:
                ema = {k: v.double() if v.is_floating_point() else v.clone() for k, v in w.items()}
            else:
                d = decay_for_update(n)
                for k, v in w.items():
                    is_buffer = "running" in k or "num_batches" in k
                    if v.is_floating_point() and (average_buffers or not is_buffer):
                        ema[k] = d * ema[k] + (1.0 - d) * v.double()
                    else:
                        ema[k] = v.clone()
            n += 1
        out.append(None if ema is None else {k: v.clone() for k, v in ema.items()})
    return out


def assert_state_close(actual: State, expected: State, atol: float = 1e-6) -> None:
    assert actual.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(actual[k].double(), expected[k].double(), atol=atol, rtol=1e-5, msg=k)


def assert_state_differs(a: State, b: State) -> None:
    assert any(not torch.allclose(a[k].double(), b[k].double()) for k in a if a[k].is_floating_point())


def fit(callbacks: list[Callback], max_steps: int = -1, n: int = 16, batch_size: int = 4, **kw: Any) -> TinyClassifier:
    model = TinyClassifier()
    trainer = pl.Trainer(**trainer_kwargs(max_steps=max_steps, callbacks=callbacks, **kw))
    trainer.fit(model, train_dataloaders=loader(n, batch_size))
    return model


@pytest.mark.parametrize("use_buffers", [True, False])
def test_ema_weights_match_formula_after_n_steps(use_buffers: bool) -> None:
    ema, snaps = EMA(decay=0.7, use_buffers=use_buffers), StepSnapshots()
    model = fit([ema, snaps], max_steps=7)

    assert len(snaps.snapshots) == 7 and ema.num_updates == 7
    expected = reference_ema(snaps.snapshots, lambda n: 0.7, average_buffers=use_buffers)[-1]
    assert expected is not None
    # WeightAveraging copies the average into the module when training ends ...
    assert_state_close(clone_state(model), expected)
    assert_state_close(clone_state(ema._average_model.module), expected)
    # ... which really is different from the last live weights.
    assert_state_differs(clone_state(model), snaps.snapshots[-1])
    # Integer buffers are copied, never averaged (averaging would truncate num_batches_tracked).
    assert int(model.net[2].num_batches_tracked) == 7


def test_ema_warmup_decay_follows_one_plus_n_over_ten_plus_n() -> None:
    decay = 0.3  # (1+n)/(10+n) < 0.3 for n <= 2, so both branches of the min are exercised
    ema, snaps = EMA(decay=decay, warmup=True), StepSnapshots()
    model = fit([ema, snaps], max_steps=8)

    assert [round(ema.decay_at(n), 6) for n in (1, 2, 3, 4)] == [round(2 / 11, 6), 0.25, 0.3, 0.3]
    expected = reference_ema(snaps.snapshots, lambda n: min(decay, (1 + n) / (10 + n)))[-1]
    assert expected is not None
    assert_state_close(clone_state(model), expected)
    # Sanity: the warm-up makes a difference compared with a constant decay.
    constant = reference_ema(snaps.snapshots, lambda n: decay)[-1]
    assert constant is not None
    assert_state_differs(expected, constant)


def test_ema_exponential_warmup_follows_ultralytics_ramp() -> None:
    """``warmup_tau``: Ultralytics' ``ModelEMA`` decay ``decay * (1 - exp(-updates / tau))``, its ``updates``
    counted from 1, which is our update 0 (the copy)."""
    decay, tau = 0.9, 3.0
    ema, snaps = EMA(decay=decay, warmup_tau=tau), StepSnapshots()
    model = fit([ema, snaps], max_steps=8)

    assert ema.warmup and ema.decay_at(1) == pytest.approx(0.9 * (1 - math.exp(-2 / 3)))
    expected = reference_ema(snaps.snapshots, lambda n: decay * (1 - math.exp(-(n + 1) / tau)))[-1]
    assert expected is not None
    assert_state_close(clone_state(model), expected)
    timm_ramp = reference_ema(snaps.snapshots, lambda n: min(decay, (1 + n) / (10 + n)))[-1]
    assert timm_ramp is not None
    assert_state_differs(expected, timm_ramp)
    with pytest.raises(ValueError, match="warmup_tau"):
        EMA(warmup_tau=0)


def test_ema_updates_every_n_optimizer_steps_from_start_step_with_grad_accumulation() -> None:
    ema, snaps = EMA(decay=0.5, update_every_n_steps=2, update_starting_at_step=1), StepSnapshots()
    # 16 samples / batch 2 = 8 batches per epoch; accumulate 2 -> 4 optimizer steps per epoch; 8 steps = 2 epochs.
    model = fit([ema, snaps], max_steps=8, batch_size=2, accumulate_grad_batches=2)

    assert len(snaps.snapshots) == 8
    assert ema.num_updates == 4  # after optimizer steps 1, 3, 5, 7
    expected = reference_ema(snaps.snapshots, lambda n: 0.5, update_steps={1, 3, 5, 7})[-1]
    assert expected is not None
    assert_state_close(clone_state(model), expected)


def test_validation_inside_fit_runs_on_ema_weights_and_training_resumes_on_live_weights() -> None:
    ema, snaps = EMA(decay=0.6), StepSnapshots()
    model = TinyClassifier()
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=3, callbacks=[ema, snaps], limit_val_batches=1))
    trainer.fit(model, train_dataloaders=loader(8, 4), val_dataloaders=loader(4, 4, seed=1))

    expected = reference_ema(snaps.snapshots, lambda n: 0.6)
    assert [step for step, _ in model.val_weights] == [2, 4, 6]
    for step, weights in model.val_weights:
        reference = expected[step - 1]
        assert reference is not None
        assert_state_close(weights, reference)
        assert_state_differs(weights, snaps.snapshots[step - 1])
    # If the live weights had not been swapped back after validation, the final EMA would not match the reference
    # computed from the recorded live trajectory, and the live trajectory itself would have jumped.
    final = expected[-1]
    assert final is not None
    assert_state_close(clone_state(model), final)


def test_checkpoint_state_dict_holds_ema_weights_and_live_weights_separately(tmp_path: Any) -> None:
    ema, snaps = EMA(decay=0.8, warmup=True), StepSnapshots()
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1, filename="{step}")
    fit([ema, snaps, ckpt_cb], max_steps=6, enable_checkpointing=True)

    ckpt = torch.load(tmp_path / "step=3.ckpt", weights_only=False)
    expected = reference_ema(snaps.snapshots, lambda n: min(0.8, (1 + n) / (10 + n)))[2]
    assert expected is not None
    # "state_dict" (what load_from_checkpoint / inference uses) is the EMA ...
    assert_state_close({k.removeprefix("net."): v for k, v in ckpt["state_dict"].items()},
                       {k.removeprefix("net."): v for k, v in expected.items()})
    # ... the live weights are kept for resuming, together with the number of updates.
    assert_state_close(ckpt["current_model_state"], snaps.snapshots[2])
    assert int(ckpt["averaging_state"]["n_averaged"]) == 3
    assert ckpt["callbacks"][next(k for k in ckpt["callbacks"] if k.startswith("EMA"))]["latest_update_step"] == 3


def test_checkpoints_written_after_training_ends_keep_the_live_weights_for_resuming(tmp_path: Any) -> None:
    """``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` in its ``on_train_end`` (after EMA's, which put the
    average into the module) when no save fell on the last step, and a user saves the final model with
    ``trainer.save_checkpoint`` after ``fit``: both files must still hold the live weights of the last step under
    ``current_model_state``, or a run resumed from them would continue from the average."""
    ema, snaps = EMA(decay=0.8, warmup=True), StepSnapshots()
    # no save falls inside the 7 steps, so ModelCheckpoint writes last.ckpt in its on_train_end
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=100, save_top_k=-1, save_last=True)
    model = TinyClassifier()
    trainer = pl.Trainer(**trainer_kwargs(max_steps=7, callbacks=[ema, snaps, ckpt_cb], enable_checkpointing=True))
    trainer.fit(model, train_dataloaders=loader(16, 4))
    trainer.save_checkpoint(tmp_path / "after_fit.ckpt")

    expected = reference_ema(snaps.snapshots, lambda n: min(0.8, (1 + n) / (10 + n)))[-1]
    assert expected is not None
    assert_state_differs(expected, snaps.snapshots[-1])
    assert_state_close(clone_state(model), expected)  # fit still ends with the average in the module
    for name in ("last.ckpt", "after_fit.ckpt"):
        ckpt = torch.load(tmp_path / name, weights_only=False)
        assert ckpt["global_step"] == 7, name
        assert_state_close(ckpt["state_dict"], expected)
        assert_state_close(ckpt["current_model_state"], snaps.snapshots[-1])
        assert int(ckpt["averaging_state"]["n_averaged"]) == 7


def test_resume_from_checkpoint_continues_the_same_ema(tmp_path: Any) -> None:
    def run(max_epochs: int, ckpt_path: str | None = None) -> tuple[TinyClassifier, EMA, StepSnapshots]:
        ema, snaps = EMA(decay=0.9, warmup=True), StepSnapshots()
        ckpt_cb = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, filename="{epoch}")
        model = TinyClassifier()
        trainer = pl.Trainer(
            **trainer_kwargs(max_epochs=max_epochs, callbacks=[ema, snaps, ckpt_cb], enable_checkpointing=True)
        )
        trainer.fit(model, train_dataloaders=loader(8, 4), ckpt_path=ckpt_path)  # 2 optimizer steps per epoch
        return model, ema, snaps

    straight_model, straight_ema, straight_snaps = run(max_epochs=5)
    # The interrupted run: restart from the end of epoch 2 (4 steps) with fresh objects.
    resumed_model, resumed_ema, resumed_snaps = run(max_epochs=5, ckpt_path=str(tmp_path / "epoch=1.ckpt"))

    assert straight_ema.num_updates == resumed_ema.num_updates == 10  # n_averaged restored -> warm-up continues
    assert sorted(resumed_snaps.by_step) == [4, 5, 6, 7, 8, 9]
    # Live weights were restored (not the EMA), so the remaining trajectory is identical ...
    for step in (4, 9):
        assert_state_close(resumed_snaps.by_step[step], straight_snaps.by_step[step], atol=1e-5)
    # ... and so is the final average.
    assert_state_close(clone_state(resumed_model), clone_state(straight_model), atol=1e-5)
    expected = reference_ema(straight_snaps.snapshots, lambda n: min(0.9, (1 + n) / (10 + n)))[-1]
    assert expected is not None
    assert_state_close(clone_state(resumed_model), expected, atol=1e-5)


def test_ema_keeps_average_on_module_device_unless_device_given() -> None:
    ema = EMA(decay=0.5)
    fit([ema], max_steps=1)
    assert ema._average_model is not None
    assert ema._average_model.n_averaged.device.type == "cpu"
    assert next(ema._average_model.parameters()).device.type == "cpu"
    assert EMA(device=0)._device == torch.device(0)  # index 0 is not treated as "unset"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"decay": 1.5},
        {"decay": -0.1},
        {"update_every_n_steps": 0},
        {"update_starting_at_step": -1},
    ],
)
def test_ema_rejects_invalid_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        EMA(**kwargs)


class _StockAverage(Callback):
    """torch's own ``AveragedModel.update_parameters`` with the same averaging function, after every step."""

    def __init__(self, ema: EMA) -> None:
        self.ema = ema
        self.model: torch.optim.swa_utils.AveragedModel | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.model = torch.optim.swa_utils.AveragedModel(pl_module, use_buffers=True,
                                                         multi_avg_fn=self.ema._multi_avg_fn)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        assert self.model is not None
        self.model.update_parameters(pl_module)


def test_cached_update_equals_averaged_model_update_parameters_bit_for_bit() -> None:
    """EMA updates on tensor lists collected once per epoch; torch's AveragedModel collects them every step.
    Over 3 epochs with validation swaps in between, both give identical averages (and update counts)."""
    ema = EMA(decay=0.8, warmup=True)
    stock = _StockAverage(ema)
    model = TinyClassifier()
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=3, callbacks=[stock, ema], limit_val_batches=1))
    trainer.fit(model, train_dataloaders=loader(12, 4), val_dataloaders=loader(4, 4, seed=1))
    assert stock.model is not None and ema._average_model is not None
    assert int(ema._average_model.n_averaged) == int(stock.model.n_averaged) == 9
    ours, theirs = ema._average_model.module.state_dict(), stock.model.module.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_test_and_validate_with_a_checkpoint_after_fit_use_its_ema_weights(tmp_path: Any) -> None:
    """On the Trainer that trained, the fit's average still exists: ``WeightAveraging`` put the file's *live*
    weights into the module for test/predict (and validate swapped them back out only for its own epoch)."""
    ema = EMA(decay=0.8, warmup=True)
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1, filename="{step}")
    class Testable(TinyClassifier):
        test_step = TinyClassifier.validation_step

    model = Testable()
    trainer = pl.Trainer(**trainer_kwargs(max_steps=6, callbacks=[ema, ckpt_cb], enable_checkpointing=True))
    trainer.fit(model, train_dataloaders=loader(16, 4))
    ckpt = torch.load(tmp_path / "step=3.ckpt", weights_only=False)
    assert_state_differs(ckpt["state_dict"], ckpt["current_model_state"])
    seen: list[State] = []

    class Seen(Callback):
        def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            seen.append(clone_state(pl_module))

        on_validation_epoch_start = on_test_epoch_start  # after EMA's own hook

    trainer.callbacks.append(Seen())
    trainer.test(model, dataloaders=loader(8, 4), ckpt_path=str(tmp_path / "step=3.ckpt"), verbose=False)
    trainer.validate(model, dataloaders=loader(8, 4), ckpt_path=str(tmp_path / "step=3.ckpt"), verbose=False)
    for state in (*seen, clone_state(model)):  # test, validate, and the module after validate
        assert_state_close(state, ckpt["state_dict"], atol=0)
