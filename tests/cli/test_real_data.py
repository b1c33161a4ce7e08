"""``lit-vision fit`` end to end on copies of real COCO and VOC files, for every detection and segmentation
DataModule: the commands of the issues' "done means", shrunk to one step (``--trainer.fast_dev_run``).

Instantiating a recipe is not enough: hyper-parameter merging between model and DataModule, checkpoint
class names and the first batch only happen in ``fit``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_vision.cli import run_cli
from lit_vision.models.detection import DetectorArchitecture

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
COCO = FIXTURES / "minicoco"
VOC = FIXTURES / "voc" / "VOC2012"
TRAINER = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.fast_dev_run", "1",
           "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
COCO_FILES = ["--data.train_images", str(COCO / "images"), "--data.train_annotations", str(COCO / "train.json"),
              "--data.val_images", str(COCO / "images"), "--data.val_annotations", str(COCO / "val.json")]


def fit(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.chdir(tmp_path)
    return run_cli(["fit", *args, *TRAINER, "--data.num_workers", "0", "--data.batch_size", "2"])


@pytest.mark.parametrize("architecture", ["faster_rcnn", "retinanet", "fcos", "yolo"])
@pytest.mark.parametrize("data", ["coco", "voc"])
def test_every_detector_fits_on_real_coco_and_voc_files(architecture: str, data: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    files = (["--data", "COCODetectionDataModule", *COCO_FILES] if data == "coco" else
             ["--data", "VOCDetectionDataModule", "--data.root", str(VOC)])
    arch = DetectorArchitecture.registry[architecture].__name__  # the class, with its width option
    width = "neck_channels" if architecture == "yolo" else "fpn_channels"
    cli = fit(["--model", "ObjectDetector", "--model.architecture", arch, f"--model.architecture.{width}", "64",
               "--model.backbone", "tv/resnet18", *files, "--data.image_size", "96"], tmp_path, monkeypatch)
    assert cli.trainer.state.finished and cli.model.architecture.name == architecture
    assert cli.model.hparams.image_size == 96  # linked from the data
    assert cli.model.class_names == cli.datamodule.class_names and len(cli.model.class_names) in (3, 20)
    assert {"train/loss", "val/map", "val/map_50"} <= set(cli.trainer.callback_metrics)


@pytest.mark.parametrize("architecture", ["fcn", "unet", "deeplabv3", "deeplabv3plus"])
@pytest.mark.parametrize("data", ["coco", "voc"])
def test_every_segmenter_fits_on_real_coco_and_voc_files(architecture: str, data: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    files = (["--data", "COCOSegmentationDataModule", *COCO_FILES] if data == "coco" else
             ["--data", "VOCSegmentationDataModule", "--data.root", str(VOC)])
    cli = fit(["--model", "SemanticSegmenter", "--model.architecture", architecture, "--model.backbone", "tv/resnet18",
               *files, "--data.image_size", "96"], tmp_path, monkeypatch)
    assert cli.trainer.state.finished
    assert cli.model.class_names == cli.datamodule.class_names
    assert cli.model.class_names[0] == "background" and len(cli.model.class_names) in (4, 21)
    assert {"train/loss", "val/miou", "val/pixel_acc"} <= set(cli.trainer.callback_metrics)
