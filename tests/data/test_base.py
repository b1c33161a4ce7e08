"""What every DataModule shares: loader arguments in one place, the one setup loop, DataInfo handed to the task."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from jsonargparse import ArgumentParser
from torch import nn

from lit_vision.contracts import DataInfo
from lit_vision.data import (
    COCODetectionDataModule,
    COCOSegmentationDataModule,
    DetectionImagesDataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    SegmentationImagesDataModule,
    ShapesDetectionDataModule,
    ShapesSegmentationDataModule,
    VOCDetectionDataModule,
    VOCSegmentationDataModule,
)
from lit_vision.data.checks import DataError
from lit_vision.tasks import ImageClassifier, ObjectDetector

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ALL_DATAMODULES = [ImageFolderDataModule, DigitsDataModule, COCODetectionDataModule, VOCDetectionDataModule,
                   ShapesDetectionDataModule, DetectionImagesDataModule, VOCSegmentationDataModule,
                   COCOSegmentationDataModule, ShapesSegmentationDataModule, SegmentationImagesDataModule]


@pytest.mark.parametrize("datamodule", ALL_DATAMODULES, ids=lambda c: c.__name__)
def test_every_datamodule_exposes_the_loader_arguments_to_the_cli(datamodule: type) -> None:
    """Declared once on SplitDataModule; jsonargparse follows each subclass's **kwargs to them."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(datamodule, "data")
    options = {a.dest for a in parser._actions}
    for name in ("batch_size", "eval_batch_size", "num_workers", "pin_memory", "persistent_workers", "drop_last"):
        assert f"data.{name}" in options, (datamodule.__name__, name)


def test_loader_arguments_reach_the_loaders(imagefolder_root: Path) -> None:
    dm = ImageFolderDataModule(str(imagefolder_root), image_size=32, batch_size=5, eval_batch_size=3, num_workers=0,
                               drop_last=False)
    dm.setup("fit")
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert (train.batch_size, val.batch_size, train.num_workers, train.drop_last) == (5, 3, 0, False)
    assert sum(len(b["label"]) for b in train) == 24  # 8 per class, nothing dropped
    with pytest.raises(ValueError, match="batch sizes must be positive"):
        ImageFolderDataModule(str(imagefolder_root), batch_size=0)


@pytest.mark.parametrize("world_size", [1, 2])
def test_drop_last_never_leaves_a_rank_without_a_training_batch(imagefolder_root: Path, world_size: int) -> None:
    """24 images in batches of 16: one full batch on one device; on two, 12 per rank (drop_last dropped them all:
    an epoch of 0 steps)."""
    dm = ImageFolderDataModule(str(imagefolder_root), image_size=32, batch_size=16, num_workers=0, drop_last=True)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(world_size=world_size, global_rank=0, num_training_batches=1)  # the loader's reads
    loader = dm.train_dataloader()
    assert len(loader) == 1 and len(next(iter(loader))["label"]) == (16 if world_size == 1 else 12)


class _Recorder(pl.LightningModule):
    """A task of one's own: it only has to implement connect_data to receive the DataInfo."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 3)
        self.events: list[str] = []
        self.info: DataInfo | None = None

    def connect_data(self, info: DataInfo) -> None:
        self.events.append("connect_data")
        self.info = info

    def setup(self, stage: str) -> None:
        self.events.append("setup")

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        self.events.append("training_step")
        return self.layer(batch["image"].mean((2, 3))).sum()

    def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        return None

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_datamodule_hands_the_task_its_data_info_before_training(imagefolder_root: Path) -> None:
    dm = ImageFolderDataModule(str(imagefolder_root), image_size=32, batch_size=4, num_workers=0)
    task = _Recorder()
    pl.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False,
               enable_model_summary=False).fit(task, dm)
    assert task.info is not None and task.info.class_names == ["cat", "dog", "eel"]
    assert task.events.index("connect_data") < task.events.index("setup") < task.events.index("training_step")


def test_detection_data_info_carries_category_ids_and_ground_truth() -> None:
    minicoco = FIXTURES / "minicoco"
    dm = COCODetectionDataModule(str(minicoco / "images"), str(minicoco / "train.json"), str(minicoco / "images"),
                                 str(minicoco / "val.json"), num_workers=0)
    info = dm.data_info()
    assert info.label_to_category_id == dm.label_to_category_id
    assert info.ground_truth is not None
    gt = info.ground_truth("val")
    assert [img["id"] for img in gt["images"]] == [img["id"] for img in dm.sources["val"].images]
    assert info.ground_truth("test") is gt  # no test split: the val ground truth, as the test loader serves


def test_task_refuses_data_with_other_classes(imagefolder_root: Path) -> None:
    dm = ImageFolderDataModule(str(imagefolder_root), image_size=32, num_workers=0)
    task = ImageClassifier("timm/test_resnet", class_names=["cat", "dog", "fox"])
    with pytest.raises(ValueError, match=r"built for the classes \['cat', 'dog', 'fox'\] but the data has "
                                         r"\['cat', 'dog', 'eel'\]"):
        task.connect_data(dm.data_info())


def test_checkpoint_keeps_the_category_ids_for_predict_only_data(tmp_path: Path) -> None:
    task = ObjectDetector("fcos", "timm/test_resnet", class_names=["a", "b"], image_size=64)
    task.connect_data(DataInfo(class_names=["a", "b"], label_to_category_id={0: 17, 1: 42}))
    trainer = pl.Trainer(accelerator="cpu", logger=False, max_steps=0)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(tmp_path / "det.ckpt")
    restored = ObjectDetector.load_from_checkpoint(tmp_path / "det.ckpt", weights_only=False)
    assert restored.data_info.label_to_category_id == {0: 17, 1: 42}
    restored.connect_data(DataInfo(class_names=["a", "b"]))  # plain images: no ids from the data
    assert restored.data_info.label_to_category_id == {0: 17, 1: 42}


def test_predict_only_datamodules_refuse_to_train(tmp_path: Path) -> None:
    dm = DetectionImagesDataModule(predict_paths=str(tmp_path), class_names=["a"])
    with pytest.raises(DataError, match="only predicts .* cannot fit: use COCODetectionDataModule"):
        dm.setup("fit")
    assert DetectionImagesDataModule.wants_checkpoint_classes({"class_names": None})
    assert not ImageFolderDataModule.wants_checkpoint_classes({"root": "/data", "class_names": None})
    assert ImageFolderDataModule.wants_checkpoint_classes({"root": None, "class_names": None})
