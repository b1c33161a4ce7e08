"""Freezing backbones: frozen BatchNorm, the first N stages, the whole backbone (gradients and statistics)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from lightning.pytorch import Trainer
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from lit_vision.backbones import create_backbone
from lit_vision.data.classification import ImageFolderDataModule
from lit_vision.data.detection import ShapesDetectionDataModule
from lit_vision.tasks import ImageClassifier, ObjectDetector


@pytest.mark.parametrize(("name", "expected"), [
    ("tv/resnet18", {"body.conv1": 0, "body.bn1": 0, "body.layer1.0.conv1": 1, "body.layer2.0.downsample.0": 2,
                     "body.layer4.1.bn2": 4}),
    ("tv/convnext_tiny", {"body.features.0.0": 0, "body.features.1.2.block.0": 0, "body.features.2.1": 1,
                          "body.features.7.0.block.0": 3}),
    ("tv/densenet121", {"body.features.conv0": 0, "body.features.denseblock1.denselayer1.conv1": 1,
                        "body.features.transition1.conv": 2, "body.features.norm5": 4}),
    ("timm/resnet18", {"model.conv1": 0, "model.layer1.0.conv1": 1, "model.layer3.1.bn1": 3}),
    ("timm/convnext_atto", {"model.stem_0": 0, "model.stages_0.blocks.0.conv_dw": 0,
                            "model.stages_1.downsample.1": 1, "model.stages_3.blocks.1.mlp.fc1": 3}),
])
def test_module_stages(name: str, expected: dict[str, int]) -> None:
    stages = create_backbone(name).module_stages
    assert {k: stages.get(k) for k in expected} == expected


@pytest.mark.parametrize(("name", "kwargs", "container", "stage0"), [
    ("tv/efficientnet_b0", {}, "body.features", ("body.features.0.", "body.features.1.")),
    ("tv/densenet121", {}, "body.features", ("body.features.conv0.",)),
    ("timm/vit_tiny_patch16_224", {"img_size": 32, "out_indices": [-1]}, "model.model",
     ("model.model.cls_token", "model.model.pos_embed", "model.model.patch_embed.", "model.model.blocks.0.")),
])
def test_frozen_stages_freeze_only_those_stages(name: str, kwargs: dict, container: str,
                                                stage0: tuple[str, ...]) -> None:
    """A container listed before its stages (``features``, a ViT's ``model``) is not "stage 0": freezing it froze the
    whole backbone. A ViT's own ``cls_token``/``pos_embed`` are its stem's, as in timm's layer-decay groups."""
    backbone = create_backbone(name, frozen_stages=1, **kwargs)
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in backbone.named_parameters() if n.startswith(stage0)}
    assert container not in backbone.module_stages  # it spans every stage


def test_frozen_stages_match_torchvisions_trainable_backbone_layers() -> None:
    """``frozen_stages=2`` freezes what torchvision's ``trainable_backbone_layers=3`` freezes (stem and layer1)."""
    reference = _resnet_fpn_extractor(torchvision.models.resnet18(norm_layer=FrozenBatchNorm2d), 3).body
    expected = {n for n, p in reference.named_parameters() if p.requires_grad}
    ours = create_backbone("tv/resnet18", frozen_stages=2, frozen_bn=True)
    assert {n.removeprefix("body.") for n, p in ours.named_parameters() if p.requires_grad} == expected
    assert ours.frozen_stages == 2


def test_frozen_batchnorm_keeps_outputs_and_statistics() -> None:
    torch.manual_seed(0)
    plain = create_backbone("tv/resnet18").eval()
    for m in plain.modules():  # non-trivial statistics, so a conversion that dropped them would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    frozen = create_backbone("tv/resnet18", frozen_bn=True)
    frozen.load_state_dict(plain.state_dict(), strict=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules()) == 20
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = plain(x)
        frozen.train()  # train mode: a frozen norm still uses the running statistics and leaves them alone
        before = {k: v.clone() for k, v in frozen.state_dict().items()}
        got = frozen(x)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())


def test_bn_eps_and_bad_stage_counts() -> None:
    backbone = create_backbone("tv/resnet18", frozen_bn=True, bn_eps=0.0)
    assert {m.eps for m in backbone.modules() if isinstance(m, FrozenBatchNorm2d)} == {0.0}
    with pytest.raises(ValueError, match="frozen_stages must be 0..5"):
        create_backbone("tv/resnet18", frozen_stages=6)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def fit_one_epoch(task: torch.nn.Module, data: object) -> None:
    Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, limit_train_batches=3).fit(task, data)


def test_frozen_classifier_backbone_keeps_parameters_and_statistics(imagefolder_root: Path) -> None:
    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=4, num_workers=0)
    task = ImageClassifier("tv/resnet18", class_names=data.class_names, freeze_backbone=True, nonfinite="off")
    backbone, head = snapshot(task.backbone), snapshot(task.model.head)
    fit_one_epoch(task, data)
    assert changed(backbone, task.backbone) == set()  # running_mean/var included: BatchNorm did not learn
    assert changed(head, task.model.head) == {"fc.weight", "fc.bias"}


def test_frozen_detector_stages_keep_parameters_and_statistics(tmp_path: Path) -> None:
    data = ShapesDetectionDataModule(cache_dir=str(tmp_path), num_train=12, num_val=4, scene_size=64, image_size=64,
                                     batch_size=4, num_workers=0)
    task = ObjectDetector("fcos", "tv/resnet18", class_names=["circle", "square", "triangle"], image_size=64,
                          backbone_kwargs={"frozen_stages": 3}, nonfinite="off")
    stages = task.backbone.module_stages
    before = snapshot(task.backbone)
    fit_one_epoch(task, data)
    moved = {k.rsplit(".", 1)[0] for k in changed(before, task.backbone)}
    assert moved and all(stages[m] >= 3 for m in moved)  # layer3/layer4 trained (incl. their BatchNorm statistics)
    frozen = {k for k in before if stages.get(k.rsplit(".", 1)[0], 99) < 3}
    assert frozen and not frozen & changed(before, task.backbone)
