"""Freezing a backbone, or its first stages, for fine-tuning: parameters *and* BatchNorm statistics.

``requires_grad_(False)`` alone does not freeze a CNN: in train mode its BatchNorm layers still update
their running statistics from every batch, so the "frozen" backbone drifts (and with 2 images per GPU, as
detection trains, normalises with the statistics of 2 images). torchvision's detectors therefore build their
ResNets with ``torchvision.ops.FrozenBatchNorm2d`` (statistics and affine both fixed, whatever the mode) and
freeze the stem and ``layer1`` (``trainable_backbone_layers=3``). The same two tools here, for any registry
backbone: :func:`freeze_batchnorm` converts BatchNorm layers (timm's ``freeze_batch_norm_2d``, which also
handles timm's fused ``BatchNormAct2d``), :func:`freeze_stages` turns off gradients and freezes the norms of
the first ``n`` stages. Which module belongs to which stage is recorded by the builders
(:attr:`~lit_vision.backbones.Backbone.module_stages`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

__all__ = ["freeze_batchnorm", "freeze_stages", "modules_in_order_stages", "parameter_stages", "set_batchnorm_eps"]


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def freeze_batchnorm(root: nn.Module, names: Iterable[str] | None = None) -> int:
    """Replace BatchNorm layers under ``root`` (only those named in ``names``, if given) by frozen ones.

    Returns how many were converted. Buffers keep their names (``bn1.running_mean``...), so state dicts
    written before or after conversion load either way; ``num_batches_tracked`` is dropped by
    ``FrozenBatchNorm2d`` itself when loading.
    """
    from timm.layers import freeze_batch_norm_2d

    wanted = None if names is None else set(names)
    converted = 0
    for name, module in list(root.named_modules()):
        if not name or (wanted is not None and name not in wanted):
            continue
        if isinstance(module, nn.modules.batchnorm._BatchNorm):  # BatchNorms never nest, so no double visit
            _replace(root, name, freeze_batch_norm_2d(module))
            converted += 1
    return converted


def set_batchnorm_eps(root: nn.Module, eps: float) -> None:
    """Set ``eps`` of every (frozen) BatchNorm under ``root``.

    torchvision's COCO v1 Faster R-CNN / RetinaNet weights were trained with ``eps=0`` (Detectron's frozen
    norm); its builders call ``overwrite_eps(model, 0.0)`` after loading them, and so must we to reproduce
    their outputs.
    """
    for module in root.modules():
        if hasattr(module, "running_var") and hasattr(module, "eps"):  # BatchNorm, FrozenBatchNorm2d, timm's
            module.eps = float(eps)


def modules_in_order_stages(ordered_names: Sequence[str], boundaries: Sequence[str]) -> dict[str, int]:
    """Stage of each module from module order: a module belongs to the first stage whose boundary it precedes.

    ``ordered_names`` are module names in execution order (pre-order of ``named_modules()`` for torchvision's
    classification models, which register layers in the order ``forward`` uses them); ``boundaries`` are the
    modules that end each stage (a stage's output node). A boundary that is not a module (a functional node
    such as DenseNet's final ``relu``) ends the last stage. Modules after the last boundary are left out, and so are
    containers whose modules span several stages.
    """
    position = {n: i for i, n in enumerate(ordered_names)}
    ends = []
    for k, boundary in enumerate(boundaries):
        inside = [position[n] for n in ordered_names if n == boundary or n.startswith(boundary + ".")]
        if inside:
            ends.append(max(inside))
        elif k == len(boundaries) - 1:
            ends.append(len(ordered_names))
        else:
            raise ValueError(f"stage boundary {boundary!r} is not a module; cannot tell which layers it ends")
    stages: dict[str, int | None] = {}
    for name in ordered_names:
        stages[name] = next((k for k, end in enumerate(ends) if position[name] <= end), None)
    # A container is listed before its children, so order alone puts it in its first child's stage: ``features``
    # of a torchvision EfficientNet (every stage), a timm ViT's ``model``. Freezing it would freeze them all, so a
    # module is kept only when everything under it is in its stage.
    spans: dict[str, set[int | None]] = {}
    for name, k in stages.items():
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            spans.setdefault(".".join(parts[:i]), set()).add(k)
    return {n: k for n, k in stages.items() if n and k is not None and spans.get(n) == {k}}


def parameter_stages(root: nn.Module, module_stages: dict[str, int]) -> dict[str, int | None]:
    """Stage of each parameter of ``root``: its module's; for a parameter held by a container that spans stages
    (a timm ViT's ``cls_token`` and ``pos_embed``), the first stage under the container, where it is used (timm's
    layer-decay groups put them in the stem too); ``None`` after the last stage (a final norm)."""
    first: dict[str, int] = {}
    for name, k in module_stages.items():
        parts = name.split(".")
        for i in range(len(parts)):
            prefix = ".".join(parts[:i])
            first[prefix] = min(k, first.get(prefix, k))
    out: dict[str, int | None] = {}
    for name, _ in root.named_parameters():
        owner = name.rpartition(".")[0]
        out[name] = module_stages.get(owner, first.get(owner))
    return out


def freeze_stages(backbone: nn.Module, module_stages: dict[str, int], stages: int | None) -> list[str]:
    """No gradients and frozen BatchNorm for the modules of stages ``0 .. stages-1`` (``None``: all of them).

    ``module_stages`` maps module names relative to ``backbone`` to their stage. Returns the frozen modules.
    """
    if stages is None:
        names = [n for n, _ in backbone.named_modules() if n]
        backbone.requires_grad_(False)
    else:
        names = [n for n, k in module_stages.items() if k < stages]
        for name, k in parameter_stages(backbone, module_stages).items():
            if k is not None and k < stages:
                backbone.get_parameter(name).requires_grad_(False)
    freeze_batchnorm(backbone, names)
    return names
