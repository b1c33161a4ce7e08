"""Every recipe under experiments/ parses and instantiates (model, data, trainer, callbacks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_vision.backbones import Backbone
from lit_vision.cli import run_cli
from lit_vision.tasks import ImageClassifier

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
CLASSIFICATION = sorted((EXPERIMENTS / "classification").glob("*.yaml"))


def test_the_canon_has_a_recipe_per_family() -> None:
    names = {p.stem for p in CLASSIFICATION}
    for family in ("alexnet", "vgg", "googlenet", "inception_v3", "resnet50", "densenet121", "efficientnet_b0",
                   "convnext_tiny"):
        assert any(n.startswith(family) for n in names), family
    assert "quickstart" in names


@pytest.mark.parametrize("recipe", CLASSIFICATION, ids=lambda p: p.stem)
def test_classification_recipe_instantiates(recipe: Path, imagefolder_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(recipe), "--data.num_workers", "0"]
    if recipe.stem != "quickstart":
        args += ["--data.root", str(imagefolder_root)]
    cli = run_cli(args, run=False)
    assert isinstance(cli.model, ImageClassifier) and isinstance(cli.model.model.backbone, Backbone)
    assert cli.model.num_classes == cli.datamodule.num_classes  # linked, never typed in the YAML
    assert cli.model.hparams.backbone in recipe.read_text()
    assert cli.trainer.checkpoint_callback.monitor == "val/acc1"
    assert cli.trainer.max_epochs >= 10


def test_classic_resnet50_recipe_matches_the_paper_setup(imagefolder_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = EXPERIMENTS / "classification" / "resnet50_imagefolder.yaml"
    cli = run_cli(["--config", str(recipe), "--data.root", str(imagefolder_root)], run=False)
    hp, trainer = cli.model.hparams, cli.trainer
    assert hp.backbone == "tv/resnet50" and hp.label_smoothing == 0.1
    opt = cli.model.optimizer_factory(cli.model.parameter_groups())
    assert type(opt).__name__ == "SGD" and opt.defaults["lr"] == 0.1 and opt.defaults["nesterov"]
    assert opt.defaults["weight_decay"] == 1e-4 and opt.param_groups[1]["weight_decay"] == 0.0
    sched = cli.model.lr_scheduler_factory(opt)
    assert type(sched).__name__ == "CosineAnnealingLR" and sched.T_max == 90 == trainer.max_epochs
    assert trainer.precision == "bf16-mixed" and trainer.gradient_clip_val == 1.0
    assert trainer.checkpoint_callback.mode == "max"


DETECTION = sorted((EXPERIMENTS / "detection").glob("*.yaml"))
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def detection_overrides(recipe: Path) -> list[str]:
    """Point a recipe at the small fixtures; never download weights in tests."""
    text = recipe.read_text()
    args = ["--data.num_workers", "0"]
    if "pretrained: true" in text:
        args += ["--model.pretrained", "false"]
    if "COCODetectionDataModule" in text:
        coco = FIXTURES / "minicoco"
        args += ["--data.train_images", str(coco / "images"), "--data.train_annotations", str(coco / "train.json"),
                 "--data.val_images", str(coco / "images"), "--data.val_annotations", str(coco / "val.json")]
    elif "VOCDetectionDataModule" in text:
        args += ["--data.root", str(FIXTURES / "voc" / "VOC2012")]
    else:
        args += ["--data.num_train", "4", "--data.num_val", "2"]
    return args


def test_the_detection_recipes_cover_the_detectors() -> None:
    names = {p.stem for p in DETECTION}
    assert {"quickstart", "faster_rcnn_r50_fpn_coco", "retinanet_r50_fpn_coco", "fcos_r50_fpn_coco",
            "yolo_cspdarknet53_pan_coco"} <= names
    assert any(n.endswith("_voc") for n in names)


@pytest.mark.parametrize("recipe", DETECTION, ids=lambda p: p.stem)
def test_detection_recipe_instantiates(recipe: Path, tmp_path: Path, monkeypatch) -> None:
    from lit_vision.tasks import ObjectDetector

    monkeypatch.chdir(tmp_path)
    cli = run_cli(["--config", str(recipe), *detection_overrides(recipe)], run=False)
    assert isinstance(cli.model, ObjectDetector)
    assert f"architecture: {cli.model.hparams.architecture}" in recipe.read_text()
    assert cli.model.num_classes == cli.datamodule.num_classes  # linked from the data
    assert cli.model.class_names == cli.datamodule.class_names
    assert cli.trainer.checkpoint_callback.monitor.startswith("val/map")
