"""From a checkpoint (or a task in memory) to a checked ONNX / TorchScript / exported-program file.

The checkpoint alone is enough: it names its task class and holds its hyper-parameters (class names, network
settings) and the DataModule's (input size, normalisation). The task is rebuilt with ``pretrained=False`` and
``weights=None`` (its ``init_weight_args``): the checkpoint's tensors replace any initial weights, so nothing is
downloaded or read besides the checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lit_vision.export import metadata as metadata_module
from lit_vision.export.check import (
    CheckResult,
    check_shapes,
    model_input,
    run_check,
    sample_images,
)
from lit_vision.export.formats import (
    FORMATS,
    ONNX_EXPORTERS,
    SUFFIXES,
    ExportFormatError,
    load,
    write,
)
from lit_vision.export.wrappers import (
    ExportSpec,
    TorchvisionDetectorExport,
    export_spec,
)

TORCHVISION_MIN_OPSET = 11  # torchvision's detectors in ONNX (RoIAlign, NonMaxSuppression)


class ExportError(ValueError):
    """Bad input to an export (unknown format, a size the model cannot take, ...); one line."""


@dataclass
class ExportResult:
    """The written file, its metadata sidecar, the metadata and the check's result (``None``: not checked)."""

    path: Path
    sidecar: Path
    metadata: dict[str, Any]
    check: CheckResult | None


