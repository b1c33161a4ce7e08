"""Export a trained model to ONNX, TorchScript or a ``torch.export`` program, with its metadata, checked.

    lit-vision export --ckpt_path best.ckpt --format onnx
    from lit_vision.export import export_checkpoint
    result = export_checkpoint("best.ckpt", "onnx")   # result.path, result.metadata, result.check

``wrappers`` (what is exported), ``formats`` (writing and loading each format), ``metadata`` (what the file says
about itself), ``check`` (the comparison with the Lightning model), ``exporter`` (from a checkpoint to a checked
file). See ``docs/export.md``.
"""

from lit_vision.export.check import TOLERANCE, CheckResult
from lit_vision.export.exporter import (
    ExportError,
    ExportResult,
    default_output,
    export_checkpoint,
    export_task,
    load_task,
)
from lit_vision.export.formats import FORMATS, ExportFormatError, load, read_metadata
from lit_vision.export.wrappers import ExportSpec, export_spec

__all__ = ["FORMATS", "TOLERANCE", "CheckResult", "ExportError", "ExportFormatError", "ExportResult", "ExportSpec",
           "default_output", "export_checkpoint", "export_spec", "export_task", "load", "load_task", "read_metadata"]
