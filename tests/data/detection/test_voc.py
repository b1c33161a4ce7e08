"""VOC-layout detection data: faithful parsing (1-based boxes), difficult objects, COCO-format ground truth,
agreement with the COCO layout, bad-input errors and batches."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from lit_vision.data.checks import DataError
from lit_vision.data.detection.coco import CocoDetectionDataset
from lit_vision.data.embedded.shapes import SHAPES_CLASSES, shapes_paths, write_shapes
from lit_vision.data.detection.voc import VOC_CLASSES, VOCDetectionDataModule, VOCDetectionDataset, parse_voc_xml
from lit_vision.evaluation.coco import COCO_STAT_NAMES, evaluate_coco

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "voc" / "VOC2012"
ALL_IDS = ["2007_000032", "2007_000243", "2007_000862", "2007_001416"]


def regex_objects(xml: Path) -> list[dict[str, Any]]:
    """An independent reading of a VOC XML: name, difficult and the 1-based box as written, per object."""
    out = []
    for block in re.findall(r"<object>(.*?)</object>", xml.read_text(), flags=re.S):
        def tag(name: str) -> str:
            return re.search(rf"<{name}>\s*([^<]*?)\s*</{name}>", block).group(1)
        out.append({"name": tag("name"), "difficult": tag("difficult") == "1",
                    "voc_box": [int(tag(t)) for t in ("xmin", "ymin", "xmax", "ymax")]})
    return out


def copy_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "VOC2012"
    shutil.copytree(FIXTURE, root)
    return root


def datamodule(root: Path = FIXTURE, **kw: Any) -> VOCDetectionDataModule:
    kw = {"image_size": 128, "batch_size": 2, "num_workers": 0} | kw
    return VOCDetectionDataModule(str(root), **kw)


# ---------------------------------------------------------------------------------------------- parsing
def test_fixture_has_difficult_objects_and_is_small() -> None:
    objects = [o for i in ALL_IDS for o in regex_objects(FIXTURE / "Annotations" / f"{i}.xml")]
    assert sum(o["difficult"] for o in objects) == 3 and len(objects) == 13
    assert sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()) < 600_000


def test_parse_converts_one_based_inclusive_boxes(tmp_path: Path) -> None:
    xml = tmp_path / "a.xml"
    xml.write_text("<annotation><filename>a.jpg</filename><size><width>20</width><height>10</height>"
                   "<depth>3</depth></size><object><name>cat</name><truncated>1</truncated>"
                   "<difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>1</ymax>"
                   "</bndbox><part><name>head</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>3</xmax>"
                   "<ymax>3</ymax></bndbox></part></object></annotation>")
    parsed = parse_voc_xml(xml)
    assert parsed["width"] == 20 and parsed["height"] == 10 and parsed["filename"] == "a.jpg"
    # columns 1..10 (1-based, inclusive) = [0, 10) continuous; one row = height 1; the <part> is no object
    assert parsed["objects"] == [{"name": "cat", "bbox": [0.0, 0.0, 10.0, 1.0], "difficult": False, "truncated": True}]


@pytest.mark.parametrize("keep_difficult", [False, True])
def test_targets_equal_an_independent_parse_of_the_xml(keep_difficult: bool) -> None:
    ds = VOCDetectionDataset(FIXTURE, "trainval", keep_difficult=keep_difficult)
    assert ds.ids == ALL_IDS and len(ds) == 4
    for i, stem in enumerate(ALL_IDS):
        item = ds[i]
        objects = [o for o in regex_objects(FIXTURE / "Annotations" / f"{stem}.xml")
                   if keep_difficult or not o["difficult"]]
        expected = torch.tensor([[x1 - 1, y1 - 1, x2, y2] for x1, y1, x2, y2 in (o["voc_box"] for o in objects)],
                                dtype=torch.float32).reshape(-1, 4)
        target = item["target"]
        torch.testing.assert_close(target["boxes"], expected, rtol=0, atol=0)
        assert target["labels"].tolist() == [VOC_CLASSES.index(o["name"]) for o in objects]
        assert target["labels"].dtype == torch.int64 and type(target["boxes"]) is torch.Tensor
        assert target["image_id"] == int(stem.replace("_", "")) and item["path"].endswith(f"{stem}.jpg")
        h, w = target["orig_size"]
        assert item["image"].shape == (3, h, w) and item["image"].dtype == torch.float32
        assert target["scale"] == (1.0, 1.0) and target["pad"] == (0, 0, 0, 0)


def test_difficult_objects_are_excluded_by_default_and_kept_on_request() -> None:
    default = VOCDetectionDataset(FIXTURE, "trainval")
    kept = VOCDetectionDataset(FIXTURE, "trainval", keep_difficult=True)
    counts = [len(default[i]["target"]["labels"]) for i in range(4)]
    assert counts == [4, 1, 1, 4]
    assert [len(kept[i]["target"]["labels"]) for i in range(4)] == [4, 1, 2, 6]


def test_image_ids_fall_back_to_positions_for_non_numeric_names(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path)
    for sub, ext in (("Annotations", "xml"), ("JPEGImages", "jpg")):
        (root / sub / f"2007_000243.{ext}").rename(root / sub / f"cat_photo.{ext}")
    (root / "ImageSets" / "Main" / "mixed.txt").write_text("2007_000032\ncat_photo\n")
    ds = VOCDetectionDataset(root, "mixed")
    assert ds.image_ids == [1, 2] and [ds[i]["target"]["image_id"] for i in range(2)] == [1, 2]
    assert [img["id"] for img in ds.ground_truth()["images"]] == [1, 2]


# ---------------------------------------------------------------------------------------------- ground truth
def test_ground_truth_is_coco_format_with_difficult_as_crowd() -> None:
    ds = VOCDetectionDataset(FIXTURE, "trainval")
    gt = ds.ground_truth()
    assert [c["id"] for c in gt["categories"]] == list(range(1, 21))
    assert [c["name"] for c in gt["categories"]] == list(VOC_CLASSES)
    assert [img["id"] for img in gt["images"]] == [ds[i]["target"]["image_id"] for i in range(4)]
    by_image = {img["id"]: img for img in gt["images"]}
    expected = []
    for stem in ALL_IDS:
        for o in regex_objects(FIXTURE / "Annotations" / f"{stem}.xml"):
            x1, y1, x2, y2 = o["voc_box"]
            expected.append((int(stem.replace("_", "")), VOC_CLASSES.index(o["name"]) + 1,
                             [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1], int(o["difficult"])))
    got = [(a["image_id"], a["category_id"], a["bbox"], a["iscrowd"]) for a in gt["annotations"]]
    assert got == expected
    for a in gt["annotations"]:
        img = by_image[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert a["area"] == w * h and x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
    assert sum(a["iscrowd"] for a in gt["annotations"]) == 3
    assert len({a["id"] for a in gt["annotations"]}) == len(gt["annotations"])


def _detections(gt: dict[str, Any], crowd: bool, score: float) -> list[dict[str, Any]]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score}
            for a in gt["annotations"] if bool(a["iscrowd"]) == crowd]


def test_detection_on_a_difficult_object_is_not_a_false_positive() -> None:
    gt = VOCDetectionDataset(FIXTURE, "trainval").ground_truth()
    # Imperfect base results so AP < 1 could move either way: each true box shifted by 30% of its width.
    base = [d | {"bbox": [d["bbox"][0] + 0.3 * d["bbox"][2], *d["bbox"][1:]]} for d in _detections(gt, False, 0.5)]
    on_difficult = _detections(gt, True, 0.9)  # ranked above every true positive
    assert len(on_difficult) == 3
    without = evaluate_coco(gt, base)
    with_difficult = evaluate_coco(gt, base + on_difficult)
    assert 0 < without["map"] < 1
    # Every AP (and AR@100) is unchanged. AR@1/AR@10 may move: COCO keeps the top-k detections per image
    # before matching, so an ignored detection can still use up one of the k slots.
    for name in [n for n in COCO_STAT_NAMES if n.startswith("map")] + ["mar_100"]:
        assert with_difficult[name] == pytest.approx(without[name], abs=1e-12), name
    # Control: were the difficult objects not in the ground truth at all, the same detections would be
    # false positives ranked first, and AP would drop.
    no_difficult = gt | {"annotations": [a for a in gt["annotations"] if not a["iscrowd"]]}
    assert evaluate_coco(no_difficult, base + on_difficult)["map_50"] < evaluate_coco(no_difficult, base)["map_50"]


# ---------------------------------------------------------------------------------------------- shapes
@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=4, image_size=64, seed=3)


@pytest.mark.parametrize("split", ["train", "val"])
def test_shapes_voc_targets_equal_the_coco_layout_targets(shapes_root: Path, split: str) -> None:
    paths = shapes_paths(shapes_root)
    voc = VOCDetectionDataset(paths["voc_dir"], split, class_names=SHAPES_CLASSES)
    coco = CocoDetectionDataset(paths[f"coco_{split}_images"], paths[f"coco_{split}_json"])
    assert voc.class_names == coco.class_names and voc.label_to_category_id == coco.label_to_category_id
    assert len(voc) == len(coco)
    n_boxes = 0
    for i in range(len(voc)):
        a, b = voc[i], coco[i]
        assert a["target"]["image_id"] == b["target"]["image_id"]  # "000007" -> 7, the COCO id
        assert a["target"]["orig_size"] == b["target"]["orig_size"]
        torch.testing.assert_close(a["target"]["boxes"], b["target"]["boxes"], rtol=0, atol=1e-6)
        assert torch.equal(a["target"]["labels"], b["target"]["labels"])
        assert (a["image"] - b["image"]).abs().mean() < 0.02  # JPEG q95 vs PNG: close, not equal
        n_boxes += len(a["target"]["boxes"])
    assert n_boxes > 0
    gt_voc, gt_coco = voc.ground_truth(), coco.coco
    def rows(gt: dict[str, Any]) -> list[tuple]:
        return [(x["image_id"], x["category_id"], [float(v) for v in x["bbox"]], x["iscrowd"])
                for x in gt["annotations"]]

    assert rows(gt_voc) == rows(gt_coco)


# ---------------------------------------------------------------------------------------------- bad input
def break_fixture(tmp_path: Path, problem: str) -> tuple[Path, Path, int | None]:
    """A copy of the fixture with one problem in 2007_000032 (train); returns root, XML path, object index."""
    root = copy_fixture(tmp_path)
    xml = root / "Annotations" / "2007_000032.xml"
    text = xml.read_text()
    index = None
    if problem == "unknown class":
        parts = text.split("<name>person</name>")  # objects 2 and 3 are persons
        text, index = parts[0] + "<name>pedestrian</name>" + "<name>person</name>".join(parts[1:]), 2
    elif problem == "degenerate box":
        text, index = text.replace("<xmax>375</xmax>", "<xmax>50</xmax>", 1), 0  # xmin 104 > xmax 50
    elif problem == "outside":
        text, index = text.replace("<xmax>375</xmax>", "<xmax>520</xmax>", 1), 0  # image is 500 wide
    elif problem == "missing JPEG":
        (root / "JPEGImages" / "2007_000032.jpg").unlink()
    elif problem == "missing XML":
        xml.unlink()
    elif problem == "broken XML":
        text = text[: len(text) // 2]
    if xml.exists():
        xml.write_text(text)
    return root, xml, index


PROBLEMS = ["unknown class", "degenerate box", "outside", "missing JPEG", "missing XML", "broken XML"]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_bad_input_raises_naming_the_xml_file_and_object(tmp_path: Path, problem: str) -> None:
    root, xml, index = break_fixture(tmp_path, problem)
    with pytest.raises(DataError) as err:
        datamodule(root)
    message = str(err.value)
    assert str(xml) in message, message
    if index is not None:
        assert f"object {index}" in message
    if problem == "unknown class":
        assert "pedestrian" in message
    if problem == "missing JPEG":
        assert "2007_000032.jpg" in message


SKIP_EXPECT = {  # problem -> (warning count text, images left in train, targets left in train)
    "unknown class": ("1 unknown class", 2, 7),
    "degenerate box": ("1 degenerate box", 2, 7),
    "outside": ("1 box outside the image", 2, 7),
    "missing JPEG": ("1 id without JPEG", 1, 4),
    "missing XML": ("1 id without XML", 1, 4),
    "broken XML": ("1 unreadable XML", 1, 4),
}


@pytest.mark.parametrize("problem", PROBLEMS)
def test_on_bad_skip_drops_with_one_warning_giving_counts(tmp_path: Path, problem: str) -> None:
    root, _, _ = break_fixture(tmp_path, problem)
    with pytest.warns(UserWarning, match=r"skipped bad entries") as record:
        ds = VOCDetectionDataset(root, "train", on_bad="skip")
    messages = [str(w.message) for w in record if "skipped" in str(w.message)]
    counts, n_images, n_targets = SKIP_EXPECT[problem]
    assert len(messages) == 1 and counts in messages[0] and "train.txt" in messages[0]
    assert len(ds) == n_images and sum(len(ds[i]["target"]["labels"]) for i in range(len(ds))) == n_targets
    assert len(ds.ground_truth()["images"]) == n_images


def test_two_bad_objects_are_counted(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path)
    xml = root / "Annotations" / "2007_001416.xml"
    xml.write_text(xml.read_text().replace("<name>sheep</name>", "<name>lamb</name>", 2))
    with pytest.warns(UserWarning, match="2 unknown class"):
        ds = VOCDetectionDataset(root, "trainval", keep_difficult=True, on_bad="skip")
    assert len(ds[3]["target"]["labels"]) == 4


def test_missing_split_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"ImageSets/Main/test\.txt"):
        VOCDetectionDataset(FIXTURE, "test")
    with pytest.raises(DataError, match="does not exist"):
        VOCDetectionDataset(tmp_path / "nowhere", "train")


def test_unknown_class_for_a_custom_class_list() -> None:
    with pytest.raises(DataError, match=r"2007_000032\.xml: object 0 \('aeroplane'"):
        VOCDetectionDataset(FIXTURE, "train", class_names=("person", "sheep"))


def test_truncated_image_and_size_mismatch_are_caught_in_setup(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path)
    victim = root / "JPEGImages" / "2007_000243.jpg"  # val
    victim.write_bytes(victim.read_bytes()[:2000])
    data = datamodule(root)  # structure is fine: no error yet
    with pytest.raises(DataError, match=victim.name):
        data.setup("fit")
    root2 = copy_fixture(tmp_path / "b")
    xml = root2 / "Annotations" / "2007_000032.xml"
    xml.write_text(xml.read_text().replace("<height>281</height>", "<height>290</height>"))
    with pytest.raises(DataError, match=r"2007_000032\.xml: says 500x290 but .*2007_000032\.jpg is 500x281"):
        datamodule(root2).setup("fit")


# ---------------------------------------------------------------------------------------------- datamodule
def test_datamodule_batches_follow_the_detection_contract() -> None:
    data = datamodule()
    assert data.num_classes == 20 and data.class_names == list(VOC_CLASSES)
    assert data.label_to_category_id == {i: i + 1 for i in range(20)}
    assert data.category_id_to_label == {i + 1: i for i in range(20)}
    assert data.ground_truth("test") == data.ground_truth("val")
    assert [img["id"] for img in data.ground_truth("val")["images"]] == [2007000243, 2007000862]
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"image", "target", "path"} and len(batch["image"]) == len(batch["target"]) == 2
    for image, target in zip(batch["image"], batch["target"]):
        assert image.ndim == 3 and image.shape[0] == 3 and image.dtype == torch.float32
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
        assert target["labels"].dtype == torch.int64 and len(target["labels"]) == len(target["boxes"])
        assert {"image_id", "orig_size", "scale", "pad"} <= set(target)
        h, w = image.shape[-2:]
        boxes = target["boxes"]
        assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all()
    val = next(iter(data.val_dataloader()))
    assert max(val["image"][0].shape[-2:]) == 128 and val["target"][0]["image_id"] == 2007000243
    assert val["target"][1]["boxes"].shape == (1, 4)  # the difficult object of 2007_000862 is no target
    data.setup("predict")
    pred = next(iter(data.predict_dataloader()))
    # Without predict_paths the val split itself is predicted: its real image ids reach the predictions.
    assert pred["path"][0].endswith("2007_000243.jpg") and pred["target"][0]["image_id"] == 2007000243
    assert torch.equal(pred["image"][0], val["image"][0])


def test_datamodule_on_shapes_with_letterbox(shapes_root: Path) -> None:
    data = datamodule(shapes_paths(shapes_root)["voc_dir"], class_names=list(SHAPES_CLASSES), letterbox=True,
                      image_size=96, test_split="val")
    assert data.num_classes == 3 and data.class_names == list(SHAPES_CLASSES)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert all(image.shape == (3, 96, 96) for image in batch["image"])
    data.setup("test")
    assert len(data.test_dataloader().dataset) == 4
