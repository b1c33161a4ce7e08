"""dataset_statistics against counts made here, straight from the files (JSON, XML, PNG masks, digits arrays)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import torch
from PIL import Image

from lit_vision.data import (
    COCODetectionDataModule,
    DigitsDataModule,
    ShapesDetectionDataModule,
    ShapesSegmentationDataModule,
    VOCDetectionDataModule,
    shapes_paths,
    write_shapes,
)
from lit_vision.data.statistics import (
    ASPECT_EDGES,
    SIZE_EDGES,
    dataset_statistics,
    format_statistics,
    histogram,
    histogram_values,
)
from lit_vision.visualize.draw import class_colors
from lit_vision.visualize.samples import SampleFindings, draw_sample, draw_samples

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SHAPES = {"num_train": 12, "num_val": 4}  # the CLI tests use the same scenes: written once per session
LOADER = {"num_workers": 0}


def test_digits_images_per_class_add_up_to_the_uci_class_counts() -> None:
    dm = DigitsDataModule(verify_images=False, cache_images=False, **LOADER)
    train, val = dataset_statistics(dm, "train"), dataset_statistics(dm, "val")
    expected = np.array([178, 182, 177, 183, 181, 182, 181, 179, 174, 180])  # the UCI test set's published counts
    got = [train["images_per_class"][str(c)] + val["images_per_class"][str(c)] for c in range(10)]
    assert got == expected.tolist()
    root = Path(dm.root)
    assert train["images_per_class"] == {c: len(list((root / "train" / c).glob("*.png"))) for c in map(str, range(10))}
    assert train["num_images"] == sum(expected) - val["num_images"]
    assert "0 " in format_statistics(train) and f"{train['num_images']:,}" in format_statistics(train)


def coco_counts(path: Path) -> dict:
    data = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    plain = [a for a in data["annotations"] if not a.get("iscrowd")]
    per_image = Counter(a["image_id"] for a in plain)
    return {
        "instances": Counter(names[a["category_id"]] for a in plain),
        "images": {n: len({a["image_id"] for a in plain if names[a["category_id"]] == n}) for n in names.values()},
        "per_image": Counter(per_image[img["id"]] for img in data["images"]),
        "crowd": sum(1 for a in data["annotations"] if a.get("iscrowd")),
        "num_images": len(data["images"]),
        "wh": np.array([a["bbox"][2:] for a in plain], dtype=float),
    }


def test_shapes_detection_statistics_equal_the_coco_file() -> None:
    dm = ShapesDetectionDataModule(**SHAPES, **LOADER)
    stats = dataset_statistics(dm, "train")
    ref = coco_counts(shapes_paths(write_shapes(None, **SHAPES))["coco_train_json"])
    assert stats["num_images"] == ref["num_images"]
    assert stats["instances_per_class"] == {n: ref["instances"][n] for n in ("circle", "square", "triangle")}
    assert stats["images_per_class"] == ref["images"]
    assert stats["boxes_per_image"] == {str(k): v for k, v in sorted(ref["per_image"].items())}
    assert stats["empty_images"] == ref["per_image"][0] >= 1  # the last scene of a split is always empty
    w, h = ref["wh"][:, 0], ref["wh"][:, 1]
    assert stats["box_width"]["min"] == w.min() and stats["box_height"]["max"] == h.max()
    assert stats["box_sqrt_area"]["median"] == pytest.approx(np.median(np.sqrt(w * h)))
    assert sum(stats["histograms"]["box_aspect"]["counts"]) == len(w) == stats["num_instances"]
    assert sum(stats["coco_area_ranges"].values()) == len(w)
    json.dumps(stats)  # plain JSON throughout


def test_minicoco_counts_its_crowd_region_apart() -> None:
    mini = FIXTURES / "minicoco"
    dm = COCODetectionDataModule(str(mini / "images"), str(mini / "train.json"), str(mini / "images"),
                                 str(mini / "val.json"), **LOADER)
    stats = dataset_statistics(dm, "train")
    ref = coco_counts(mini / "train.json")
    assert stats["crowd"] == ref["crowd"] == 1
    assert stats["instances_per_class"] == {n: ref["instances"][n] for n in dm.class_names}
    assert stats["num_instances"] == sum(ref["instances"].values())


def test_voc_difficult_objects_are_counted_apart() -> None:
    root = FIXTURES / "voc" / "VOC2012"
    stats = dataset_statistics(VOCDetectionDataModule(str(root), **LOADER), "train")
    ids = (root / "ImageSets" / "Main" / "train.txt").read_text().split()
    objects = [o for i in ids for o in ET.parse(root / "Annotations" / f"{i}.xml").getroot().iter("object")]
    difficult = [o for o in objects if o.findtext("difficult", "0").strip() == "1"]
    plain = Counter(o.findtext("name").strip() for o in objects if o not in difficult)
    assert stats["difficult"] == len(difficult) == 2
    assert {n: c for n, c in stats["instances_per_class"].items() if c} == dict(plain)
    widths = sorted(float(o.find("bndbox").findtext("xmax")) - float(o.find("bndbox").findtext("xmin")) + 1
                    for o in objects if o not in difficult)
    assert stats["box_width"]["min"] == pytest.approx(widths[0])
    assert stats["box_width"]["max"] == pytest.approx(widths[-1])


def mask_counts(max_images: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    voc = shapes_paths(write_shapes(None, **SHAPES))["voc_dir"]
    ids = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    if max_images is not None:
        ids = [ids[int(i)] for i in sorted(set(np.linspace(0, len(ids) - 1, max_images).round()))]
    pixels, images = np.zeros(256, dtype=np.int64), np.zeros(256, dtype=np.int64)
    for i in ids:
        counts = np.bincount(np.array(Image.open(voc / "SegmentationClass" / f"{i}.png")).ravel(), minlength=256)
        pixels, images = pixels + counts, images + (counts > 0)
    return pixels, images, len(ids)


@pytest.mark.parametrize("max_images", [None, 5])
def test_shapes_mask_statistics_equal_the_png_pixels(max_images: int | None) -> None:
    dm = ShapesSegmentationDataModule(**SHAPES, **LOADER)
    stats = dataset_statistics(dm, "train", max_images=max_images)
    pixels, images, scanned = mask_counts(max_images)
    names = ["background", "circle", "square", "triangle"]
    assert stats["scanned_images"] == scanned and stats["num_images"] == SHAPES["num_train"]
    assert stats["pixels_per_class"] == {n: int(pixels[k]) for k, n in enumerate(names)}
    assert stats["images_per_class"] == {n: int(images[k]) for k, n in enumerate(names)}
    assert stats["ignore_pixels"] == pixels[255] > 0 and stats["images_with_ignore"] == images[255]
    assert stats["total_pixels"] == scanned * 128 * 128
    assert "unknown_values" not in stats
    assert ("capped by max_images" in format_statistics(stats)) == (max_images is not None)


def test_histogram_keeps_every_value_and_its_stand_ins_rebin_to_the_same_counts() -> None:
    values = np.array([0.2, 1.0, 3.0, 3.1, 40.0, 1e6])  # below and above the outer edges too
    hist = histogram(values, SIZE_EDGES)
    assert sum(hist["counts"]) == len(values)
    assert np.histogram(histogram_values(hist), bins=hist["edges"])[0].tolist() == hist["counts"]
    assert histogram(np.array([]), ASPECT_EDGES) == {"edges": [], "counts": []}


def test_a_custom_datamodule_statistics_method_wins() -> None:
    class Mine:
        def statistics(self, split: str) -> dict:
            return {"task": "mine", "split": split}

    assert dataset_statistics(Mine(), "val") == {"task": "mine", "split": "val"}


# ---------------------------------------------------------------------------------------------- sample tiles
def test_detection_tile_draws_each_box_edge_in_its_class_colour() -> None:
    dm = ShapesDetectionDataModule(**SHAPES, hflip=False, scale_range=None, **LOADER)
    dm.setup("fit")
    ref = json.loads(shapes_paths(write_shapes(None, **SHAPES))["coco_train_json"].read_text())

    def region(b: list[float]) -> tuple[float, float, float, float]:  # a box with room for its label's tag
        return b[0], b[1], max(b[0] + b[2], b[0] + 70), b[1] + b[3]

    def apart(a: list[float], b: list[float]) -> bool:
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = region(a), region(b)
        return ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0

    # a box big enough that its own label's filled tag covers neither its bottom nor its right edge (below the tag),
    # with no other box or label near it
    ann = max((a for a in ref["annotations"] if min(a["bbox"][2:]) >= 20
               and all(apart(a["bbox"], o["bbox"]) for o in ref["annotations"]
                       if o["image_id"] == a["image_id"] and o is not a)), key=lambda a: min(a["bbox"][2:]))
    index = next(i for i, img in enumerate(ref["images"]) if img["id"] == ann["image_id"])
    item = dm.datasets["train"][index]
    assert Path(item["path"]).name == ref["images"][index]["file_name"]
    findings = SampleFindings()
    tile = draw_sample(item, dm.class_names, findings)
    x, y, w, h = (round(v) for v in ann["bbox"])  # 128-px scenes: neither upscaled nor downscaled, boxes as in the file
    colour = torch.tensor(class_colors(3)[ann["category_id"] - 1], dtype=torch.uint8)
    bottom = tile[:, y + h - 1, x + 2:x + w - 2]  # the bottom edge (the label sits at the top)
    right = tile[:, y + 16:y + h - 2, x + w - 1]  # below the label's tag
    for edge in (bottom, right):
        assert (edge == colour.view(3, 1)).all(0).float().mean() > 0.9
    assert findings.boxes >= 1 and findings.boxes_outside_image == findings.degenerate_boxes == 0


def test_boxes_outside_the_image_are_counted() -> None:
    item = {"image": torch.rand(3, 40, 50), "path": "x.png",
            "target": {"boxes": torch.tensor([[-5.0, 2, 20, 30], [10, 10, 10.5, 30], [1, 1, 49, 39]]),
                       "labels": torch.tensor([0, 1, 7])}}
    findings = SampleFindings()
    draw_sample(item, ["a", "b"], findings)
    assert (findings.boxes, findings.boxes_outside_image, findings.degenerate_boxes, findings.unknown_labels) == \
        (3, 1, 1, 1)


def test_same_seed_draws_the_same_samples() -> None:
    dm = ShapesSegmentationDataModule(**SHAPES, **LOADER)
    dm.setup("fit")
    state = torch.get_rng_state()
    first, found = draw_samples(dm.datasets["train"], dm.class_names, num=3, seed=7, palette=dm.palette)
    again, found_again = draw_samples(dm.datasets["train"], dm.class_names, num=3, seed=7, palette=dm.palette)
    other, found_other = draw_samples(dm.datasets["train"], dm.class_names, num=3, seed=8, palette=dm.palette)
    assert torch.equal(first, again) and found.indices == found_again.indices
    assert found_other.indices != found.indices
    assert torch.equal(torch.get_rng_state(), state)  # the global random stream is left alone
