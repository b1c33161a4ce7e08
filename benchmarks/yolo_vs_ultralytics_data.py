"""The data side of ``benchmarks/yolo_vs_ultralytics.py``, with no process or Ultralytics in it: the splits both
sides read (shapes, VOC photos, one-class people), COCO boxes to Ultralytics' label lines and back, and the
equal-time epoch count. Pure functions apart from the ``prepare_*`` writers; tested in
``tests/benchmarks/test_yolo_vs_ultralytics.py``."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
VOC_ROOT = REPO.parent / "shared" / "data" / "voc_sample" / "VOCdevkit" / "VOC2012"
COCO_ROOT = REPO.parent / "shared" / "data" / "coco_minicoco"

# ---------------------------------------------------------------------------------------------------- pure helpers
def category_ids(coco: dict[str, Any]) -> list[int]:
    """COCO category ids in class-index order (YOLO class ``k`` is the ``k``-th smallest id)."""
    return sorted(c["id"] for c in coco["categories"])


def coco_to_yolo_labels(coco: dict[str, Any]) -> dict[str, list[str]]:
    """``{file_name: ["cls cx cy w h", ...]}``: YOLO label lines, normalised by the image size, for every image.

    Crowd annotations (VOC's difficult objects) are no training targets on either side, so they are left out;
    images without objects get an empty list (an empty label file: background for Ultralytics).
    """
    index = {cid: k for k, cid in enumerate(category_ids(coco))}
    images = {img["id"]: img for img in coco["images"]}
    lines: dict[str, list[str]] = {img["file_name"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        img = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        W, H = img["width"], img["height"]
        lines[img["file_name"]].append(
            f"{index[ann['category_id']]} {(x + w / 2) / W:.6f} {(y + h / 2) / H:.6f} {w / W:.6f} {h / H:.6f}")
    return lines


def yolo_line_to_coco(line: str, width: int, height: int, categories: list[int]) -> dict[str, Any]:
    """One YOLO line (``cls cx cy w h [conf]``, normalised) -> ``{"category_id", "bbox": [x, y, w, h][, "score"]}``
    in pixels of a ``width`` x ``height`` image."""
    fields = line.split()
    cx, cy, w, h = (float(v) for v in fields[1:5])
    out: dict[str, Any] = {"category_id": categories[int(fields[0])],
                           "bbox": [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]}
    if len(fields) > 5:
        out["score"] = float(fields[5])
    return out


def yolo_predictions_to_coco(prediction_dir: Path, coco: dict[str, Any]) -> list[dict[str, Any]]:
    """Ultralytics' ``save_txt``/``save_conf`` files (one per image stem) as a COCO results list for ``coco``."""
    categories, results = category_ids(coco), []
    for img in coco["images"]:
        path = prediction_dir / f"{Path(img['file_name']).stem}.txt"
        for line in path.read_text().splitlines() if path.exists() else []:
            if line.strip():
                det = yolo_line_to_coco(line, img["width"], img["height"], categories)
                results.append({"image_id": img["id"], **det})
    return results


def one_class(sources: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The ``name`` objects of several COCO dicts as one single-class COCO dict (category id 1) over all their
    images, objects of other classes dropped (their images stay: background). Images are renumbered 1..N in
    file-name order (names must be unique across the sources); boxes, areas and crowd flags are kept, masks dropped.
    """
    images: dict[str, dict[str, Any]] = {}
    kept: list[tuple[str, dict[str, Any]]] = []
    for coco in sources:
        wanted = {c["id"] for c in coco["categories"] if c["name"] == name}
        if not wanted:
            raise ValueError(f"no category named {name!r} in {[c['name'] for c in coco['categories']]}")
        by_id = {img["id"]: img for img in coco["images"]}
        for img in coco["images"]:
            if img["file_name"] in images:
                raise ValueError(f"image file name {img['file_name']!r} occurs in two sources")
            images[img["file_name"]] = img
        kept += [(by_id[a["image_id"]]["file_name"], a) for a in coco["annotations"] if a["category_id"] in wanted]
    new_id = {file_name: k for k, file_name in enumerate(sorted(images), start=1)}
    return {
        "images": [{"id": new_id[f], "file_name": f, "width": images[f]["width"], "height": images[f]["height"]}
                   for f in sorted(images)],
        "categories": [{"id": 1, "name": name}],
        "annotations": [{"id": k, "image_id": new_id[f], "category_id": 1, "bbox": list(a["bbox"]),
                         "area": a.get("area", a["bbox"][2] * a["bbox"][3]), "iscrowd": int(a.get("iscrowd", 0))}
                        for k, (f, a) in enumerate(sorted(kept, key=lambda fa: (new_id[fa[0]], fa[1]["id"])), start=1)],
    }


def subset(coco: dict[str, Any], file_names: list[str]) -> dict[str, Any]:
    """The images named in ``file_names`` and their annotations (ids unchanged)."""
    names = set(file_names)
    ids = {img["id"] for img in coco["images"] if img["file_name"] in names}
    return {"images": [img for img in coco["images"] if img["id"] in ids], "categories": coco["categories"],
            "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}


def split_ids(ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A deterministic train/val split: sorted ids shuffled by ``seed``, the first ``val_fraction`` is val."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction))
    return sorted(order[n_val:]), sorted(order[:n_val])


def epochs_for_budget(budget_s: float, wall_s: float, epoch_s: list[float], max_epochs: int) -> int:
    """Epochs a side fits in ``budget_s``: its fixed cost (process wall minus epochs) plus whole mean epochs."""
    per_epoch = sum(epoch_s) / len(epoch_s)
    overhead = max(0.0, wall_s - sum(epoch_s))
    return max(1, min(max_epochs, int((budget_s - overhead) // per_epoch)))


# ---------------------------------------------------------------------------------------------------- data
def prepare_shapes(work: Path) -> dict[str, Path]:
    from lit_vision.data.embedded.shapes import shapes_paths, write_shapes

    p = shapes_paths(write_shapes())
    return {"train_images": p["coco_train_images"], "train_json": p["coco_train_json"],
            "val_images": p["coco_val_images"], "val_json": p["coco_val_json"]}


def prepare_voc(work: Path, voc_root: Path, val_fraction: float, seed: int) -> dict[str, Path]:
    """VOC photos split by :func:`split_ids`; the ground truth is lit_vision's VOC reader's (difficult = crowd)."""
    from lit_vision.data.detection.voc import VOCDetectionDataset

    root = work / "voc" / "VOC2012"
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for sub in ("Annotations", "JPEGImages"):
        if not (root / sub).exists():
            (root / sub).symlink_to(voc_root / sub)
    ids = (voc_root / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    out: dict[str, Path] = {}
    for split, listed in zip(("train", "val"), split_ids(ids, val_fraction, seed)):
        (root / "ImageSets" / "Main" / f"bench_{split}.txt").write_text("".join(f"{i}\n" for i in listed))
        out[f"{split}_json"] = work / "voc" / f"{split}.json"
        out[f"{split}_json"].write_text(json.dumps(VOCDetectionDataset(root, f"bench_{split}").ground_truth()))
        out[f"{split}_images"] = voc_root / "JPEGImages"
    return out


def prepare_people(work: Path, voc_root: Path, coco_root: Path, val_fraction: float, seed: int) -> dict[str, Path]:
    """Every shared real photo, one class: ``voc_sample``'s 100 (VOC ``person``; difficult = crowd, as lit_vision's
    VOC reader gives them) and ``coco_minicoco``'s 40 (COCO ``person``, crowd regions kept as crowd), split by
    :func:`split_ids` over the file names. Photos without a person stay in as background, as in a real dataset."""
    from lit_vision.data.detection.voc import VOCDetectionDataset

    voc = VOCDetectionDataset(voc_root, "trainval").ground_truth()
    cocos = [json.loads((coco_root / "labels" / f"{s}.json").read_text()) for s in ("train", "val")]
    people = one_class([voc, *cocos], "person")
    images = work / "people" / "images"  # one folder of links: both sides read a split from one directory
    images.mkdir(parents=True, exist_ok=True)
    for img in people["images"]:
        source = voc_root / "JPEGImages" / img["file_name"]
        source = source if source.exists() else coco_root / "images" / img["file_name"]
        if not (images / img["file_name"]).exists():
            (images / img["file_name"]).symlink_to(source)
    out: dict[str, Path] = {}
    names = [img["file_name"] for img in people["images"]]
    for split, names in zip(("train", "val"), split_ids(names, val_fraction, seed)):
        out[f"{split}_json"] = work / "people" / f"{split}.json"
        out[f"{split}_json"].write_text(json.dumps(subset(people, names)))
        out[f"{split}_images"] = images
    return out


def write_yolo_dataset(data: dict[str, Path], out: Path) -> Path:
    """Ultralytics' layout of the same split: ``images/<split>/`` (copies), ``labels/<split>/*.txt``, ``data.yaml``."""
    for split in ("train", "val"):
        coco = json.loads(data[f"{split}_json"].read_text())
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for file_name, lines in coco_to_yolo_labels(coco).items():
            shutil.copy(data[f"{split}_images"] / file_name, out / "images" / split / file_name)
            (out / "labels" / split / f"{Path(file_name).stem}.txt").write_text("".join(f"{s}\n" for s in lines))
    names = {k: c["name"] for k, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}
    (out / "data.yaml").write_text(yaml.safe_dump({"path": str(out), "train": "images/train", "val": "images/val",
                                                   "names": names}))
    return out / "data.yaml"
