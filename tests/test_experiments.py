"""Every recipe under experiments/ parses and instantiates (model, data, trainer, callbacks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from lit_vision.backbones import Backbone
from lit_vision.cli import run_cli
from lit_vision.tasks import ImageClassifier

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
CLASSIFICATION = sorted((EXPERIMENTS / "classification").glob("*.yaml"))


def assert_architecture_as_written(recipe: Path, architecture: object) -> None:
    """The model was built with the architecture the recipe names (short name or class) and its options."""
    written = yaml.safe_load(recipe.read_text())["model"]["init_args"]["architecture"]
    if isinstance(written, str):
        assert architecture.name == written
        return
    assert written["class_path"] == f"lit_vision.models.{recipe.parent.name}.{type(architecture).__name__}"
    for key, value in (written.get("init_args") or {}).items():
        built = getattr(architecture, key)
        if isinstance(value, dict) and "class_path" in value:  # an injected part, e.g. the assigner
            assert type(built).__name__ == value["class_path"].rsplit(".", 1)[-1]
            assert all(getattr(built, k) == v for k, v in (value.get("init_args") or {}).items()), key
        else:
            assert (list(built) if isinstance(built, tuple) else built) == value, key


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
    if "\n    weights: /path" in text:  # a whole-model weights file to fine-tune from (tested in tests/models/test_weights.py)
        args += ["--model.weights", "null"]
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
    assert_architecture_as_written(recipe, cli.model.architecture)
    assert cli.model.hparams.image_size == cli.datamodule.hparams.image_size  # linked from the data
    assert cli.model.num_classes == cli.datamodule.num_classes  # linked from the data
    assert cli.model.class_names == cli.datamodule.class_names
    assert cli.trainer.checkpoint_callback.monitor.startswith("val/map")


@pytest.mark.parametrize("name", ["faster_rcnn_r50_fpn_coco", "retinanet_r50_fpn_coco", "fcos_r50_fpn_coco",
                                  "faster_rcnn_r50_fpn_voc"])
def test_torchvision_schedule_recipes_augment_as_the_reference(name: str) -> None:
    """torchvision's detection reference trains these models with its "hflip" preset (flip only): no photometric
    distortion (the DataModule's default, SSD's) and no scale jitter; weight decay on every parameter."""
    data = yaml.safe_load((EXPERIMENTS / "detection" / f"{name}.yaml").read_text())["data"]["init_args"]
    assert data.get("photometric") == "none" and data.get("scale_range", "unset") is None
    assert data.get("hflip", True) is True and not data.get("mosaic", 0)
    # ... and its SGD decays every parameter, biases and norm weights included (--norm-weight-decay unset).
    model = yaml.safe_load((EXPERIMENTS / "detection" / f"{name}.yaml").read_text())["model"]["init_args"]
    assert model.get("no_weight_decay_norm_bias") is False


SEGMENTATION = sorted((EXPERIMENTS / "segmentation").glob("*.yaml"))


def test_the_segmentation_recipes_cover_the_segmenters() -> None:
    names = {p.stem for p in SEGMENTATION}
    assert {"quickstart", "fcn_r50_voc", "deeplabv3_r50_voc"} <= names
    for prefix in ("deeplabv3plus_", "unet_"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert any("coco" in n for n in names)


def coco_with_every_voc_category(tmp_path: Path) -> tuple[Path, Path]:
    """The minicoco fixture with the COCO names of all 20 VOC classes in its category list (real COCO has them)."""
    import json

    from lit_vision.data.segmentation.coco import COCO_VOC_CATEGORIES

    out = []
    for split in ("train", "val"):
        data = json.loads((FIXTURES / "minicoco" / f"{split}.json").read_text())
        have = {c["name"] for c in data["categories"]}
        next_id = max(c["id"] for c in data["categories"]) + 1
        for k, name in enumerate(sorted(set(COCO_VOC_CATEGORIES) - have)):
            data["categories"].append({"id": next_id + k, "name": name, "supercategory": "none"})
        path = tmp_path / f"{split}.json"
        path.write_text(json.dumps(data))
        out.append(path)
    return out[0], out[1]


@pytest.mark.parametrize("recipe", SEGMENTATION, ids=lambda p: p.stem)
def test_segmentation_recipe_instantiates(recipe: Path, tmp_path: Path, monkeypatch) -> None:
    from lit_vision.tasks import SemanticSegmenter

    monkeypatch.chdir(tmp_path)
    text = recipe.read_text()
    args = ["--config", str(recipe), "--data.num_workers", "0"]
    if "pretrained: true" in text:
        args += ["--model.pretrained", "false"]
    if "COCOSegmentationDataModule" in text:
        train, val = coco_with_every_voc_category(tmp_path)
        images = str(FIXTURES / "minicoco" / "images")
        args += ["--data.train_images", images, "--data.train_annotations", str(train),
                 "--data.val_images", images, "--data.val_annotations", str(val)]
    elif "VOCSegmentationDataModule" in text:
        args += ["--data.root", str(FIXTURES / "voc" / "VOC2012")]
    else:
        args += ["--data.num_train", "4", "--data.num_val", "2"]
    cli = run_cli(args, run=False)
    assert isinstance(cli.model, SemanticSegmenter)
    assert_architecture_as_written(recipe, cli.model.architecture)
    assert cli.model.class_names == cli.datamodule.class_names and cli.model.class_names[0] == "background"
    assert cli.trainer.checkpoint_callback.monitor == "val/miou"
    if "_voc" in recipe.stem:
        assert cli.model.num_classes == 21  # background + the 20 VOC classes (COCO-as-VOC included)


def test_deeplabv3_recipe_matches_torchvisions_reference(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = EXPERIMENTS / "segmentation" / "deeplabv3_r50_voc.yaml"
    cli = run_cli(["--config", str(recipe), "--data.root", str(FIXTURES / "voc" / "VOC2012"),
                   "--model.pretrained", "false"], run=False)
    hp, dm = cli.model.hparams, cli.datamodule
    assert hp.aux_loss and hp.aux_weight == 0.5 and hp.output_stride == 8
    assert dm.batch_size == 4 and dm.hparams.crop_size == 480 and dm.hparams.image_size == 520
    opt = cli.model.optimizer_factory(cli.model.parameter_groups())
    assert type(opt).__name__ == "SGD" and opt.defaults["lr"] == 0.02 and opt.defaults["momentum"] == 0.9
    sched = cli.model.lr_scheduler_factory(opt)
    assert type(sched).__name__ == "PolynomialLR" and sched.power == 0.9
    assert cli.model.lr_scheduler_interval == "step" and cli.trainer.max_epochs == 30
    assert "aux" in cli.model.model(torch.zeros(1, 3, 65, 65))
