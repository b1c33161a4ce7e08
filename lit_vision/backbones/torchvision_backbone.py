"""``tv/<name>``: torchvision classification models cut into stages with FX feature extraction.

Each map is a stage output: the last node before the next spatial downsampling, and the
deepest map is exactly the tensor torchvision's own classifier pools, so a pooled
``features[-1]`` reproduces torchvision's logits (tested numerically per family).

Stage tables (return nodes as ``create_feature_extractor`` names them -> reductions)::

    resnet*, resnext*, wide_resnet*   relu (stem, before the max-pool), layer1..layer4  -> 2 4 8 16 32
    vgg*                              ReLU before each max-pool, then ``features``      -> 1 2 4 8 16 32
                                      (= after the last max-pool)
    alexnet                           ReLU before each max-pool, then ``features``      -> 4 8 16 32
    googlenet                         conv1 conv3 inception3b inception4e inception5b   -> 2 4 8 16 32
    inception_v3                      Conv2d_2b_3x3 Conv2d_4a_3x3 Mixed_5d Mixed_6e     -> 2 4 8 16 32
                                      Mixed_7c
    densenet*                         features.relu0, features.denseblock1..3 (before   -> 2 4 8 16 32
                                      each transition), relu (= ReLU(norm5), applied
                                      in torchvision's forward, not in ``features``)
    efficientnet*                     last ``features`` child at each stride, the last  -> 2 4 8 16 32
                                      being ``features`` (incl. the 1x1 head conv)
    convnext*                         features.1 .3 .5 (before each downsample layer),  -> 4 8 16 32
                                      features
    swin*                             features.1 .3 .5 (NHWC, permuted), permute        -> 4 8 16 32
    vit_*                             rejected: no spatial stages (use timm/vit_*)
    anything else                     :func:`~._fx_probe.generic_stage_nodes`           -> probed

GoogLeNet / Inception-v3 are built without aux heads; see :func:`_default_kwargs`.
``output_stride=8|16`` dilates the ResNet families (:func:`_dilate_resnet`): the same five
nodes come back, with reductions capped (``2 4 8 16 16`` / ``2 4 8 8 8``).
Spatial size is ``ceil(H / r)`` except for padding-free stems: AlexNet at 64 px gives
15, 7, 3, 1 and Inception-v3 at 160 px gives 77, 36, 17, 8, 3 (it needs >= 75 px).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ._fx_probe import (
    ProbedGraph,
    generic_stage_nodes,
    per_step_reductions,
    probe_graph,
)
from .base import Backbone, resolve_out_indices
from .weights import WeightSource, check_state_dict, load_weight_file

__all__ = ["TorchvisionBackbone", "build_torchvision_backbone", "stage_nodes"]


@dataclass(frozen=True)
class _Family:
    pattern: str
    nodes: Sequence[str] = ()  # explicit return nodes, shallow to deep
    sequential: str = ""  # or: a container whose children are stages (last per stride wins)
    nhwc: Sequence[str] = ()  # nodes that come out channels-last
    unsupported: str = ""
    extra_keys: Sequence[str] = ()  # published checkpoint keys of heads we do not build
    # Turns the strides of the last stages into dilation for ``output_stride``. Only for
    # families with explicit ``nodes``: the stride-based node finders would merge the
    # dilated stages into one (they keep the last map per stride).
    dilate: Callable[[nn.Module, int], None] | None = None


def _dilate_resnet(model: nn.Module, output_stride: int) -> None:
    """torchvision's ``replace_stride_with_dilation``, applied after construction.

    torchvision refuses dilation for ``BasicBlock`` (resnet18/34), so the same change is
    made here for every ResNet: in each stage that would go deeper than ``output_stride``
    the strided convs (3x3 and downsample 1x1) get stride 1 and the 3x3 convs dilation,
    with the first block keeping the previous dilation as torchvision's ``_make_layer``
    does. Weights are untouched, so checkpoints still load; the result equals torchvision's
    own ``replace_stride_with_dilation`` on Bottleneck ResNets (tested).
    """
    stride, dilation = 4, 1  # after the stem conv and max-pool
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        strided = [m for m in layer[0].modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
        step = strided[0].stride[0] if strided else 1
        previous = dilation
        if stride * step <= output_stride:
            stride *= step
            continue
        dilation *= step
        for conv in strided:
            conv.stride = (1, 1)
        for i, block in enumerate(layer):
            d = previous if i == 0 else dilation
            for conv in block.modules():
                if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
                    conv.dilation, conv.padding = (d, d), (d, d)


_RESNET = ("relu", "layer1", "layer2", "layer3", "layer4")
_FAMILIES = (
    _Family(r"resnet\d+|resnext\d+_\w+|wide_resnet\d+_\d+", nodes=_RESNET, dilate=_dilate_resnet),
    _Family(r"vgg\d+(_bn)?|alexnet|efficientnet_\w+", sequential="features"),
    _Family(
        r"googlenet",
        nodes=("conv1", "conv3", "inception3b", "inception4e", "inception5b"),
        extra_keys=("aux1", "aux2"),
    ),
    _Family(
        r"inception_v3",
        nodes=("Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c"),
        extra_keys=("AuxLogits",),
    ),
    _Family(
        r"densenet\d+",
        nodes=("features.relu0", "features.denseblock1", "features.denseblock2",
               "features.denseblock3", "relu"),
    ),
    _Family(r"convnext_\w+", nodes=("features.1", "features.3", "features.5", "features")),
    _Family(
        r"swin_(v2_)?\w",
        nodes=("features.1", "features.3", "features.5", "permute"),
        nhwc=("features.1", "features.3", "features.5"),
    ),
    _Family(
        r"vit_\w+",
        unsupported="a plain ViT has a single token resolution and no spatial stages; use "
        "timm/vit_* (e.g. timm/vit_base_patch16_224 with out_indices=[-1]) instead",
    ),
)
_GENERIC = _Family(r".*")
DILATABLE_TV = "resnet*, resnext*, wide_resnet*"  # the families above with ``dilate``

# torchvision's DenseNet checkpoints still use pre-1.0 keys ('norm.1'); its builder renames them.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _family(arch: str) -> _Family:
    return next((f for f in _FAMILIES if re.fullmatch(f.pattern, arch)), _GENERIC)


def _sequential_nodes(g: ProbedGraph, container: str) -> list[str]:
    """Last child of ``container`` at each stride; the deepest one is the container output."""
    children = [f"{container}.{c}" for c in g.root.get_submodule(container)._modules]
    heights = [g.shapes[g.index(c)][2] for c in children]
    reductions = per_step_reductions(heights, g.size)
    last = len(children) - 1
    picked = [c for k, c in enumerate(children) if k == last or reductions[k + 1] != reductions[k]]
    return picked[:-1] + [container]


def stage_nodes(arch: str, g: ProbedGraph) -> list[str]:
    """Return nodes (shallow to deep) for a torchvision architecture, see the module table."""
    fam = _family(arch)
    if fam.unsupported:
        raise ValueError(f"tv/{arch} is not supported as a backbone: {fam.unsupported}")
    if fam.nodes:
        return list(fam.nodes)
    if fam.sequential:
        return _sequential_nodes(g, fam.sequential)
    try:
        return generic_stage_nodes(g)
    except ValueError as err:
        raise ValueError(f"tv/{arch}: cannot find convolutional stages: {err}") from err


def _default_kwargs(arch: str, pretrained: bool | WeightSource) -> dict[str, Any]:
    """Constructor defaults that make GoogLeNet/Inception-v3 usable as backbones.

    Aux classifiers are dropped (they only exist to help training the full classifier).
    ``pretrained=True`` is left to torchvision, which insists on building the aux heads
    itself, sets ``transform_input=True`` and drops the aux heads again. A weight *file*
    gets the same ``transform_input=True`` as torchvision applies with its weights: the
    published checkpoints expect it (pass ``transform_input=False`` for your own weights).
    """
    if arch not in ("googlenet", "inception_v3") or pretrained is True:
        return {}
    from_file = pretrained not in (False, None)
    kwargs: dict[str, Any] = {"aux_logits": False, "init_weights": not from_file}
    if from_file:
        kwargs["transform_input"] = True
    return kwargs


class TorchvisionBackbone(Backbone):
    """A torchvision model as an FX ``GraphModule`` returning the chosen stage nodes.

    ``body``'s state dict keys are the torchvision model's own (``layer1.0.conv1.weight``),
    minus the classifier, so checkpoints stay interchangeable with torchvision's.
    """

    def __init__(
        self,
        name: str,
        body: nn.Module,
        nodes: Sequence[str],
        channels: Sequence[int],
        reductions: Sequence[int],
        out_indices: Sequence[int],
        nhwc: Sequence[bool],
        output_stride: int | None = None,
    ) -> None:
        super().__init__(name, channels, reductions, out_indices, output_stride)
        self.body = body
        self.nodes = list(nodes)
        self._nhwc = list(nhwc)

    def __deepcopy__(self, memo: dict[int, Any]) -> TorchvisionBackbone:
        # torchvision's DualGraphModule re-runs __init__ on deepcopy, which puts it in train
        # mode; EMA/SWA copies of an eval-mode (or BN-frozen) backbone must keep their flags.
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        new.train(self.training)  # also swaps the body's train/eval graph
        for copied, original in zip(new.modules(), self.modules()):
            copied.training = original.training
        return new

    def forward(self, x: Tensor) -> list[Tensor]:
        out = self.body(x)
        return [
            out[n].permute(0, 3, 1, 2) if nhwc else out[n]
            for n, nhwc in zip(self.nodes, self._nhwc)
        ]


def _load_into(body: nn.Module, model: nn.Module, arch: str, fam: _Family, source: WeightSource) -> None:
    state = load_weight_file(source)
    if arch.startswith("densenet"):
        state = {_DENSENET_OLD_KEY.sub(r"\1\2", k): v for k, v in state.items()}
    known = model.state_dict().keys()
    # FX may store traced constants (e.g. MaxViT's position indices) as `_tensor_constantN`:
    # derived at build time, never in a checkpoint, so only the model's own keys are needed.
    needed = {k: v.shape for k, v in body.state_dict().items() if k in known}
    check_state_dict(
        state, needed, known, source=source, arch=f"tv/{arch}", ignore_unexpected=fam.extra_keys
    )
    # The check guarantees everything needed is there (bar num_batches_tracked, which
    # BatchNorm fills in); the classifier keys are dropped with the classifier.
    body.load_state_dict({k: state[k] for k in needed if k in state}, strict=False)


def build_torchvision_backbone(
    arch: str,
    pretrained: bool | WeightSource = False,
    out_indices: Sequence[int] | None = None,
    *,
    output_stride: int | None = None,
    probe_size: int = 224,
    **kwargs: Any,
) -> TorchvisionBackbone:
    """Build ``tv/<arch>``. ``pretrained=True`` downloads torchvision's ``DEFAULT`` weights.

    ``output_stride`` (8 or 16) dilates the last stages of families that support it (the
    ResNets); the probe then measures the capped strides. ``probe_size`` is the side of
    the shape-only (meta) input used to measure each node's stride; raise it for models
    that need larger inputs. Other kwargs go to torchvision.
    """
    import torchvision.models as tvm
    from torchvision.models.feature_extraction import create_feature_extractor

    fam = _family(arch)
    if fam.unsupported:
        raise ValueError(f"tv/{arch} is not supported as a backbone: {fam.unsupported}")
    if "replace_stride_with_dilation" in kwargs:
        raise TypeError(f"tv/{arch}: use create_backbone(..., output_stride=8|16) to dilate")
    if output_stride is not None and fam.dilate is None:
        raise ValueError(
            f"tv/{arch} cannot be dilated to output_stride={output_stride}: among torchvision "
            f"models only {DILATABLE_TV} support it; timm CNNs (timm/resnet*, timm/efficientnet_*, "
            "timm/convnext_*, timm/mobilenetv3_*, timm/regnet*, ...) do too"
        )
    kwargs = {**_default_kwargs(arch, pretrained), **kwargs}
    weights = "DEFAULT" if pretrained is True else None
    model = tvm.get_model(arch, weights=weights, **kwargs)
    if pretrained is True and getattr(model, "AuxLogits", None) is not None:
        model.aux_logits, model.AuxLogits = False, None  # inception: torchvision keeps it
    if output_stride is not None:
        fam.dilate(model, output_stride)
    g = probe_graph(model, probe_size)
    nodes = stage_nodes(arch, g)
    shapes = [g.shapes[g.index(n)] for n in nodes]
    nhwc = [n in fam.nhwc for n in nodes]
    channels = [s[3] if cl else s[1] for s, cl in zip(shapes, nhwc)]
    reductions = per_step_reductions([s[1] if cl else s[2] for s, cl in zip(shapes, nhwc)], probe_size)
    name = f"tv/{arch}"
    idx = resolve_out_indices(out_indices, len(nodes), name)
    all_nodes = nodes
    nodes = [nodes[i] for i in idx]
    body = create_feature_extractor(model, return_nodes={n: n for n in nodes}, suppress_diff_warning=True)
    if pretrained not in (True, False, None):
        _load_into(body, model, arch, fam, pretrained)
    backbone = TorchvisionBackbone(
        name, body, nodes,
        [channels[i] for i in idx], [reductions[i] for i in idx], idx, [nhwc[i] for i in idx],
        output_stride=output_stride,
    )
    backbone.num_stages = len(all_nodes)
    backbone.module_stages = _module_stages(model, body, all_nodes)
    return backbone


def _module_stages(model: nn.Module, body: nn.Module, stage_nodes: Sequence[str]) -> dict[str, int]:
    """``body.<module>`` -> stage, from the order torchvision registers layers in (the order they run)."""
    from .freeze import modules_in_order_stages

    try:
        stages = modules_in_order_stages([n for n, _ in model.named_modules()], stage_nodes)
    except ValueError:  # a probed architecture whose stage outputs are not modules: whole-backbone freezing only
        return {}
    kept = {n for n, _ in body.named_modules()}
    return {f"body.{n}": k for n, k in stages.items() if n in kept}
