"""The synthetic shapes dataset: exact, deterministic COCO and VOC annotations of drawn scenes."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lit_vision.data.embedded.shapes import MIN_VISIBLE_AREA, SHAPES_CLASSES, shapes_paths, write_shapes

SMALL = {"num_train": 12, "num_val": 4, "image_size": 64}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("shapes"), **SMALL)


def quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def tight_bbox(mask: np.ndarray) -> list[int]:
    """Independent pixel-tight box ``[x, y, w, h]``: columns 3..10 give x=3, w=8."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def splits(root: Path):
    paths = shapes_paths(root)
    for split in ("train", "val"):
        yield split, paths[f"coco_{split}_images"], quiet_coco(paths[f"coco_{split}_json"])


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path: Path, root: Path) -> None:
    again = write_shapes(tmp_path / "again", **SMALL)
    assert again.name == root.name == "shapes_64px_s0_12_4"
    a, b = all_files(root), all_files(again)
    assert a.keys() == b.keys() and a == b  # JSON, XML, PNG and JPEG bytes alike
    for name in a:
        if name.startswith("coco/images/"):
            assert np.array_equal(np.array(Image.open(root / name)), np.array(Image.open(again / name)))
    other = write_shapes(tmp_path / "other", seed=1, **SMALL)
    assert other.name == "shapes_64px_s1_12_4"
    c = all_files(other)
    json_name = "coco/annotations/instances_train.json"
    assert c[json_name] != a[json_name]
    assert sum(c[n] != a[n] for n in a if n.startswith("coco/images/")) >= len(a) // 10


def test_layout_and_paths(root: Path) -> None:
    paths = shapes_paths(root)
    for key in ("coco_train_images", "coco_val_images", "voc_root", "voc_dir"):
        assert paths[key].is_dir(), key
    assert paths["coco_train_json"].is_file() and paths["coco_val_json"].is_file()
    assert len(list(paths["coco_train_images"].glob("*.png"))) == 12
    assert len(list(paths["coco_val_images"].glob("*.png"))) == 4
    voc = paths["voc_dir"]
    for sub, ext in (("JPEGImages", "jpg"), ("Annotations", "xml"), ("SegmentationClass", "png"),
                     ("SegmentationObject", "png")):  # fmt: skip
        assert len(list((voc / sub).glob(f"*.{ext}"))) == 16, sub
    for kind in ("Main", "Segmentation"):
        train = (voc / "ImageSets" / kind / "train.txt").read_text().split()
        val = (voc / "ImageSets" / kind / "val.txt").read_text().split()
        assert len(train) == 12 and len(val) == 4 and not set(train) & set(val)
    assert (root / ".complete").exists()
    assert not list(root.parent.glob(".shapes-*"))  # the temporary folder is gone


def test_coco_masks_have_area_pixels_and_tight_boxes(root: Path) -> None:
    count = 0
    for split, _, coco in splits(root):
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES_CLASSES)
        assert coco.getCatIds() == [1, 2, 3]
        for ann in coco.loadAnns(coco.getAnnIds()):
            img = coco.loadImgs(ann["image_id"])[0]
            mask = coco.annToMask(ann)
            assert mask.shape == (img["height"], img["width"]) == (64, 64)
            assert int(mask.sum()) == ann["area"] >= MIN_VISIBLE_AREA
            assert ann["bbox"] == tight_bbox(mask)
            assert ann["iscrowd"] == 0 and isinstance(ann["segmentation"]["counts"], str)
            count += 1
    assert count > 16  # 1-6 objects in most images


def test_masks_match_the_image_pixels_and_do_not_overlap(root: Path) -> None:
    for _, image_dir, coco in splits(root):
        for img in coco.loadImgs(coco.getImgIds()):
            pixels = np.array(Image.open(image_dir / img["file_name"]))
            assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
            taken = np.zeros((64, 64), dtype=bool)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
                mask = coco.annToMask(ann).astype(bool)
                assert (pixels[mask] == ann["color"]).all()  # each shape is uniformly coloured
                assert not (taken & mask).any()  # visible masks: occluded pixels belong to the top shape
                taken |= mask


