"""Embedded synthetic scenes (circles, squares, triangles) for detection and instance/semantic segmentation.

Detection and segmentation recipes need data with boxes and masks that exists without a network. This
module draws it: each image has 0-6 uniformly coloured shapes on a textured background (smooth noise,
gradients or stripes, plus pixel noise, so colour alone does not segment it). Later shapes occlude
earlier ones; every instance mask is its *visible* pixels, and its box is the tight box of that mask, so
annotations are exact by construction. Instances with under :data:`MIN_VISIBLE_AREA` visible pixels are
not drawn at all (no unlabelled shape fragments appear in the image).

One call writes ``<cache>/shapes_<size>px_s<seed>_<train>_<val>/`` in two layouts:

* ``coco/images/{train,val}/<id>.png`` and ``coco/annotations/instances_{train,val}.json`` (RLE masks
  from :func:`pycocotools.mask.encode`; bbox ``[x, y, w, h]`` with ``w = xmax - xmin + 1`` in pixels,
  i.e. the continuous box that covers whole pixels; area = mask pixel count).
* ``voc/VOCdevkit/VOC2012/`` (the layout ``torchvision.datasets.VOCDetection(root=.../voc)`` expects):
  ``JPEGImages/<id>.jpg`` (the same pixels as the PNG, JPEG quality 95 without chroma subsampling, so
  close but lossy; masks always match the PNG exactly), ``Annotations/<id>.xml``
  (1-based inclusive boxes: ``xmin = x + 1``, ``xmax = x + w``), ``ImageSets/{Main,Segmentation}/{train,val}.txt``,
  and palette PNGs ``SegmentationClass`` / ``SegmentationObject`` with 255 ("void") on the 2-px band
  where two labels meet, as in VOC.

Generation is deterministic (one seeded :class:`numpy.random.Generator`; no time stamps), so the
same arguments give byte-identical files. The tree is written to a temporary folder and renamed into
place with a ``.complete`` marker, like :func:`lit_vision.data.embedded.digits.write_digits`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image, ImageDraw

from lit_vision.data.embedded.cache import default_cache_dir, write_once
from lit_vision.palette import voc_palette

SHAPES_CLASSES = ("circle", "square", "triangle")
MIN_VISIBLE_AREA = 20  # pixels; smaller remnants of occluded shapes are dropped (and not drawn)
EMPTY_FRACTION = 0.05  # images with no objects (the last image of each split is always empty too)
MAX_OBJECTS = 6
SIZE_RANGE = (12 / 128, 48 / 128)  # shape diameter as a fraction of the image size (12-48 px at 128)
VOID = 255
JPEG_QUALITY = 95
SHAPE_COLOURS = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (250, 250, 250), (20, 20, 20),
)  # fmt: skip


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured ``(size, size, 3)`` float background: smooth noise, a gradient or stripes, plus noise."""
    kind = rng.integers(3)
    if kind == 0:  # smooth colour noise: a coarse random grid, upsampled bicubically
        cells = int(rng.integers(3, 9))
        coarse = (rng.random((cells, cells, 3)) * 255).astype(np.uint8)
        bg = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.float64)
    else:
        yy, xx = np.mgrid[0:size, 0:size] / size
        angle = rng.uniform(0, np.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        if kind == 1:  # linear gradient between two colours
            t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
        else:  # sinusoidal stripes between two colours
            t = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 8) * t + rng.uniform(0, 2 * np.pi))
        c0, c1 = rng.random(3) * 255, rng.random(3) * 255
        bg = c0 + t[..., None] * (c1 - c0)
    return bg + rng.normal(0, 8, bg.shape)


def _shape_mask(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """Boolean mask of one shape (diameter 12-48 px at 128 px), fully inside the image."""
    radius = rng.uniform(*SIZE_RANGE) * size / 2
    cx, cy = rng.uniform(radius, size - radius, 2)
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if SHAPES_CLASSES[cls] == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=1)
    else:  # regular polygon inscribed in the circle, randomly rotated
        sides = 4 if SHAPES_CLASSES[cls] == "square" else 3
        theta = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(sides) / sides
        draw.polygon(list(zip(cx + radius * np.cos(theta), cy + radius * np.sin(theta))), fill=1)
    return np.asarray(canvas, dtype=bool)


def _scene(rng: np.random.Generator, size: int, empty: bool) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One image and its instances (``class``, ``colour``, visible ``mask``), bottom to top."""
    bg = np.clip(_background(rng, size), 0, 255).astype(np.uint8)
    n = 0 if empty else int(rng.integers(1, MAX_OBJECTS + 1))
    drawn = []
    for _ in range(n):
        cls = int(rng.integers(len(SHAPES_CLASSES)))
        colour = SHAPE_COLOURS[int(rng.integers(len(SHAPE_COLOURS)))]
        drawn.append({"class": cls, "colour": colour, "mask": _shape_mask(rng, cls, size)})
    # Visibility from the top down: a dropped shape is not drawn, so it occludes nothing.
    covered = np.zeros((size, size), dtype=bool)
    kept = []
    for inst in reversed(drawn):
        visible = inst["mask"] & ~covered
        if visible.sum() >= MIN_VISIBLE_AREA:
            covered |= inst["mask"]
            kept.append({**inst, "mask": visible})
    kept.reverse()
    for inst in kept:
        bg[inst["mask"]] = inst["colour"]
    return bg, kept


def mask_bbox(mask: np.ndarray) -> list[int]:
    """Tight COCO box ``[x, y, w, h]`` of a non-empty mask: columns 3..10 give ``x=3, w=8``."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def _void_band(labels: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another label: a 2-px band along every object outline."""
    band = np.zeros(labels.shape, dtype=bool)
    for axis in (0, 1):
        diff = np.diff(labels, axis=axis) != 0
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        band[tuple(lo)] |= diff
        band[tuple(hi)] |= diff
    return band


