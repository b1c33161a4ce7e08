"""Tiny tasks of every family, and an independent way to run an exported file and compare it with the task.

The comparison here does not use :mod:`lit_vision.export.check` (the code under test): it runs the file with
onnxruntime / ``torch.jit.load`` / ``torch.export.load`` directly and compares with the task's own outputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_vision.constants import IMAGENET_MEAN, IMAGENET_STD
from lit_vision.tasks import ImageClassifier, ObjectDetector, SemanticSegmenter

NUM_CLASSES = 3
CLASS_NAMES = ["cat", "dog", "eel"]
DETECTOR_CLASSES = {"faster_rcnn": "FasterRCNN", "retinanet": "RetinaNet", "fcos": "FCOS", "yolo": "YOLO"}


def classifier(backbone: str = "tv/resnet18") -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(backbone=backbone, class_names=CLASS_NAMES).eval()


def detector(architecture: str, image_size: int = 128, spread: bool = True, **options: Any) -> ObjectDetector:
    """64 channels wide, every candidate kept (``score_thresh=0``), at most 10 detections per image; ``spread``:
    class scores made distinct (see :func:`spread_scores`)."""
    torch.manual_seed(0)
    width = {"neck_channels": 64} if architecture == "yolo" else {"fpn_channels": 64}
    init = width | {"score_thresh": 0.0, "detections_per_img": 10} | options
    arch = {"class_path": f"lit_vision.models.detection.{DETECTOR_CLASSES[architecture]}", "init_args": init}
    task = ObjectDetector(architecture=arch, backbone="tv/resnet18", class_names=CLASS_NAMES,
                          image_size=image_size).eval()
    return spread_scores(task) if spread else task


def spread_scores(task: ObjectDetector) -> ObjectDetector:
    """Untrained detectors score every candidate alike (RetinaNet's prior: 0.01 everywhere), so which ten survive
    is decided by float noise and two correct runtimes disagree. Random, larger class weights spread the scores."""
    if task.hparams.architecture["class_path"].endswith("YOLO"):
        return spread_yolo(task)
    inner = task.model.model
    branch = inner.roi_heads.box_predictor if hasattr(inner, "roi_heads") else inner.head.classification_head
    g = torch.Generator().manual_seed(0)
    layers = [m for m in branch.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():  # torchvision starts the class branch at std 0.01: He init instead, the last layer at gain 1
        for i, layer in enumerate(layers):
            gain = 1.0 if i == len(layers) - 1 else 2**0.5
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * gain / layer.weight[0].numel() ** 0.5)
    return task


def spread_yolo(task: ObjectDetector, seed: int = 0) -> ObjectDetector:
    """Give an untrained YOLO small, varied boxes and class scores spread around 0.5 (its initial ones are
    image-sized boxes of one class, which NMS reduces to one), so threshold, top-k, NMS and the cap all act."""
    g = torch.Generator().manual_seed(seed)
    reg_max = task.model.reg_max
    with torch.no_grad():
        for box, cls in zip(task.model.head.box, task.model.head.cls):
            for conv in (box[-1], cls[-1]):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 30 / conv.weight[0].numel() ** 0.5)
            box[-1].bias.copy_((-0.5 * torch.arange(reg_max)).repeat(4))  # short side distances favoured
            cls[-1].bias.add_(3.0)
    return task


def segmenter(architecture: str, **kwargs: Any) -> SemanticSegmenter:
    torch.manual_seed(0)
    return SemanticSegmenter(architecture=architecture, backbone="tv/resnet18", class_names=CLASS_NAMES,
                             **kwargs).eval()


def normalize(images: Tensor) -> Tensor:
    return (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def open_file(path: Path, fmt: str) -> tuple[Callable[[Tensor], list[Tensor]], dict[str, Any]]:
    """An exported file as ``images -> outputs``, and its embedded metadata, read with the runtime itself."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = json.loads(session.get_modelmeta().custom_metadata_map["lit_vision"])
        return lambda images: [torch.from_numpy(o) for o in session.run(None, {"images": images.numpy()})], meta
    extra = {"lit_vision.json": ""}
    if fmt == "torchscript":
        module = torch.jit.load(str(path), _extra_files=extra)
    else:
        module = torch.export.load(str(path), extra_files=extra).module()

    def run(images: Tensor) -> list[Tensor]:
        with torch.no_grad(), torch.jit.optimized_execution(False):  # no profiling runs: one call per shape
            out = module(images)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    return run, json.loads(extra["lit_vision.json"])


def run_file(path: Path, fmt: str, images: Tensor) -> tuple[list[Tensor], dict[str, Any]]:
    """Outputs and embedded metadata of an exported file for one input."""
    run, meta = open_file(path, fmt)
    return run(images), meta


@torch.no_grad()
def task_outputs(task: Any, images: Tensor) -> list[Tensor]:
    """The task's own outputs for ``[0, 1]`` images, laid out as the export's."""
    if isinstance(task, ImageClassifier):
        return [task(normalize(images))]
    if isinstance(task, SemanticSegmenter):
        return [task(normalize(images))]
    predictions = task(list(images.unbind(0)))
    index = torch.cat([torch.full((len(p["boxes"]),), i) for i, p in enumerate(predictions)])
    return [torch.cat([p[k] for p in predictions]) for k in ("boxes", "scores", "labels")] + [index]


def assert_same_detections(got: list[Tensor], ref: list[Tensor]) -> int:
    """Per image: as many detections, each of the task's matched by label, score (1e-4) and box (1e-2 px)."""
    assert len(got[0]) == len(ref[0]), (len(got[0]), len(ref[0]))
    for image in ref[3].unique().tolist():
        g = [t[got[3] == image] for t in got[:3]]
        r = [t[ref[3] == image] for t in ref[:3]]
        assert len(g[0]) == len(r[0])
        for box, score, label in zip(*r):
            close = ((g[0] - box).abs().max(1).values <= 1e-2) & ((g[1] - score).abs() <= 1e-4) & (g[2] == label)
            assert close.any(), (box, score, label)
    return len(ref[0])


def save_checkpoint(task: Any, path: Path, hparams: dict[str, Any] | None = None,
                    data: dict[str, Any] | None = None) -> Path:
    """A Lightning checkpoint of ``task`` without training (``hparams`` / ``data``: stored values to change / the
    DataModule's hyper-parameters, as a CLI run stores them)."""
    from lightning.pytorch import Trainer

    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    if hparams or data:
        ckpt = torch.load(path, weights_only=False)
        ckpt["hyper_parameters"].update(hparams or {})
        if data:
            ckpt["datamodule_hyper_parameters"] = data
        torch.save(ckpt, path)
    return path
