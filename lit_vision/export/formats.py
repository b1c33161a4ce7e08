"""Writing and loading the three formats: ONNX, TorchScript, ``torch.export``'s exported program.

Each file carries the export's metadata (:mod:`lit_vision.export.metadata`) inside: ONNX as ``metadata_props`` of
the ``ModelProto`` (``InferenceSession.get_modelmeta().custom_metadata_map``), TorchScript and exported programs as
an extra file ``lit_vision.json`` in their archive.

**ONNX exporters.** torch offers two. The TorchScript-based one (``dynamo=False``, the default here) is the path
torchvision documents and tests for Faster R-CNN, RetinaNet and FCOS (opset 11+), whose code takes tracing-aware
branches (``torchvision._is_tracing()``) that keep the image size dynamic; it needs no ``onnxscript`` and is 4-5x
faster. torch marks it legacy (a ``DeprecationWarning``, silenced here), so ``onnx_exporter="dynamo"`` exports
through ``torch.export`` instead (needs ``onnxscript``): the same graphs as the exported program, where
torchvision's detectors get a fixed image size.

**TorchScript** is ``torch.jit.trace``: scripting would need every backbone (timm's, torchvision's feature
extractors) to be scriptable. Sizes read with ``.shape`` are recorded as tensors while tracing, so traced models
stay dynamic wherever the model computes with them rather than converting them to Python numbers; the export's
check runs a second batch size / image size to prove it.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_vision.export.patches import export_friendly_torchvision
from lit_vision.export.wrappers import ExportSpec, TorchvisionDetectorExport

FORMATS: tuple[str, ...] = ("onnx", "torchscript", "exported-program")
SUFFIXES: dict[str, str] = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2"}
ONNX_EXPORTERS: tuple[str, ...] = ("torchscript", "dynamo")
DEFAULT_OPSET = 17  # the TorchScript-based exporter's; torchvision's detectors need 11+, onnxruntime reads up to 23
METADATA_FILE = "lit_vision.json"  # TorchScript's and the exported program's extra file
METADATA_KEY = "lit_vision"  # ONNX metadata_props key of the whole metadata as JSON
AXES = ("batch", None, "height", "width")  # input dimension names (None: channels, never dynamic)


class ExportFormatError(RuntimeError):
    """A format that cannot hold a model, or a missing package; one line."""


def input_axes(spec: ExportSpec) -> dict[int, str]:
    """The input dimensions the wrapper accepts at any size: ``{0: "batch", 2: "height", 3: "width"}`` or fewer."""
    axes = {0: "batch"} if spec.dynamic_batch else {}
    return axes | ({2: "height", 3: "width"} if spec.dynamic_size else {})


def _require(module: str, why: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ExportFormatError(f"{why} needs the {module} package: pip install 'lit_vision[export]' "
                                f"(or pip install {module})") from err


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Tracing warnings (TracerWarning, the legacy exporter's DeprecationWarning) say nothing the check does not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------------------- exporting
def export_program(spec: ExportSpec, sample: Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of the wrapper with the dimensions it accepts marked ``Dim.AUTO`` (kept where the model
    really is dynamic, specialised where not: :func:`program_dynamic_axes` reads which).

    torchvision's detectors get a fixed image size: their resize computes the scale in Python floats, and tracing
    it symbolically leaves guards (square inputs only, the traced output size) that reject other sizes.
    """
    shapes = ({} if isinstance(spec.module, TorchvisionDetectorExport) else program_axes(spec, sample),)
    with _quiet(), export_friendly_torchvision(), torch.no_grad():
        return torch.export.export(spec.module, (sample,), dynamic_shapes=shapes, strict=False)


def program_size_multiple(spec: ExportSpec, sample: Tensor) -> int:
    """What an exported program's height and width must be multiples of (1: any size)."""
    m = spec.size_multiple
    return m if m > 1 and spec.dynamic_size and all(s % m == 0 for s in sample.shape[-2:]) else 1


def program_axes(spec: ExportSpec, sample: Tensor) -> dict[int, Any]:
    """``torch.export`` dynamic shapes of the input: ``Dim.AUTO``, or ``m * Dim`` for sizes in multiples of ``m``."""
    auto, m = torch.export.Dim.AUTO, program_size_multiple(spec, sample)
    axes: dict[int, Any] = {axis: auto for axis in input_axes(spec)}
    if m > 1:
        axes |= {2: m * torch.export.Dim("height_div", min=1), 3: m * torch.export.Dim("width_div", min=1)}
    return axes


def program_dynamic_axes(program: torch.export.ExportedProgram) -> dict[str, bool]:
    """Which input dimensions of an exported program are symbols (dynamic) rather than numbers."""
    name = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
    return _axes_flags([not isinstance(d, int) for d in node.meta["val"].shape])


def _axes_flags(dynamic: list[bool]) -> dict[str, bool]:
    return {axis: bool(flag) for axis, flag in zip(AXES, dynamic) if axis is not None}


