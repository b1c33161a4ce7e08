"""What an exported model says about itself: task, classes, input size, normalisation, outputs, box format.

An ONNX file handed to another team must be usable without lit_vision or the recipe: which pixels go in (size,
value range, mean/std and whether the model applies them), what comes out (names, shapes, box format). The same
dictionary is embedded in every format and written next to the file as ``<output>.json``.

Where the facts come from, when only a checkpoint is given: the task's hyper-parameters (class names, the
detector's ``image_size``) and the DataModule's, which Lightning stores in the checkpoint
(``datamodule_hyper_parameters``: ``image_size``, ``mean``, ``std``, ``crop_pct``); a DataModule given no
``mean``/``std`` normalises as the backbone's pretrained weights expect (the task's ``input_normalization()``),
and one that normalises otherwise says so in ``DataInfo.extra["normalize"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lit_vision.constants import IMAGENET_MEAN, IMAGENET_STD
from lit_vision.export.wrappers import ExportSpec
from lit_vision.geometry import size_hw

DEFAULT_SIZES: dict[str, int] = {"classification": 224, "detection": 640, "segmentation": 512}
BOX_FORMAT = "xyxy: x_min, y_min, x_max, y_max in pixels of the input image"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("lit_vision", "torch", "torchvision"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def task_kind(task: Any) -> str:
    """``"classification"``, ``"detection"`` or ``"segmentation"`` of a task (subclasses included)."""
    from lit_vision.tasks import ImageClassifier, ObjectDetector, SemanticSegmenter

    for kind, klass in (("classification", ImageClassifier), ("detection", ObjectDetector),
                        ("segmentation", SemanticSegmenter)):
        if isinstance(task, klass):
            return kind
    raise TypeError(f"cannot export a {type(task).__name__}: lit_vision exports ImageClassifier, ObjectDetector and "
                    f"SemanticSegmenter (and their subclasses)")


def normalization(task: Any, data: Mapping[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """``(mean, std, where it comes from)`` of the model's inputs, as the DataModule chose them: what it reported
    (``DataInfo.extra["normalize"]``), its ``mean``/``std`` hyper-parameters, else - a DataModule given none
    normalises as the backbone's pretrained weights expect - the task's ``input_normalization()``, else ImageNet's."""
    extra = getattr(getattr(task, "data_info", None), "extra", {}) or {}
    if "normalize" in extra:
        mean, std = extra["normalize"]
        return tuple(map(float, mean)), tuple(map(float, std)), "DataInfo.extra['normalize']"
    if data.get("mean") is not None and data.get("std") is not None:
        return tuple(map(float, data["mean"])), tuple(map(float, data["std"])), "the DataModule's mean/std"
    model_stats = task.input_normalization() if callable(getattr(task, "input_normalization", None)) else None
    if model_stats is not None:
        mean, std = model_stats
        return tuple(map(float, mean)), tuple(map(float, std)), "the backbone's pretrained config"
    return IMAGENET_MEAN, IMAGENET_STD, "ImageNet (lit_vision.constants)"


def input_size(task: Any, kind: str, data: Mapping[str, Any], given: Sequence[int] | None) -> tuple[tuple[int, int], str]:
    """``((height, width), where it comes from)``: the command's ``image_size``, the detector's linked
    ``image_size``, the DataModule's, else a default per task."""
    if given:
        return size_hw(given), "--image_size"  # type: ignore[return-value]
    hp = getattr(task, "hparams", {})
    if kind == "detection" and hp.get("image_size"):
        return size_hw(hp["image_size"]), "the task's image_size"  # type: ignore[return-value]
    if data.get("image_size"):
        return size_hw(data["image_size"]), "the DataModule's image_size"  # type: ignore[return-value]
    return (DEFAULT_SIZES[kind],) * 2, "default (no image_size in the checkpoint)"  # type: ignore[return-value]


def preprocessing(kind: str, size: tuple[int, int], data: Mapping[str, Any], inside: bool) -> str:
    """The steps from an image file to the model's input, as the task's evaluation preset does them."""
    norm = "the model normalises" if inside else "then (x - mean) / std per channel"
    h, w = size
    if kind == "classification":
        crop_pct = float(data.get("crop_pct") or 0.875)
        return (f"RGB; resize the shorter side to {round(min(h, w) / crop_pct)} and centre-crop {h}x{w} (the "
                f"evaluation preset, crop_pct {crop_pct}); scale to [0, 1]; {norm}")
    if kind == "segmentation":
        return (f"RGB; resize the longer side to {max(h, w)} and pad bottom/right to {h}x{w} (the evaluation preset); "
                f"scale to [0, 1]; {norm}")
    return (f"RGB scaled to [0, 1], not normalised (the detector normalises inside); the evaluation preset resizes "
            f"the longer side to {max(h, w)}, any size is accepted")


