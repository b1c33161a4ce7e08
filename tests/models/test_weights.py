"""Whole-model weights (``weights=``): torchvision's full detectors / segmenters / classifiers and our own
checkpoints load into our models, class-dependent layers are re-initialised, anything else that does not fit fails."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from lightning.pytorch import Trainer
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection import RetinaNet as TVRetinaNet
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from lit_vision.backbones import IncompatibleWeightsError
from lit_vision.data.detection import ShapesDetectionDataModule
from lit_vision.tasks import ImageClassifier, ObjectDetector, SemanticSegmenter


def torchvision_faster_rcnn_r18(num_classes: int = 91) -> torch.nn.Module:
    """torchvision's own Faster R-CNN (its FPN extractor, RPN and RoI heads) on a ResNet-18: the layout of
    ``fasterrcnn_resnet50_fpn``'s file at a CPU-friendly size."""
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=3)
    return TVFasterRCNN(backbone, num_classes=num_classes)


def test_torchvision_detector_file_into_other_classes_reinitialises_only_the_predictor(tmp_path: Path) -> None:
    reference = torchvision_faster_rcnn_r18(91)
    path = tmp_path / "frcnn_coco.pth"
    torch.save(reference.state_dict(), path)
    task = ObjectDetector("faster_rcnn", "tv/resnet18", num_classes=3, weights=str(path),
                          backbone_kwargs={"frozen_bn": True, "frozen_stages": 2})
    report = task.weights_report
    predictor = ["model.roi_heads.box_predictor." + k for k in
                 ("cls_score.weight", "cls_score.bias", "bbox_pred.weight", "bbox_pred.bias")]
    assert report.reading == "torchvision model"
    assert sorted(report.reinitialised) == sorted(predictor)
    assert len(report.loaded) == len(reference.state_dict()) - 4 and report.ignored == []
    assert "re-initialised 4" in report.summary() and "loaded" in report.summary()
    ours = task.model.state_dict()
    assert torch.equal(ours["model.rpn.head.cls_logits.weight"], reference.state_dict()["rpn.head.cls_logits.weight"])
    assert torch.equal(ours["model.backbone.backbone.body.layer3.0.conv1.weight"],
                       reference.state_dict()["backbone.body.layer3.0.conv1.weight"])
    assert ours["model.roi_heads.box_predictor.cls_score.weight"].shape == (4, 1024)  # 3 classes + background


def training_loss(task: ObjectDetector, batch: dict) -> float:
    task.train()
    torch.manual_seed(0)
    with torch.no_grad():
        return float(task.compute_loss(task.model(batch["image"], batch["target"])))


def test_fine_tuning_a_loaded_detector_lowers_the_loss(tmp_path: Path) -> None:
    path = tmp_path / "frcnn_coco.pth"
    torch.save(torchvision_faster_rcnn_r18(91).state_dict(), path)
    dm = ShapesDetectionDataModule(num_train=16, num_val=4, scene_size=96, image_size=96, batch_size=4,
                                   num_workers=0, cache_dir=str(tmp_path / "shapes"))
    torch.manual_seed(0)
    task = ObjectDetector("faster_rcnn", "tv/resnet18", class_names=["circle", "square", "triangle"],
                          weights=str(path), image_size=96, backbone_kwargs={"frozen_bn": True, "frozen_stages": 2},
                          optimizer=lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
                          lr_scheduler=lambda o: torch.optim.lr_scheduler.ConstantLR(o, factor=1.0), nonfinite="off")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    before = training_loss(task, batch)
    Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            limit_val_batches=0, enable_model_summary=False).fit(task, dm)
    assert training_loss(task, batch) < before


def test_wrong_architecture_fails_naming_the_keys(tmp_path: Path) -> None:
    torch.manual_seed(0)
    retina = TVRetinaNet(resnet_fpn_backbone(backbone_name="resnet18", weights=None, returned_layers=[2, 3, 4]), 91)
    path = tmp_path / "retinanet.pth"
    torch.save(retina.state_dict(), path)
    shown = r"retinanet.pth do not fit.*are not in the file: .*have another shape: model\.backbone\.fpn"
    with pytest.raises(IncompatibleWeightsError, match=shown):
        ObjectDetector("faster_rcnn", "tv/resnet18", num_classes=3, weights=str(path))


def test_backbone_of_another_depth_fails(tmp_path: Path) -> None:
    path = tmp_path / "frcnn.pth"
    torch.save(torchvision_faster_rcnn_r18().state_dict(), path)
    with pytest.raises(IncompatibleWeightsError, match="another shape|not in the file"):
        ObjectDetector("faster_rcnn", "tv/resnet34", num_classes=3, weights=str(path))


def test_torchvision_classifier_file_into_three_classes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    task = ImageClassifier("tv/resnet18", num_classes=3, weights=str(path))
    assert sorted(task.weights_report.reinitialised) == ["head.fc.bias", "head.fc.weight"]
    assert len(task.weights_report.loaded) == len(reference.state_dict()) - 2
    # Same class count: everything loads and the logits are torchvision's.
    same = ImageClassifier("tv/resnet18", num_classes=1000, weights=str(path)).eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(same(x), reference.eval()(x), atol=1e-5, rtol=1e-5)


def test_lit_vision_checkpoint_into_other_classes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = SemanticSegmenter("deeplabv3", "tv/resnet18", num_classes=21, aux_loss=True)
    path = tmp_path / "seg.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.model.state_dict().items()}, "epoch": 3}, path)
    task = SemanticSegmenter("deeplabv3", "tv/resnet18", num_classes=5, aux_loss=True, weights=str(path))
    report = task.weights_report
    assert report.reading == "lit_vision checkpoint"
    # The two final 1x1 convs (weight + bias each) are all that depends on the class count.
    assert sorted(report.reinitialised) == ["aux_head.4.bias", "aux_head.4.weight",
                                            "head.classifier.1.bias", "head.classifier.1.weight"]
    assert torch.equal(task.model.state_dict()["head.aspp.branches.1.0.weight"],
                       source.model.state_dict()["head.aspp.branches.1.0.weight"])


def test_missing_weight_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        ImageClassifier("tv/resnet18", num_classes=3, weights=str(tmp_path / "nowhere.pth"))


def test_finetune_recipe_starts_from_torchvisions_coco_detector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """experiments/detection/faster_rcnn_r50_fpn_finetune.yaml with a file of fasterrcnn_resnet50_fpn's layout."""
    from lit_vision.cli import run_cli
    from tests.test_experiments import EXPERIMENTS, detection_overrides

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    coco = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    coco = {k: v for k, v in coco.items() if not k.endswith("num_batches_tracked")}  # as the official file
    torch.save(coco, tmp_path / "fasterrcnn_resnet50_fpn_coco.pth")
    recipe = EXPERIMENTS / "detection" / "faster_rcnn_r50_fpn_finetune.yaml"
    cli = run_cli(["--config", str(recipe), *detection_overrides(recipe),
                   "--model.weights", str(tmp_path / "fasterrcnn_resnet50_fpn_coco.pth")], run=False)
    report = cli.model.weights_report
    assert len(report.reinitialised) == 4 and len(report.loaded) == len(coco) - 4 and not report.ignored
    backbone = cli.model.backbone
    assert {m.eps for m in backbone.modules() if hasattr(m, "running_var")} == {0.0}  # COCO v1's frozen norm
    assert not any(p.requires_grad for p in backbone.body.get_submodule("layer1").parameters())
