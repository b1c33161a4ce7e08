"""Dataset statistics read from the annotations alone (no transforms): the numbers to look at before training.

A wrong box format, a class that barely exists in the training split, masks that are mostly "ignore": each
shows in a few counts long before it shows in a loss curve. :func:`dataset_statistics` computes them from the
checked, untransformed sources a DataModule already holds (``sources[split]``: COCO and VOC annotations, mask
files; or the ``samples`` of a classification dataset), so nothing is augmented, resized or cropped.
``lit-vision browse-data`` writes them as text, JSON and plots; notebooks call the function directly.

Everything returned is plain JSON (ints, floats, strings, lists, dicts). Box sizes are in pixels of the
original images; their distributions are summaries plus histograms over fixed bins (half-octaves for sizes,
quarter-octaves for aspect ratios) so that datasets can be compared bin by bin. A DataModule of your own may
define ``statistics(split)`` (optionally with a ``max_images`` keyword) to override all of this.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from lit_vision.constants import IGNORE_INDEX
from lit_vision.data.checks import DataError

SIZE_EDGES: list[float] = [float(2.0 ** (k / 2)) for k in range(0, 29)]  # 1 .. 16384 px, half-octave bins
ASPECT_EDGES: list[float] = [float(2.0 ** (k / 4)) for k in range(-16, 17)]  # 1/16 .. 16, quarter-octave bins
COCO_AREA_RANGES = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, float("inf")))
STAGE_OF_SPLIT = {"train": "fit", "val": "validate", "test": "test"}


def split_source(datamodule: Any, split: str) -> Any:
    """The untransformed dataset of ``split``: the checked ``sources[split]`` or (classification, whose labels
    transforms never touch) the dataset ``setup`` built, running ``setup`` when it has not run yet."""
    sources = getattr(datamodule, "sources", None) or {}
    if split in sources:
        return sources[split]
    datasets = getattr(datamodule, "datasets", None)
    if datasets is not None and split not in datasets and split in STAGE_OF_SPLIT:
        datamodule.setup(STAGE_OF_SPLIT[split])
    if datasets is not None and split in datasets:
        return datasets[split]
    raise DataError(f"{type(datamodule).__name__} has no {split} split")


def dataset_statistics(datamodule: Any, split: str = "train", max_images: int | None = None) -> dict[str, Any]:
    """Counts and size distributions of the ``split`` annotations of ``datamodule`` (see the module docstring).

    ``max_images`` caps how many masks a segmentation scan reads (evenly spaced over the split); annotations
    held in memory (boxes, labels) are always counted in full. The result's ``task`` says which keys it has.
    """
    override = getattr(datamodule, "statistics", None)
    if callable(override):
        accepts_cap = "max_images" in inspect.signature(override).parameters
        return override(split, max_images=max_images) if accepts_cap else override(split)
    source = split_source(datamodule, split)
    names = [str(n) for n in (getattr(datamodule, "class_names", None) or getattr(source, "class_names", []))]
    if callable(getattr(source, "ground_truth", None)):
        stats = detection_statistics(source.ground_truth(), names, getattr(source, "category_id_to_label", None))
        if getattr(source, "skipped", None):
            stats["skipped_entries"] = {str(k): int(v) for k, v in sorted(source.skipped.items())}
    elif callable(getattr(source, "read_mask", None)):
        stats = segmentation_statistics(source, names, max_images)
    elif hasattr(source, "samples"):
        stats = classification_statistics([int(label) for _, label in source.samples], names)
    else:
        raise TypeError(f"cannot compute statistics of {type(source).__name__} (split {split!r} of "
                        f"{type(datamodule).__name__}): define statistics(split) on the DataModule")
    where = getattr(source, "describe", None) or getattr(datamodule, "root", None)
    return {"split": split, **({"source": str(where)} if where else {}), **stats}


# ---------------------------------------------------------------------------------------------- per task
def classification_statistics(labels: Sequence[int], class_names: Sequence[str]) -> dict[str, Any]:
    """Images per class (every class listed, absent ones with 0) from the labels of a split."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names)) if len(labels) else \
        np.zeros(len(class_names), dtype=np.int64)
    per_class = {_name(class_names, k): int(n) for k, n in enumerate(counts)}
    return {"task": "classification", "num_images": len(labels), "class_names": list(class_names),
            "images_per_class": per_class}


