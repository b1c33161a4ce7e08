"""VOC-layout, shapes and plain-image segmentation data: exact mask reading, the batch contract, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lit_vision.data.checks import DataError
from lit_vision.data.segmentation import (
    SHAPES_SEGMENTATION_CLASSES,
    VOC_SEGMENTATION_CLASSES,
    SegmentationImagesDataModule,
    ShapesSegmentationDataModule,
    VOCSegmentationDataModule,
)
from lit_vision.data.segmentation.transforms import segmentation_eval_transforms
from lit_vision.data.segmentation.voc import voc_segmentation_dataset
from lit_vision.data.embedded.shapes import shapes_paths, write_shapes
from lit_vision.palette import voc_palette

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "voc" / "VOC2012"
TRAIN, VAL = ["2007_000032", "2007_001416"], ["2007_000243", "2007_000862"]


def png_indices(root: Path, image_id: str) -> np.ndarray:
    """Independent reading: PIL's pixel values of the palette PNG."""
    return np.array(Image.open(root / "SegmentationClass" / f"{image_id}.png"))


def datamodule(root: Path = FIXTURE, **kw: Any) -> VOCSegmentationDataModule:
    kw = {"image_size": 64, "batch_size": 2, "num_workers": 0} | kw
    return VOCSegmentationDataModule(str(root), **kw)


def copy_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "VOC2012"
    shutil.copytree(FIXTURE, root)
    return root


