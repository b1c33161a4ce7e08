"""ValidationPictures: the fixed and worst-k panels, the analysis files, TensorBoard, and the CLI default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lit_vision.callbacks import ValidationPictures
from lit_vision.data import ImageFolderDataModule
from lit_vision.tasks import ImageClassifier
from lit_vision.visualize.draw import BRIGHT, load_png
from lit_vision.visualize.pictures import DetectionPicture, SegmentationPicture


@pytest.fixture(scope="module")
def fitted(imagefolder_root: Path, module_tmp: Callable[[str], Path]):
    tmp = module_tmp("pictures")
    pl.seed_everything(0)
    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=4, num_workers=0)
    model = ImageClassifier(backbone="tv/resnet18", class_names=data.class_names, top_k=2)
    cb = ValidationPictures(num_images=5, worst_k=3)
    loggers = [CSVLogger(str(tmp), name="csv"), TensorBoardLogger(str(tmp), name="tb")]
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=loggers, callbacks=[cb], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(model, data)
    return trainer, model, data, cb, tmp


def test_panels_are_the_seeded_choice_and_the_true_worst(fitted) -> None:
    trainer, model, data, cb, _ = fitted
    n = len(data.datasets["val"])
    assert cb.last_panel == sorted(torch.randperm(n, generator=torch.Generator().manual_seed(0))[:5].tolist())
    # The worst three, independently: cross-entropy of every validation image under the final weights.
    model.eval()
    with torch.no_grad():
        losses = torch.cat([F.cross_entropy(model(b["image"]), b["label"], reduction="none")
                            for b in data.val_dataloader()])
    top = losses.topk(3)
    assert [i for _, i in cb.last_worst] == top.indices.tolist()
    assert [e for e, _ in cb.last_worst] == pytest.approx(top.values.tolist(), rel=1e-4)


def test_files_per_epoch_and_analysis_at_the_end(fitted) -> None:
    trainer, model, data, cb, tmp = fitted
    run = Path(trainer.loggers[0].log_dir)
    for epoch in (0, 1):
        panel = load_png(run / "pictures" / f"val_epoch{epoch:03d}.png")
        assert panel.shape[0] == 3 and panel.shape[1] > 128 and panel.shape[2] > 128
    # the worst-k panel is drawn once, for the last validation, when fit ends (W&B gets it every epoch)
    assert sorted(p.name for p in (run / "pictures").glob("val_worst*")) == ["val_worst_epoch001.png"]
    names = {p.name for p in (run / "analysis").iterdir()}
    assert names == {"val_per_class.csv", "val_per_class.png", "val_confusion_matrix.png"}
    rows = (run / "analysis" / "val_per_class.csv").read_text().splitlines()
    assert rows[0] == "class,images,accuracy,precision" and [r.split(",")[0] for r in rows[1:]] == data.class_names


def test_tensorboard_gets_the_panels_and_the_table(fitted) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, *_ = fitted
    events = EventAccumulator(trainer.loggers[1].log_dir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    images = events.Tags()["images"]
    assert {"val/pictures", "val/worst", "val/analysis/confusion_matrix", "val/analysis/per_class"} <= set(images)
    assert len(events.Images("val/pictures")) == 2  # one per epoch
    text = events.Tensors("val/per_class/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("| class | images | accuracy | precision |") and "cat" in text


def test_test_stage_writes_its_own_files(fitted) -> None:
    trainer, model, data, cb, _ = fitted
    trainer.test(model, data)
    names = {Path(p).name for p in cb.last_files}
    assert {"test.png", "test_worst.png", "test_per_class.csv", "test_confusion_matrix.png"} <= names


def test_detection_picture_draws_and_exports_boxes() -> None:
    image = torch.zeros(3, 300, 300, dtype=torch.uint8)
    picture = DetectionPicture(image, gt_boxes=torch.tensor([[10.0, 10.0, 100.0, 120.0]]), gt_labels=torch.tensor([1]),
                               boxes=torch.tensor([[150.0, 150.0, 250.0, 200.0], [0.0, 0.0, 5.0, 5.0]]),
                               labels=torch.tensor([0, 1]), scores=torch.tensor([0.9, 0.01]))
    panel = picture.render(["a", "b"], list(BRIGHT[:2]))
    # ground truth on the left (class 1's colour on its box's left edge), prediction on the right, 4 px apart
    assert panel[:, 60, 10].tolist() == list(BRIGHT[1])
    assert panel[:, 180, 300 + 4 + 150].tolist() == list(BRIGHT[0])
    boxes = picture.to_wandb(["a", "b"])._boxes
    predictions, truth = boxes["predictions"]._val, boxes["ground_truth"]._val
    assert len(predictions) == 1  # the 0.01 box is below W&B's floor (0.05)
    assert predictions[0]["position"] == {"minX": 150.0, "minY": 150.0, "maxX": 250.0, "maxY": 200.0}
    assert predictions[0]["class_id"] == 0 and predictions[0]["scores"] == {"score": pytest.approx(0.9)}
    assert truth[0]["class_id"] == 1 and truth[0]["box_caption"] == "b" and "scores" not in truth[0]


def test_segmentation_picture_shrinks_masks_with_the_image() -> None:
    image = torch.zeros(3, 1000, 500, dtype=torch.uint8)
    mask = torch.zeros(1000, 500, dtype=torch.long)
    mask[500:] = 1
    picture = SegmentationPicture(image, mask.clone(), mask.clone()).shrink(100)
    assert picture.image.shape == (3, 100, 50) and picture.mask.shape == (100, 50)
    assert picture.mask[:50].eq(0).all() and picture.mask[50:].eq(1).all()