def _voc_xml(stem: str, size: int, boxes: list[tuple[str, list[int]]]) -> bytes:
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "VOC2012"
    ET.SubElement(ann, "filename").text = f"{stem}.jpg"
    ET.SubElement(ET.SubElement(ann, "source"), "database").text = "lit_vision shapes"
    sz = ET.SubElement(ann, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(sz, tag).text = str(value)
    ET.SubElement(ann, "segmented").text = "1"
    for name, (x, y, w, h) in boxes:
        obj = ET.SubElement(ann, "object")
        for tag, value in (("name", name), ("pose", "Unspecified"), ("truncated", 0), ("difficult", 0)):
            ET.SubElement(obj, tag).text = str(value)
        bnd = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
            ET.SubElement(bnd, tag).text = str(value)
    ET.indent(ann)
    return ET.tostring(ann, encoding="utf-8") + b"\n"


def _palette_png(array: np.ndarray, path: Path, palette: list[int]) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    im = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
    im.putpalette(palette)
    im.save(path)


def _write_tree(tmp: Path, num_train: int, num_val: int, size: int, seed: int) -> None:
    from pycocotools import (
        mask as mask_utils,  # lazily: only detection data needs pycocotools
    )

    rng = np.random.default_rng(seed)
    coco_dir, voc = tmp / "coco", tmp / "voc" / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject",
                "ImageSets/Main", "ImageSets/Segmentation"):  # fmt: skip
        (voc / sub).mkdir(parents=True)
    (coco_dir / "annotations").mkdir(parents=True)
    palette = voc_palette()
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPES_CLASSES)]
    image_id = ann_id = 0
    for split, count in (("train", num_train), ("val", num_val)):
        (coco_dir / "images" / split).mkdir(parents=True)
        images, annotations, stems = [], [], []
        for pos in range(count):
            image_id += 1
            stem = f"{image_id:06d}"
            empty = bool(rng.random() < EMPTY_FRACTION) or pos == count - 1
            pixels, instances = _scene(rng, size, empty)
            Image.fromarray(pixels).save(coco_dir / "images" / split / f"{stem}.png")
            Image.fromarray(pixels).save(voc / "JPEGImages" / f"{stem}.jpg", quality=JPEG_QUALITY, subsampling=0)
            images.append({"id": image_id, "file_name": f"{stem}.png", "width": size, "height": size})
            objects = np.zeros((size, size), dtype=np.uint8)
            classes = np.zeros((size, size), dtype=np.uint8)
            boxes = []
            for k, inst in enumerate(instances, start=1):
                ann_id += 1
                rle = mask_utils.encode(np.asfortranarray(inst["mask"].astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                bbox = mask_bbox(inst["mask"])
                annotations.append({
                    "id": ann_id, "image_id": image_id, "category_id": inst["class"] + 1,
                    "bbox": bbox, "area": int(inst["mask"].sum()), "iscrowd": 0,
                    "segmentation": rle, "color": list(inst["colour"]),
                })  # fmt: skip
                boxes.append((SHAPES_CLASSES[inst["class"]], bbox))
                objects[inst["mask"]] = k
                classes[inst["mask"]] = inst["class"] + 1
            band = _void_band(objects)
            _palette_png(np.where(band, VOID, classes), voc / "SegmentationClass" / f"{stem}.png", palette)
            _palette_png(np.where(band, VOID, objects), voc / "SegmentationObject" / f"{stem}.png", palette)
            (voc / "Annotations" / f"{stem}.xml").write_bytes(_voc_xml(stem, size, boxes))
            stems.append(stem)
        listing = "".join(f"{s}\n" for s in stems)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text(listing)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(listing)
        coco = {
            "info": {"description": f"lit_vision synthetic shapes ({split})", "version": "1.0"},
            "licenses": [], "images": images, "annotations": annotations, "categories": categories,
        }  # fmt: skip
        (coco_dir / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


def write_shapes(
    cache_dir: str | Path | None = None,
    num_train: int = 200,
    num_val: int = 50,
    image_size: int = 128,
    seed: int = 0,
) -> Path:
    """Write the shapes dataset (if not already there) in COCO and VOC layouts and return its root.

    The root is ``<cache_dir>/shapes_<image_size>px_s<seed>_<num_train>_<num_val>``; ``cache_dir``
    defaults to :func:`~lit_vision.data.embedded.digits.default_cache_dir`. Use :func:`shapes_paths` for the
    file locations inside it.
    """
    if num_train < 1 or num_val < 1 or image_size < 32:
        raise ValueError("write_shapes needs num_train >= 1, num_val >= 1 and image_size >= 32")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / f"shapes_{image_size}px_s{seed}_{num_train}_{num_val}"
    return write_once(target, lambda tmp: _write_tree(tmp, num_train, num_val, image_size, seed))


def shapes_paths(root: str | Path) -> dict[str, Path]:
    """File locations inside a :func:`write_shapes` root.

    ``voc_root`` is what ``torchvision.datasets.VOCDetection(root, year="2012")`` takes; ``voc_dir``
    is the ``VOC2012`` folder itself.
    """
    root = Path(root)
    coco = root / "coco"
    return {
        "root": root,
        "coco_train_images": coco / "images" / "train",
        "coco_val_images": coco / "images" / "val",
        "coco_train_json": coco / "annotations" / "instances_train.json",
        "coco_val_json": coco / "annotations" / "instances_val.json",
        "voc_root": root / "voc",
        "voc_dir": root / "voc" / "VOCdevkit" / "VOC2012",
    }

