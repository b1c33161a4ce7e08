"""A recipe's schedule length against the run's: set to it (``lr_scheduler_span: run``) or warned about."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch
from torch.optim import lr_scheduler

from lit_vision.tasks import ImageClassifier


def _configure(scheduler: object, span: str = "as_given", interval: str = "step", steps: float = 40,
               epochs: int | None = 4) -> tuple[torch.optim.Optimizer, object]:
    model = ImageClassifier(backbone="tv/resnet18", num_classes=3, lr_scheduler=scheduler,
                            lr_scheduler_interval=interval, lr_scheduler_span=span)
    model.trainer = SimpleNamespace(estimated_stepping_batches=steps, max_epochs=epochs)
    config = model.configure_optimizers()
    return config["optimizer"], config["lr_scheduler"]["scheduler"]


def test_span_run_sets_a_poly_decay_to_the_runs_optimizer_steps() -> None:
    """A recipe written for 8 devices x 4 images (1,380 steps) on one device: the decay spans this run's steps."""
    optimizer, scheduler = _configure(functools.partial(lr_scheduler.PolynomialLR, total_iters=1380, power=1.0),
                                      span="run", steps=40)
    assert scheduler.total_iters == 40
    lrs = []
    for _ in range(40):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[19] == pytest.approx(0.1 * 20 / 40) and lrs[-1] == 0.0  # linear to 0 exactly at the run's end


def test_span_run_on_epochs_and_cosine() -> None:
    _, scheduler = _configure(functools.partial(lr_scheduler.CosineAnnealingLR, T_max=100), span="run",
                              interval="epoch", epochs=12)
    assert scheduler.T_max == 12


def test_a_decay_that_does_not_span_the_run_is_warned_about() -> None:
    with pytest.warns(UserWarning, match=r"PolynomialLR\(total_iters=10\) does not span this run: it reaches its "
                                         r"final learning rate after 10 of the run's 40 optimizer steps"):
        _, scheduler = _configure(functools.partial(lr_scheduler.PolynomialLR, total_iters=10, power=0.9))
    assert scheduler.total_iters == 10  # as given
    with pytest.warns(UserWarning, match="the run ends after 40 of its 100 optimizer steps"):
        _configure(functools.partial(lr_scheduler.CosineAnnealingLR, T_max=100))


def test_a_matching_length_or_a_warm_up_ramp_is_not_warned_about(recwarn: pytest.WarningsRecorder) -> None:
    _configure(functools.partial(lr_scheduler.PolynomialLR, total_iters=40))
    _configure(functools.partial(lr_scheduler.LinearLR, start_factor=0.1, total_iters=5))  # a warm-up, going up
    assert not [w for w in recwarn if "does not span" in str(w.message)]


def test_span_run_needs_a_scheduler_with_a_length() -> None:
    with pytest.raises(ValueError, match="StepLR has none to set"):
        _configure(functools.partial(lr_scheduler.StepLR, step_size=3), span="run")
    with pytest.raises(ValueError, match="must be 'as_given' or 'run'"):
        ImageClassifier(backbone="tv/resnet18", num_classes=3, lr_scheduler_span="whole")


def test_reduce_on_plateau_steps_per_epoch_on_the_task_metric_in_its_direction() -> None:
    model = ImageClassifier(backbone="tv/resnet18", num_classes=3,
                            lr_scheduler=functools.partial(lr_scheduler.ReduceLROnPlateau, mode="max"))
    model.trainer = SimpleNamespace(estimated_stepping_batches=40, max_epochs=4)
    config = model.configure_optimizers()["lr_scheduler"]
    assert config["interval"] == "epoch" and config["monitor"] == "val/acc1"  # not per step: no metric exists yet
    with pytest.raises(ValueError, match="watches val/acc1, which grows as the model improves: set its mode to 'max'"):
        _configure(functools.partial(lr_scheduler.ReduceLROnPlateau))  # torch's default mode="min"
