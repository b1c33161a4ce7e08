"""COCO detection data: faithful loading, category mapping, box-aware transforms, bad-input errors, batches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from lit_vision.data.checks import DataError
from lit_vision.data.detection.coco import COCODetectionDataModule, CocoDetectionDataset
from lit_vision.data.detection.transforms import (
    DetectionTransform,
    detection_collate,
    detection_eval_transforms,
    detection_train_transforms,
)
from lit_vision.data.readers.coco import annotation_mask
from lit_vision.geometry import boxes_to_original

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "minicoco"
IMAGES, TRAIN_JSON, VAL_JSON = FIXTURE / "images", FIXTURE / "train.json", FIXTURE / "val.json"


def load(path: Path = TRAIN_JSON) -> dict[str, Any]:
    return json.loads(path.read_text())


def write(tmp_path: Path, data: dict[str, Any], name: str = "ann.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def datamodule(train_json: Path = TRAIN_JSON, val_json: Path = VAL_JSON, images: Path = IMAGES, **kw):
    kw = {"image_size": 128, "batch_size": 2, "num_workers": 0} | kw
    return COCODetectionDataModule(str(images), str(train_json), str(images), str(val_json), **kw)


# ---------------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("json_path", [TRAIN_JSON, VAL_JSON])
def test_targets_equal_what_pycocotools_reads(json_path: Path) -> None:
    coco = COCO(str(json_path))
    ds = CocoDetectionDataset(IMAGES, json_path, with_masks=True)
    cat_ids = sorted(coco.getCatIds())
    assert len(ds) == len(coco.getImgIds())
    for i in range(len(ds)):
        item = ds[i]
        image_id = item["target"]["image_id"]
        info = coco.loadImgs(image_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False))
        expected = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                                 for a in anns], dtype=torch.float32).reshape(-1, 4)
        expected[:, 0::2] = expected[:, 0::2].clamp(0, info["width"])
        expected[:, 1::2] = expected[:, 1::2].clamp(0, info["height"])
        target = item["target"]
        torch.testing.assert_close(target["boxes"], expected)
        assert target["labels"].tolist() == [cat_ids.index(a["category_id"]) for a in anns]
        assert target["labels"].dtype == torch.int64 and type(target["boxes"]) is torch.Tensor
        assert target["orig_size"] == (info["height"], info["width"])
        assert item["image"].shape == (3, info["height"], info["width"]) and item["image"].dtype == torch.float32
        assert 0 <= item["image"].min() and item["image"].max() <= 1
        assert target["masks"].shape == (len(anns), info["height"], info["width"])
        for mask, ann in zip(target["masks"], anns):
            assert np.array_equal(mask.numpy(), coco.annToMask(ann))


def test_crowd_annotations_are_not_targets_but_their_rle_masks_decode_like_pycocotools(tmp_path: Path) -> None:
    coco = COCO(str(TRAIN_JSON))
    crowd = coco.loadAnns(coco.getAnnIds(iscrowd=True))
    assert crowd and all(isinstance(a["segmentation"], dict) for a in crowd)
    ds = CocoDetectionDataset(IMAGES, TRAIN_JSON)
    total = sum(len(ds[i]["target"]["labels"]) for i in range(len(ds)))
    assert total == len(coco.getAnnIds(iscrowd=False)) == len(coco.getAnnIds()) - len(crowd)
    for ann in crowd:
        img = coco.loadImgs(ann["image_id"])[0]
        assert np.array_equal(annotation_mask(ann["segmentation"], img["height"], img["width"]), coco.annToMask(ann))
    # the same RLE as a non-crowd object reaches the target masks
    data = load()
    for ann in data["annotations"]:
        ann["iscrowd"] = 0
    path = write(tmp_path, data)
    ds, coco2 = CocoDetectionDataset(IMAGES, path, with_masks=True), COCO(str(path))
    index = next(i for i in range(len(ds)) if ds.images[i]["id"] == crowd[0]["image_id"])
    anns = coco2.loadAnns(coco2.getAnnIds(imgIds=crowd[0]["image_id"]))
    k = [a["id"] for a in anns].index(crowd[0]["id"])
    assert np.array_equal(ds[index]["target"]["masks"][k].numpy(), coco.annToMask(crowd[0]))


def test_uncompressed_rle_mask_matches_ann_to_mask() -> None:
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    m = (rng.random((20, 30)) > 0.5).astype(np.uint8)
    compressed = mask_utils.encode(np.asfortranarray(m))
    # uncompressed RLE: run lengths in column-major order starting with zeros
    flat, counts, current, run = m.flatten(order="F"), [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    uncompressed = {"size": [20, 30], "counts": counts}
    assert np.array_equal(annotation_mask(uncompressed, 20, 30), m)
    assert np.array_equal(annotation_mask(compressed, 20, 30), m)


def test_category_mapping_round_trips_with_sparse_ids(tmp_path: Path) -> None:
    data = load()
    old_to_new = {1: 90, 2: 7, 3: 42}
    data["categories"] = [{"id": old_to_new[c["id"]], "name": c["name"]} for c in data["categories"]]
    for ann in data["annotations"]:
        ann["category_id"] = old_to_new[ann["category_id"]]
    ds = CocoDetectionDataset(IMAGES, write(tmp_path, data))
    assert ds.category_id_to_label == {7: 0, 42: 1, 90: 2}
    assert ds.class_names == ["car", "airplane", "person"]
    for cat_id, label in ds.category_id_to_label.items():
        assert ds.label_to_category_id[label] == cat_id
    coco = COCO(str(write(tmp_path, data)))
    item = ds[0]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=item["target"]["image_id"], iscrowd=False))
    assert [ds.label_to_category_id[label] for label in item["target"]["labels"].tolist()] == [
        a["category_id"] for a in anns
    ]


def test_images_without_annotations_give_empty_targets_and_collate(tmp_path: Path) -> None:
    data = load()
    empty_id = data["images"][0]["id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != empty_id]
    ds = CocoDetectionDataset(IMAGES, write(tmp_path, data), detection_train_transforms(96), with_masks=True)
    assert len(ds) == 3
    item = ds[0]
    assert item["target"]["image_id"] == empty_id
    assert item["target"]["boxes"].shape == (0, 4) and item["target"]["labels"].shape == (0,)
    assert item["target"]["masks"].shape[0] == 0
    batch = detection_collate([ds[0], ds[1]])
    assert len(batch["image"]) == 2 and batch["target"][0]["boxes"].shape == (0, 4)


# ---------------------------------------------------------------------------------------------- transforms
def sample(h: int = 50, w: int = 80) -> tuple[tv_tensors.Image, dict[str, Any]]:
    image = tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes([[10.0, 5.0, 30.0, 25.0], [60.0, 0.0, 80.0, 50.0]], format="XYXY",
                                     canvas_size=(h, w))
    masks = torch.zeros((2, h, w), dtype=torch.uint8)
    masks[0, 5:25, 10:30] = 1
    return image, {"boxes": boxes, "labels": torch.tensor([0, 2]), "masks": tv_tensors.Mask(masks)}


def test_horizontal_flip_mirrors_boxes() -> None:
    image, target = sample()
    W = 80
    flip = DetectionTransform(80, ops=[v2.RandomHorizontalFlip(p=1.0), v2.ToDtype(torch.float32, scale=True)])
    out_image, out = flip(image, target)
    expected = [[W - 30.0, 5.0, W - 10.0, 25.0], [W - 80.0, 0.0, W - 60.0, 50.0]]
    assert out["boxes"].tolist() == expected
    torch.testing.assert_close(out_image, F.horizontal_flip(image).float() / 255)
    assert out["masks"][0, 5:25, W - 30:W - 10].all() and out["masks"][0].sum() == 400


def test_resize_scales_boxes_like_the_image() -> None:
    image, target = sample(50, 80)
    out_image, out = detection_eval_transforms(160)(image, target)
    assert out_image.shape == (3, 100, 160) and out_image.dtype == torch.float32 and out_image.max() <= 1
    assert out["scale"] == (2.0, 2.0) and out["pad"] == (0, 0, 0, 0)
    torch.testing.assert_close(out["boxes"], target["boxes"].as_subclass(torch.Tensor) * 2)
    assert out["masks"].shape == (2, 100, 160)
    torch.testing.assert_close(boxes_to_original(out["boxes"], out), target["boxes"].as_subclass(torch.Tensor))


def test_letterbox_pads_to_square_and_maps_back(tmp_path: Path) -> None:
    image, target = sample(50, 80)
    out_image, out = detection_eval_transforms(64, letterbox=True)(image, target)
    assert out_image.shape == (3, 64, 64)
    assert out["scale"] == (0.8, 0.8) and out["pad"] == (0, 12, 0, 12)
    original = target["boxes"].as_subclass(torch.Tensor)
    torch.testing.assert_close(out["boxes"], original * 0.8 + torch.tensor([0.0, 12.0, 0.0, 12.0]))
    torch.testing.assert_close(boxes_to_original(out["boxes"], out), original, atol=1e-3, rtol=0)
    # a real photo with awkward sizes (rounded resize), odd padding
    ds = CocoDetectionDataset(IMAGES, TRAIN_JSON, detection_eval_transforms(101, letterbox=True))
    raw = CocoDetectionDataset(IMAGES, TRAIN_JSON)
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 101, 101)
        torch.testing.assert_close(boxes_to_original(item["target"]["boxes"], item["target"]),
                                   raw[i]["target"]["boxes"], atol=1e-3, rtol=0)


def test_train_preset_keeps_boxes_inside_and_sanitizes() -> None:
    torch.manual_seed(0)
    preset = detection_train_transforms(64, scale_range=(0.5, 1.5))
    for _ in range(5):
        image, target = sample(50, 80)
        out_image, out = preset(image, target)
        h, w = out_image.shape[-2:]
        assert max(h, w) <= 96 and out_image.dtype == torch.float32
        assert len(out["boxes"]) == len(out["labels"]) == len(out["masks"])
        assert (out["boxes"][:, 2:] > out["boxes"][:, :2]).all()
    # a box that collapses under resizing is dropped together with its label and mask
    image, target = sample(50, 80)
    target["boxes"] = tv_tensors.BoundingBoxes([[10.0, 5.0, 30.0, 25.0], [60.0, 0.0, 60.5, 50.0]], format="XYXY",
                                               canvas_size=(50, 80))
    _, out = detection_train_transforms(40, hflip=False, scale_range=None, photometric=False)(image, target)
    assert out["labels"].tolist() == [0] and out["boxes"].shape == (1, 4) and out["masks"].shape[0] == 1


# ---------------------------------------------------------------------------------------------- bad input
def broken(tmp_path: Path, problem: str) -> tuple[Path, Path, int]:
    """A copy of the fixture with one problem; returns (images dir, json, offending annotation id)."""
    images = tmp_path / "images"
    shutil.copytree(IMAGES, images)
    data = load()
    ann = data["annotations"][3]
    if problem == "zero width":
        ann["bbox"][2] = 0
    elif problem == "outside":
        img = next(i for i in data["images"] if i["id"] == ann["image_id"])
        ann["bbox"][0] = img["width"] - 2.0
        ann["bbox"][2] = 10.0
    elif problem == "unknown category":
        ann["category_id"] = 99
    elif problem == "missing image id":
        ann["image_id"] = 123456789
    elif problem == "missing file":
        img = next(i for i in data["images"] if i["id"] == ann["image_id"])
        (images / img["file_name"]).unlink()
    return images, write(tmp_path, data, "broken.json"), ann["id"]


@pytest.mark.parametrize("problem", ["zero width", "outside", "unknown category", "missing image id", "missing file"])
def test_bad_annotations_raise_naming_json_and_annotation(tmp_path: Path, problem: str) -> None:
    images, path, ann_id = broken(tmp_path, problem)
    with pytest.raises(DataError) as err:
        datamodule(path, images=images)
    assert str(path) in str(err.value) and str(ann_id) in str(err.value)
    if problem == "missing file":
        assert ".jpg" in str(err.value)


@pytest.mark.parametrize("problem", ["zero width", "outside", "unknown category", "missing image id", "missing file"])
def test_on_bad_skip_drops_with_one_warning(tmp_path: Path, problem: str) -> None:
    images, path, _ = broken(tmp_path, problem)
    with pytest.warns(UserWarning, match=r"skipped bad entries") as record:
        ds = CocoDetectionDataset(images, path, on_bad="skip")
    assert len([w for w in record if "skipped" in str(w.message)]) == 1
    message = str(next(w for w in record if "skipped" in str(w.message)).message)
    assert "1 " in message and str(path) in message
    n_targets = sum(len(ds[i]["target"]["labels"]) for i in range(len(ds)))
    if problem == "missing file":
        assert len(ds) == 2 and "1 missing image file" in message
    else:
        assert len(ds) == 3 and n_targets == 32 - 1


def test_truncated_image_is_caught_in_setup(tmp_path: Path) -> None:
    images = tmp_path / "images"
    shutil.copytree(IMAGES, images)
    victim = images / load()["images"][0]["file_name"]
    victim.write_bytes(victim.read_bytes()[:2000])
    data = datamodule(images=images)  # structure is fine: no error yet
    with pytest.raises(DataError, match=victim.name):
        data.setup("fit")


def test_val_categories_must_match_train(tmp_path: Path) -> None:
    val = load(VAL_JSON)
    val["categories"][0]["name"] = "pedestrian"
    path = write(tmp_path, val, "val.json")
    with pytest.raises(DataError, match="differ") as err:
        datamodule(val_json=path)
    assert str(path) in str(err.value) and str(TRAIN_JSON) in str(err.value)


# ---------------------------------------------------------------------------------------------- datamodule
def test_datamodule_batches_follow_the_detection_contract() -> None:
    data = datamodule(with_masks=True)
    assert data.num_classes == 3 and data.class_names == ["person", "car", "airplane"]
    assert data.label_to_category_id == {0: 1, 1: 2, 2: 3}
    assert data.gt_json("val") == str(VAL_JSON) and data.gt_json("test") == str(VAL_JSON)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"image", "target", "path"} and len(batch["image"]) == len(batch["target"]) == 2
    for image, target in zip(batch["image"], batch["target"]):
        assert image.ndim == 3 and image.shape[0] == 3 and image.dtype == torch.float32
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
        assert target["labels"].dtype == torch.int64 and len(target["labels"]) == len(target["boxes"])
        assert target["masks"].shape[-2:] == image.shape[-2:]
        assert {"image_id", "orig_size", "scale", "pad"} <= set(target)
    val = next(iter(data.val_dataloader()))
    assert max(val["image"][0].shape[-2:]) == 128 and val["target"][0]["image_id"] == 314681
    data.setup("predict")
    pred = next(iter(data.predict_dataloader()))
    # Without predict_paths the val split itself is predicted: its real image ids reach the predictions.
    assert pred["path"][0].endswith("000000314681.jpg") and pred["target"][0]["image_id"] == 314681
    assert torch.equal(pred["image"][0], val["image"][0])


def test_predict_paths_are_plain_images_without_ids() -> None:
    data = datamodule(predict_paths=str(IMAGES / "000000314681.jpg"))
    data.setup("predict")
    (target,) = next(iter(data.predict_dataloader()))["target"]
    assert target["image_id"] == -1 and target["boxes"].shape == (0, 4)


def test_letterbox_datamodule_gives_square_images() -> None:
    data = datamodule(letterbox=True, scale_range=(0.5, 1.5))
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert all(image.shape == (3, 128, 128) for image in batch["image"])


def test_photometric_choices_build_the_named_jitter() -> None:
    """``"yolo"`` is YOLOv8's value/saturation gains as a ColorJitter; ``"distort"`` torchvision's SSD distortion."""
    from lit_vision.data.detection.transforms import detection_train_transforms

    def ops(kind):
        return [type(op) for op in detection_train_transforms(64, photometric=kind).ops.transforms]

    assert v2.RandomPhotometricDistort in ops("distort") and v2.RandomPhotometricDistort in ops(True)
    jitter = next(op for op in detection_train_transforms(64, photometric="yolo").ops.transforms
                  if isinstance(op, v2.ColorJitter))
    assert jitter.brightness == pytest.approx((0.6, 1.4)) and jitter.saturation == pytest.approx((0.3, 1.7))
    assert jitter.hue is None
    assert not {v2.ColorJitter, v2.RandomPhotometricDistort} & set(ops("none"))
    with pytest.raises(ValueError, match="photometric"):
        detection_train_transforms(64, photometric="hsv")
