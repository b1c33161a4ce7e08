"""Shapes of every node of a torchvision model, for free, plus the generic stage finder.

Node choice needs to know each intermediate tensor's shape. Running the real model would
cost a forward pass (seconds for VGG at 224 px), so the traced graph is run on ``meta``
tensors swapped in for the weights: shapes only, no arithmetic, no copy of the weights.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

__all__ = ["ProbedGraph", "probe_graph", "generic_stage_nodes", "per_step_reductions"]

# Top-level modules that belong to the classifier, never to the feature pyramid.
_HEAD_MODULES = {"fc", "classifier", "head", "heads", "avgpool"}
_GLOBAL_POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)
_GLOBAL_POOL_FUNCS = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "flatten"}
_GLOBAL_POOL_METHODS = {"mean", "flatten", "amax"}


@dataclass
class ProbedGraph:
    """A traced model: nodes in execution order, their qualified names and output shapes."""

    root: nn.Module
    nodes: list[fx.Node]
    names: list[str]
    shapes: list[tuple[int, ...] | None]
    size: int  # side of the square probe input

    def index(self, query: str) -> int:
        """Index of the node torchvision's ``create_feature_extractor`` returns for ``query``:
        the last node whose qualified name starts with the dotted prefix ``query``."""
        parts = query.split(".")
        for i in range(len(self.names) - 1, -1, -1):
            if self.names[i].split(".")[: len(parts)] == parts:
                return i
        raise KeyError(query)

    def shortest_name(self, i: int) -> str:
        """Most readable query that still resolves to node ``i`` (``layer1`` not ``layer1.1.relu_1``)."""
        parts = self.names[i].split(".")
        for depth in range(1, len(parts) + 1):
            query = ".".join(parts[:depth])
            if self.index(query) == i:
                return query
        return self.names[i]


class _ShapeRun(nn.Module):
    """Wrapper so ``torch.func.functional_call`` can swap meta tensors in during ShapeProp."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__()
        self.gm = gm

    def forward(self, x: torch.Tensor) -> None:
        from torch.fx.passes.shape_prop import ShapeProp

        ShapeProp(self.gm).propagate(x)


def probe_graph(model: nn.Module, size: int = 224) -> ProbedGraph:
    """Trace ``model`` in eval mode as torchvision's feature extractor would, and record shapes."""
    from torchvision.models.feature_extraction import NodePathTracer

    try:  # the same leaf modules/autowrap torchvision uses, so node names agree with its
        from torchvision.models.feature_extraction import _set_default_tracer_kwargs

        tracer = NodePathTracer(**_set_default_tracer_kwargs(None))
    except ImportError:  # pragma: no cover - private helper moved
        tracer = NodePathTracer()
    was_training = model.training
    model.eval()  # trace and probe the inference graph; the GraphModule shares submodules
    try:
        graph = tracer.trace(model)
        run = _ShapeRun(fx.GraphModule(tracer.root, graph))
        state = {
            k: torch.empty_like(v, device="meta")
            for k, v in itertools.chain(run.named_parameters(), run.named_buffers())
        }
        try:
            torch.func.functional_call(run, state, (torch.empty(1, 3, size, size, device="meta"),))
        except Exception:  # an op without a meta kernel: pay for a real forward instead
            with torch.no_grad():
                run(torch.zeros(1, 3, size, size))
    finally:
        model.train(was_training)
    nodes = list(graph.nodes)
    names = [tracer.node_to_qualname.get(n, n.name) for n in nodes]
    shapes = []
    for n in nodes:
        meta = n.meta.get("tensor_meta")
        shapes.append(tuple(meta.shape) if hasattr(meta, "shape") else None)
    return ProbedGraph(root=model, nodes=nodes, names=names, shapes=shapes, size=size)


