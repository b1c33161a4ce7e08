"""What every detector architecture shares: the registry of choices, typed options, and the label convention.

An architecture is one class in one file (``faster_rcnn.py``, ``retinanet.py``, ``fcos.py``, ``yolo.py``):
its constructor takes the architecture's options, typed (jsonargparse turns them into ``--model.architecture.*``
flags and YAML keys), and its :meth:`DetectorArchitecture.build` turns a registry backbone into the
``nn.Module``. The set of choices is derived from the subclasses: a class with a ``name`` is registered by
being defined, so ``--model.architecture yolo`` (the short name) and ``--model.architecture YOLO`` (the
class, with options) both work, and a researcher's own architecture is one subclass (one line: ``name =
"mine"``) or a ``class_path`` in YAML, without editing lit_vision.

Every built detector keeps one contract: ``forward(images, targets)`` takes a list of float images in
``[0, 1]``; in training it returns a dict of loss terms, in evaluation a list of ``{"boxes" (XYXY pixels of
the given image), "labels" (0..K-1), "scores"}``. :class:`Detector` adapts torchvision's detectors to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lit_vision.backbones import Backbone
from lit_vision.models.architecture import Architecture


class DetectorArchitecture(Architecture):
    """Base of the detector architectures: options common to all, the registry, ``build``.

    Args:
        backbone_out_indices: backbone stages feeding the neck (negatives count from the deepest); the
            default, the last three, gives strides 8/16/32 on most CNNs.
        score_thresh, nms_thresh, detections_per_img: inference post-processing.
    """

    registry: ClassVar[dict[str, type[Architecture]]] = {}
    kind = "detector architecture"

    def __init__(
        self,
        backbone_out_indices: Sequence[int] = (-3, -2, -1),
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ) -> None:
        self.backbone_out_indices = tuple(int(i) for i in backbone_out_indices)
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img

    def build(self, backbone: Backbone, num_classes: int, image_size: int | None = None) -> nn.Module:
        """The detector on ``backbone`` (built with ``out_indices=backbone_out_indices``) for ``num_classes``.

        ``image_size`` is the DataModule's (linked by the CLI): the longer side its presets resize to.
        """
        raise NotImplementedError



class Detector(nn.Module):
    """A torchvision detector with labels ``0..K-1`` on both sides.

    Faster R-CNN reserves class 0 for background (its box predictor has ``K + 1`` outputs); RetinaNet and FCOS
    do not. ``label_offset`` shifts labels by +1 on the way in and -1 on the way out, so callers always see
    ``0..K-1``. ``forward(images, targets)`` in training mode returns the loss dict; in eval mode a list of
    ``{"boxes", "labels", "scores"}`` per image (``targets`` ignored).

    ``float_outputs`` names the submodules of ``model`` (the heads) whose outputs are cast to float32. Under
    ``bf16-mixed`` their last convolution or linear layer returns bf16, and torchvision decodes boxes in the
    dtype of the regression (``BoxCoder.decode_single`` casts the float32 anchors to it): with bf16's 8-bit
    mantissa every coordinate lands on a 2-4 px grid at 256-1024 px (and Faster R-CNN decodes twice), and the
    losses are summed in bf16. The heads still compute in bf16; only decoding and losses move to float32.
    """

    def __init__(self, model: nn.Module, architecture: str, num_classes: int, label_offset: int = 0,
                 class_dependent: Sequence[str] = (), float_outputs: Sequence[str] = ()) -> None:
        super().__init__()
        self.model = model
        self.architecture = architecture
        self.num_classes = num_classes
        self.label_offset = label_offset
        # Parameters (prefixes under ``model.``) whose shape depends on the class count: what loading another
        # dataset's detector re-initialises (lit_vision/models/weights.py).
        self.class_dependent = tuple(f"model.{p}" for p in class_dependent)
        for name in float_outputs:
            model.get_submodule(name).register_forward_hook(_float32_outputs)

    @property
    def backbone(self) -> nn.Module:
        """The registry backbone (inside the FPN wrapper): what fine-tuning freezes or gives its own LR."""
        return self.model.backbone.backbone

    def reference_key(self, key: str) -> str | None:
        """This module's name for a key of torchvision's own detector (``fasterrcnn_resnet50_fpn`` and co.):
        theirs wraps the ResNet as ``backbone.body``, ours as ``backbone.backbone.body``; the rest is the same."""
        if key.startswith("backbone.body."):
            return "model.backbone.backbone." + key[len("backbone."):]
        return "model." + key

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        if self.training:
            if targets is None:
                raise ValueError("a detector in training mode needs targets")
            targets = [{"boxes": t["boxes"].float().reshape(-1, 4),
                        "labels": t["labels"].long() + self.label_offset} for t in targets]
            return self.model(images, targets)
        outputs = self.model(images)
        return [dict(o, labels=o["labels"] - self.label_offset) for o in outputs]


def _to_float32(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    return value


def _float32_outputs(module: nn.Module, inputs: Any, output: Any) -> Any:
    """Forward hook: the module's tensors (in lists, tuples and dicts too) as float32 (see :class:`Detector`)."""
    return _to_float32(output)


def anchors_per_level(detector: nn.Module) -> list[int]:
    """Anchors per location on each level of a torchvision detector (for tests and docs)."""
    model = detector.model
    generator = model.rpn.anchor_generator if hasattr(model, "rpn") else model.anchor_generator
    return list(generator.num_anchors_per_location())


__all__ = ["Detector", "DetectorArchitecture", "anchors_per_level"]
