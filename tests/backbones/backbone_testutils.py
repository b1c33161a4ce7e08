"""Shared expectations and torchvision reference helpers for the backbone tests.

The reference for every torchvision family is torchvision's own ``forward``: a fresh
model (built on ``meta``, so it costs nothing) is given the backbone's weights plus a
random classifier, and its logits must equal the classifier applied to our last map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import Tensor, nn

# Constructor kwargs for tests only: skip GoogLeNet/Inception's slow trunc-normal init.
FAST_KWARGS = {"googlenet": {"init_weights": False}, "inception_v3": {"init_weights": False}}
# Reference builds must mirror what the registry passes for random init.
REF_KWARGS = {
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"aux_logits": False, "init_weights": False},
}

# arch -> (input size, channels, reductions, spatial sizes or None for ceil(size / r))
TV_CANON: dict[str, tuple[int, list[int], list[int], list[int] | None]] = {
    "alexnet": (64, [64, 192, 256, 256], [4, 8, 16, 32], [15, 7, 3, 1]),
    "vgg11": (64, [64, 128, 256, 512, 512, 512], [1, 2, 4, 8, 16, 32], None),
    "vgg11_bn": (64, [64, 128, 256, 512, 512, 512], [1, 2, 4, 8, 16, 32], None),
    "vgg16": (64, [64, 128, 256, 512, 512, 512], [1, 2, 4, 8, 16, 32], None),
    "vgg16_bn": (64, [64, 128, 256, 512, 512, 512], [1, 2, 4, 8, 16, 32], None),
    "googlenet": (64, [64, 192, 480, 832, 1024], [2, 4, 8, 16, 32], None),
    "inception_v3": (160, [64, 192, 288, 768, 2048], [2, 4, 8, 16, 32], [77, 36, 17, 8, 3]),
    "resnet18": (64, [64, 64, 128, 256, 512], [2, 4, 8, 16, 32], None),
    "resnet34": (64, [64, 64, 128, 256, 512], [2, 4, 8, 16, 32], None),
    "resnet50": (64, [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32], None),
    "resnet101": (64, [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32], None),
    "resnet152": (64, [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32], None),
    "densenet121": (64, [64, 256, 512, 1024, 1024], [2, 4, 8, 16, 32], None),
    "efficientnet_b0": (64, [16, 24, 40, 112, 1280], [2, 4, 8, 16, 32], None),
    "convnext_tiny": (64, [96, 192, 384, 768], [4, 8, 16, 32], None),
}

# The documented return nodes (see lit_vision/backbones/torchvision_backbone.py).
TV_NODES = {
    "alexnet": ["features.1", "features.4", "features.11", "features"],
    "vgg11": ["features.1", "features.4", "features.9", "features.14", "features.19", "features"],
    "vgg16": ["features.3", "features.8", "features.15", "features.22", "features.29", "features"],
    "vgg16_bn": ["features.5", "features.12", "features.22", "features.32", "features.42", "features"],
    "googlenet": ["conv1", "conv3", "inception3b", "inception4e", "inception5b"],
    "inception_v3": ["Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c"],
    "resnet50": ["relu", "layer1", "layer2", "layer3", "layer4"],
    "densenet121": [
        "features.relu0", "features.denseblock1", "features.denseblock2", "features.denseblock3", "relu",
    ],
    "efficientnet_b0": ["features.1", "features.2", "features.3", "features.5", "features"],
    "convnext_tiny": ["features.1", "features.3", "features.5", "features"],
}


def expected_spatial(size: int, reductions: list[int], spatial: list[int] | None) -> list[int]:
    return spatial if spatial is not None else [math.ceil(size / r) for r in reductions]


def _random_like(shape: torch.Size) -> Tensor:
    fan_in = shape[1] if len(shape) > 1 else 1
    return torch.randn(shape) / math.sqrt(fan_in)


def reference_model(arch: str, body_state: dict[str, Tensor], **kwargs) -> nn.Module:
    """torchvision's own model holding the backbone's weights and a random classifier."""
    kwargs = {**REF_KWARGS.get(arch, {}), **kwargs}
    try:
        with torch.device("meta"):
            ref = tvm.get_model(arch, weights=None, **kwargs)
    except NotImplementedError:  # RegNet computes its widths with data-dependent ops
        ref = tvm.get_model(arch, weights=None, **kwargs)
    state = {}
    for key, meta in ref.state_dict().items():
        if key in body_state:
            state[key] = body_state[key]
        else:  # only the classifier may be absent from a backbone
            assert key.split(".")[0] in {"fc", "classifier", "head"}, key
            state[key] = _random_like(meta.shape)
    ref.load_state_dict(state, assign=True)
    return ref.eval()


def classifier_logits(arch: str, ref: nn.Module, feat: Tensor) -> Tensor:
    """Apply torchvision's pooling + classifier of ``ref`` to a last feature map."""
    if arch.startswith("densenet"):  # forward: relu (already in feat), pool, flatten, classifier
        return ref.classifier(torch.flatten(F.adaptive_avg_pool2d(feat, 1), 1))
    pooled = ref.avgpool(feat)
    if arch.startswith("convnext"):  # classifier = LayerNorm2d, Flatten, Linear
        return ref.classifier(pooled)
    head = ref.fc if hasattr(ref, "fc") else ref.classifier
    return head(torch.flatten(pooled, 1))


def hooked_forward(model: nn.Module, names: list[str], x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """``model(x)`` plus the outputs of the named submodules, captured by forward hooks."""
    out: dict[str, Tensor] = {}
    modules = dict(model.named_modules())
    handles = [
        modules[n].register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o.clone()))
        for n in names
        if n in modules
    ]
    try:
        result = model(x)
    finally:
        for h in handles:
            h.remove()
    return result, out