def onnx_dynamic_axes(model: Any) -> dict[str, bool]:
    """Which input dimensions of an ONNX model are named (dynamic) rather than fixed numbers."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return _axes_flags([not d.HasField("dim_value") for d in dims])


def write(fmt: str, spec: ExportSpec, sample: Tensor, path: Path, metadata: Callable[[dict[str, Any]], dict[str, Any]],
          opset: int | None = None, onnx_exporter: str = "torchscript") -> dict[str, Any]:
    """Export ``spec`` to ``path`` in ``fmt`` and embed ``metadata(facts)`` (``facts``: what the export produced:
    ``dynamic`` axes, ``opset``, ``exporter``); returns the metadata written."""
    if fmt == "onnx":
        return _write_onnx(spec, sample, path, metadata, opset, onnx_exporter)
    if fmt == "torchscript":
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(spec.module, (sample,), check_trace=False)
        dynamic = {"batch": spec.dynamic_batch, "height": spec.dynamic_size, "width": spec.dynamic_size}
        meta = metadata({"dynamic": dynamic, "exporter": "torch.jit.trace", "size_multiple": 1})
        with _quiet():
            torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(meta)})
        return meta
    if fmt == "exported-program":
        program = export_program(spec, sample)
        meta = metadata({"dynamic": program_dynamic_axes(program), "exporter": "torch.export",
                         "size_multiple": program_size_multiple(spec, sample)})
        torch.export.save(program, str(path), extra_files={METADATA_FILE: json.dumps(meta)})
        return meta
    raise ExportFormatError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _write_onnx(spec: ExportSpec, sample: Tensor, path: Path, metadata: Callable[[dict[str, Any]], dict[str, Any]],
                opset: int | None, exporter: str) -> dict[str, Any]:
    onnx = _require("onnx", "ONNX export")
    names = {"input_names": ["images"], "output_names": list(spec.output_names)}
    if exporter == "dynamo":
        _require("onnxscript", "the dynamo ONNX exporter")
        program = export_program(spec, sample)
        with _quiet():
            torch.onnx.export(program, (sample,), str(path), dynamo=True, opset_version=opset, verbose=False,
                              external_data=False, **names)
    elif exporter == "torchscript":
        axes: dict[str, dict[int, str]] = {"images": input_axes(spec)}
        for name in spec.output_names:  # detections: one flat list; logits follow the input's dynamic axes
            axes[name] = ({0: "detections"} if spec.task == "detection" else
                          {a: n for a, n in input_axes(spec).items() if spec.task == "segmentation" or a == 0})
        with _quiet(), torch.no_grad():
            torch.onnx.export(spec.module, (sample,), str(path), dynamo=False, opset_version=opset or DEFAULT_OPSET,
                              dynamic_axes=axes, **names)
    else:
        raise ExportFormatError(f"unknown ONNX exporter {exporter!r}; choose one of {', '.join(ONNX_EXPORTERS)}")
    model = onnx.load(str(path), load_external_data=False)
    opset_used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    multiple = program_size_multiple(spec, sample) if exporter == "dynamo" else 1
    meta = metadata({"dynamic": onnx_dynamic_axes(model), "exporter": f"torch.onnx ({exporter})", "opset": opset_used,
                     "size_multiple": multiple})
    flat = {METADATA_KEY: json.dumps(meta)} | {key: value if isinstance(value, str) else json.dumps(value)
                                              for key, value in meta.items() if key in FLAT_KEYS}
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in flat]  # the exporter's own, if any
    del model.metadata_props[:]
    for key, value in [*kept, *flat.items()]:
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return meta


# Metadata entries also stored as their own ONNX metadata_props (Netron and custom_metadata_map show them).
FLAT_KEYS = ("task", "architecture", "class_names", "input_size", "mean", "std", "normalization_inside",
             "box_format", "output_names")


# ---------------------------------------------------------------------------------------------- loading
def load(path: str | Path, fmt: str) -> tuple[Callable[[Tensor], tuple[Tensor, ...]], dict[str, Any]]:
    """The exported model as ``images -> tuple of output tensors``, and its metadata."""
    path = str(path)
    if fmt == "onnx":
        ort = _require("onnxruntime", "checking an ONNX export")
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        meta = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
        name = session.get_inputs()[0].name

        def run_onnx(images: Tensor) -> tuple[Tensor, ...]:
            return tuple(torch.from_numpy(o) for o in session.run(None, {name: images.cpu().numpy()}))

        return run_onnx, meta
    extra = {METADATA_FILE: ""}
    if fmt == "torchscript":
        import torchvision  # noqa: F401 - registers torchvision::nms & co. that traced detectors call

        with _quiet():  # torch.jit.load's FutureWarning (TorchScript is in maintenance): still the format asked for
            module: Any = torch.jit.load(path, map_location="cpu", _extra_files=extra)
    elif fmt == "exported-program":
        import torchvision  # noqa: F401,F811

        module = torch.export.load(path, extra_files=extra).module()
    else:
        raise ExportFormatError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")

    def run_torch(images: Tensor) -> tuple[Tensor, ...]:
        # TorchScript's optimising executor profiles the first calls and compiles fused kernels: seconds a shape,
        # for a check that runs each shape once (the values are the same).
        with torch.no_grad(), torch.jit.optimized_execution(False):
            out = module(images)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    return run_torch, json.loads(extra[METADATA_FILE])


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The lit_vision metadata of an exported file (format from its name), without loading the model."""
    path = str(path)
    if path.lower().endswith(SUFFIXES["onnx"]):
        onnx = _require("onnx", "reading ONNX metadata")
        props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        if METADATA_KEY not in props:
            raise ExportFormatError(f"{path} has no lit_vision metadata (not exported by lit-vision export?)")
        return json.loads(props[METADATA_KEY])
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:  # TorchScript and .pt2 files are zip archives
            name = next((n for n in archive.namelist() if n.endswith(METADATA_FILE)), None)
            if name is None:
                raise ExportFormatError(f"{path} has no lit_vision metadata (not exported by lit-vision export?)")
            return json.loads(archive.read(name))
    except zipfile.BadZipFile as err:
        raise ExportFormatError(f"{path} is neither ONNX (by its name) nor a TorchScript / .pt2 archive: {err}") from err


__all__ = ["DEFAULT_OPSET", "ExportFormatError", "FORMATS", "ONNX_EXPORTERS", "SUFFIXES", "export_program", "load",
           "read_metadata", "write"]
