"""Lightning's ``BackboneFinetuning`` with the task's weight-decay rule for the parameters it unfreezes.

Lightning's callback adds the unfrozen backbone to the optimizer as *one* parameter group, which takes the
optimizer's default ``weight_decay``: with ``AdamW(weight_decay=0.05)`` every bias, LayerNorm/GroupNorm weight and
timm ``no_weight_decay()`` parameter (ViT's ``pos_embed``) of the backbone is then decayed, which the task's own
groups never do (``no_weight_decay_norm_bias``, :func:`~lit_vision.tasks.base.split_decay_parameters`). It also
decides which parameters are "already in the optimizer" by *value* (``torch.equal``), not identity: a bias
initialised to zeros equal to any zero tensor of the same shape in the optimizer is left out, so it gets gradients
but is never updated (14 SE biases of a fresh ``tv/mobilenet_v3_small``).

:class:`BackboneUnfreezing` is the same callback (same arguments, same lr schedule for the backbone) that adds the
backbone as the task's weight-decay groups, chosen by identity, and raises the lr of all of them together.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BackboneFinetuning
from torch import nn
from torch.optim import Optimizer

__all__ = ["BackboneUnfreezing", "backbone_decay_groups", "warn_lightning_backbone_finetuning"]

GROUP_KEY = "backbone_unfreezing"  # marks the groups this callback added (kept in checkpoints with the group)


def backbone_decay_groups(pl_module: pl.LightningModule, params: list[nn.Parameter]) -> list[dict[str, Any]]:
    """``params`` as the module's weight-decay groups: ``pl_module.weight_decay_groups`` (every lit_vision task),
    else the lit_vision rule (no decay for norms, biases and per-channel parameters)."""
    split = getattr(pl_module, "weight_decay_groups", None)
    if callable(split):
        return split(params)
    from lit_vision.tasks.base import split_decay_parameters

    decay, no_decay = split_decay_parameters(pl_module)
    wanted = {id(p) for p in params}
    groups = [{"params": [p for p in decay if id(p) in wanted]},
              {"params": [p for p in no_decay if id(p) in wanted], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class BackboneUnfreezing(BackboneFinetuning):
    """:class:`lightning.pytorch.callbacks.BackboneFinetuning` whose added groups follow the task's weight decay.

    Same arguments and schedule: the backbone is frozen before the optimizer is built (its BatchNorm layers stay
    trainable whatever ``train_bn`` says, as in Lightning: ``docs/fine_tuning.md``), and at
    ``unfreeze_backbone_at_epoch`` its trainable parameters not yet in the optimizer join it at
    ``backbone_initial_lr`` (or ``backbone_initial_ratio_lr`` x the first group's lr), raised each epoch by
    ``lambda_func``. The difference: they join as the task's weight-decay groups (``weight_decay=0`` for norms,
    biases and ``no_weight_decay()`` parameters), and every group added here gets the backbone lr.
    """

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if epoch == self.unfreeze_backbone_at_epoch:
            current_lr = optimizer.param_groups[0]["lr"]
            lr = (self.backbone_initial_lr if self.backbone_initial_lr is not None
                  else current_lr * self.backbone_initial_ratio_lr)
            self.previous_backbone_lr = lr
            self.make_trainable(pl_module.backbone)
            present = {id(p) for g in optimizer.param_groups for p in g["params"]}
            params = [p for p in self.filter_params(pl_module.backbone, train_bn=self.train_bn)
                      if id(p) not in present]  # by identity: Lightning's torch.equal drops equal-valued ones
            for group in backbone_decay_groups(pl_module, params):
                optimizer.add_param_group({**group, "lr": lr, GROUP_KEY: True})
        elif epoch > self.unfreeze_backbone_at_epoch:
            current_lr = optimizer.param_groups[0]["lr"]
            lr = self.lambda_func(epoch + 1) * self.previous_backbone_lr
            lr = current_lr if (self.should_align and lr > current_lr) else lr
            for group in optimizer.param_groups:
                if group.get(GROUP_KEY):
                    group["lr"] = lr
            self.previous_backbone_lr = lr


def warn_lightning_backbone_finetuning(callbacks: list[pl.Callback]) -> None:
    """Warn when Lightning's own ``BackboneFinetuning`` (not this subclass) is configured: the tasks call it when
    they build the optimizer."""
    if any(type(c) is BackboneFinetuning for c in callbacks):
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn("Lightning's BackboneFinetuning adds the unfrozen backbone as one parameter group with the "
                       "optimizer's weight decay (biases and norms decayed, unlike the task's own groups) and skips "
                       "parameters equal in value to one already optimised; use "
                       "lit_vision.callbacks.BackboneUnfreezing (same arguments) instead")
