"""Input normalisation follows the backbone's pretrained config unless given: data, pictures, detectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from lit_vision.backbones import (
    UnknownBackboneError,
    create_backbone,
    pretrained_config,
)
from lit_vision.constants import IMAGENET_MEAN, IMAGENET_STD
from lit_vision.data import ImageFolderDataModule
from lit_vision.data.segmentation import ShapesSegmentationDataModule
from lit_vision.models.detection import FCOS, YOLO
from lit_vision.models.segmentation import FCN
from lit_vision.tasks import ImageClassifier, SemanticSegmenter

# A ViT small enough for CPU tests: 40-px images in 8-px patches (timm's cfg, and so the normalisation, is the
# architecture's: mean = std = 0.5).
VIT = "timm/vit_tiny_patch16_224"


def vit_kwargs(size: int) -> dict[str, Any]:
    return {"img_size": size, "patch_size": 8, "out_indices": [-1]}


def pixels(path: str) -> torch.Tensor:
    """The file's RGB values in [0, 1], ``[3, H, W]``: read without any lit_vision or torchvision transform."""
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


def normalised(path: str, mean: list[float], std: list[float]) -> torch.Tensor:
    return (pixels(path) - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


class FirstBatches(pl.Callback):
    def __init__(self) -> None:
        self.batches: dict[str, dict[str, Any]] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, i: int) -> None:
        self.batches.setdefault("train", batch)

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, i: int,
                                  dataloader_idx: int = 0) -> None:
        self.batches.setdefault("val", batch)


def run(task: pl.LightningModule, data: pl.LightningDataModule, tmp_path: Path, fit: bool = False) -> FirstBatches:
    seen = FirstBatches()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                         num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, callbacks=[seen])
    trainer.fit(task, data) if fit else trainer.validate(task, data, verbose=False)
    return seen


def identity_preset(root: Path, **kw: Any) -> ImageFolderDataModule:
    """40-px images kept as they are by both presets (full-image crops, no resize, flip or jitter)."""
    return ImageFolderDataModule(root=str(root), image_size=40, crop_pct=1.0, scale_range=(1.0, 1.0),
                                 crop_ratio=(1.0, 1.0), hflip=False, color_jitter=0.0, batch_size=4, num_workers=0,
                                 **kw)


def test_pretrained_config_reads_timm_and_torchvision_presets() -> None:
    vit = pretrained_config("timm/vit_base_patch16_224.augreg_in21k")
    assert vit == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "input_size": (3, 224, 224),
                   "interpolation": "bicubic", "crop_pct": 0.9}
    assert pretrained_config(VIT)["mean"] == (0.5, 0.5, 0.5)  # the architecture's default tag
    # torchvision's ResNet-50 DEFAULT (IMAGENET1K_V2) weights: resize 232, crop 224, bilinear, ImageNet statistics.
    resnet = pretrained_config("tv/resnet50")
    assert resnet == {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "input_size": (3, 224, 224),
                      "interpolation": "bilinear", "crop_pct": pytest.approx(224 / 232)}
    assert pretrained_config("tv/resnet18")["crop_pct"] == pytest.approx(224 / 256)
    with pytest.raises(UnknownBackboneError):
        pretrained_config("tv/not_a_model")


def test_timm_vit_trains_on_its_half_normalisation_and_pictures_undo_it(imagefolder_root: Path,
                                                                         tmp_path: Path) -> None:
    data = identity_preset(imagefolder_root)
    task = ImageClassifier(backbone=VIT, class_names=data.class_names, backbone_kwargs=vit_kwargs(40))
    seen = run(task, data, tmp_path, fit=True)
    half = [0.5, 0.5, 0.5]
    for split in ("train", "val"):
        batch = seen.batches[split]
        for image, path in zip(batch["image"], batch["path"]):
            torch.testing.assert_close(image, normalised(path, half, half), atol=1e-6, rtol=0)
    assert task.data_info.extra["normalize"] == (half, half)
    val = seen.batches["val"]
    expected = (pixels(val["path"][0]) * 255).round().to(torch.uint8)
    assert torch.equal(task.display_image(val["image"][0]), expected)
    # A checkpoint alone still knows (pictures, export): the training data's normalisation is saved with it.
    task.trainer.save_checkpoint(tmp_path / "vit.ckpt")
    restored = ImageClassifier.load_from_checkpoint(tmp_path / "vit.ckpt")
    assert restored.data_info.extra["normalize"] == (half, half)
    assert torch.equal(restored.display_image(val["image"][0]), expected)


