"""``timm/<name>``: any timm model through ``features_only=True``.

timm already knows each architecture's stages (``feature_info``), so this is a thin
wrapper. The two things it adds: out_indices are normalised (timm reports
``feature_info.channels()`` in the order *given* but returns maps in module order, so
``[-1, -2]`` would mislabel them), and local weight files are checked strictly before
timm's own non-strict feature-model loading could silently skip keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import Backbone, resolve_out_indices
from .weights import WeightSource, check_state_dict, load_weight_file

__all__ = ["TimmBackbone", "build_timm_backbone"]

_FEATURE_ONLY_KWARGS = ("out_indices", "feature_cls", "feature_cfg", "flatten_sequential")


class TimmBackbone(Backbone):
    """Wraps a timm ``features_only`` model; maps come back NCHW, shallow to deep."""

    model_kwargs: dict[str, Any] = {}  # the timm constructor's arguments (set by the builder; read, never mutated)

    def __init__(self, name: str, model: nn.Module, output_stride: int | None = None) -> None:
        info = model.feature_info
        idx = [i % len(info.info) for i in info.out_indices]
        super().__init__(name, info.channels(), info.reduction(), idx, output_stride)
        self.model = model
        # A few timm families (e.g. Swin) emit channels-last features.
        fmt = getattr(model, "output_fmt", "NCHW")
        self._nhwc = str(getattr(fmt, "value", fmt)).upper() == "NHWC"
        self.num_stages = len(info.info)
        self.module_stages = _module_stages(model)

    def forward(self, x: Tensor) -> list[Tensor]:
        out = self.model(x)
        maps = list(out.values()) if isinstance(out, dict) else list(out)
        return [m.permute(0, 3, 1, 2) for m in maps] if self._nhwc else maps


def _module_stages(model: nn.Module) -> dict[str, int]:
    """``model.<module>`` -> stage from timm's ``feature_info`` (the module ending each stage) and module order.

    Feature wrappers flatten nested names (``stages.0`` becomes the child ``stages_0``), so both forms are tried;
    wrappers whose stages are not modules in order (ViT's ``FeatureGetterNet``) get ``{}``.
    """
    from .freeze import modules_in_order_stages

    names = [n for n, _ in model.named_modules()]
    known = set(names)
    boundaries = []
    for stage in model.feature_info.info:
        module = str(stage.get("module", ""))
        found = next((c for c in (module, module.replace(".", "_"), f"model.{module}") if c in known), None)
        if found is None:
            return {}
        boundaries.append(found)
    try:
        stages = modules_in_order_stages(names, boundaries)
    except ValueError:
        return {}
    return {f"model.{n}": k for n, k in stages.items()}


def _meta_model(arch: str, **kwargs: Any) -> nn.Module:
    """Build on the meta device: structure and shapes only, costs no memory or init time."""
    import timm

    with torch.device("meta"):
        return timm.create_model(arch, pretrained=False, **kwargs)


def _as_timm_loads_it(arch: str, state: dict[str, Tensor], kwargs: dict[str, Any]) -> tuple[nn.Module, dict]:
    """The classification model (meta device) and ``state`` as timm's pretrained loading sees it: passed through
    the architecture's own ``pretrained_filter_fn``, which adapts a checkpoint to the model's arguments (ViT's
    resamples ``pos_embed`` to ``img_size``, Swin's its position tables) or converts other layouts (OpenCLIP,
    DINOv2). timm's ``load_pretrained`` is swapped for a recorder while the model is built, so nothing is loaded.
    A filter that fails on the meta model leaves ``state`` as it is."""
    import timm
    from timm.models import _builder

    seen: dict[str, Any] = {}

    def record(model: nn.Module, *args: Any, filter_fn: Any = None, **kw: Any) -> None:
        seen["filter_fn"] = filter_fn

    original, _builder.load_pretrained = _builder.load_pretrained, record
    try:
        with torch.device("meta"):
            ref = timm.create_model(arch, pretrained=True, **kwargs)
    finally:
        _builder.load_pretrained = original
    filter_fn = seen.get("filter_fn")
    if filter_fn is None:
        return ref, state
    try:
        try:
            filtered = filter_fn(dict(state), ref)
        except TypeError:  # timm's one-argument filters (it retries the same way)
            filtered = filter_fn(dict(state))
    except Exception:  # noqa: BLE001 - the plain check below still guards the load
        return ref, state
    return ref, {k: v for k, v in filtered.items() if isinstance(v, Tensor)}


def _checked_state_dict(arch: str, source: WeightSource, kwargs: dict[str, Any]) -> dict[str, Tensor]:
    """Load ``source`` and verify it is a full ``arch`` classification checkpoint, as timm will load it (after the
    architecture's checkpoint filter: a ViT file of another ``img_size`` fits once its ``pos_embed`` is resampled)."""
    state = load_weight_file(source)
    full_kwargs = {k: v for k, v in kwargs.items() if k not in _FEATURE_ONLY_KWARGS}
    ref, filtered = _as_timm_loads_it(arch, state, full_kwargs)
    cfg = getattr(ref, "pretrained_cfg", None) or {}
    heads = cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    known = {k: v.shape for k, v in ref.state_dict().items()}
    needed = {k: s for k, s in known.items() if not any(k.startswith(h + ".") for h in heads)}
    first = cfg.get("first_conv") or ()
    first = (first,) if isinstance(first, str) else tuple(first)
    # timm adapts the stem to a different in_chans itself (sums / repeats the RGB filters).
    adapted = [f"{c}.weight" for c in first] if "in_chans" in kwargs else []
    check_state_dict(filtered, needed, known, source=source, arch=f"timm/{arch}", ignore_shape=adapted)
    return state


def _forget_state_dict(model: nn.Module) -> None:
    """timm keeps the pretrained cfg (with our overlaid state dict) on the model: drop it."""
    for m in model.modules():
        for attr in ("pretrained_cfg", "default_cfg"):
            cfg = getattr(m, attr, None)
            if isinstance(cfg, dict):
                cfg.pop("state_dict", None)


def build_timm_backbone(
    arch: str,
    pretrained: bool | WeightSource = False,
    out_indices: Sequence[int] | None = None,
    *,
    output_stride: int | None = None,
    **kwargs: Any,
) -> TimmBackbone:
    """Build ``timm/<arch>``. ``pretrained=True`` is timm's own (Hugging Face Hub) download.

    ``out_indices=None`` keeps timm's default stages (every stage for CNNs).
    ``output_stride`` is timm's own (dilation in the models that implement it); models
    that do not (VGG, DenseNet, ViTs, ...) raise ``ValueError`` rather than timm's bare
    ``AssertionError``/``TypeError``.
    """
    name = f"timm/{arch}"
    kwargs = dict(kwargs)
    if output_stride is None:
        return _build(name, arch, pretrained, out_indices, kwargs)
    kwargs["output_stride"] = output_stride
    try:  # a model that silently ignores it fails Backbone's check of the capped reductions
        return _build(name, arch, pretrained, out_indices, kwargs, output_stride)
    except (AssertionError, TypeError, NotImplementedError, ValueError) as err:
        if isinstance(err, (TypeError, ValueError)) and "output_stride" not in str(err):
            raise  # an unrelated bad argument
        raise ValueError(_unsupported(name, output_stride, err)) from err


def _unsupported(name: str, output_stride: int, why: object) -> str:
    return (
        f"{name} cannot be dilated to output_stride={output_stride} (timm: {str(why) or type(why).__name__}); "
        "timm CNNs such as timm/resnet*, timm/efficientnet_*, timm/convnext_*, timm/mobilenetv3_*, "
        "timm/regnet* support it, and tv/resnet*, tv/resnext*, tv/wide_resnet*"
    )


def _build(
    name: str,
    arch: str,
    pretrained: bool | WeightSource,
    out_indices: Sequence[int] | None,
    kwargs: dict[str, Any],
    output_stride: int | None = None,
) -> TimmBackbone:
    import timm

    if out_indices is not None:
        probe = _meta_model(arch, features_only=True, **kwargs)
        n = len(probe.feature_info.info)
        kwargs["out_indices"] = tuple(resolve_out_indices(out_indices, n, name))
    if pretrained is True:
        model = timm.create_model(arch, features_only=True, pretrained=True, **kwargs)
    elif pretrained in (False, None):
        model = timm.create_model(arch, features_only=True, pretrained=False, **kwargs)
    else:
        state = _checked_state_dict(arch, pretrained, kwargs)
        # Hand the verified dict to timm so its own adaptations (checkpoint filters, in_chans
        # stem conversion) apply; source=None keeps it from looking at the Hub at all.
        overlay = {**kwargs.pop("pretrained_cfg_overlay", {}), "state_dict": state, "source": None}
        model = timm.create_model(
            arch, features_only=True, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
        )
        _forget_state_dict(model)
    backbone = TimmBackbone(name, model, output_stride)
    # What rebuilds the classification model on the meta device: layer-wise LR decay reads timm's layer
    # numbering from it (lit_vision/backbones/layer_decay.py).
    backbone.model_kwargs = {k: v for k, v in kwargs.items() if k not in _FEATURE_ONLY_KWARGS}
    return backbone