def test_ground_truth_scores_perfectly_against_itself(root: Path) -> None:
    """The annotations work with the COCO evaluator: GT as detections gives AP 1 for boxes and masks."""
    coco = quiet_coco(shapes_paths(root)["coco_train_json"])
    dets = [{k: a[k] for k in ("image_id", "category_id", "bbox", "segmentation")} | {"score": 1.0}
            for a in coco.loadAnns(coco.getAnnIds())]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        for iou_type in ("bbox", "segm"):
            ev = COCOeval(coco, coco.loadRes(dets), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            assert ev.stats[0] == pytest.approx(1.0), iou_type


def test_voc_boxes_and_segmentation_agree_with_coco(root: Path) -> None:
    voc = shapes_paths(root)["voc_dir"]
    for _, image_dir, coco in splits(root):
        for img in coco.loadImgs(coco.getImgIds()):
            stem = Path(img["file_name"]).stem
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            xml = ET.parse(voc / "Annotations" / f"{stem}.xml").getroot()
            assert xml.findtext("filename") == f"{stem}.jpg"
            assert (xml.findtext("size/width"), xml.findtext("size/height")) == ("64", "64")
            objects = xml.findall("object")
            assert len(objects) == len(anns)
            for obj, ann in zip(objects, anns):
                x, y, w, h = ann["bbox"]
                box = [int(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")]
                assert box == [x + 1, y + 1, x + w, y + h]  # VOC: 1-based, inclusive
                assert obj.findtext("name") == SHAPES_CLASSES[ann["category_id"] - 1]
                assert obj.findtext("difficult") == "0" and obj.findtext("truncated") == "0"

            cls_png = Image.open(voc / "SegmentationClass" / f"{stem}.png")
            obj_png = Image.open(voc / "SegmentationObject" / f"{stem}.png")
            assert cls_png.mode == obj_png.mode == "P"
            classes, instances = np.array(cls_png), np.array(obj_png)
            expected_cls = np.zeros((64, 64), dtype=np.uint8)
            expected_obj = np.zeros((64, 64), dtype=np.uint8)
            for k, ann in enumerate(anns, start=1):
                mask = coco.annToMask(ann).astype(bool)
                expected_cls[mask] = ann["category_id"]
                expected_obj[mask] = k
            void = classes == 255
            assert np.array_equal(void, instances == 255)
            assert np.array_equal(classes[~void], expected_cls[~void])
            assert np.array_equal(instances[~void], expected_obj[~void])
            # Void is only the band along outlines: every void pixel has a differently labelled neighbour.
            padded = np.pad(expected_obj, 1, mode="edge")
            neighbours = [padded[1 + dy : 65 + dy, 1 + dx : 65 + dx] for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]
            on_edge = np.any([n != expected_obj for n in neighbours], axis=0)
            assert np.array_equal(void, on_edge)
            for k in range(1, len(anns) + 1):  # every object keeps pixels outside the void band
                assert (instances == k).any()

            jpeg = np.array(Image.open(voc / "JPEGImages" / f"{stem}.jpg").convert("RGB"), dtype=np.int16)
            png = np.array(Image.open(image_dir / img["file_name"]), dtype=np.int16)
            assert np.abs(jpeg - png).mean() < 5  # same pixels, JPEG quality 95, no chroma subsampling


def test_torchvision_voc_datasets_read_the_tree(root: Path) -> None:
    tv = pytest.importorskip("torchvision.datasets")
    det = tv.VOCDetection(str(shapes_paths(root)["voc_root"]), year="2012", image_set="val")
    image, target = det[0]
    assert image.size == (64, 64) and target["annotation"]["filename"].endswith(".jpg")
    seg = tv.VOCSegmentation(str(shapes_paths(root)["voc_root"]), year="2012", image_set="train")
    image, mask = seg[0]
    assert len(seg) == 12 and mask.mode == "P" and mask.size == image.size


def test_empty_images_exist_and_have_no_annotations(root: Path) -> None:
    voc = shapes_paths(root)["voc_dir"]
    for split, _, coco in splits(root):
        empty = [i for i in coco.getImgIds() if not coco.getAnnIds(imgIds=i)]
        assert empty, split  # the last image of every split is empty by construction
        assert max(coco.getImgIds()) in empty
        for image_id in empty:
            stem = f"{image_id:06d}"
            assert stem in (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
            assert ET.parse(voc / "Annotations" / f"{stem}.xml").getroot().findall("object") == []
            assert not np.array(Image.open(voc / "SegmentationClass" / f"{stem}.png")).any()


def test_scenes_cover_every_class_and_overlap(tmp_path: Path) -> None:
    root = write_shapes(tmp_path, num_train=40, num_val=4, image_size=64, seed=3)
    data = json.loads(shapes_paths(root)["coco_train_json"].read_text())
    per_class = {c: sum(a["category_id"] == c for a in data["annotations"]) for c in (1, 2, 3)}
    assert min(per_class.values()) >= 10, per_class
    per_image = np.bincount([a["image_id"] for a in data["annotations"]], minlength=41)[1:]
    assert per_image.max() <= 6 and (per_image == 0).any() and (per_image >= 3).any()
    # Occlusion happens: some boxes intersect (the visible masks themselves never do).
    boxes = {}
    for a in data["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a["bbox"])
    overlaps = sum(
        ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah
        for bs in boxes.values() for i, (ax, ay, aw, ah) in enumerate(bs) for (bx, by, bw, bh) in bs[i + 1 :]
    )  # fmt: skip
    assert overlaps > 0


def test_second_call_reuses_the_tree(tmp_path: Path) -> None:
    root = write_shapes(tmp_path, num_train=2, num_val=1, image_size=32)
    marker = root / "coco" / "annotations" / "instances_train.json"
    before = (marker.stat().st_mtime_ns, (root / ".complete").stat().st_mtime_ns)
    assert write_shapes(tmp_path, num_train=2, num_val=1, image_size=32) == root
    assert (marker.stat().st_mtime_ns, (root / ".complete").stat().st_mtime_ns) == before


def test_default_cache_dir_and_bad_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIT_VISION_CACHE", str(tmp_path))
    assert write_shapes(num_train=1, num_val=1, image_size=32).parent == tmp_path
    with pytest.raises(ValueError):
        write_shapes(tmp_path, num_train=0)


def test_shapes_datamodule_serves_the_coco_layout(tmp_path: Path) -> None:
    from lit_vision.data import ShapesDetectionDataModule

    data = ShapesDetectionDataModule(cache_dir=str(tmp_path), num_train=6, num_val=3, scene_size=64, image_size=64,
                                     batch_size=3, num_workers=0)
    assert data.class_names == list(SHAPES_CLASSES) and data.num_classes == 3
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert len(batch["image"]) == 3 and batch["image"][0].shape == (3, 64, 64)
    assert all(t["boxes"].shape[1] == 4 and bool((t["labels"] < 3).all()) for t in batch["target"])
