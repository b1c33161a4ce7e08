"""Backbone registry: ``create_backbone("tv/resnet50")`` / ``create_backbone("timm/convnext_tiny")``.

Every backbone maps an image batch to a list of feature maps, shallow to deep, and
describes them with ``channels`` and ``reductions`` (see :class:`Backbone`).
"""

from .base import Backbone
from .pretrained_config import input_normalization, pretrained_config
from .registry import (
    UnknownBackboneError,
    create_backbone,
    list_backbones,
    parse_backbone_name,
)
from .timm_backbone import TimmBackbone
from .torchvision_backbone import TorchvisionBackbone
from .weights import IncompatibleWeightsError, load_weight_file

__all__ = [
    "Backbone",
    "IncompatibleWeightsError",
    "TimmBackbone",
    "TorchvisionBackbone",
    "UnknownBackboneError",
    "create_backbone",
    "input_normalization",
    "list_backbones",
    "load_weight_file",
    "parse_backbone_name",
    "pretrained_config",
]
