"""COCO instances as semantic class maps: the pixels pycocotools gives, crowd as ignore, category subsets and
mappings, the documented overlap rule, bad input, batches."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from lit_vision.data.checks import DataError
from lit_vision.data.segmentation.coco import COCOSegmentationDataModule, CocoSegmentationDataset

MINICOCO = Path(__file__).resolve().parents[2] / "fixtures" / "minicoco"
IMAGES = MINICOCO / "images"


def reference_maps(json_path: Path, mapping: dict[int, int]) -> dict[int, np.ndarray]:
    """Class maps from ``COCO.annToMask``, by the documented rule computed per pixel (not by painting):
    the covering non-crowd annotation of smallest pixel area wins (ties: the later one in the file); else 255
    where a crowd region of a kept category lies; else 0. ``mapping``: category id -> class (absent: dropped)."""
    coco = COCO(str(json_path))
    maps = {}
    for image_id, img in coco.imgs.items():
        anns = [a for a in coco.dataset["annotations"] if a["image_id"] == image_id and mapping.get(a["category_id"])]
        out = np.zeros((img["height"], img["width"]), dtype=np.int64)
        for a in anns:
            if a["iscrowd"]:
                out[coco.annToMask(a) > 0] = 255
        objects = [a for a in anns if not a["iscrowd"]]
        if objects:
            stack = np.stack([coco.annToMask(a) > 0 for a in objects])
            n = len(objects)
            key = stack.sum((1, 2))[:, None, None] * (n + 1) + (n - np.arange(n))[:, None, None]
            best = np.where(stack, key, np.iinfo(np.int64).max).argmin(0)
            classes = np.array([mapping[a["category_id"]] for a in objects])
            covered = stack.any(0)
            out[covered] = classes[best][covered]
        maps[image_id] = out
    return maps


def our_maps(ds: CocoSegmentationDataset) -> dict[int, np.ndarray]:
    return {img["id"]: ds[i]["mask"].numpy() for i, img in enumerate(ds.images)}


def assert_same_maps(ds: CocoSegmentationDataset, json_path: Path, mapping: dict[int, int]) -> None:
    expected, ours = reference_maps(json_path, mapping), our_maps(ds)
    assert expected.keys() == ours.keys()
    for image_id in expected:
        assert (ours[image_id] == expected[image_id]).all(), f"image {image_id}"


# ---------------------------------------------------------------------------------------------- pixels
@pytest.mark.parametrize("split", ["train", "val"])
def test_class_maps_equal_pycocotools_ann_to_mask(split: str) -> None:
    ds = CocoSegmentationDataset(IMAGES, MINICOCO / f"{split}.json")
    assert ds.class_names == ["background", "person", "car", "airplane"]
    assert_same_maps(ds, MINICOCO / f"{split}.json", {1: 1, 2: 2, 3: 3})
    if split == "train":  # image 353080 holds a crowd RLE (uncompressed counts) of people
        crowd_map = our_maps(ds)[353080]
        assert (crowd_map == 255).sum() > 1000 and {0, 1, 2, 3} <= set(np.unique(crowd_map).tolist())


def test_compressed_rle_rasterizes_like_the_polygons(tmp_path: Path) -> None:
    data = json.loads((MINICOCO / "train.json").read_text())
    coco = COCO(str(MINICOCO / "train.json"))
    for ann in data["annotations"]:
        rle = mask_utils.encode(np.asfortranarray(coco.annToMask(ann)))
        ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    rle_json = tmp_path / "rle.json"
    rle_json.write_text(json.dumps(data))
    polygons = our_maps(CocoSegmentationDataset(IMAGES, MINICOCO / "train.json"))
    rle = CocoSegmentationDataset(IMAGES, rle_json)
    assert all((our_maps(rle)[k] == polygons[k]).all() for k in polygons)
    assert_same_maps(rle, rle_json, {1: 1, 2: 2, 3: 3})


@pytest.mark.parametrize(
    ("categories", "names", "mapping"),
    [
        (["airplane", 1], ["background", "airplane", "person"], {3: 1, 1: 2}),
        (["airplane"], ["background", "airplane"], {3: 1}),  # the person crowd is background now
        ({"person": 1, "car": 2, "airplane": 2}, ["background", "person", "car/airplane"], {1: 1, 2: 2, 3: 2}),
        ({1: 1, "car": 255}, ["background", "person"], {1: 1, 2: 255}),  # cars become ignore
        ({"1": 1}, ["background", "person"], {1: 1}),  # ids that YAML turned into str keys
    ],
)
def test_category_subsets_and_mappings(categories: Any, names: list[str], mapping: dict[int, int]) -> None:
    ds = CocoSegmentationDataset(IMAGES, MINICOCO / "train.json", categories=categories)
    assert ds.class_names == names and ds.num_classes == len(names)
    assert_same_maps(ds, MINICOCO / "train.json", mapping)


# ---------------------------------------------------------------------------------------------- overlap rule
def square(x: int, y: int, size: int) -> list[list[float]]:
    return [[x, y, x + size, y, x + size, y + size, x, y + size]]


def tiny_coco(tmp_path: Path, annotations: list[dict[str, Any]], size: tuple[int, int] = (24, 24)) -> Path:
    """One ``size`` (w, h) image, categories a (1) and b (2), and ``annotations`` (ids and boxes filled in)."""
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(tmp_path / "images" / "x.png")
    anns = []
    for i, ann in enumerate(annotations, start=1):
        anns.append({"id": i, "image_id": 7, "iscrowd": 0, "bbox": [1, 1, 5, 5], "area": 25.0} | ann)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "x.png", "width": 24, "height": 24}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "annotations": anns,
    }))  # fmt: skip
    return path


def pixels(segmentation: Any) -> np.ndarray:
    if isinstance(segmentation, dict):
        return mask_utils.decode(segmentation) > 0
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, 24, 24))) > 0


@pytest.mark.parametrize("big_first", [True, False])
def test_smaller_object_wins_whatever_the_file_order(tmp_path: Path, big_first: bool) -> None:
    big = {"category_id": 1, "segmentation": square(2, 2, 16)}
    small = {"category_id": 2, "segmentation": square(6, 6, 5)}
    path = tiny_coco(tmp_path, [big, small] if big_first else [small, big])
    mask = CocoSegmentationDataset(tmp_path / "images", path)[0]["mask"].numpy()
    expected = np.where(pixels(small["segmentation"]), 2, np.where(pixels(big["segmentation"]), 1, 0))
    assert (mask == expected).all() and (mask == 2).sum() > 0


def test_equal_areas_later_annotation_wins_and_objects_paint_over_crowd(tmp_path: Path) -> None:
    first = {"category_id": 1, "segmentation": square(2, 2, 8)}
    second = {"category_id": 2, "segmentation": square(6, 6, 8)}
    crowd_pixels = np.zeros((24, 24), dtype=np.uint8)
    crowd_pixels[12:22, 0:20] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd_pixels))
    crowd = {"category_id": 1, "iscrowd": 1, "segmentation": {"size": rle["size"],
                                                              "counts": rle["counts"].decode("ascii")}}
    path = tiny_coco(tmp_path, [first, crowd, second])
    mask = CocoSegmentationDataset(tmp_path / "images", path)[0]["mask"].numpy()
    expected = np.zeros((24, 24), dtype=np.int64)
    expected[crowd_pixels > 0] = 255
    expected[pixels(first["segmentation"])] = 1
    expected[pixels(second["segmentation"])] = 2
    assert (mask == expected).all()
    assert {0, 1, 2, 255} == set(np.unique(mask).tolist())


# ---------------------------------------------------------------------------------------------- bad input
BAD_ANNOTATIONS = {
    "unknown category": ({"category_id": 9, "segmentation": square(2, 2, 4)}, "annotation id 1 has category_id 9"),
    "unknown image": ({"category_id": 1, "image_id": 99, "segmentation": square(2, 2, 4)},
                      "annotation id 1 points at image id 99"),
    "no segmentation": ({"category_id": 1, "segmentation": []}, "annotation id 1 .*has no usable segmentation"),
    "odd polygon": ({"category_id": 1, "segmentation": [[1, 2, 3, 4, 5, 6, 7]]},
                    "annotation id 1 .*has no usable segmentation"),
    "rle size": ({"category_id": 1, "iscrowd": 1, "segmentation": {"size": [10, 10], "counts": [0, 100]}},
                 r"annotation id 1 .*RLE size \[10, 10\] is not the image's"),
}


@pytest.mark.parametrize("problem", sorted(BAD_ANNOTATIONS))
def test_bad_annotations_raise_naming_json_and_annotation(tmp_path: Path, problem: str) -> None:
    ann, match = BAD_ANNOTATIONS[problem]
    path = tiny_coco(tmp_path, [ann])
    with pytest.raises(DataError, match=match) as err:
        CocoSegmentationDataset(tmp_path / "images", path)
    assert str(path) in str(err.value)


def test_bad_categories_and_missing_image_file(tmp_path: Path) -> None:
    path = tiny_coco(tmp_path, [{"category_id": 1, "segmentation": square(2, 2, 4)}])
    with pytest.raises(DataError, match=r"category 'dog' is not one of its categories \[\(1, 'a'\), \(2, 'b'\)\]"):
        CocoSegmentationDataset(tmp_path / "images", path, categories=["a", "dog"])
    with pytest.raises(DataError, match=r"class indices \[2\]: they must be 1\.\.K-1 without gaps"):
        CocoSegmentationDataset(tmp_path / "images", path, categories={"b": 2})
    (tmp_path / "images" / "x.png").unlink()
    with pytest.raises(DataError, match=r"image id 7: file .*x\.png does not exist \(annotation ids \[1\]\)"):
        CocoSegmentationDataset(tmp_path / "images", path)


def test_image_size_differing_from_the_json_fails_in_setup(tmp_path: Path) -> None:
    path = tiny_coco(tmp_path, [{"category_id": 1, "segmentation": square(2, 2, 4)}], size=(30, 24))
    data = COCOSegmentationDataModule(str(tmp_path / "images"), str(path), str(tmp_path / "images"), str(path),
                                      image_size=32, num_workers=0)
    with pytest.raises(DataError, match=rf"{path}: image id 7 says 24x24 but .*x\.png is 30x24"):
        data.setup("fit")


# ---------------------------------------------------------------------------------------------- datamodule
def datamodule(**kw: Any) -> COCOSegmentationDataModule:
    kw = {"image_size": 64, "batch_size": 2, "num_workers": 0} | kw
    return COCOSegmentationDataModule(str(IMAGES), str(MINICOCO / "train.json"), str(IMAGES),
                                      str(MINICOCO / "val.json"), **kw)


def test_datamodule_batches_follow_the_contract() -> None:
    data = datamodule(categories=["person", "car"], crop_size=48)
    assert data.class_names == ["background", "person", "car"] and data.num_classes == 3
    assert data.ignore_index == 255 and len(data.palette) == 768
    data.setup("fit")
    train = next(iter(data.train_dataloader()))
    assert train["image"].shape == (2, 3, 48, 48) and train["mask"].shape == (2, 48, 48)
    assert train["mask"].dtype == torch.int64 and set(train["mask"].unique().tolist()) <= {0, 1, 2, 255}
    val = next(iter(data.val_dataloader()))
    assert val["image"].shape == (1, 3, 64, 64) and val["meta"] == [{"orig_size": (427, 640),
                                                                     "content_size": (43, 64)}]
    assert (val["mask"][0, 43:] == 255).all() and {0, 1} <= set(val["mask"][0, :43].unique().tolist())
    data.setup("predict")
    assert "mask" not in next(iter(data.predict_dataloader()))


def test_splits_must_give_the_same_classes(tmp_path: Path) -> None:
    data = json.loads((MINICOCO / "val.json").read_text())
    other = copy.deepcopy(data)
    other["categories"][2]["name"] = "plane"
    (tmp_path / "val.json").write_text(json.dumps(other))
    with pytest.raises(DataError, match="classes of .*val.json \\(val\\) differ"):
        COCOSegmentationDataModule(str(IMAGES), str(MINICOCO / "train.json"), str(IMAGES), str(tmp_path / "val.json"))