def load_task(ckpt_path: str | Path) -> tuple[Any, dict[str, Any]]:
    """``(task in eval mode on the CPU, the DataModule's hyper-parameters)`` from a lit_vision checkpoint.

    Raises :class:`~lit_vision.cli.checkpoints.CheckpointError` (one line) for a file that is not one.
    """
    from lit_vision.cli.checkpoints import CheckpointError, describe, load_checkpoint
    from lit_vision.introspection import import_dotted
    from lit_vision.tasks import VisionTask

    path = str(ckpt_path)
    ckpt = load_checkpoint(path)
    info = describe(path, ckpt)
    try:
        klass = import_dotted(info.task) if info.task else None
    except (ImportError, AttributeError) as err:
        raise CheckpointError(f"{path}: its task {info.task} cannot be imported ({err})") from err
    if not (isinstance(klass, type) and issubclass(klass, VisionTask)):
        raise CheckpointError(f"{path}: not a lit_vision task's checkpoint (task {info.task})")
    # Initial weights are replaced by the checkpoint's tensors: never download or read them (only keys it stored).
    off = getattr(klass, "init_weight_args", {"pretrained": False})
    overrides = {key: value for key, value in off.items() if key in info.hparams}
    task = klass.load_from_checkpoint(path, map_location="cpu", weights_only=False, **overrides)  # ours: checked above
    data = dict(ckpt.get("datamodule_hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    return task.eval(), data


def default_output(ckpt_path: str | Path, fmt: str) -> Path:
    """``runs/x/best.ckpt`` -> ``runs/x/best.onnx`` (``.torchscript.pt``, ``.pt2``)."""
    path = Path(ckpt_path)
    return path.with_name(path.stem + SUFFIXES[fmt])


def _accepts_size(spec: ExportSpec, size: tuple[int, int]) -> bool:
    """Whether the model runs at another image size than the export's (a ViT with a fixed grid does not)."""
    if not spec.dynamic_size:
        return False
    other = check_shapes(size, {"batch": False, "height": True, "width": True})[1]
    try:
        with torch.no_grad():
            spec.module(torch.zeros(1, 3, other[1], other[2]))
    except Exception:  # noqa: BLE001 - any failure means: export with a fixed size
        return False
    return True


def _first_line(err: BaseException) -> str:
    """``Type: message`` on one line, at most 300 characters of message (exporters' messages run to pages)."""
    return f"{type(err).__name__}: {(' '.join(str(err).split()) or '-')[:300]}"


def _unsupported(spec: ExportSpec, fmt: str, err: BaseException, backbone: Any) -> ExportFormatError:
    others = [f for f in FORMATS if f != fmt]
    return ExportFormatError(
        f"cannot export {spec.architecture} ({backbone}) to {fmt}: {_first_line(err)} (lit_vision's "
        f"{spec.architecture} also exports to {' and '.join(others)}: try --format {others[0]}; --debug shows the "
        f"traceback)")


def export_task(task: Any, fmt: str, output: str | Path, *, image_size: Sequence[int] | None = None,
                opset: int | None = None, check: bool = True, images: Sequence[Path] = (),
                normalize_inside: bool = False, onnx_exporter: str = "torchscript",
                data: dict[str, Any] | None = None, checkpoint: str | None = None) -> ExportResult:
    """Export ``task.model`` to ``output`` in ``fmt`` (``"onnx"``, ``"torchscript"``, ``"exported-program"``), with
    metadata inside and in ``<output>.json``; then, unless ``check=False``, load the file back and compare it with
    the task on sample images (``images``: files to use, else random ones).

    Args:
        image_size: ``[N]`` or ``[H, W]``; default: the checkpoint's (the detector's or the DataModule's).
        opset: ONNX opset (default 17 with the TorchScript-based exporter, the dynamo exporter's own otherwise).
        normalize_inside: classifiers and segmenters: put the mean/std normalisation in the model (input [0, 1]).
        onnx_exporter: ``"torchscript"`` or ``"dynamo"`` (see :mod:`lit_vision.export.formats`).
        data: the DataModule's hyper-parameters (input size, mean/std), as :func:`load_task` returns them.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if onnx_exporter not in ONNX_EXPORTERS:
        raise ExportError(f"unknown ONNX exporter {onnx_exporter!r}; choose one of {', '.join(ONNX_EXPORTERS)}")
    output = Path(output)
    if fmt == "exported-program" and output.suffix != ".pt2":
        raise ExportError(f"an exported program is a .pt2 file (torch.export.save), got --output {output}")
    data = dict(data or {})
    kind = metadata_module.task_kind(task)
    task.eval()
    mean, std, norm_source = metadata_module.normalization(task, data)
    size, size_source = metadata_module.input_size(task, kind, data, image_size)
    if min(size) < 32:
        raise ExportError(f"image size {size[0]}x{size[1]} is too small (at least 32 pixels a side)")
    if kind == "detection" and normalize_inside:
        raise ExportError("--normalize_inside is for classifiers and segmenters: detectors always normalise inside")
    spec = export_spec(task.model, kind, mean, std, normalize_inside)
    if fmt == "onnx" and opset is not None and opset < TORCHVISION_MIN_OPSET \
            and isinstance(spec.module, TorchvisionDetectorExport):
        raise ExportError(f"ONNX export of {spec.architecture} needs opset {TORCHVISION_MIN_OPSET} or later "
                          f"(torchvision's detectors), got {opset}")
    if kind != "detection":
        spec.dynamic_size = _accepts_size(spec, size)
    sample = model_input(sample_images(2 if spec.dynamic_batch else 1, size, images), kind, normalize_inside, mean,
                         std)
    output.parent.mkdir(parents=True, exist_ok=True)

    def describe(facts: dict[str, Any]) -> dict[str, Any]:
        return metadata_module.build(task, spec, size, facts, fmt=fmt, data=data, size_source=size_source,
                                     normalization_source=norm_source,
                                     checkpoint=Path(checkpoint).name if checkpoint else None)

    try:
        meta = write(fmt, spec, sample, output, describe, opset=opset, onnx_exporter=onnx_exporter)
    except ExportFormatError:
        raise
    except Exception as err:  # noqa: BLE001 - an exporter's failure becomes one line naming model and format
        raise _unsupported(spec, fmt, err, task.hparams.get("backbone")) from err
    result = None
    if check:
        try:
            run, _ = load(output, fmt)
        except ExportFormatError:
            raise  # a missing runtime package: one line
        except Exception as err:  # noqa: BLE001 - a file its own runtime cannot load fails the check
            result = CheckResult(passed=False, failure=f"cannot load the file: {_first_line(err)}")
        else:
            result = run_check(run, task, kind, size, meta["dynamic"], spec.normalization_inside, mean, std, images,
                               multiple=meta["size_multiple"], odd=spec.exact_at_odd_sizes)
    sidecar = output.with_name(output.name + ".json")
    sidecar.write_text(json.dumps(meta | ({"check": result.as_dict()} if result else {}), indent=2))
    return ExportResult(output, sidecar, meta, result)


def export_checkpoint(ckpt_path: str | Path, fmt: str, output: str | Path | None = None, **options: Any) -> ExportResult:
    """:func:`export_task` of the task a checkpoint holds (``output`` default: next to it, see :func:`default_output`)."""
    task, data = load_task(ckpt_path)
    return export_task(task, fmt, output or default_output(ckpt_path, fmt), data=data, checkpoint=str(ckpt_path),
                       **options)


__all__ = ["ExportError", "ExportResult", "default_output", "export_checkpoint", "export_task", "load_task"]
