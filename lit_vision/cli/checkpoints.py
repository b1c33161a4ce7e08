"""``--ckpt_path`` checked before any work: is the file a lit_vision checkpoint, of the task the command asks for,
and whose settings win where the command and the checkpoint disagree.

LightningCLI 2.6 (``LightningCLI._parse_ckpt_path``) re-parses the config with the checkpoint's hyper-parameters
on top of everything the user gave: ``--model.top_k 1`` next to ``--ckpt_path`` was silently dropped, a
checkpoint of another task replaced ``--model`` (and crashed later in ``conv2d()``), and a damaged file failed
inside ``torch.load`` with ``IndexError: pop from empty list``. :func:`apply_checkpoint` replaces that step:

1. **Is it ours.** The file is opened once here (``torch.load(mmap=True)``: tensors are mapped, not read; the
   trainer loads it again to restore the state). It must be a Lightning checkpoint (``state_dict``,
   ``hyper_parameters``) written by a :class:`~lit_vision.tasks.VisionTask` (the ``lit_vision`` marker, or - for
   older files - the ``lit_vision_data_info`` entry or a ``_class_path`` naming a task).
2. **The task.** The class it was trained as must be the one the command names; when one derives from the other,
   the more derived one is used (a researcher's subclass can load the base task's checkpoint).
3. **Settings.** What the checkpoint stored fills everything the user did not give. What the user gave wins,
   except where it changes the network (the task's ``network_args``, e.g. ``backbone``, ``architecture`` and its
   options): a difference there is an error naming both values. The task's ``inference_args`` (thresholds, NMS,
   top-k, sliding window) are the settings expected to change; other given settings (optimizer, loss weights)
   win as well - what ``fit --ckpt_path`` (resume) trains with is the recipe's.
4. **Classes.** After instantiation (the data's class names are linked into the model then), they must be the
   checkpoint's: the same number of classes under other names would load without complaint and mislabel.

**What "given" means.** The arguments are parsed a second time with ``defaults=False`` (jsonargparse): the result
holds exactly what the command line and the ``--config`` files set, and nothing the parser filled in. Comparing
the parsed config with the parser's defaults instead would miss a user who asks for a default value on purpose
(``--model.architecture.score_thresh 0.05`` against a checkpoint trained with 0.01). A recipe's values count as
given: pass the recipe the checkpoint was trained with (or only ``--model <Task>``) to validate or predict.
"""

from __future__ import annotations

import copy
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lit_vision.cli.errors import CLIError
from lit_vision.introspection import import_dotted, init_parameters

# ckpt_path values the trainer resolves itself (``last`` may be resolved to a file before this check runs).
LIGHTNING_NAMES = ("last", "best", "hpc")
_MISSING = object()


