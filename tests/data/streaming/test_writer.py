"""Round trip: shards written from the fixtures read back as the file-based datasets' items, index included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_vision.data import (
    COCODetectionDataModule,
    COCOSegmentationDataModule,
    ImageFolderDataModule,
    VOCDetectionDataModule,
    VOCSegmentationDataModule,
)
from lit_vision.data.checks import DataError
from lit_vision.data.streaming import (
    INDEX_FILE,
    StreamingDetectionDataModule,
    StreamingImageFolderDataModule,
    StreamingSegmentationDataModule,
    optimize_data,
    read_index,
)
from lit_vision.data.streaming.sources import ShardReader
from tests.data.streaming.conftest import COCO, VOC


def test_classification_round_trip_same_pixels_and_labels(shards: dict[str, Path], imagefolder_root: Path) -> None:
    files = ImageFolderDataModule(str(imagefolder_root), fast_decode=False, num_workers=0)
    streamed = StreamingImageFolderDataModule(str(shards["imagefolder"]), num_workers=0)
    assert streamed.class_names == files.class_names == read_index(str(shards["imagefolder"]))["class_names"]
    for split, samples in files.split.items():
        source = streamed.sources[split]
        assert len(source) == len(samples)
        for i, (path, label) in enumerate(samples):
            item = source[i]
            assert item["label"] == label and Path(imagefolder_root, item["path"]) == Path(path)
            assert np.array_equal(np.asarray(item["image"]), np.asarray(files.build_dataset(split).load(path)))


@pytest.mark.parametrize("fmt", ["voc", "coco"])
def test_detection_round_trip_same_pixels_boxes_labels_and_ids(shards: dict[str, Path], fmt: str) -> None:
    files = (VOCDetectionDataModule(**VOC, num_workers=0) if fmt == "voc"
             else COCODetectionDataModule(**COCO, num_workers=0))
    streamed = StreamingDetectionDataModule(str(shards[fmt]), num_workers=0)
    assert streamed.class_names == files.class_names
    assert streamed.label_to_category_id == files.label_to_category_id
    index = read_index(str(shards[fmt]), "detection")
    assert {int(k): v for k, v in index["label_to_category_id"].items()} == files.label_to_category_id
    for split, a in files.sources.items():
        b = streamed.sources[split]
        assert len(a) == len(b)
        for i in range(len(a)):
            image_a, target_a, id_a, _ = a.raw_item(i)
            image_b, target_b, id_b, _ = b.raw_item(i)
            assert id_a == id_b and np.array_equal(np.asarray(image_a), np.asarray(image_b))
            assert torch.equal(target_a["boxes"], target_b["boxes"]) and target_b["boxes"].dtype == torch.float32
            assert torch.equal(target_a["labels"], target_b["labels"])
            assert target_a["boxes"].canvas_size == target_b["boxes"].canvas_size
        gt_a, gt_b = a.ground_truth(), b.ground_truth()
        assert [(g["id"], g["width"], g["height"]) for g in gt_a["images"]] == \
            [(g["id"], g["width"], g["height"]) for g in gt_b["images"]]
        keys = ("id", "image_id", "category_id", "bbox", "area", "iscrowd")
        assert [{k: g[k] for k in keys} for g in gt_a["annotations"]] == gt_b["annotations"]


def test_coco_instance_masks_round_trip(shards: dict[str, Path]) -> None:
    files = COCODetectionDataModule(**COCO, with_masks=True, num_workers=0)
    streamed = StreamingDetectionDataModule(str(shards["coco-masks"]), num_workers=0)
    assert "masks" not in StreamingDetectionDataModule(str(shards["coco"])).sources["train"].raw_item(0)[1]
    for split, a in files.sources.items():
        b = streamed.sources[split]
        for i in range(len(a)):
            target_a, target_b = a.raw_item(i)[1], b.raw_item(i)[1]
            assert target_b["masks"].dtype == target_a["masks"].dtype == torch.uint8
            assert torch.equal(target_a["masks"], target_b["masks"]) and target_a["masks"].shape[0] > 0
            item_a, item_b = a.with_transforms(files.eval_transform())[i], b.with_transforms(files.eval_transform())[i]
            assert torch.equal(item_a["target"]["masks"], item_b["target"]["masks"])


def test_voc_difficult_objects_train_only_with_keep_difficult(shards: dict[str, Path]) -> None:
    files = VOCDetectionDataModule(**VOC, keep_difficult=True, num_workers=0)
    streamed = StreamingDetectionDataModule(str(shards["voc"]), keep_difficult=True, num_workers=0)
    a, b = files.sources["train"], streamed.sources["train"]
    assert [len(a.raw_target(i)["labels"]) for i in range(len(a))] == [len(b.raw_item(i)[1]["labels"])
                                                                       for i in range(len(b))]


@pytest.mark.parametrize("fmt", ["voc-seg", "coco-seg"])
def test_segmentation_round_trip_same_pixels_and_masks(shards: dict[str, Path], fmt: str) -> None:
    files = (VOCSegmentationDataModule(**VOC, num_workers=0) if fmt == "voc-seg"
             else COCOSegmentationDataModule(**COCO, num_workers=0))
    streamed = StreamingSegmentationDataModule(str(shards[fmt]), num_workers=0)
    assert streamed.class_names == files.class_names
    for split, a in files.sources.items():
        b = streamed.sources[split]
        assert len(a) == len(b)
        for i in range(len(a)):
            (image_a, mask_a), (image_b, mask_b) = a.load(i), b.load(i)
            assert torch.equal(image_a, image_b) and torch.equal(mask_a, mask_b)


def test_training_records_are_shuffled_and_read_back_in_source_order(shards: dict[str, Path]) -> None:
    """LitData shuffles only inside chunks, so the training split is written in a seeded random order (a class-sorted
    ImageFolder would otherwise give one-class batches); random access still reads source item i as item i, across
    two writer processes and several chunks (the seeded sampler relies on it). Other splits keep the source order."""
    for fmt in ("imagefolder", "coco"):
        for split in ("train", "val"):
            record_of = read_index(str(shards[fmt]))["splits"][split]["record_of"]
            reader = ShardReader(str(shards[fmt] / split), record_of=record_of)
            assert [int(reader[i]["index"]) for i in range(len(reader))] == list(range(len(reader)))
            written = [int(reader.dataset[k]["index"]) for k in range(len(reader))]
            assert (written != sorted(written)) == (split == "train"), (fmt, split)
        assert len(list((shards[fmt] / "train").glob("chunk-*.bin"))) > 1


def test_index_names_task_classes_ids_sizes_and_source(shards: dict[str, Path]) -> None:
    index = json.loads((shards["coco"] / INDEX_FILE).read_text())
    assert index["task"] == "detection" and index["format"] == "coco"
    assert [c["id"] for c in index["categories"]] == sorted(c["id"] for c in index["categories"])
    assert index["splits"]["val"]["num_items"] == len(index["splits"]["val"]["images"])
    assert {"id", "file_name", "width", "height"} <= set(index["splits"]["val"]["images"][0])
    assert index["source"]["train_annotations"] == COCO["train_annotations"] and index["lit_vision_version"]


def test_bad_sources_and_outputs_name_the_problem(tmp_path: Path, shards: dict[str, Path]) -> None:
    with pytest.raises(DataError, match="does not exist"):
        optimize_data("voc", str(tmp_path / "out"), root=str(tmp_path / "missing"))
    with pytest.raises(DataError, match="not empty"):
        optimize_data("voc", str(shards["voc"]), **VOC)
    with pytest.raises(DataError, match="unknown source format"):
        optimize_data("yolo", str(tmp_path / "out2"), **VOC)
    with pytest.raises(DataError, match="not a lit_vision shard folder"):
        StreamingDetectionDataModule(str(tmp_path))
    with pytest.raises(DataError, match="holds segmentation data"):
        StreamingDetectionDataModule(str(shards["voc-seg"]))


def test_without_litdata_one_line_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "litdata", None)  # `import litdata` now raises ImportError
    for build in (lambda: StreamingImageFolderDataModule(str(tmp_path)),
                  lambda: optimize_data("voc", str(tmp_path / "out"), **VOC)):
        with pytest.raises(ImportError, match=r"pip install 'lit_vision\[streaming\]'"):
            build()