def detection_statistics(coco: dict[str, Any], class_names: Sequence[str] | None = None,
                         category_id_to_label: dict[int, int] | None = None) -> dict[str, Any]:
    """Counts and box distributions of a COCO instances dict (what every detection source's ``ground_truth()``
    returns). Crowd regions and VOC's difficult objects (``difficult: 1``) are counted apart, not as instances."""
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    if category_id_to_label is None:
        category_id_to_label = {c["id"]: k for k, c in enumerate(categories)}
    names = list(class_names) if class_names else [str(c.get("name", c["id"])) for c in categories]
    instances, images_of, crowd, difficult = Counter(), {n: set() for n in names}, Counter(), Counter()
    per_image: Counter = Counter()
    sizes = []
    for ann in coco["annotations"]:
        name = _name(names, category_id_to_label.get(ann["category_id"], -1))
        if ann.get("difficult"):
            difficult[name] += 1
        elif ann.get("iscrowd"):
            crowd[name] += 1
        else:
            instances[name] += 1
            images_of.setdefault(name, set()).add(ann["image_id"])
            per_image[ann["image_id"]] += 1
            sizes.append([float(v) for v in ann["bbox"][2:4]])
    wh = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    w, h = wh[:, 0], wh[:, 1]
    area = w * h
    boxes_per_image = Counter(per_image[img["id"]] for img in coco["images"])
    image_wh = np.asarray([[img["width"], img["height"]] for img in coco["images"]], dtype=np.float64).reshape(-1, 2)
    stats: dict[str, Any] = {
        "task": "detection",
        "num_images": len(coco["images"]),
        "num_instances": int(len(wh)),
        "class_names": names,
        "instances_per_class": {n: int(instances[n]) for n in names},
        "images_per_class": {n: len(images_of[n]) for n in names},
        "empty_images": int(boxes_per_image.get(0, 0)),
        "boxes_per_image": {str(k): int(v) for k, v in sorted(boxes_per_image.items())},
        "crowd": int(sum(crowd.values())),
        "difficult": int(sum(difficult.values())),
        "image_width": summary(image_wh[:, 0]),
        "image_height": summary(image_wh[:, 1]),
        "box_width": summary(w),
        "box_height": summary(h),
        "box_sqrt_area": summary(np.sqrt(area)),
        "box_aspect": summary(w / np.maximum(h, 1e-12)),
        "coco_area_ranges": {name: int(((area >= lo) & (area < hi)).sum()) for name, lo, hi in COCO_AREA_RANGES},
        "histograms": {
            "box_width": histogram(w, SIZE_EDGES),
            "box_height": histogram(h, SIZE_EDGES),
            "box_sqrt_area": histogram(np.sqrt(area), SIZE_EDGES),
            "box_aspect": histogram(w / np.maximum(h, 1e-12), ASPECT_EDGES),
        },
    }
    if stats["crowd"]:
        stats["crowd_per_class"] = {n: int(crowd[n]) for n in names if crowd[n]}
    if stats["difficult"]:
        stats["difficult_per_class"] = {n: int(difficult[n]) for n in names if difficult[n]}
    return stats


