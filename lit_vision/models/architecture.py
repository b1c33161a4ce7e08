"""The registry every architecture family shares: choices derived from subclasses, short names, configs.

A family (detectors, segmenters) is a subclass of :class:`Architecture` with its own ``registry`` dict; an
architecture is a subclass of the family with a ``name``, registered by being defined. There is no list to
edit: the choices are what exists. :meth:`Architecture.resolve` turns what a user wrote into an object: a
short name (``"yolo"``), an object (from Python or from LightningCLI's ``class_path``), or the config dict
a checkpoint stores (:meth:`Architecture.config`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from lit_vision.introspection import import_dotted, init_parameters

A = TypeVar("A", bound="Architecture")
_PLAIN = (str, int, float, bool, type(None))


def _is_plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, (str, int)) and _is_plain(v) for k, v in value.items())
    return isinstance(value, _PLAIN)


class Architecture:
    """Base of the architecture families; subclasses store their constructor arguments as attributes."""

    name: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Architecture]]] = {}
    kind: ClassVar[str] = "architecture"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "registry" not in cls.__dict__ and cls.__dict__.get("name"):
            cls.registry[cls.name] = cls

    @classmethod
    def choices(cls) -> list[str]:
        return sorted(cls.registry)

    @classmethod
    def resolve(cls: type[A], value: A | str | Mapping[str, Any]) -> A:
        """An architecture object from an object, a registered short name, or a ``{class_path, init_args}`` dict."""
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping) and "class_path" in value:
            return cls._subclass(str(value["class_path"]))(**dict(value.get("init_args") or {}))
        if isinstance(value, str) and value in cls.registry:
            return cls.registry[value]()  # type: ignore[return-value]
        if isinstance(value, str) and "." in value:  # a class path that jsonargparse could not import
            return cls._subclass(value)()
        close = difflib.get_close_matches(str(value), cls.registry, n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown {cls.kind} {value!r}; choose one of {cls.choices()} (or give a class_path to your "
                         f"own {cls.__name__} subclass).{hint}")

    @classmethod
    def _subclass(cls: type[A], path: str) -> type[A]:
        try:
            klass = import_dotted(path)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"cannot import the {cls.kind} {path!r}: {err} (is its folder on PYTHONPATH?)") from err
        if not (isinstance(klass, type) and issubclass(klass, cls)):
            raise TypeError(f"{path} is not a {cls.__name__}")
        return klass

    @classmethod
    def with_options(cls: type[A], architecture: A | str, options: Mapping[str, Any]) -> A:
        """``architecture`` built with ``options`` (the one-call builders' form); unknown options are named with
        the valid ones, so a typo does not surface as a bare TypeError."""
        if isinstance(architecture, cls):
            if options:
                raise TypeError(f"options {sorted(options)} go to the architecture's constructor, not with an object")
            return architecture
        klass = type(cls.resolve(architecture))
        valid = {name: p.default for name, p in init_parameters(klass).items() if p.default is not p.empty}
        unknown = sorted(set(options) - set(valid))
        if unknown:
            listing = ", ".join(f"{k}={v!r}" for k, v in valid.items())
            raise TypeError(f"architecture {klass.name or klass.__name__!r} does not take {unknown}; its options are: "
                            f"{listing}")
        return klass(**options)

    def config(self) -> dict[str, Any] | Architecture:
        """``{class_path, init_args}`` for a checkpoint's hyper-parameters; the object itself when an option is
        not plain data (an injected part), which then travels pickled."""
        options = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        if not _is_plain(options):
            return self
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "init_args": options}

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({options})"
