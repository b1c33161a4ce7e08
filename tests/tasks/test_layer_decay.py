"""Layer-wise learning-rate decay: layer ids (timm's numbering, or one per stage), group lrs, schedulers, warm-up."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import timm
import torch
from timm.optim._param_groups import param_groups_layer_decay
from timm.scheduler import StepLRScheduler

from lit_vision.callbacks import LRWarmup
from lit_vision.data import ImageFolderDataModule
from lit_vision.tasks import ImageClassifier
from lit_vision.tasks.base import split_decay_parameters

BASE_LR = 1e-3


def adamw(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=BASE_LR, weight_decay=0.05)


def constant(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def classifier(backbone: str, decay: float, **kw: Any) -> ImageClassifier:
    return ImageClassifier(backbone=backbone, class_names=["cat", "dog", "eel"], layer_decay=decay, optimizer=adamw,
                           lr_scheduler=constant, **kw)


def built_groups(model: ImageClassifier) -> tuple[torch.optim.Optimizer, dict[str, dict[str, Any]]]:
    """The optimizer ``configure_optimizers`` builds, and each parameter name's group in it."""
    optimizer = model.configure_optimizers()["optimizer"]
    names = {id(p): n for n, p in model.named_parameters()}
    where: dict[str, dict[str, Any]] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert names[id(p)] not in where, f"{names[id(p)]} is in two groups"
            where[names[id(p)]] = group
    return optimizer, where


def check_partition_and_decay_split(model: ImageClassifier, where: dict[str, dict[str, Any]]) -> None:
    """Every parameter in exactly one group, and the weight-decay rule of the groups without layer decay."""
    assert set(where) == {n for n, _ in model.named_parameters()}
    _, no_decay = split_decay_parameters(model)
    no_decay_ids = {id(p) for p in no_decay}
    for name, p in model.named_parameters():
        assert (where[name]["weight_decay"] == 0.0) == (id(p) in no_decay_ids), name


def test_timm_convnext_lrs_follow_its_blocks_computed_by_hand() -> None:
    model = classifier("timm/convnext_atto", 0.5)
    optimizer, where = built_groups(model)
    check_partition_and_decay_split(model, where)
    # convnext_atto: stem, then blocks (2, 2, 6, 2); timm numbers stem 0, each block 1..12 (a stage's downsample
    # joins its first block), head 13 = L.
    expected = {
        "model.backbone.model.stem_0.weight": 0.5 ** 13,
        "model.backbone.model.stages_0.blocks.1.mlp.fc1.weight": 0.5 ** (13 - 2),
        "model.backbone.model.stages_1.downsample.1.weight": 0.5 ** (13 - 3),
        "model.backbone.model.stages_2.blocks.3.conv_dw.weight": 0.5 ** (13 - 8),
        "model.backbone.model.stages_2.blocks.3.norm.weight": 0.5 ** (13 - 8),
        "model.backbone.model.stages_3.blocks.1.gamma": 0.5 ** (13 - 12),
        "model.head.fc.weight": 1.0,
        "model.head.fc.bias": 1.0,
    }
    for name, scale in expected.items():
        assert where[name]["lr"] == pytest.approx(BASE_LR * scale), name
    assert where["model.backbone.model.stages_2.blocks.3.conv_dw.weight"]["weight_decay"] == 0.05
    assert where["model.backbone.model.stages_2.blocks.3.norm.weight"]["weight_decay"] == 0.0
    assert len({g["lr"] for g in optimizer.param_groups}) == 14


def test_timm_convnext_scales_equal_timms_own_on_the_plain_model() -> None:
    """Every backbone parameter's scale equals what timm's param_groups_layer_decay gives the classification model."""
    model = classifier("timm/convnext_atto", 0.7)
    ours = {n: g["lr_scale"] for g in model.parameter_groups() for n in _names(model, g)}
    reference = _timm_scales(timm.create_model("convnext_atto", num_classes=3), 0.7)
    prefix = "model.backbone.model."
    for name, scale in ours.items():
        if name.startswith(prefix):  # the feature model flattens stages.2 into stages_2
            plain = re.sub(r"^(stem|stages)_(\d+)", r"\1.\2", name[len(prefix):])
            assert scale == pytest.approx(reference[plain]), name
    assert ours["model.head.fc.weight"] == reference["head.fc.weight"] == 1.0