def segmentation_statistics(source: Any, class_names: Sequence[str], max_images: int | None = None,
                            num_threads: int = 4) -> dict[str, Any]:
    """Pixels per class (and ignore) and images containing each class, reading every mask of ``source`` (a
    :class:`~lit_vision.data.segmentation.base.SegmentationDataset`) or ``max_images`` evenly spaced ones."""
    n = len(source)
    indices = list(range(n))
    if max_images is not None and 0 < max_images < n:
        indices = sorted({int(i) for i in np.linspace(0, n - 1, max_images).round()})

    def bincount(index: int) -> np.ndarray:
        size = source.annotated_size(index) if callable(getattr(source, "annotated_size", None)) else None
        w, h = size if size is not None else (0, 0)
        return np.bincount(np.asarray(source.read_mask(index, h, w)).ravel(), minlength=256)

    pixels = np.zeros(256, dtype=np.int64)
    images = np.zeros(256, dtype=np.int64)
    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        for counts in pool.map(bincount, indices):
            pixels += counts
            images += counts > 0
    k = len(class_names)
    total = int(pixels.sum())
    labelled = int(pixels[:k].sum())
    unknown = {str(v): int(pixels[v]) for v in np.flatnonzero(pixels) if v >= k and v != IGNORE_INDEX}
    stats: dict[str, Any] = {
        "task": "segmentation",
        "num_images": n,
        "scanned_images": len(indices),
        "class_names": list(class_names),
        "total_pixels": total,
        "pixels_per_class": {_name(class_names, c): int(pixels[c]) for c in range(k)},
        "pixel_fraction_per_class": {_name(class_names, c): (float(pixels[c]) / labelled if labelled else 0.0)
                                     for c in range(k)},
        "images_per_class": {_name(class_names, c): int(images[c]) for c in range(k)},
        "ignore_pixels": int(pixels[IGNORE_INDEX]),
        "ignore_fraction": float(pixels[IGNORE_INDEX]) / total if total else 0.0,
        "images_with_ignore": int(images[IGNORE_INDEX]),
    }
    if unknown:
        stats["unknown_values"] = unknown  # mask values that are neither a class nor ignore: a data error
    return stats


# ---------------------------------------------------------------------------------------------- helpers
def _name(class_names: Sequence[str], k: int) -> str:
    return str(class_names[k]) if 0 <= k < len(class_names) else f"label {k}"


