"""Whole-model weights: start from a full pretrained detector, segmenter or classifier, on your own classes.

The most common fine-tuning workflow starts from torchvision's COCO Faster R-CNN (or COCO-VOC DeepLabv3, or an
ImageNet classifier) rather than from ImageNet backbone weights alone. :func:`load_model_weights` reads such a
file - the official ``*.pth`` state dicts, or one of our own checkpoints - maps its keys to our module names,
loads everything whose shape matches, and re-initialises only the layers whose shape depends on the class count
(each model wrapper names them in ``class_dependent``). Anything else that does not fit is an error naming the
keys: a file of another architecture must not half-load silently.

Three readings of a file are tried and the one that names most of the model's tensors wins: our module's own
state dict, a lit_vision checkpoint (keys under ``model.``), and the reference model's (torchvision's names,
translated by the wrapper's ``reference_key``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lit_vision.backbones.weights import (
    IncompatibleWeightsError,
    WeightSource,
    load_weight_file,
)

__all__ = ["WeightsReport", "load_model_weights"]

_SHOW = 4


def _listing(keys: Sequence[str]) -> str:
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


@dataclass
class WeightsReport:
    """What :func:`load_model_weights` did, key by key (our names for loaded / re-initialised, the file's for ignored)."""

    source: str
    reading: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The one line the tasks log."""
        line = f"weights {self.source} ({self.reading}): loaded {len(self.loaded)} tensors"
        line += f", re-initialised {len(self.reinitialised)}"
        if self.reinitialised:
            line += f" (class-dependent: {_listing(self.reinitialised)})"
        line += f", ignored {len(self.ignored)}"
        if self.ignored:
            line += f" ({_listing(self.ignored)})"
        return line


def _readings(model: nn.Module) -> list[tuple[str, Callable[[str], str | None]]]:
    readings: list[tuple[str, Callable[[str], str | None]]] = [
        ("lit_vision checkpoint", lambda k: k[len("model."):] if k.startswith("model.") else None),
        ("this model's state dict", lambda k: k),
    ]
    reference = getattr(model, "reference_key", None)
    if callable(reference):
        readings.append(("torchvision model", reference))
    return readings


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def load_model_weights(model: nn.Module, source: WeightSource) -> WeightsReport:
    """Load a full model's weights into ``model`` (a ``Classifier``, ``Detector``, ``YOLODetector`` or ``Segmenter``).

    Raises:
        IncompatibleWeightsError: tensors the model needs are missing from the file, or have another shape
            outside the class-dependent layers; the message names them.
    """
    state = load_weight_file(source)
    ours = model.state_dict()
    best: tuple[int, str, dict[str, str]] | None = None
    for reading, translate in _readings(model):
        mapping = {}
        for key in state:
            mine = translate(key)
            if mine is not None and mine in ours:
                mapping[key] = mine
        if best is None or len(mapping) > best[0]:
            best = (len(mapping), reading, mapping)
    assert best is not None
    _, reading, mapping = best
    described = str(source) if not isinstance(source, Mapping) else "<state dict>"
    report = WeightsReport(described, reading)
    class_dependent = tuple(getattr(model, "class_dependent", ()))
    selected: dict[str, Tensor] = {}
    mismatched, wrong_shape = [], set()
    for key, mine in mapping.items():
        if tuple(state[key].shape) == tuple(ours[mine].shape):
            selected[mine] = state[key]
            report.loaded.append(mine)
        elif _under(mine, class_dependent):
            report.reinitialised.append(mine)
        else:
            mismatched.append(f"{mine}: file {tuple(state[key].shape)} vs model {tuple(ours[mine].shape)}")
            wrong_shape.add(mine)
    # A BatchNorm counter has no counterpart in a frozen norm (torchvision's own files with frozen norms lack it).
    report.ignored = [k for k in state if k not in mapping and not k.endswith("num_batches_tracked")]
    covered = set(selected) | set(report.reinitialised)
    missing_or_wrong = covered | wrong_shape
    missing = [k for k in ours if k not in missing_or_wrong and not k.endswith("num_batches_tracked")
               and not _under(k, class_dependent)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) of the model are not in the file: {_listing(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} have another shape: {_listing(mismatched)}")
    if problems:
        raise IncompatibleWeightsError(
            f"weights {described} do not fit this {type(model).__name__} (read as a {reading}): "
            + "; ".join(problems) + ". Is it a file of the same architecture and backbone?")
    report.reinitialised += [k for k in ours if _under(k, class_dependent) and k not in covered
                             and not k.endswith("num_batches_tracked")]
    with torch.no_grad():
        model.load_state_dict(selected, strict=False)
    return report