# ---------------------------------------------------------------------------------------------- reading
def test_raw_items_are_the_files_exactly() -> None:
    ds = voc_segmentation_dataset(FIXTURE, "train", 21)
    for index, image_id in enumerate(TRAIN):
        item = ds[index]
        expected = png_indices(FIXTURE, image_id)
        assert item["mask"].dtype == torch.int64 and (item["mask"].numpy() == expected).all()
        assert 255 in expected and set(np.unique(expected)) - {255} <= set(range(21))
        rgb = np.array(Image.open(FIXTURE / "JPEGImages" / f"{image_id}.jpg").convert("RGB"))
        assert torch.equal((item["image"] * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(rgb))
        assert item["meta"] == {"orig_size": rgb.shape[:2], "content_size": rgb.shape[:2]}
        assert item["path"] == str(FIXTURE / "JPEGImages" / f"{image_id}.jpg")


def test_eval_items_keep_only_original_values_and_match_a_nearest_resize() -> None:
    ds = voc_segmentation_dataset(FIXTURE, "val", 21, segmentation_eval_transforms(200))
    for index, image_id in enumerate(VAL):
        item, original = ds[index], png_indices(FIXTURE, image_id)
        h2, w2 = item["meta"]["content_size"]
        assert item["image"].shape == (3, 200, 200) and item["mask"].shape == (200, 200) and w2 == 200
        assert set(item["mask"].unique().tolist()) <= set(np.unique(original).tolist()) | {255}
        assert (item["mask"][h2:] == 255).all()
        reference = np.array(Image.open(FIXTURE / "SegmentationClass" / f"{image_id}.png").resize((w2, h2),
                                                                                                   Image.NEAREST))
        assert (item["mask"][:h2, :w2].numpy() == reference).all()


# ---------------------------------------------------------------------------------------------- datamodule
def test_datamodule_batches_follow_the_contract() -> None:
    data = datamodule(crop_size=48)
    assert data.num_classes == 21 and data.class_names == list(VOC_SEGMENTATION_CLASSES)
    assert data.class_names[0] == "background" and data.ignore_index == 255
    assert data.palette == voc_palette() and len(data.palette) == 768
    data.setup("fit")
    train = next(iter(data.train_dataloader()))
    assert train["image"].shape == (2, 3, 48, 48) and train["image"].dtype == torch.float32
    assert train["mask"].shape == (2, 48, 48) and train["mask"].dtype == torch.int64
    val = next(iter(data.val_dataloader()))
    assert val["image"].shape == (2, 3, 64, 64) and val["mask"].shape == (2, 64, 64)
    for index, (path, meta) in enumerate(zip(val["path"], val["meta"])):
        original = png_indices(FIXTURE, Path(path).stem)
        assert meta["orig_size"] == original.shape
        h2, w2 = meta["content_size"]
        assert max(h2, w2) == 64 and h2 == round(original.shape[0] * 64 / original.shape[1])
        assert (val["mask"][index, h2:] == 255).all() and (val["image"][index, :, h2:] == 0).all()
    for batch in (train, val):
        values = set(batch["mask"].unique().tolist())
        assert values <= set(range(21)) | {255} and len(values - {0, 255}) >= 1


def test_predict_defaults_to_val_images_without_masks_and_test_falls_back_to_val(tmp_path: Path) -> None:
    data = datamodule()
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    assert "mask" not in batch and [Path(p).stem for p in batch["path"]] == VAL
    with pytest.warns(UserWarning, match="testing on the validation split"):
        data.setup("test")
    assert "mask" in next(iter(data.test_dataloader()))
    jpeg = tmp_path / "a.jpg"
    shutil.copy(FIXTURE / "JPEGImages" / f"{VAL[0]}.jpg", jpeg)
    data = datamodule(predict_paths=str(tmp_path))
    data.setup("predict")
    assert next(iter(data.predict_dataloader()))["path"] == [str(jpeg)]


def test_custom_class_names_bound_the_mask_values() -> None:
    with pytest.raises(DataError, match=r"2007_000032\.png holds class indices \[15\] outside 0\.\.1"):
        datamodule(class_names=["background", "aeroplane"]).setup("fit")


# ---------------------------------------------------------------------------------------------- bad input
def _rewrite(path: Path, array: np.ndarray) -> None:
    """Save ``array`` as a VOC-style palette PNG."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    image = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
    image.putpalette(voc_palette())
    image.save(path)


@pytest.mark.parametrize("problem", ["size", "class", "rgb"])
def test_bad_masks_raise_naming_the_file(tmp_path: Path, problem: str) -> None:
    root = copy_fixture(tmp_path)
    png = root / "SegmentationClass" / f"{TRAIN[1]}.png"
    mask = png_indices(root, TRAIN[1])
    if problem == "size":
        _rewrite(png, mask[:-3])
        match = "is 500x325 .* but its image"
    elif problem == "class":
        _rewrite(png, np.where(mask == 17, 30, mask))
        match = r"holds class indices \[30\] outside 0\.\.20"
    else:
        Image.open(png).convert("RGB").save(png)
        match = "has mode 'RGB'"
    data = datamodule(root)
    with pytest.raises(DataError, match=f"(?s){match}") as err:
        data.setup("fit")
    assert str(png) in str(err.value)
    # Without verification the item itself raises, naming the same file.
    unverified = datamodule(root, verify_images=False)
    unverified.setup("fit")
    with pytest.raises(DataError, match=match) as err:
        unverified.datasets["train"][1]
    assert str(png) in str(err.value)


@pytest.mark.parametrize("missing", ["JPEGImages/{}.jpg", "SegmentationClass/{}.png"])
def test_listed_id_without_image_or_mask_fails_in_init(tmp_path: Path, missing: str) -> None:
    root = copy_fixture(tmp_path)
    (root / missing.format(VAL[1])).unlink()
    with pytest.raises(DataError, match=rf"(?s)val\.txt: 1 missing file.*{VAL[1]}.*{missing.format(VAL[1])}"):
        datamodule(root)


def test_unreadable_image_and_missing_split_file(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path)
    jpeg = root / "JPEGImages" / f"{TRAIN[0]}.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:2000])
    with pytest.raises(DataError, match=rf"(?s)1 bad image/mask pair.*{jpeg}"):
        datamodule(root).setup("fit")
    with pytest.raises(DataError, match=r"Segmentation/nope\.txt does not exist"):
        datamodule(root, val_split="nope")


# ---------------------------------------------------------------------------------------------- shapes, images
def test_shapes_datamodule_reads_write_shapes_class_maps(tmp_path: Path) -> None:
    data = ShapesSegmentationDataModule(cache_dir=str(tmp_path), num_train=6, num_val=3, scene_size=64,
                                        batch_size=3, num_workers=0)
    assert data.class_names == ["background", "circle", "square", "triangle"] == list(SHAPES_SEGMENTATION_CLASSES)
    assert data.hparams.image_size == 64
    data.setup("fit")
    assert data.datasets["train"]._cache is not None  # decoded once, in memory
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (3, 3, 64, 64) and batch["mask"].shape == (3, 64, 64)
    assert set(batch["mask"].unique().tolist()) <= {0, 1, 2, 3, 255}
    voc_dir = shapes_paths(write_shapes(tmp_path, 6, 3, 64))["voc_dir"]
    val = next(iter(data.val_dataloader()))
    for mask, path in zip(val["mask"], val["path"]):  # 64 px scenes at image_size 64: no resize, exact
        assert (mask.numpy() == png_indices(voc_dir, Path(path).stem)).all()


def test_images_datamodule_predicts_only_and_needs_class_names(tmp_path: Path) -> None:
    for i, image_id in enumerate(VAL):
        shutil.copy(FIXTURE / "JPEGImages" / f"{image_id}.jpg", tmp_path / f"{i}.jpg")
    with pytest.raises(DataError, match="needs class_names"):
        SegmentationImagesDataModule(str(tmp_path))
    data = SegmentationImagesDataModule(str(tmp_path), image_size=64, class_names=["background", "cat"],
                                        batch_size=2, num_workers=0)
    assert data.num_classes == 2 and data.ignore_index == 255 and len(data.palette) == 768
    with pytest.raises(DataError, match="only predicts"):
        data.setup("fit")
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    assert set(batch) == {"image", "path", "meta"} and batch["image"].shape == (2, 3, 64, 64)
    assert batch["meta"][0] == {"orig_size": (333, 500), "content_size": (43, 64)}
