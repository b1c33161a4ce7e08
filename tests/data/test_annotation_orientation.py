"""Annotated photos with an EXIF orientation: the annotation's stored width/height say which pixels it means.

Shown size (EXIF applied) -> the image is rotated; stored size (the tool ignored EXIF) -> used as stored,
with one counted warning; neither -> :class:`DataError` naming the image, the annotation and both sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from lit_vision.data.checks import DataError
from lit_vision.data.detection.coco import CocoDetectionDataset
from lit_vision.data.detection.voc import VOCDetectionDataset
from lit_vision.data.segmentation.base import SegmentationDataset
from lit_vision.data.segmentation.coco import CocoSegmentationDataset
from tests.data.test_decoding import H, W, save_with_orientation

SHOWN, STORED = (H, W), (W, H)  # (w, h) of an orientation-6 photo stored W x H


def upright(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def as_stored(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def pixels(item_image) -> np.ndarray:  # noqa: ANN001 -- float [3, H, W] in [0, 1]
    return (item_image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def coco_files(tmp_path: Path, size: tuple[int, int], orientation: int = 6) -> tuple[Path, Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    photo = save_with_orientation(images / "photo.jpg", orientation)
    w, h = size
    data = {
        "images": [{"id": 7, "file_name": "photo.jpg", "width": w, "height": h}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 2, 10, 12], "area": 120,
                         "iscrowd": 0, "segmentation": [[1, 2, 11, 2, 11, 14, 1, 14]]}],
        "categories": [{"id": 1, "name": "thing"}],
    }  # fmt: skip
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(data))
    return images, ann, photo


def test_coco_annotated_as_shown_rotates_the_image(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    images, ann, photo = coco_files(tmp_path, SHOWN)
    ds = CocoDetectionDataset(images, ann)
    ds.check_sizes()
    assert not [w for w in recwarn if "EXIF" in str(w.message)]
    item = ds[0]
    assert item["target"]["orig_size"] == (W, H)
    assert (pixels(item["image"]) == upright(photo)).all()


def test_coco_annotated_as_stored_keeps_the_stored_pixels_and_warns_once(tmp_path: Path) -> None:
    images, ann, photo = coco_files(tmp_path, STORED)
    ds = CocoDetectionDataset(images, ann)
    with pytest.warns(UserWarning, match=r"1 image\(s\) of .*instances\.json have an EXIF orientation that their "
                                         r"annotations ignore .* e\.g\. .*photo\.jpg"):
        ds.check_sizes()
    assert (pixels(ds[0]["image"]) == as_stored(photo)).all()


def test_coco_size_matching_neither_orientation_names_both(tmp_path: Path) -> None:
    images, ann, photo = coco_files(tmp_path, (30, 30))
    ds = CocoDetectionDataset(images, ann)
    message = (rf"^{ann}: image id 7 says 30x30 but {photo} is 24x40 as viewers show it \(EXIF orientation 6\) "
               rf"and 40x24 as stored: annotations must use one of these sizes$")
    with pytest.raises(DataError, match=message):
        ds.check_sizes()
    with pytest.raises(DataError, match=message):  # mid-epoch too, if setup did not check
        ds[0]


def test_square_photo_prefers_the_exif_orientation(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    y, x = np.mgrid[0:32, 0:32]
    photo = save_with_orientation(images / "photo.jpg", 6, np.stack([x * 8, y * 8, x * 0], -1).astype(np.uint8))
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "photo.jpg", "width": 32, "height": 32}],
                               "annotations": [], "categories": [{"id": 1, "name": "thing"}]}))
    ds = CocoDetectionDataset(images, ann)
    ds.check_sizes()
    assert (pixels(ds[0]["image"]) == upright(photo)).all()


def test_coco_segmentation_follows_the_same_rule(tmp_path: Path) -> None:
    images, ann, photo = coco_files(tmp_path, SHOWN)
    ds = CocoSegmentationDataset(images, ann)
    ds.check()
    item = ds.with_transforms(None)[0]
    assert item["mask"].shape == (W, H) and int(item["mask"][5, 3]) == 1
    assert (pixels(item["image"]) == upright(photo)).all()
    (tmp_path / "bad").mkdir()
    images, ann, photo = coco_files(tmp_path / "bad", (30, 30))
    with pytest.raises(DataError, match=rf"{ann}: image id 7 says 30x30 but {photo} is 24x40 as viewers show it"):
        CocoSegmentationDataset(images, ann).check()


def voc_root(tmp_path: Path, size: tuple[int, int]) -> tuple[Path, Path, Path]:
    root = tmp_path / "VOC"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    photo = save_with_orientation(root / "JPEGImages" / "a.jpg", 6)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    xml = root / "Annotations" / "a.xml"
    xml.write_text(f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height></size><object>"
                   "<name>cat</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>10</xmax><ymax>12</ymax></bndbox>"
                   "</object></annotation>")
    return root, xml, photo


def test_voc_annotated_as_shown_rotates_and_neither_names_both(tmp_path: Path) -> None:
    root, _, photo = voc_root(tmp_path, SHOWN)
    ds = VOCDetectionDataset(root, "train", ["cat"])
    ds.check_sizes()
    assert (pixels(ds[0]["image"]) == upright(photo)).all()
    root, xml, photo = voc_root(tmp_path / "bad", (50, 50))
    ds = VOCDetectionDataset(root, "train", ["cat"])
    with pytest.raises(DataError, match=rf"^{xml}: says 50x50 but {photo} is 24x40 as viewers show it \(EXIF "
                                        r"orientation 6\) and 40x24 as stored"):
        ds.check_sizes()


def mask_png(path: Path, size: tuple[int, int]) -> Path:
    w, h = size
    values = (np.arange(w * h).reshape(h, w) % 3).astype(np.uint8)
    values[0, 0] = 255
    Image.frombytes("P", (w, h), values.tobytes()).save(path)
    return path


def test_segmentation_mask_decides_and_keeps_exact_indices(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    photo = save_with_orientation(tmp_path / "a.jpg", 6)
    mask = mask_png(tmp_path / "shown.png", SHOWN)
    ds = SegmentationDataset([photo], [mask], num_classes=3)
    ds.check()
    item = ds[0]
    assert (pixels(item["image"]) == upright(photo)).all()
    with Image.open(mask) as im:
        assert (item["mask"].numpy() == np.asarray(im)).all()  # index values as stored: never rotated or scaled
    assert not [w for w in recwarn if "EXIF" in str(w.message)]

    stored = SegmentationDataset([photo], [mask_png(tmp_path / "stored.png", STORED)], num_classes=3)
    with pytest.warns(UserWarning, match="EXIF orientation that their annotations ignore"):
        stored.check()
    assert (pixels(stored[0]["image"]) == as_stored(photo)).all()
    assert (pixels(stored.without_masks()[0]["image"]) == as_stored(photo)).all()  # predict on val: same pixels


def test_segmentation_mask_matching_neither_is_named(tmp_path: Path) -> None:
    photo = save_with_orientation(tmp_path / "a.jpg", 6)
    mask = mask_png(tmp_path / "m.png", (30, 30))
    ds = SegmentationDataset([photo], [mask], num_classes=3, describe="split.txt")
    message = rf"mask {mask} says 30x30 but {photo} is 24x40 as viewers show it \(EXIF orientation 6\)"
    with pytest.raises(DataError, match=rf"1 bad image/mask pair\(s\) in split.txt:\n  {message}"):
        ds.check()
    with pytest.raises(DataError, match=message):
        ds[0]
