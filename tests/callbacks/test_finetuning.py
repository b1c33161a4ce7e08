"""BackboneUnfreezing: the unfrozen backbone joins the optimizer as the task's weight-decay groups, every parameter.

Lightning's ``BackboneFinetuning`` adds one group with the optimizer's ``weight_decay`` (biases and norms decayed)
and compares parameters by value, so zero-initialised biases equal to one already optimised never join; a fresh
``tv/mobilenet_v3_small`` has both (its squeeze-excitation convs have biases, initialised to zeros).
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from lightning.pytorch.callbacks import BackboneFinetuning

from lit_vision.callbacks import BackboneUnfreezing
from lit_vision.callbacks.finetuning import warn_lightning_backbone_finetuning
from lit_vision.tasks import ImageClassifier
from lit_vision.tasks.base import split_decay_parameters
from lit_vision.tasks.optim import build_optimizer


@pytest.fixture(scope="module")
def unfrozen() -> tuple[ImageClassifier, torch.optim.Optimizer, BackboneUnfreezing]:
    """A task frozen by the callback, its optimizer built, then the backbone unfrozen at epoch 0."""
    task = ImageClassifier(backbone="tv/mobilenet_v3_small", num_classes=2,
                           optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05))
    callback = BackboneUnfreezing(unfreeze_backbone_at_epoch=0)
    callback.freeze_before_training(task)
    optimizer = build_optimizer(task.optimizer_factory, task.parameter_groups())
    callback.finetune_function(task, 0, optimizer)
    return task, optimizer, callback


def test_unfrozen_backbone_follows_the_tasks_weight_decay_rule(unfrozen) -> None:
    task, optimizer, _ = unfrozen
    decay, no_decay = split_decay_parameters(task.backbone)
    assert decay and no_decay and any(n.endswith("fc1.bias") for n, _ in task.backbone.named_parameters())
    weight_decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert {weight_decay[id(p)] for p in no_decay} == {0.0}  # Lightning's group: 0.05 on SE biases
    assert {weight_decay[id(p)] for p in decay} == {0.05}


def test_every_backbone_parameter_is_optimised_once(unfrozen) -> None:
    task, optimizer, _ = unfrozen
    ids = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    missing = [n for n, p in task.backbone.named_parameters() if id(p) not in set(ids)]
    assert missing == []  # Lightning's value comparison leaves 14 zero-initialised SE biases out


def test_all_added_groups_share_the_backbone_lr(unfrozen) -> None:
    task, optimizer, callback = unfrozen
    added = [g for g in optimizer.param_groups if g.get("backbone_unfreezing")]
    assert len(added) == 2 and {g["lr"] for g in added} == {1e-4}  # 0.1 x the first group's lr
    callback.finetune_function(task, 1, optimizer)
    assert {g["lr"] for g in added} == {2e-4}  # raised by lambda_func (x2), all of them
    assert all(g["lr"] == 1e-3 for g in optimizer.param_groups if not g.get("backbone_unfreezing"))


def test_lightnings_own_callback_is_warned_about() -> None:
    with pytest.warns(UserWarning, match="BackboneUnfreezing"):
        warn_lightning_backbone_finetuning([BackboneFinetuning()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_lightning_backbone_finetuning([BackboneUnfreezing()])
