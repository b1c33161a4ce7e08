"""Backbone names, listing and construction: ``create_backbone("tv/resnet50")``.

Names always carry their source (``tv/``, ``timm/``, or ``lv/`` for lit_vision's own, e.g. the YOLOv8-layout
``lv/csp_c2f_n``) because the libraries share
model names (``resnet50``) with different layer layouts, strides and weights; a recipe
saying just ``resnet50`` would be ambiguous. torchvision and timm are imported only when
a name from them is listed or built, so importing this package stays cheap.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from .base import Backbone
from .weights import WeightSource

__all__ = [
    "OUTPUT_STRIDES",
    "UnknownBackboneError",
    "check_output_stride",
    "create_backbone",
    "list_backbones",
    "parse_backbone_name",
]

SOURCES = ("tv", "timm", "lv")
_ALIASES = {"torchvision": "tv"}


class UnknownBackboneError(ValueError):
    """The name is not a known ``tv/`` or ``timm/`` model; the message lists close matches."""


@functools.cache
def _tv_names() -> tuple[str, ...]:
    import torchvision.models as tvm

    # module=torchvision.models restricts to classification models (no detection/segmentation).
    return tuple(tvm.list_models(module=tvm))


@functools.cache
def _timm_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def _lv_names() -> tuple[str, ...]:
    from .csp_c2f import csp_c2f_names

    return csp_c2f_names()


def _names(source: str) -> tuple[str, ...]:
    return {"tv": _tv_names, "timm": _timm_names, "lv": _lv_names}[source]()


def list_backbones(pattern: str = "*") -> list[str]:
    """Known backbone names matching an fnmatch ``pattern``, e.g. ``"tv/resnet*"``.

    timm names are listed without pretrained tags; ``timm/resnet50.a1_in1k`` still builds.
    """
    head = pattern.split("/", 1)[0]
    literal = not any(c in head for c in "*?[")
    sources = [s for s in SOURCES if not (literal and "/" in pattern) or s == head]
    names = [f"{s}/{n}" for s in sources for n in _names(s)]
    return sorted(n for n in names if fnmatchcase(n, pattern))


def _close_matches(name: str, source: str) -> list[str]:
    """Close matches within ``source`` first; the other library only if that finds few."""
    order = [source] + [s for s in SOURCES if s != source]
    found: list[str] = []
    for s in order:
        found += difflib.get_close_matches(name, [f"{s}/{n}" for n in _names(s)], n=6, cutoff=0.6)
        if len(found) >= 3:
            break
    return found[:6]


def _suggest(matches: list[str], pattern: str) -> str:
    hint = f"Did you mean: {', '.join(matches)}? " if matches else ""
    return hint + f"See list_backbones({pattern!r})."


def parse_backbone_name(name: str) -> tuple[str, str]:
    """Split ``"tv/resnet50"`` into ``("tv", "resnet50")``, validating both parts."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"backbone name must be a non-empty string, got {name!r}")
    if "/" not in name:
        exact = [f"{s}/{name}" for s in SOURCES if name.split(".")[0] in _names(s)]
        close = [f"{s}/{n}" for s in SOURCES for n in difflib.get_close_matches(name, _names(s), n=3)]
        raise UnknownBackboneError(
            f"Backbone name {name!r} has no source prefix; names look like 'tv/<torchvision model>' "
            f"'timm/<timm model>' or 'lv/<lit_vision model>'. " + _suggest(exact or close, "*")
        )
    source, arch = name.split("/", 1)
    source = _ALIASES.get(source, source)
    if source not in SOURCES:
        raise UnknownBackboneError(
            f"Unknown backbone source {source!r} in {name!r}; use one of "
            + ", ".join(f"'{s}/'" for s in SOURCES)
        )
    known = _names(source)
    base = arch.split(".", 1)[0] if source == "timm" else arch  # timm allows 'resnet50.a1_in1k'
    if base not in known:
        raise UnknownBackboneError(
            f"Unknown backbone {name!r}. "
            + _suggest(_close_matches(f"{source}/{arch}", source), f"{source}/*")
        )
    return source, arch