class CheckpointError(CLIError):
    """A ``--ckpt_path`` that cannot serve the command; one line, raised before any work (no usage line)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, usage="")


@dataclass
class CheckpointInfo:
    """What a checkpoint says about itself."""

    path: str
    task: str | None  # class path of the task it was trained as
    hparams: dict[str, Any]  # its hyper-parameters, without Lightning's private keys

    @property
    def class_names(self) -> list[str] | None:
        names, count = self.hparams.get("class_names"), self.hparams.get("num_classes")
        if names is not None:
            return [str(n) for n in names]
        return [str(i) for i in range(int(count))] if count is not None else None


@dataclass(frozen=True)
class ClassRef:
    """A ``class_path`` the user gave (its options are separate leaves)."""

    path: str


# ---------------------------------------------------------------------------------------------- opening the file
def load_checkpoint(path: str) -> Any:
    """The checkpoint object (tensors memory-mapped); :class:`CheckpointError` naming the file when unreadable."""
    local = "://" not in path
    if local and not Path(path).exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if local and Path(path).is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder: give the .ckpt file inside it")
    try:
        if local:  # mmap needs torch's zip format; a legacy file is read whole (or fails below)
            return torch.load(path, map_location="cpu", weights_only=False, mmap=zipfile.is_zipfile(path))
        from lightning.fabric.utilities.cloud_io import _load

        return _load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as err:  # a pickled object whose module is not importable here
        raise CheckpointError(f"checkpoint {path} refers to the module {err.name!r}, which cannot be imported "
                              f"(is its folder on PYTHONPATH?)") from err
    except Exception as err:  # noqa: BLE001 - torch.load raises RuntimeError, UnpicklingError, EOFError, ...
        raise CheckpointError(f"{path}: not a lit_vision checkpoint ({_load_failure(path, err)})") from err


def _load_failure(path: str, err: Exception) -> str:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    first = first if len(first) <= 100 else first[:97] + "..."
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return f"cannot be read: {first}"
    if not head:
        return "empty file"
    if head.startswith(b"PK"):
        return f"a zip archive, but not torch.save's: {first}" if zipfile.is_zipfile(path) else \
            "truncated or damaged: its zip archive has no end"
    return f"torch.load cannot read it: {first}"


def describe(path: str, ckpt: Any) -> CheckpointInfo:
    """Check that ``ckpt`` is a lit_vision task's Lightning checkpoint; what it says about itself."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path}: not a lit_vision checkpoint (it holds a {type(ckpt).__name__}, "
                              f"not a Lightning checkpoint)")
    missing = [key for key in ("state_dict", "hyper_parameters") if key not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a lit_vision checkpoint (no {' or '.join(missing)}: not written by "
                              f"a Lightning Trainer)")
    hparams = dict(ckpt["hyper_parameters"] or {})
    hparams.pop("_instantiator", None)
    marker = ckpt.get("lit_vision") if isinstance(ckpt.get("lit_vision"), Mapping) else None
    task = hparams.pop("_class_path", None) or (marker or {}).get("task")
    if not (marker or "lit_vision_data_info" in ckpt or _is_task(task)):
        by = f"written by {task}" if task else "no lit_vision task in its hyper-parameters"
        raise CheckpointError(f"{path}: not a lit_vision checkpoint ({by})")
    return CheckpointInfo(path, str(task) if task else None, hparams)


def _is_task(path: str | None) -> bool:
    from lit_vision.tasks import VisionTask

    klass = _import(path)
    return isinstance(klass, type) and issubclass(klass, VisionTask)


def _import(path: str | None) -> Any:
    try:
        return import_dotted(str(path)) if path else None
    except (ImportError, AttributeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- reconciling
def more_derived(theirs: str | None, ours: str | None) -> str | None:
    """The class path to use for the checkpoint's class and the requested one; ``None`` when unrelated."""
    if not theirs or not ours or theirs == ours:
        return theirs or ours
    a, b = _import(theirs), _import(ours)
    if not (isinstance(a, type) and isinstance(b, type)):
        return None
    if issubclass(b, a):
        return ours
    return theirs if issubclass(a, b) else None


def short(path: str | None) -> str:
    return str(path).rsplit(".", 1)[-1]


def flatten_given(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted leaves of a given model config: ``architecture`` -> :class:`ClassRef`, ``architecture.score_thresh``
    -> its value (``init_args`` levels dropped)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and "class_path" in value:
            out[path] = ClassRef(str(value["class_path"]))
            for part in ("init_args", "dict_kwargs"):
                out.update(flatten_given(value.get(part) or {}, path + "."))
        else:
            out[path] = value
    return out


def _short_name_class(name: str) -> str | None:
    """The class path of a registered architecture short name (``"fcos"``), searched in every family's registry."""
    from lit_vision.models.architecture import Architecture

    stack: list[type] = [Architecture]
    while stack:
        family = stack.pop()
        registry = family.__dict__.get("registry") or {}
        if name in registry:
            return f"{registry[name].__module__}.{registry[name].__qualname__}"
        stack.extend(family.__subclasses__())
    return None


def _class_config(value: Any) -> tuple[str | None, dict[str, Any]]:
    """(class path, options) of a stored value: a ``{class_path, init_args}`` dict, a short name, or an object."""
    if isinstance(value, Mapping) and "class_path" in value:
        return str(value["class_path"]), {**(value.get("init_args") or {}), **(value.get("dict_kwargs") or {})}
    if isinstance(value, str):
        return _short_name_class(value), {}
    if value is not _MISSING and hasattr(value, "__dict__") and not isinstance(value, type):
        cls = type(value)
        return f"{cls.__module__}.{cls.__qualname__}", {k: v for k, v in vars(value).items() if not k.startswith("_")}
    return None, {}


def stored_value(hparams: Mapping[str, Any], path: str, task: str | None) -> Any:
    """The checkpoint's value at a dotted path (through class configs' options); the constructor default where
    the checkpoint does not say (an older file, an option left at its default)."""
    owner, node = _import(task), dict(hparams)
    parts = path.split(".")
    for i, part in enumerate(parts):
        if part in node:
            value = node[part]
        else:
            param = init_parameters(owner).get(part) if isinstance(owner, type) else None
            value = param.default if param is not None and param.default is not param.empty else _MISSING
        if i == len(parts) - 1 or value is _MISSING:
            return value
        class_path, node = _class_config(value)
        if class_path is None:
            return _MISSING
        owner = _import(class_path)
    return _MISSING


def kind_of(task_class: Any, path: str) -> str:
    """``"inference"``, ``"network"`` or ``"training"``: from the task's ``inference_args``/``network_args`` (a
    network arg covers its options, ``architecture`` covers ``architecture.fpn_channels``)."""
    if path in getattr(task_class, "inference_args", frozenset()):
        return "inference"
    network = getattr(task_class, "network_args", frozenset())
    parts = path.split(".")
    return "network" if any(".".join(parts[:i]) in network for i in range(1, len(parts) + 1)) else "training"


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _show(value: Any) -> str:
    return repr(_plain(value))


def reconcile(info: CheckpointInfo, given_model: Mapping[str, Any] | None) -> dict[str, Any]:
    """The model config to parse: the checkpoint's hyper-parameters with the user's given settings on top.

    Raises :class:`CheckpointError` for another task, or for given network settings that differ from the
    checkpoint's (all of them in one message, with both values).
    """
    given_model = given_model or {}
    requested = given_model.get("class_path")
    task = more_derived(info.task, requested)
    if task is None:
        raise CheckpointError(
            f"{info.path} is a checkpoint of {info.task}, but the command asks for {requested} (give the recipe it "
            f"was trained with, or --model {short(info.task)})")
    task_class = _import(task)
    merged = copy.deepcopy(info.hparams)
    conflicts: list[str] = []
    given = {**flatten_given(given_model.get("init_args") or {}), **flatten_given(given_model.get("dict_kwargs") or {})}
    for path, value in given.items():
        stored = stored_value(info.hparams, path, info.task)
        stored_class = _class_config(stored)[0]
        network = kind_of(task_class, path) == "network"
        given_class = value.path if isinstance(value, ClassRef) else None
        if isinstance(value, str) and stored_class:  # a registered short name ("fcos") against a class config
            given_class = _short_name_class(value)
        if given_class:
            chosen = more_derived(stored_class, given_class)
            if chosen is None and network:
                conflicts.append(f"--model.{path}: checkpoint {short(stored_class)}, command {short(given_class)}")
                continue
            _set_class(merged, path, chosen or given_class)
        elif network and stored is not _MISSING and _plain(stored) != _plain(value):
            conflicts.append(f"--model.{path}: checkpoint {_show(stored)}, command {_show(value)}")
        else:
            _set_value(merged, path, value)
    # The checkpoint's tensors replace every initial weight: reading (or downloading) those again is wasted work,
    # and fails on a machine without the file. Only keys the checkpoint stored are touched.
    for key, off in getattr(task_class, "init_weight_args", {}).items():
        if key in merged:
            merged[key] = off
    if conflicts:
        raise CheckpointError(f"{info.path} was trained with another network than the command asks for: "
                              f"{'; '.join(conflicts)} (leave these out to use the checkpoint's, or give the recipe "
                              f"it was trained with)")
    return {"class_path": task, "dict_kwargs": merged}


def _options_of(container: dict[str, Any], key: str) -> dict[str, Any]:
    """The options dict of the class config at ``container[key]``, made a ``{class_path, init_args}`` dict."""
    class_path, options = _class_config(container.get(key))
    node = {"class_path": class_path, "init_args": dict(options)} if class_path else {"init_args": {}}
    container[key] = node
    return node["init_args"]


def _parent(merged: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    *parents, last = path.split(".")
    container = merged
    for part in parents:
        container = _options_of(container, part)
    return container, last


def _set_value(merged: dict[str, Any], path: str, value: Any) -> None:
    container, last = _parent(merged, path)
    container[last] = value


def _set_class(merged: dict[str, Any], path: str, class_path: str) -> None:
    """Put ``class_path`` at ``path``, keeping the stored options when it is the stored class or derives from it."""
    container, last = _parent(merged, path)
    stored_path, options = _class_config(container.get(last))
    if stored_path and _import(stored_path) is not None and _import(stored_path) is _import(class_path):
        return  # the stored class (short name, dict or object) stays as it was
    keep = stored_path is not None and more_derived(stored_path, class_path) == class_path
    container[last] = {"class_path": class_path, "init_args": dict(options) if keep else {}}


# ---------------------------------------------------------------------------------------------- the CLI's steps
def given_model_config(cli: Any, subcommand: str) -> dict[str, Any] | None:
    """The model config the user gave (command line and ``--config`` files), without the parser's defaults."""
    args = getattr(cli, "raw_args", None)
    if isinstance(args, Mapping) or hasattr(args, "as_dict"):
        given = cli.parser.parse_object(args, defaults=False)
    else:
        given = cli.parser.parse_args(args, defaults=False)
    model = given.get(subcommand, given).get("model") if hasattr(given, "get") else None
    if model is None:
        return None
    return model.as_dict() if hasattr(model, "as_dict") else dict(model)


def apply_checkpoint(cli: Any) -> None:
    """Replaces LightningCLI's ``_parse_ckpt_path``: check the checkpoint, then merge it into the model config."""
    subcommand = cli.config.get("subcommand")
    if not subcommand:
        return
    path = cli.config[subcommand].get("ckpt_path")
    path = str(path) if path else ""
    if not path or path in LIGHTNING_NAMES or path.startswith("registry") or Path(path).is_dir():
        return  # resolved later, to a file, by the trainer or by lit_vision's resume (a run folder)
    info = describe(path, load_checkpoint(path))
    model = reconcile(info, given_model_config(cli, subcommand))
    try:
        cli.config = cli.parser.parse_object({subcommand: {"model": model}}, cli.config)
    except CLIError as err:
        raise CheckpointError(f"{path}: its hyper-parameters do not fit {model['class_path']}: {err}") from err
    cli.checkpoint_info = info


def check_data_classes(cli: Any) -> None:
    """After instantiation: the model (its classes linked from the data) must have the checkpoint's classes."""
    info: CheckpointInfo | None = getattr(cli, "checkpoint_info", None)
    model = getattr(cli, "model", None)
    theirs = info.class_names if info is not None else None
    ours = getattr(model, "class_names", None)
    if theirs is None or ours is None or list(ours) == theirs:
        return
    raise CheckpointError(f"{info.path} was trained for {_names(theirs)}, but the data has {_names(list(ours))} "
                          f"(use the data, or the class_names, it was trained with)")


def _names(names: list[str]) -> str:
    listed = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f"{len(names)} classes [{listed}]"


__all__ = ["CheckpointError", "CheckpointInfo", "apply_checkpoint", "check_data_classes", "describe",
           "load_checkpoint", "reconcile"]
