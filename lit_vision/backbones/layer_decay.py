"""Layer ids for layer-wise learning-rate decay (BEiT, ConvNeXt and timm's fine-tuning recipes).

Layer-wise decay trains the layers nearest the input, whose pretrained features are the most generic, with the
smallest learning rates: a parameter in layer ``i`` of ``L`` gets ``lr * decay ** (L - i)`` and everything after
the backbone (neck, heads, id ``L``) the plain ``lr``. What differs between architectures is only how parameters
map to layers, so that is all this module computes (:func:`backbone_layer_ids`):

* **timm**: timm already numbers the layers of (almost) every model: its ``group_matcher(coarse=False)`` regexes
  numbered by ``group_with_matcher``, exactly what ``timm.optim.param_groups_layer_decay`` uses (per block for
  ViTs and ConvNeXts). Our backbones are timm *feature* models, which rename things: ``FeatureListNet`` flattens
  top-level ``nn.Sequential`` children (``stages.0`` -> ``stages_0``) and ``FeatureGetterNet`` (ViTs) keeps the
  model under ``.model``. The names are mapped back to the classification model's (built on the meta device,
  for free) and numbered by timm itself.
* **otherwise** (torchvision, or a timm model without ``group_matcher``): one layer per stage of
  :attr:`~lit_vision.backbones.Backbone.module_stages`: stage ``k`` of ``N`` is layer ``k + 1``, ``L = N + 1``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["backbone_layer_ids", "layer_decay_groups"]


def backbone_layer_ids(backbone: nn.Module) -> tuple[dict[str, int], int]:
    """``(parameter name relative to the backbone -> layer id, L)``; ``L`` is the id of what follows the backbone.

    Raises ``ValueError`` when the layer order of the architecture is unknown (no timm ``group_matcher`` and no
    ``module_stages``): one learning rate for the whole backbone is then the honest answer.
    """
    ids = _timm_layer_ids(backbone)
    if ids is not None:
        return ids, max(ids.values(), default=-1) + 1
    stages: dict[str, int] = getattr(backbone, "module_stages", {}) or {}
    if not stages:
        raise ValueError(f"{getattr(backbone, 'name', type(backbone).__name__)}: which layers form each stage is not "
                         "known for this architecture, so layer-wise LR decay cannot order them (use layer_decay=None)")
    num_stages = int(getattr(backbone, "num_stages", max(stages.values()) + 1))
    last = max(stages.values())
    # A parameter belongs to the module that owns it (a container's own, to its first stage); modules after the last
    # stage boundary (a final norm) belong to the deepest stage.
    from .freeze import parameter_stages

    ids = {name: (last if k is None else k) + 1 for name, k in parameter_stages(backbone, stages).items()}
    return ids, num_stages + 1


def _timm_layer_ids(backbone: nn.Module) -> dict[str, int] | None:
    """timm's own layer numbering of the backbone's parameters, or ``None`` (not timm, or names that do not map)."""
    model = getattr(backbone, "model", None)
    if not (isinstance(model, nn.Module) and str(getattr(backbone, "name", "")).startswith("timm/")):
        return None
    from timm.models._manipulate import group_with_matcher

    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module) and hasattr(inner, "group_matcher"):  # FeatureGetterNet: the model itself
        plain, prefix, flat = inner, "model.model.", {}
    else:
        plain = _plain_timm_model(backbone)
        if plain is None or not hasattr(plain, "group_matcher"):
            return None
        prefix, flat = "model.", _flattened_names(plain)
    known = {n for n, _ in plain.named_parameters()}
    names = [n for n, _ in backbone.named_parameters()]
    mapped: dict[str, str] = {}
    for name in names:
        if not name.startswith(prefix):
            return None
        head, sep, rest = name[len(prefix):].partition(".")
        original = flat.get(head, head) + sep + rest
        if original not in known:
            return None  # a feature model timm built differently: fall back to the stages
        mapped[name] = original
    try:
        numbered = group_with_matcher(((m, None) for m in mapped.values()), plain.group_matcher(coarse=False),
                                      reverse=True)
    except (NotImplementedError, AttributeError, TypeError):
        return None
    return {name: int(numbered[original]) for name, original in mapped.items()}


def _plain_timm_model(backbone: nn.Module) -> nn.Module | None:
    """The classification model the feature model was cut from, on the meta device (structure only, no memory)."""
    import timm

    arch = str(backbone.name).split("/", 1)[1]
    kwargs: dict[str, Any] = dict(getattr(backbone, "model_kwargs", {}) or {})
    try:
        with torch.device("meta"):
            return timm.create_model(arch, pretrained=False, **kwargs)
    except Exception:  # noqa: BLE001 - any failure only means "use the stages instead"
        return None


def _flattened_names(plain: nn.Module) -> dict[str, str]:
    """Feature-model child name -> original prefix, for timm's ``flatten_sequential`` rewrite (``_module_list``):
    the children of a top-level ``nn.Sequential`` become top-level modules named ``<parent>_<child>``."""
    out = {}
    for name, child in plain.named_children():
        if isinstance(child, nn.Sequential):
            out.update({f"{name}_{sub}": f"{name}.{sub}" for sub, _ in child.named_children()})
    return out


def layer_decay_groups(groups: list[dict[str, Any]], backbone: nn.Module, decay: float) -> list[dict[str, Any]]:
    """Split each optimizer group further by backbone layer, adding ``lr_scale`` and ``layer_id``.

    ``groups`` are the weight-decay groups (their other keys, ``weight_decay``, are kept), so the decay split holds
    inside every layer. Parameters outside ``backbone`` get layer ``L`` (scale 1). Groups come deepest first: the
    first group carries the unscaled lr, which is what Lightning's ``BackboneFinetuning`` and ``LearningRateMonitor``
    read as "the" learning rate.
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {decay}")
    names, num_layers = backbone_layer_ids(backbone)
    by_param = {id(p): names[n] for n, p in backbone.named_parameters() if n in names}
    out = []
    for layer in range(num_layers, -1, -1):
        for group in groups:
            params = [p for p in group["params"] if by_param.get(id(p), num_layers) == layer]
            if params:
                extra = {k: v for k, v in group.items() if k != "params"}
                out.append({**extra, "params": params, "lr_scale": decay ** (num_layers - layer), "layer_id": layer})
    return out