def summary(values: np.ndarray) -> dict[str, float | int]:
    """Count, min, median, mean and max of ``values`` (only the count when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"count": 0}
    return {"count": int(values.size), "min": float(values.min()), "median": float(np.median(values)),
            "mean": float(values.mean()), "max": float(values.max())}


def histogram(values: np.ndarray, edges: Sequence[float]) -> dict[str, list[float] | list[int]]:
    """Counts over ``edges`` with the outermost bins open-ended (values beyond them are counted there, so the
    counts always add up to the number of values), trimmed to the bins from the first to the last non-empty one."""
    edges_array = np.asarray(edges, dtype=np.float64)
    clipped = np.clip(np.asarray(values, dtype=np.float64), edges_array[0], edges_array[-1])
    counts, _ = np.histogram(clipped, bins=edges_array)
    nonzero = np.flatnonzero(counts)
    if nonzero.size == 0:
        return {"edges": [], "counts": []}
    lo, hi = int(nonzero[0]), int(nonzero[-1])
    return {"edges": [float(e) for e in edges_array[lo:hi + 2]], "counts": [int(c) for c in counts[lo:hi + 1]]}


def histogram_values(hist: dict[str, Any]) -> np.ndarray:
    """Stand-in values (each bin's geometric centre, repeated by its count) that a histogram plot with the same
    edges bins back into exactly ``hist['counts']``: the figure is drawn from the statistics, not from the data."""
    edges = np.asarray(hist["edges"], dtype=np.float64)
    if edges.size < 2:
        return np.zeros(0)
    centres = np.sqrt(edges[:-1] * edges[1:]) if edges[0] > 0 else (edges[:-1] + edges[1:]) / 2
    return np.repeat(centres, np.asarray(hist["counts"], dtype=np.int64))


# ---------------------------------------------------------------------------------------------- as text
def _table(header: Sequence[str], rows: list[Sequence[Any]]) -> list[str]:
    """Left-aligned first column, right-aligned numbers: readable in a terminal and in a text file."""
    cells = [[str(c) for c in header]] + [[f"{c:,}" if isinstance(c, int) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  " + "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
            for r in cells]


def _summary_text(s: dict[str, Any]) -> str:
    if not s.get("count"):
        return "none"
    return f"min {s['min']:.4g}  median {s['median']:.4g}  mean {s['mean']:.4g}  max {s['max']:.4g}"


def format_statistics(stats: dict[str, Any]) -> str:
    """``stats`` (from :func:`dataset_statistics`, optionally with ``augmented_samples``) as a readable report."""
    task, names = stats.get("task"), stats.get("class_names", [])
    where = f" ({stats['source']})" if stats.get("source") else ""
    lines = [f"{stats.get('data', 'Dataset')}: {stats.get('split')} split{where}, {task}",
             f"images: {stats.get('num_images', 0):,}"]
    if task == "classification":
        total = max(1, stats["num_images"])
        lines += _table(["class", "images", "share"], [[n, stats["images_per_class"][n],
                                                        f"{stats['images_per_class'][n] / total:.1%}"] for n in names])
    elif task == "detection":
        lines[-1] += (f"   instances: {stats['num_instances']:,}   empty images: {stats['empty_images']:,}"
                      f"   crowd: {stats['crowd']:,}   difficult: {stats['difficult']:,}")
        lines += _table(["class", "instances", "images"],
                        [[n, stats["instances_per_class"][n], stats["images_per_class"][n]] for n in names])
        per_image = ", ".join(f"{k}: {v:,}" for k, v in stats["boxes_per_image"].items())
        lines += [f"boxes per image (boxes: images): {per_image}",
                  f"image width (px):   {_summary_text(stats['image_width'])}",
                  f"image height (px):  {_summary_text(stats['image_height'])}",
                  f"box width (px):     {_summary_text(stats['box_width'])}",
                  f"box height (px):    {_summary_text(stats['box_height'])}",
                  f"sqrt(area) (px):    {_summary_text(stats['box_sqrt_area'])}",
                  f"aspect (w/h):       {_summary_text(stats['box_aspect'])}",
                  "COCO area ranges:   " + ", ".join(f"{k} {v:,}" for k, v in stats["coco_area_ranges"].items())]
        for key in ("box_sqrt_area", "box_aspect"):
            hist = stats["histograms"][key]
            bins = ", ".join(f"[{lo:.3g}, {hi:.3g}): {c:,}" for lo, hi, c in
                             zip(hist["edges"][:-1], hist["edges"][1:], hist["counts"]))
            lines.append(f"histogram {key}: {bins or 'empty'}")
        if stats.get("skipped_entries"):
            skipped = ", ".join(f"{v:,} {k}" for k, v in stats["skipped_entries"].items())
            lines.append(f"skipped (on_bad='skip'): {skipped}")
    elif task == "segmentation":
        if stats["scanned_images"] < stats["num_images"]:
            lines[-1] += f"   (masks read: {stats['scanned_images']:,}, capped by max_images)"
        lines += _table(["class", "pixels", "share", "images"],
                        [[n, stats["pixels_per_class"][n], f"{stats['pixel_fraction_per_class'][n]:.2%}",
                          stats["images_per_class"][n]] for n in names])
        lines.append(f"ignore (255): {stats['ignore_pixels']:,} pixels ({stats['ignore_fraction']:.2%} of all) in "
                     f"{stats['images_with_ignore']:,} images")
        if stats.get("unknown_values"):
            lines.append(f"UNKNOWN mask values (neither a class nor ignore), value: pixels: {stats['unknown_values']}")
    samples = stats.get("augmented_samples")
    if samples:
        lines.append(f"\naugmented samples: {len(samples['indices'])} from the {samples['split']} split, "
                     f"seed {samples['seed']}")
        if task == "detection":
            lines.append(f"  boxes drawn: {samples['boxes']:,}   outside the image: {samples['boxes_outside_image']:,}"
                         f"   degenerate (< 1 px): {samples['degenerate_boxes']:,}")
        if samples["unknown_labels"] or samples["unknown_mask_pixels"]:
            lines.append(f"  unknown labels: {samples['unknown_labels']:,}   unknown mask pixels: "
                         f"{samples['unknown_mask_pixels']:,}")
        if samples["problem_paths"]:
            lines.append("  PROBLEMS in: " + ", ".join(samples["problem_paths"][:5])
                         + (" ..." if len(samples["problem_paths"]) > 5 else ""))
    return "\n".join(lines) + "\n"
