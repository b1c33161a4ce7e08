"""What a backbone's pretrained weights expect of their input: normalisation, size, resize interpolation, crop.

Not every pretrained model was trained on ImageNet-normalised pixels: many timm ViTs (AugReg, ``in21k``) and
Inception-v3 expect ``mean = std = 0.5``, CLIP models their own statistics. Feeding them ImageNet-normalised
images shifts every input of the first layer, which fine-tuning then has to undo. timm records what each
checkpoint expects in its ``pretrained_cfg`` (registered in code, so no download is needed), torchvision in its
weights' ``transforms()``; :func:`pretrained_config` reads either. The DataModules normalise with it unless given
``mean``/``std`` (``docs/fine_tuning.md``).
"""

from __future__ import annotations

from typing import Any

from lit_vision.constants import IMAGENET_MEAN, IMAGENET_STD

from .registry import parse_backbone_name

__all__ = ["input_normalization", "pretrained_config"]

# What torchvision's classification weights use almost everywhere (resize 256, crop 224), and the answer for an
# architecture without published weights.
_TV_DEFAULT: dict[str, Any] = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "input_size": (3, 224, 224),
                               "interpolation": "bilinear", "crop_pct": 0.875}


def pretrained_config(name: str) -> dict[str, Any]:
    """``{"mean", "std", "input_size" (C, H, W), "interpolation", "crop_pct"}`` of registry backbone ``name``.

    ``timm/<arch>[.<tag>]``: timm's ``pretrained_cfg`` of that tag (the architecture's default tag without one);
    ``tv/<arch>``: the ``DEFAULT`` weights' transforms (what ``pretrained=True`` loads). Unknown names raise
    :class:`~lit_vision.backbones.UnknownBackboneError` (a ``ValueError``).
    """
    source, arch = parse_backbone_name(name)
    if source == "lv":  # trained from scratch here; YOLOv8 feeds pixels / 255, unnormalised
        return {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "input_size": (3, 640, 640),
                "interpolation": "bilinear", "crop_pct": 1.0}
    return _timm_config(arch) if source == "timm" else _tv_config(arch)


def input_normalization(backbone: Any) -> tuple[list[float], list[float]] | None:
    """``(mean, std)`` of :func:`pretrained_config` for a backbone (or its registry name); ``None`` for one outside
    the registry (the classic U-Net encoder), whose user then gets the caller's default (ImageNet's)."""
    name = backbone if isinstance(backbone, str) else getattr(backbone, "name", None)
    try:
        cfg = pretrained_config(name)
    except (TypeError, ValueError):  # not a registry name (UnknownBackboneError is a ValueError)
        return None
    return list(cfg["mean"]), list(cfg["std"])


def _timm_config(arch: str) -> dict[str, Any]:
    import timm
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    cfg = timm.get_pretrained_cfg(arch)  # a registered cfg, no network; None for an architecture without weights
    if cfg is None:
        return {"mean": tuple(IMAGENET_DEFAULT_MEAN), "std": tuple(IMAGENET_DEFAULT_STD), "input_size": (3, 224, 224),
                "interpolation": "bicubic", "crop_pct": 0.875}
    return {"mean": tuple(float(m) for m in cfg.mean), "std": tuple(float(s) for s in cfg.std),
            "input_size": tuple(int(x) for x in cfg.input_size), "interpolation": str(cfg.interpolation),
            "crop_pct": float(cfg.crop_pct)}


def _tv_config(arch: str) -> dict[str, Any]:
    import torchvision.models as tvm

    try:
        transform = tvm.get_model_weights(arch).DEFAULT.transforms()  # a preset object: builds nothing, loads nothing
    except (ValueError, KeyError, AttributeError):
        return dict(_TV_DEFAULT)
    crop, resize = getattr(transform, "crop_size", None), getattr(transform, "resize_size", None)
    if not (hasattr(transform, "mean") and crop and resize):  # not a classification preset
        return dict(_TV_DEFAULT)
    interpolation = getattr(transform, "interpolation", None)
    return {"mean": tuple(float(m) for m in transform.mean), "std": tuple(float(s) for s in transform.std),
            "input_size": (3, int(crop[0]), int(crop[0])),
            "interpolation": str(getattr(interpolation, "value", interpolation or "bilinear")),
            "crop_pct": float(crop[0]) / float(resize[0])}
