"""Naming classes by dotted path and reading their constructors: what the CLI's messages and the architecture
registries both need (kept here once, so neither imports the other)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any


def import_dotted(path: str) -> Any:
    """The object ``module.name`` names; ``ImportError`` (or ``AttributeError``) when it cannot be imported."""
    module, _, name = str(path).rpartition(".")
    if not module:
        raise ImportError(f"{path!r} is not a dotted path (module.Name)")
    return getattr(importlib.import_module(module), name)


def init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """Named constructor parameters of ``cls`` and of the bases its ``**kwargs`` lead to, the class's own first
    (what jsonargparse offers for it when each ``__init__`` passes ``**kwargs`` to ``super().__init__``)."""
    params: dict[str, inspect.Parameter] = {}
    for klass in getattr(cls, "__mro__", [cls]):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                params.setdefault(p.name, p)
    return params
