"""Training and evaluating from shards equals doing it from the source files; LitData's loader resumes."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lit_vision.cli import main
from lit_vision.data import (
    COCODetectionDataModule,
    ImageFolderDataModule,
    VOCDetectionDataModule,
    VOCSegmentationDataModule,
)
from lit_vision.data.streaming import (
    StreamingDetectionDataModule,
    StreamingImageFolderDataModule,
    StreamingSegmentationDataModule,
)
from lit_vision.evaluation.coco import evaluate_coco
from lit_vision.models.detection import FCOS
from lit_vision.tasks import ImageClassifier, ObjectDetector, SemanticSegmenter
from tests.data.streaming.conftest import COCO as COCO_FILES
from tests.data.streaming.conftest import VOC


def _fake_results(gt: dict[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    """Jittered copies of the ground-truth boxes with random scores, plus a few misplaced boxes."""
    rng = random.Random(seed)
    out = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        out.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "score": rng.random(),
                    "bbox": [x + rng.uniform(-3, 3), y + rng.uniform(-3, 3), w * rng.uniform(0.8, 1.2), h]})
    for img in gt["images"]:
        out.append({"image_id": img["id"], "category_id": gt["categories"][0]["id"], "score": rng.random(),
                    "bbox": [1.0, 1.0, img["width"] / 3, img["height"] / 3]})
    return out


def _pycocotools_stats(gt: dict[str, Any], results: list[dict[str, Any]]) -> list[float]:
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    return list(ev.stats)


@pytest.mark.parametrize("fmt", ["coco", "voc"])
def test_coco_ap_from_streamed_ground_truth_equals_the_file_based_one(shards: dict[str, Path], fmt: str) -> None:
    files = VOCDetectionDataModule(**VOC, num_workers=0) if fmt == "voc" else COCODetectionDataModule(**COCO_FILES,
                                                                                                      num_workers=0)
    streamed = StreamingDetectionDataModule(str(shards[fmt]), num_workers=0)
    gt_files, gt_streamed = files.data_info().ground_truth("val"), streamed.data_info().ground_truth("val")
    results = _fake_results(gt_files)
    a, b = evaluate_coco(gt_files, results), evaluate_coco(gt_streamed, results)
    assert a == b and a["map"] > 0.1
    assert _pycocotools_stats(gt_files, results) == _pycocotools_stats(gt_streamed, results)


def _fit(task: pl.LightningModule, dm: pl.LightningDataModule, steps: int = 3) -> dict[str, torch.Tensor]:
    pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0).fit(task, dm)
    return {k: v.detach().clone() for k, v in task.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k, value in a.items():
        assert torch.equal(value, b[k]), k


def test_classification_fit_from_shards_equals_fit_from_the_tree(shards: dict[str, Path],
                                                                  imagefolder_root: Path) -> None:
    """``sampler="seeded"``: lit_vision's seeded sampler over the records, so both runs see the same order and the
    same per-sample augmentation seeds (the tensor presets on both sides: ``fast_decode`` reads files)."""
    options = {"image_size": 32, "batch_size": 4, "num_workers": 0, "color_jitter": 0.4}
    weights = []
    for dm in (ImageFolderDataModule(str(imagefolder_root), fast_decode=False, **options),
               StreamingImageFolderDataModule(str(shards["imagefolder"]), sampler="seeded", **options)):
        pl.seed_everything(7)
        weights.append(_fit(ImageClassifier("timm/test_resnet", class_names=dm.class_names), dm))
    _assert_same(*weights)


def test_detection_fit_from_shards_equals_fit_from_the_files(shards: dict[str, Path]) -> None:
    options = {"image_size": 64, "batch_size": 2, "num_workers": 0}
    weights = []
    for dm in (VOCDetectionDataModule(**VOC, **options),
               StreamingDetectionDataModule(str(shards["voc"]), sampler="seeded", **options)):
        pl.seed_everything(3)
        task = ObjectDetector(FCOS(fpn_channels=32), "timm/test_resnet", class_names=dm.class_names, image_size=64)
        weights.append(_fit(task, dm, steps=2))
    _assert_same(*weights)


def test_segmentation_fit_from_shards_equals_fit_from_the_files(shards: dict[str, Path]) -> None:
    options = {"image_size": 64, "batch_size": 2, "num_workers": 0}
    weights = []
    for dm in (VOCSegmentationDataModule(**VOC, **options),
               StreamingSegmentationDataModule(str(shards["voc-seg"]), sampler="seeded", **options)):
        pl.seed_everything(5)
        weights.append(_fit(SemanticSegmenter("fcn", "timm/test_resnet", class_names=dm.class_names), dm, steps=2))
    _assert_same(*weights)


def _batches(loader: Any, n: int) -> list[Any]:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def test_litdata_loader_is_seeded_and_resumes_at_its_position(shards: dict[str, Path]) -> None:
    """``sampler="litdata"``: the order is LitData's and the augmentation lit_vision's per-sample seed, so two
    loaders with one seed serve the same batches, and a loader restored from a state taken after 2 batches
    serves the third (num_workers=0: where LitData's resume is exact, docs/streaming.md)."""
    def loader(state: dict | None = None) -> Any:
        dm = StreamingImageFolderDataModule(str(shards["imagefolder"]), image_size=32, batch_size=4, num_workers=0)
        dm.data_seed = 11
        dm.setup("fit")
        out = dm.train_dataloader()
        if state is not None:
            out.load_state_dict(state)
        return out

    first = loader()
    batches = _batches(first, 3)
    state = None
    again = loader()  # the state after two batches, as Lightning saves it mid-epoch
    for i, batch in enumerate(again):
        assert torch.equal(batch["image"], batches[i]["image"]) and torch.equal(batch["label"], batches[i]["label"])
        if i == 1:
            state = again.state_dict()
            break
    resumed = _batches(loader(state), 1)[0]
    assert torch.equal(resumed["image"], batches[2]["image"]) and torch.equal(resumed["label"], batches[2]["label"])
    labels = sorted(int(v) for b in _batches(loader(), 100) for v in b["label"])
    assert labels == [0] * 8 + [1] * 8 + [2] * 8  # one epoch: every training image once (drop_last: 24 = 6 x 4)


@pytest.mark.parametrize("workers", [2])  # 0 workers: test_litdata_loader_is_seeded_and_resumes_at_its_position
def test_a_litdata_fit_resumed_mid_epoch_equals_the_uninterrupted_one(shards: dict[str, Path], tmp_path: Path,
                                                                      workers: int) -> None:
    """Killed after step 3 of a 6-batch epoch, resumed from that checkpoint to step 8 (across the epoch boundary):
    the same weights as a run that was never interrupted. LitData's position and lit_vision's per-sample seeds;
    also the epoch after the resumed one (StreamingTrainLoader's fix)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(steps: int, ckpt_path: str | None = None) -> dict[str, torch.Tensor]:
        pl.seed_everything(0)
        dm = StreamingImageFolderDataModule(str(shards["imagefolder"]), image_size=32, batch_size=4,
                                            num_workers=workers, persistent_workers=False)
        task = ImageClassifier("timm/test_resnet", class_names=dm.class_names)
        saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1, filename="{step}")
        pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, callbacks=[saver], enable_progress_bar=False,
                   enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0
                   ).fit(task, dm, ckpt_path=ckpt_path)
        return {k: v.detach().clone() for k, v in task.state_dict().items()}

    uninterrupted = run(8)
    _assert_same(uninterrupted, run(8, str(tmp_path / "ckpt" / "step=3.ckpt")))


def test_a_litdata_fit_trains_and_evaluates(shards: dict[str, Path]) -> None:
    # Batches of 2 (the VOC fixture's splits): the validation loss runs the model in training mode, and BatchNorm
    # cannot normalise the 1x1 top level of one 64-px image.
    dm = StreamingDetectionDataModule(str(shards["voc"]), image_size=64, batch_size=2, num_workers=0)
    task = ObjectDetector(FCOS(fpn_channels=32), "timm/test_resnet", class_names=dm.class_names, image_size=64)
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(task, dm)
    assert "val/map" in trainer.callback_metrics


def test_mosaic_needs_the_seeded_sampler(shards: dict[str, Path]) -> None:
    from lit_vision.data.checks import DataError

    with pytest.raises(DataError, match="sampler: seeded"):
        StreamingDetectionDataModule(str(shards["voc"]), mosaic=1.0)


def test_cli_writes_shards_and_names_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["optimize-data", "--format", "voc", "--root", str(tmp_path / "nope"), "--output", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lit-vision optimize-data: error:") and "nope" in err[-1] and len(err) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["optimize-data", "--format", "voc", "--root", VOC["root"], "--output", str(tmp_path / "voc"),
              "--num-workers", "1"])
    assert exit_info.value.code == 0 and "train 2, val 2 items" in capsys.readouterr().out
    assert StreamingDetectionDataModule(str(tmp_path / "voc")).class_names[0] == "aeroplane"