def test_vit_layer_ids_equal_timms_param_groups_layer_decay() -> None:
    model = classifier("timm/vit_tiny_patch16_224", 0.75, backbone_kwargs={"img_size": 32, "out_indices": [-1]})
    ours = {n: g["lr_scale"] for g in model.parameter_groups() for n in _names(model, g)}
    reference = _timm_scales(timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=3), 0.75)
    prefix = "model.backbone.model.model."
    compared = 0
    for name, scale in ours.items():
        if name.startswith(prefix):
            assert scale == pytest.approx(reference[name[len(prefix):]]), name
            compared += 1
    assert compared == sum(1 for n, _ in model.backbone.named_parameters())
    assert ours["model.head.fc.weight"] == reference["head.weight"] == 1.0
    assert ours["model.backbone.model.model.cls_token"] == pytest.approx(0.75 ** 13)  # stem: 12 blocks + head above


def test_torchvision_resnet_gets_one_layer_per_stage() -> None:
    model = classifier("tv/resnet18", 0.5)
    _, where = built_groups(model)
    check_partition_and_decay_split(model, where)
    # 5 stages (stem, layer1..layer4): stage k is layer k + 1, L = 6.
    expected = {
        "model.backbone.body.conv1.weight": 0.5 ** 5,
        "model.backbone.body.bn1.bias": 0.5 ** 5,
        "model.backbone.body.layer2.0.conv1.weight": 0.5 ** 3,
        "model.backbone.body.layer4.1.bn2.weight": 0.5 ** 1,
        "model.head.fc.weight": 1.0,
    }
    for name, scale in expected.items():
        assert where[name]["lr"] == pytest.approx(BASE_LR * scale), name


def test_scale_is_applied_once_before_the_scheduler_records_it() -> None:
    model = classifier("tv/resnet18", 0.5)
    out = model.configure_optimizers()
    optimizer, scheduler = out["optimizer"], out["lr_scheduler"]["scheduler"]
    assert all("lr_scale" not in g for g in optimizer.param_groups)
    assert scheduler.base_lrs == [BASE_LR * g["applied_lr_scale"] for g in optimizer.param_groups]
    # timm's schedulers multiply by any "lr_scale" left in a group: with the key renamed, the scale applies once.
    model = classifier("tv/resnet18", 0.5)
    model.lr_scheduler_factory = lambda opt: StepLRScheduler(opt, decay_t=100)
    optimizer = model.configure_optimizers()["optimizer"]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(
        [BASE_LR * g["applied_lr_scale"] for g in optimizer.param_groups])


def test_no_weight_decay_split_off_still_splits_by_layer() -> None:
    model = classifier("tv/resnet18", 0.5, no_weight_decay_norm_bias=False)
    groups = model.parameter_groups()
    assert [g["layer_id"] for g in groups] == [6, 5, 4, 3, 2, 1]  # one group per layer, deepest first
    assert all("weight_decay" not in g for g in groups)


def test_bad_layer_decay_is_refused() -> None:
    with pytest.raises(ValueError, match="layer_decay"):
        classifier("tv/resnet18", 1.5)


class StepLrs(pl.Callback):
    """Each group's lr as the optimizer uses it, from a step pre-hook registered after LRWarmup's."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.optimizers[0].register_step_pre_hook(
            lambda opt, args, kwargs: self.lrs.append([g["lr"] for g in opt.param_groups]))


def test_warmup_multiplies_the_scaled_lrs(imagefolder_root: Path, tmp_path: Path) -> None:
    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=4, num_workers=0)
    model = classifier("tv/resnet18", 0.5)
    recorder = StepLrs()
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[LRWarmup(warmup_steps=4, start_factor=0.2, log_factor=False), recorder])
    trainer.fit(model, data)
    scales = [g["applied_lr_scale"] for g in trainer.optimizers[0].param_groups]
    for step, lrs in enumerate(recorder.lrs):
        factor = 0.2 + 0.8 * step / 4
        assert lrs == pytest.approx([BASE_LR * s * factor for s in scales]), step
    assert len(recorder.lrs) == 3
    # Outside the step the groups hold the scaled, un-warmed lrs again.
    assert [g["lr"] for g in trainer.optimizers[0].param_groups] == pytest.approx([BASE_LR * s for s in scales])


def _names(model: torch.nn.Module, group: dict[str, Any]) -> list[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for p in group["params"]]


def _timm_scales(plain: torch.nn.Module, decay: float) -> dict[str, float]:
    names = {id(p): n for n, p in plain.named_parameters()}
    groups = param_groups_layer_decay(plain, layer_decay=decay)
    return {names[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}