def outputs(spec: ExportSpec, num_classes: int) -> list[dict[str, Any]]:
    """Name, shape, dtype and meaning of each output."""
    if spec.task == "classification":
        return [{"name": "logits", "shape": ["batch", num_classes], "dtype": "float32",
                 "description": "class scores before softmax (softmax over dim 1 gives probabilities)"}]
    if spec.task == "segmentation":
        return [{"name": "logits", "shape": ["batch", num_classes, "height", "width"], "dtype": "float32",
                 "description": "per-pixel class scores at the input size (argmax over dim 1 gives the mask)"}]
    return [
        {"name": "boxes", "shape": ["detections", 4], "dtype": "float32", "description": BOX_FORMAT},
        {"name": "scores", "shape": ["detections"], "dtype": "float32", "description": "confidence in [0, 1]"},
        {"name": "labels", "shape": ["detections"], "dtype": "int64", "description": "class index into class_names"},
        {"name": "batch_index", "shape": ["detections"], "dtype": "int64",
         "description": "which image of the batch; detections are sorted by image, then by decreasing score"},
    ]


def postprocessing(kind: str) -> str:
    if kind == "classification":
        return "softmax(logits, dim=1) for probabilities; top-k for class names"
    if kind == "segmentation":
        return ("crop the padding, resize the logits bilinearly to the original image size, argmax over classes "
                "(what the task's predict does)")
    return ("done inside (score threshold, NMS, detections_per_img); scale the boxes by original size / input size "
            "for original-image pixels")


def build(task: Any, spec: ExportSpec, size: tuple[int, int], facts: Mapping[str, Any], *, fmt: str,
          data: Mapping[str, Any], size_source: str, normalization_source: str, checkpoint: str | None) -> dict[str, Any]:
    """The metadata dictionary (JSON-serialisable) of one export; ``facts``: what the exporter produced
    (``dynamic`` axes, ``exporter``, ``opset``)."""
    hp = getattr(task, "hparams", {})
    dynamic = dict(facts.get("dynamic") or {})
    shape = ["batch" if dynamic.get("batch") else 1, 3, "height" if dynamic.get("height") else size[0],
             "width" if dynamic.get("width") else size[1]]
    inside = spec.normalization_inside
    meta: dict[str, Any] = {
        "format": fmt,
        **{k: v for k, v in facts.items() if k not in ("dynamic", "size_multiple") and v is not None},
        "versions": _versions(),
        "checkpoint": checkpoint,
        "task": spec.task,
        "task_class": f"{type(task).__module__}.{type(task).__qualname__}",
        "architecture": spec.architecture,
        "backbone": hp.get("backbone"),
        "num_classes": int(task.num_classes),
        "class_names": list(task.class_names),
        "input_name": "images",
        "input_shape": shape,
        "input_dtype": "float32",
        "input_layout": "NCHW, RGB",
        "input_size": list(size),
        "input_size_source": size_source,
        "dynamic": dynamic,
        "size_multiple": int(facts.get("size_multiple") or 1),  # height and width: multiples of this
        "input_range": "[0, 1]" if inside else "normalised: (x - mean) / std of [0, 1] RGB",
        "normalization_inside": inside,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "normalization_source": "the detector's own" if spec.task == "detection" else normalization_source,
        "preprocessing": preprocessing(spec.task, size, data, inside),
        "output_names": list(spec.output_names),
        "outputs": outputs(spec, int(task.num_classes)),
        "postprocessing": postprocessing(spec.task),
    }
    if spec.task == "detection":
        meta["box_format"] = BOX_FORMAT
        meta |= spec.extra
    notes = []
    if spec.task == "detection" and not spec.dynamic_batch:
        notes.append("torchvision's detectors are exported for one image at a time (batch 1)")
    if spec.task == "segmentation" and hp.get("inference") == "slide":
        notes.append(f"the task infers with sliding windows (window_size {hp.get('window_size') or 512}); the export "
                     f"is the whole-image network: run it on the windows and average the logits")
    if notes:
        meta["notes"] = notes
    return meta


__all__ = ["BOX_FORMAT", "DEFAULT_SIZES", "build", "input_size", "normalization", "task_kind"]