def per_step_reductions(heights: list[int], size: int) -> list[int]:
    """Cumulative stride of each map, rounding each step to a power of two.

    Rounding step by step (not ``size / h`` at once) absorbs the few pixels padding-free
    convolutions shave off (AlexNet, Inception) without drifting to the wrong power.
    """
    reductions, r, prev = [], 1, size
    for h in heights:
        r *= 2 ** max(0, round(math.log2(prev / max(h, 1))))
        reductions.append(r)
        prev = h
    return reductions


def _is_global_pool(g: ProbedGraph, i: int) -> bool:
    n, name = g.nodes[i], g.names[i]
    if name.split(".")[0] in _HEAD_MODULES:
        return True
    if n.op == "call_module":
        return isinstance(g.root.get_submodule(n.target), _GLOBAL_POOL_MODULES)
    if n.op == "call_function":
        return getattr(n.target, "__name__", "") in _GLOBAL_POOL_FUNCS
    return n.op == "call_method" and n.target in _GLOBAL_POOL_METHODS


def _has_params(g: ProbedGraph, i: int) -> bool:
    n = g.nodes[i]
    if n.op != "call_module":
        return False
    return any(True for _ in g.root.get_submodule(n.target).parameters())


def generic_stage_nodes(g: ProbedGraph) -> list[str]:
    """Fallback for torchvision models without a family table.

    1. Keep the graph's *cut points*: nodes every path from input to output goes through
       (no edge jumps over them). Residual blocks, dense blocks and Inception branches
       then count as one step, so a branch-internal tensor is never picked.
    2. Stop at the first cut point that is global pooling / flatten / a head module.
    3. Work at block granularity: a map must end its second-level module (``layer2.1``,
       ``features.3``, ``stage2``), so tensors inside a block, such as a MobileNet
       expansion conv or the norm opening a ConvNeXt/DenseNet downsampling layer, are
       never returned even when the graph passes through them alone.
    4. Among those square NCHW maps after the first layer with weights, group by stride
       and keep the LAST of each group: the stage output just before the next
       downsampling. The deepest group therefore ends at what the classifier pools.
    Raises ``ValueError`` when layers with weights sit between the last map and the
    pooling (e.g. a plain ViT, whose only conv map is the patch embedding).
    """
    order = {n: i for i, n in enumerate(g.nodes)}
    live = [False] * len(g.nodes)  # depends on the input (constants/params do not count)
    for i, n in enumerate(g.nodes):
        live[i] = n.op == "placeholder" or any(live[order[a]] for a in n.all_input_nodes)
    cut, reach = [], 0
    for i, n in enumerate(g.nodes):
        if not live[i]:
            continue
        if reach <= i and n.op not in ("placeholder", "output"):
            cut.append(i)
        reach = max([reach] + [order[u] for u in n.users if live[order[u]]])
    stop = next((i for i in cut if _is_global_pool(g, i)), len(g.nodes))
    first_weights = next((i for i in range(len(g.nodes)) if _has_params(g, i)), 0)
    maps = []
    for i in cut:
        s = g.shapes[i]
        if not (first_weights <= i < stop and s is not None and len(s) == 4 and s[2] == s[3]):
            continue
        block = ".".join(g.names[i].split(".")[:2])
        if g.index(block) == i and (not maps or s[2] <= g.shapes[maps[-1]][2]):
            maps.append(i)
    if not maps:
        raise ValueError("found no spatial feature maps before the classifier")
    reductions = per_step_reductions([g.shapes[i][2] for i in maps], g.size)
    last = len(maps) - 1
    chosen = [i for k, i in enumerate(maps) if k == last or reductions[k + 1] != reductions[k]]
    if any(_has_params(g, i) for i in range(chosen[-1] + 1, min(stop, len(g.nodes)))):
        raise ValueError(
            f"layers with weights follow the last spatial map '{g.shortest_name(chosen[-1])}' "
            "(not a convolutional stage structure)"
        )
    return [g.shortest_name(i) for i in chosen]