def test_given_mean_and_std_win_over_the_backbone(imagefolder_root: Path, tmp_path: Path) -> None:
    mean, std = [0.2, 0.3, 0.4], [0.1, 0.2, 0.3]
    data = identity_preset(imagefolder_root, mean=mean, std=std)
    task = ImageClassifier(backbone=VIT, class_names=data.class_names, backbone_kwargs=vit_kwargs(40))
    batch = run(task, data, tmp_path).batches["val"]
    torch.testing.assert_close(batch["image"][0], normalised(batch["path"][0], mean, std), atol=1e-5, rtol=0)
    assert task.data_info.extra["normalize"] == (mean, std)


def test_torchvision_backbones_and_data_without_a_model_stay_imagenet(imagefolder_root: Path,
                                                                      tmp_path: Path) -> None:
    imagenet = (list(IMAGENET_MEAN), list(IMAGENET_STD))
    data = identity_preset(imagefolder_root)
    data.setup("fit")  # no Trainer, no model: ImageNet's
    assert data.normalization == imagenet
    data = identity_preset(imagefolder_root)
    task = ImageClassifier(backbone="tv/resnet18", class_names=data.class_names)
    batch = run(task, data, tmp_path).batches["val"]
    torch.testing.assert_close(batch["image"][0], normalised(batch["path"][0], *imagenet), atol=1e-5, rtol=0)


def test_segmentation_data_follows_a_timm_vit(tmp_path: Path) -> None:
    data = ShapesSegmentationDataModule(num_train=2, num_val=2, scene_size=64, batch_size=2, num_workers=0)
    task = SemanticSegmenter(FCN(fcn_variant="32s"), VIT, class_names=data.class_names, backbone_kwargs=vit_kwargs(64))
    batch = run(task, data, tmp_path).batches["val"]
    # 64-px scenes at image_size 64: the evaluation preset neither resizes nor pads them.
    torch.testing.assert_close(batch["image"][0], normalised(batch["path"][0], [0.5] * 3, [0.5] * 3),
                               atol=1e-6, rtol=0)
    assert task.data_info.extra["normalize"] == ([0.5] * 3, [0.5] * 3)


def test_detectors_normalise_with_the_backbones_statistics() -> None:
    # timm's MobileViT weights take raw [0, 1] pixels: mean 0, std 1.
    backbone = create_backbone("timm/mobilevit_xxs", out_indices=[-3, -2, -1])
    fcos = FCOS(fpn_channels=32).build(backbone, 3, 64)
    assert (fcos.model.transform.image_mean, fcos.model.transform.image_std) == ([0.0] * 3, [1.0] * 3)
    yolo = YOLO(neck_channels=16).build(backbone, 3, 64)
    assert yolo.mean.flatten().tolist() == [0.0] * 3 and yolo.std.flatten().tolist() == [1.0] * 3
    given = FCOS(fpn_channels=32, torchvision_kwargs={"image_mean": [0.1] * 3, "image_std": [0.2] * 3})
    assert given.build(backbone, 3, 64).model.transform.image_mean == [0.1] * 3  # an explicit value wins
    resnet = FCOS(fpn_channels=32).build(create_backbone("tv/resnet18", out_indices=[-3, -2, -1]), 3, 64)
    assert resnet.model.transform.image_mean == list(IMAGENET_MEAN)
