"""Building the task's optimizer: torch's fused kernels wherever they apply, unless the recipe chooses otherwise.

torch's ``SGD``, ``Adam``, ``AdamW`` and ``Adagrad`` have a ``fused`` implementation (one kernel updates every
tensor of a group) next to the default ``foreach`` one (a handful of multi-tensor kernels per group). torch
still defaults to ``foreach``, but ``fused`` is the same update and much faster, on the CPU too: 9 ms against
42-47 ms for one AdamW step over ResNet-18's 11 M parameters on a 2-core CPU, 7.5 against 33 ms for SGD with
Nesterov momentum (``docs/gpu.md``; about a fifth of the digits quickstart's step time). So the task asks for it
whenever the optimizer class and every parameter allow it:

* the built-in default SGD, and
* a recipe's ``optimizer`` given as a class path (LightningCLI hands the task a ``functools.partial`` of the
  class with the YAML's ``init_args``) whose ``init_args`` leave ``fused`` and ``foreach`` unset (``null``): setting
  either (``fused: false``, ``foreach: true``) keeps that choice. A Python callable of your own that is not a
  ``functools.partial`` is called as it is.

Written here because neither torch (``fused=None`` still means ``foreach``) nor Lightning chooses it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

# Classes with a fused kernel, and the device types it runs on (torch 2.4+; Adagrad's fused kernel is CPU-only).
# A subclass qualifies only if it keeps the base class's ``step`` (one that overrides it may ignore ``fused``).
FUSED_DEVICE_TYPES: dict[type[torch.optim.Optimizer], tuple[str, ...]] = {
    torch.optim.SGD: ("cpu", "cuda"),
    torch.optim.Adam: ("cpu", "cuda"),
    torch.optim.AdamW: ("cpu", "cuda"),
    torch.optim.Adagrad: ("cpu",),
}


def fused_device_types(cls: type) -> tuple[str, ...]:
    """Device types ``cls``'s fused kernel runs on; ``()`` when it has none."""
    for base, devices in FUSED_DEVICE_TYPES.items():
        if isinstance(cls, type) and issubclass(cls, base) and cls.step is base.step:
            return devices
    return ()


def can_fuse(cls: type, groups: Iterable[dict[str, Any]]) -> bool:
    """``True`` when ``cls`` has a fused kernel for every parameter in ``groups``: plain floating-point tensors
    (not a DTensor or other subclass) on one device type the kernel supports."""
    devices = fused_device_types(cls)
    params = [p for g in groups for p in g["params"]]
    return bool(devices) and bool(params) and all(
        type(p) in (Tensor, nn.Parameter) and p.is_floating_point() and p.device.type in devices for p in params
    ) and len({p.device.type for p in params}) == 1


def build_optimizer(
    factory: Callable[[Iterable[Any]], torch.optim.Optimizer] | None, groups: Iterable[dict[str, Any]],
    allow_fused: bool = True,
) -> torch.optim.Optimizer:
    """The task's optimizer over ``groups``: ``factory(groups)``, fused where :func:`can_fuse` allows and the
    recipe left the choice open; ``None``: the classic SGD (lr 0.1, momentum 0.9, Nesterov, weight decay 1e-4).

    ``allow_fused=False`` keeps torch's default kernel: a fused step can unscale fp16 gradients itself, and
    Lightning's mixed-precision plugin (``16-mixed`` and ``bf16-mixed``) then refuses to clip gradients before it;
    the task passes it when the run is mixed-precision and clips.
    """
    groups = list(groups)
    if factory is None:
        fused = True if allow_fused and can_fuse(torch.optim.SGD, groups) else None
        return torch.optim.SGD(_copies(groups), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, fused=fused)
    optimizer = factory(_copies(groups))
    # Decided on the built optimizer, not on the partial's arguments: jsonargparse's partial wraps the class in
    # an instantiator and passes every constructor default (``fused=None`` when the YAML says nothing).
    chosen = optimizer.defaults.get("fused") is not None or optimizer.defaults.get("foreach") is not None
    if (allow_fused and isinstance(factory, functools.partial) and not chosen
            and not optimizer.defaults.get("differentiable") and can_fuse(type(optimizer), groups)):
        optimizer = factory(_copies(groups), fused=True)  # a partial's keyword: overrides its ``fused=None``
    return optimizer


def _copies(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """torch fills each group dict with the optimizer's defaults (``setdefault``): a second build from the same
    dicts would inherit the first one's ``fused=None``."""
    return [dict(g) for g in groups]