def _check_pretrained(pretrained: Any) -> bool | WeightSource:
    if pretrained is None or isinstance(pretrained, bool):
        return bool(pretrained)
    if isinstance(pretrained, Mapping):
        return pretrained
    if isinstance(pretrained, (str, os.PathLike)) and str(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():  # fail before spending time building the model
            raise FileNotFoundError(f"Backbone weight file not found: '{path}'")
        return path
    raise TypeError(
        f"pretrained must be a bool, a weight file path or a state dict, got {type(pretrained).__name__}"
    )


def create_backbone(
    name: str,
    pretrained: bool | str | os.PathLike | Mapping[str, Any] = False,
    out_indices: Sequence[int] | None = None,
    output_stride: int | None = None,
    frozen_stages: int = 0,
    frozen_bn: bool = False,
    bn_eps: float | None = None,
    **kwargs: Any,
) -> Backbone:
    """Build a feature-pyramid backbone by name.

    Args:
        name: ``"tv/<torchvision classification model>"``, ``"timm/<timm model>"`` or ``"lv/<lit_vision model>"``
            (``lv/csp_c2f_n`` ... ``_x``: the YOLOv8 backbone, :mod:`lit_vision.backbones.csp_c2f`).
        pretrained: ``False`` random init; ``True`` the library's own download (torchvision
            ``weights="DEFAULT"``, timm ``pretrained=True``: needs network or a warm cache);
            a path to a ``.pth/.pt/.bin/.ckpt`` or ``.safetensors`` file (or an in-memory
            state dict) holding the FULL classification model's state dict as torchvision /
            timm publish it, optionally nested under ``"state_dict"``/``"model"`` or
            prefixed ``module.``. It is checked strictly: missing, unexpected (other than
            the classifier / aux heads) or mis-shaped keys raise ``IncompatibleWeightsError``.
            GoogLeNet / Inception-v3 files get ``transform_input=True`` like torchvision's
            own weights (override with ``transform_input=False`` for self-trained ones).
        out_indices: stages to return (timm-style, negatives allowed; ``None`` = all, for
            timm its default set, which is every stage of a CNN). Maps always come back
            shallow to deep, whatever the order given.
        output_stride: ``None`` (or 32) keeps the natural strides; 8 or 16 dilates the last
            stages instead of striding them, as DeepLab does, so dense heads see finer deep
            maps with the same weights. ``reductions`` then repeat the cap (``[2, 4, 8, 8, 8]``).
            Supported by torchvision ResNet/ResNeXt/Wide-ResNet and by timm models that take
            ``output_stride`` (ResNets, EfficientNets, MobileNets, ConvNeXts, RegNets, ...);
            others raise ``ValueError``.
        frozen_stages: freeze the first N of the architecture's stages (``Backbone.num_stages`` of them; a
            ResNet's are stem, layer1 .. layer4, so torchvision's detection default
            ``trainable_backbone_layers=3`` is ``frozen_stages=2``): no gradients and frozen BatchNorm.
        frozen_bn: every BatchNorm of the backbone becomes ``torchvision.ops.FrozenBatchNorm2d``
            (statistics and affine fixed in train mode too), as torchvision's detectors build their
            pretrained ResNets: small detection batches make batch statistics noise.
        bn_eps: set the ``eps`` of every BatchNorm (torchvision's COCO v1 Faster R-CNN / RetinaNet weights
            were trained with 0.0; its builders overwrite it after loading them).
        **kwargs: passed to the model constructor (``drop_path_rate``, ``in_chans``,
            ``img_size`` for timm; e.g. ``norm_layer`` or ``transform_input`` for
            torchvision). ``probe_size`` (tv only) sets the shape-probe input side.

    Returns:
        A :class:`Backbone`; ``channels``/``reductions`` describe the returned maps.
    """
    reserved = {"weights", "features_only"} & kwargs.keys()
    if reserved:
        raise TypeError(
            f"create_backbone() sets {sorted(reserved)} itself; use pretrained=True/False/<file>"
        )
    output_stride = check_output_stride(output_stride)
    source, arch = parse_backbone_name(name)
    weights = _check_pretrained(pretrained)
    if source == "tv":
        from .torchvision_backbone import build_torchvision_backbone

        backbone: Backbone = build_torchvision_backbone(arch, weights, out_indices, output_stride=output_stride,
                                                        **kwargs)
    elif source == "timm":
        from .timm_backbone import build_timm_backbone

        backbone = build_timm_backbone(arch, weights, out_indices, output_stride=output_stride, **kwargs)
    else:
        from .csp_c2f import build_csp_c2f_backbone

        backbone = build_csp_c2f_backbone(arch, weights, out_indices, output_stride=output_stride, **kwargs)
    from .freeze import freeze_batchnorm, set_batchnorm_eps

    if frozen_bn:
        freeze_batchnorm(backbone)
    if bn_eps is not None:
        set_batchnorm_eps(backbone, bn_eps)
    backbone.freeze(frozen_stages)
    return backbone


OUTPUT_STRIDES = (8, 16, 32)


def check_output_stride(output_stride: int | None) -> int | None:
    """Validate ``output_stride``; 32 (the natural stride of the CNNs we dilate) means ``None``."""
    if output_stride is None:
        return None
    if isinstance(output_stride, bool) or output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            f"output_stride must be one of {OUTPUT_STRIDES} or None (the backbone's natural "
            f"stride), got {output_stride!r}"
        )
    return None if output_stride == 32 else int(output_stride)
