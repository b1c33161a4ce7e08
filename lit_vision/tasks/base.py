"""Shared LightningModule base: optimizer/scheduler injection and the classic weight-decay rule.

Every task takes ``optimizer`` and ``lr_scheduler`` as LightningCLI callables, so a YAML recipe can swap
either without code. ``None`` means the classic recipe described in each argument below.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

# Norm layers whose affine parameters should not be decayed (decaying a BN scale only fights the norm).
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def split_decay_parameters(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split trainable parameters into (decay, no_decay): biases, norm weights and 1-D params skip decay.

    1-D parameters also cover norms that are not ``nn.Module`` norms (timm's ``LayerNorm2d`` subclasses
    LayerNorm anyway; ConvNeXt's layer-scale ``gamma`` is 1-D and conventionally not decayed).
    """
    decay, no_decay, seen = [], [], set()
    for mod in module.modules():
        for name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(mod, NORM_TYPES) or name.endswith("bias") or p.ndim <= 1:
                no_decay.append(p)
            else:
                decay.append(p)
    return decay, no_decay


def resolve_classes(task: str, num_classes: int | None, class_names: list[str] | None) -> tuple[int, list[str]]:
    """``(num_classes, class_names)`` from whichever was given (names default to ``"0"``, ``"1"``, ...)."""
    if num_classes is None and class_names is None:
        raise ValueError(f"{task} needs num_classes or class_names (normally linked from the data)")
    if num_classes is None:
        num_classes = len(class_names)
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"num_classes={num_classes} but {len(class_names)} class_names were given")
    return num_classes, list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]


class VisionTask(LightningModule):
    """Base of :class:`ImageClassifier` and the other tasks.

    Args:
        optimizer: builds the optimizer from parameter groups. ``None``: SGD, lr 0.1, momentum 0.9,
            Nesterov, weight decay 1e-4.
        lr_scheduler: builds the scheduler from the optimizer. ``None``: cosine annealing to 0 over the
            whole run, stepped every optimizer step (``T_max = trainer.estimated_stepping_batches``).
        lr_scheduler_interval: ``"step"`` or ``"epoch"``: how often a YAML-given scheduler steps.
        no_weight_decay_norm_bias: put norm parameters, biases and other 1-D parameters in a group with
            ``weight_decay=0`` (the decay set on the optimizer applies to the rest).
    """

    def __init__(
        self,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        no_weight_decay_norm_bias: bool = True,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval
        self.no_weight_decay_norm_bias = no_weight_decay_norm_bias

    def _drop_unserializable_hparams(self) -> None:
        """Callables given from Python (not from the CLI, which stores their config) can't be checkpointed."""
        for key in ("optimizer", "lr_scheduler"):
            if key in self.hparams and not isinstance(self.hparams[key], (dict, str, type(None))):
                del self.hparams[key]

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Parameter groups handed to the optimizer; override for layer-wise LR decay and the like."""
        if not self.no_weight_decay_norm_bias:
            return [{"params": [p for p in self.parameters() if p.requires_grad]}]
        decay, no_decay = split_decay_parameters(self)
        return [g for g in ({"params": decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]

    def configure_optimizers(self) -> Any:
        groups: Iterable[dict[str, Any]] = self.parameter_groups()
        if self.optimizer_factory is None:
            optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
        else:
            optimizer = self.optimizer_factory(groups)
        if self.lr_scheduler_factory is None:
            total = max(1, int(self.trainer.estimated_stepping_batches))
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
            interval = "step"
        else:
            scheduler = self.lr_scheduler_factory(optimizer)
            interval = self.lr_scheduler_interval
        config: dict[str, Any] = {"scheduler": scheduler, "interval": interval}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = getattr(self, "monitor_metric", "val/loss")
        return {"optimizer": optimizer, "lr_scheduler": config}
