"""``BackboneUnfreezing`` (Lightning's ``BackboneFinetuning`` with the task's weight-decay groups) with every task:
the backbone stays put while frozen, trains once unfrozen.

The callback freezes ``pl_module.backbone`` in ``setup`` (before ``configure_optimizers``) and, at
``unfreeze_backbone_at_epoch``, adds the backbone's parameters to the optimizer as new groups. Its frozen phase
keeps BatchNorm affine parameters trainable whatever ``train_bn`` says (Lightning issues #13902 / #21531), so
"frozen" below means every backbone parameter outside a BatchNorm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import BackboneFinetuning
from torch import nn

from lit_vision.callbacks import BackboneUnfreezing, LRWarmup
from lit_vision.data import ImageFolderDataModule
from lit_vision.data.detection import ShapesDetectionDataModule
from lit_vision.data.segmentation import ShapesSegmentationDataModule
from lit_vision.models.detection import FCOS
from lit_vision.tasks import ImageClassifier, ObjectDetector, SemanticSegmenter
from lit_vision.tasks.base import VisionTask


class Snapshots(pl.Callback):
    """Every parameter at the start of training and at the end of each epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def _take(self, pl_module: pl.LightningModule) -> None:
        self.states.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take(pl_module)


def frozen_and_head(task: VisionTask) -> tuple[set[str], set[str]]:
    """Names (in ``task``) of the backbone's parameters outside BatchNorm, and of the parameters outside it."""
    in_backbone = {id(p) for p in task.backbone.parameters()}
    batchnorm = {id(p) for m in task.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 for p in m.parameters()}
    frozen = {n for n, p in task.named_parameters() if id(p) in in_backbone and id(p) not in batchnorm}
    head = {n for n, p in task.named_parameters() if id(p) not in in_backbone}
    return frozen, head


def fit_two_epochs(task: VisionTask, data: pl.LightningDataModule, tmp_path: Path,
                   callbacks: list[pl.Callback] = (), unfreezing: type[BackboneFinetuning] = BackboneUnfreezing,
                   ) -> tuple[pl.Trainer, Snapshots]:
    snapshots = Snapshots()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, limit_train_batches=1, limit_val_batches=0,
                         num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[unfreezing(unfreeze_backbone_at_epoch=1), *callbacks, snapshots])
    trainer.fit(task, data)
    return trainer, snapshots


def check_backbone_waits_one_epoch(task: VisionTask, trainer: pl.Trainer, snapshots: Snapshots) -> None:
    frozen, head = frozen_and_head(task)
    assert frozen and head
    start, after_frozen_epoch, after_unfrozen_epoch = snapshots.states

    def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], names: set[str]) -> set[str]:
        return {n for n in names if not torch.equal(before[n], after[n])}

    assert changed(start, after_frozen_epoch, frozen) == set()
    assert changed(after_frozen_epoch, after_unfrozen_epoch, frozen) == frozen
    assert changed(start, after_frozen_epoch, head) == head
    assert changed(after_frozen_epoch, after_unfrozen_epoch, head) == head
    # The optimizer was built without the frozen parameters; the callback's groups hold exactly them.
    names = {id(p): n for n, p in task.named_parameters()}
    groups = trainer.optimizers[0].param_groups
    built = [g for g in groups if not g.get("backbone_unfreezing")]
    added = [g for g in groups if g.get("backbone_unfreezing")]
    assert groups[:len(built)] == built
    assert {names[id(p)] for g in built for p in g["params"]}.isdisjoint(frozen)
    assert {names[id(p)] for g in added for p in g["params"]} == frozen


@pytest.mark.parametrize("layer_decay", [None, 0.5], ids=["plain", "layer_decay+warmup"])
def test_classifier_backbone_trains_only_after_unfreezing(imagefolder_root: Path, tmp_path: Path,
                                                          layer_decay: float | None) -> None:
    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=4, num_workers=0)
    task = ImageClassifier(backbone="tv/resnet18", class_names=data.class_names, layer_decay=layer_decay)
    warmup: list[pl.Callback] = [LRWarmup(warmup_steps=2, log_factor=False)] if layer_decay else []
    trainer, snapshots = fit_two_epochs(task, data, tmp_path, warmup)
    check_backbone_waits_one_epoch(task, trainer, snapshots)
    if layer_decay:  # the backbone's BatchNorms (trainable from the start, see the module docstring) keep their scales
        groups = [g for g in trainer.optimizers[0].param_groups if not g.get("backbone_unfreezing")]
        assert groups[0]["applied_lr_scale"] == 1.0 and min(g["applied_lr_scale"] for g in groups) == 0.5 ** 5


def test_lightnings_own_callback_warns(imagefolder_root: Path, tmp_path: Path) -> None:
    """Lightning's class still works, with a warning naming what it gets wrong (tests/callbacks/test_finetuning.py)."""
    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=4, num_workers=0)
    task = ImageClassifier(backbone="tv/resnet18", class_names=data.class_names)
    with pytest.warns(UserWarning, match="use lit_vision.callbacks.BackboneUnfreezing"):
        fit_two_epochs(task, data, tmp_path, unfreezing=BackboneFinetuning)


def test_detector_backbone_trains_only_after_unfreezing(tmp_path: Path) -> None:
    data = ShapesDetectionDataModule(num_train=4, num_val=2, scene_size=64, image_size=64, batch_size=2, num_workers=0)
    # 64 channels: GroupNorm(32) over 2 channels, so the 1x1 P6/P7 maps of 64-px images still pass gradients.
    task = ObjectDetector(FCOS(fpn_channels=64), "tv/resnet18", class_names=data.class_names, image_size=64)
    trainer, snapshots = fit_two_epochs(task, data, tmp_path)
    check_backbone_waits_one_epoch(task, trainer, snapshots)


def test_segmenter_backbone_trains_only_after_unfreezing(tmp_path: Path) -> None:
    data = ShapesSegmentationDataModule(num_train=4, num_val=2, scene_size=64, batch_size=2, num_workers=0)
    task = SemanticSegmenter("fcn", "tv/resnet18", class_names=data.class_names)
    trainer, snapshots = fit_two_epochs(task, data, tmp_path)
    check_backbone_waits_one_epoch(task, trainer, snapshots)


def test_every_task_exposes_its_registry_backbone() -> None:
    """What BackboneFinetuning, freeze_backbone and layer_decay act on is the registry backbone, not a wrapper."""
    tasks: list[Any] = [
        ImageClassifier(backbone="tv/resnet18", num_classes=2),
        ObjectDetector(FCOS(fpn_channels=32), "tv/resnet18", num_classes=2, image_size=64),
        SemanticSegmenter("fcn", "tv/resnet18", num_classes=2),
    ]
    for task in tasks:
        assert task.backbone.name == "tv/resnet18"
        assert sum(p.numel() for p in task.backbone.parameters()) == 11_176_512  # resnet18 without its fc
