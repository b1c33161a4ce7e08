"""``lit-vision export``: a checkpoint to ONNX, TorchScript or a ``torch.export`` program, checked against the model.

    lit-vision export --ckpt_path runs/x/best.ckpt --format onnx
    lit-vision export --ckpt_path best.ckpt --format torchscript --image_size 480 640 --output model.pt
    lit-vision export --ckpt_path best.ckpt --format exported-program --images val_photos/

The checkpoint alone is enough (task, classes, input size and normalisation are in it). The file carries its
metadata (task, class names, input size, mean/std, box format, output names) and a ``<output>.json`` copy; unless
``--no-check``, it is loaded back and must reproduce the Lightning model's outputs (docs/export.md). Bad input is
one line on stderr and exit code 2; a failed check exit code 1 (the file is kept, the sidecar says what differed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

FORMATS = ("onnx", "torchscript", "exported-program")  # lit_vision.export.FORMATS, without importing torch


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lit-vision export",
        description="Export a checkpoint to ONNX, TorchScript or a torch.export program (with metadata), then check "
                    "that the file reproduces the model's outputs.",
    )
    parser.add_argument("--ckpt_path", "--ckpt-path", required=True, help="a lit_vision checkpoint (.ckpt)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write (docs/export.md: what each keeps "
                                                                         "dynamic per architecture)")
    parser.add_argument("--output", "-o", help="file to write (default: next to the checkpoint, <name>.onnx, "
                                               "<name>.torchscript.pt or <name>.pt2)")
    parser.add_argument("--image_size", "--image-size", nargs="+", type=int, metavar="N",
                        help="input size: N (square) or H W (default: the checkpoint's)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default 17; the dynamo exporter's own with "
                                                  "--onnx_exporter dynamo)")
    parser.add_argument("--onnx_exporter", "--onnx-exporter", choices=("torchscript", "dynamo"), default="torchscript",
                        help="torch's ONNX exporter (default torchscript: torchvision's documented path, dynamic "
                             "image sizes for its detectors; dynamo needs onnxscript)")
    parser.add_argument("--normalize_inside", "--normalize-inside", action="store_true",
                        help="classifiers and segmenters: put the mean/std normalisation in the model "
                             "(its input is then [0, 1] RGB)")
    parser.add_argument("--images", nargs="+", metavar="PATH",
                        help="image files or folders to check with (default: random images, seed 0)")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="load the file back and compare with the model (default: on)")
    return parser


def _summary(result: Any) -> list[str]:
    meta = result.metadata
    shape = ", ".join(str(d) for d in meta["input_shape"])
    stats = f"mean {'/'.join(f'{v:g}' for v in meta['mean'])}, std {'/'.join(f'{v:g}' for v in meta['std'])}"
    values = f"[0, 1] RGB, the model normalises ({stats})" if meta["normalization_inside"] else \
        f"{meta['input_range']}, {stats}"
    backbone = f", {meta['backbone']}" if meta.get("backbone") else ""
    lines = [f"Exported {meta['task']} model ({meta['architecture']}{backbone}) to {result.path}",
             f"  classes: {meta['num_classes']} ({', '.join(meta['class_names'][:8])}"
             f"{', ...' if meta['num_classes'] > 8 else ''})",
             f"  input:   images [{shape}] float32, exported at {meta['input_size'][0]}x{meta['input_size'][1]}: "
             f"{values}",
             f"  outputs: {', '.join(meta['output_names'])}",
             f"  metadata: in the file and in {result.sidecar}"]
    check = result.check
    if check is None:
        lines.append("  check:   skipped (--no-check)")
    else:
        diffs = ", ".join(f"{k} {v:.2g}" + (f" (values up to {check.max_abs_value[k]:.2g})" if k in
                                             check.max_abs_value else "") for k, v in check.max_abs_diff.items())
        count = f"{check.detections} detections matched, " if check.detections is not None else ""
        shapes = " and ".join("x".join(map(str, s)) for s in check.shapes)
        where = f" on {shapes} ({check.images})" if shapes else ""
        lines.append(f"  check:   {'passed' if check.passed else 'FAILED'}{where}: {count}max |difference| "
                     f"{diffs or '-'}" if diffs or check.passed else f"  check:   FAILED{where}")
    return lines


def export(argv: list[str], debug: bool = False) -> int:
    """``lit-vision export``: 0 on success, 2 with one line on stderr for bad input, 1 when the check fails."""
    args = _parser().parse_args(argv)

    def fail(message: str, code: int = 2) -> int:
        print(f"lit-vision export: error: {' '.join(message.split())}", file=sys.stderr)
        return code

    if args.image_size is not None and len(args.image_size) not in (1, 2):
        return fail(f"--image_size takes N or H W, got {len(args.image_size)} numbers")
    if args.opset is not None and args.format != "onnx":
        return fail(f"--opset is for --format onnx, not {args.format}")
    from lit_vision.cli.checkpoints import CheckpointError
    from lit_vision.export import ExportError, ExportFormatError, export_task, load_task
    from lit_vision.export.check import image_files
    from lit_vision.export.exporter import default_output

    try:
        images = image_files(args.images) if args.images else []
        task, data = load_task(args.ckpt_path)
        output = Path(args.output) if args.output else default_output(args.ckpt_path, args.format)
        result = export_task(task, args.format, output, image_size=args.image_size, opset=args.opset,
                             check=args.check, images=images, normalize_inside=args.normalize_inside,
                             onnx_exporter=args.onnx_exporter, data=data, checkpoint=args.ckpt_path)
    except (CheckpointError, ExportError, ExportFormatError, ValueError, OSError) as err:
        if debug:
            raise
        return fail(str(err))
    print("\n".join(_summary(result)))
    if result.check is not None and not result.check.passed:
        return fail(f"the export does not reproduce the model: {result.check.failure} (the file is kept; "
                    f"{result.sidecar} has the details)", code=1)
    return 0


__all__ = ["export"]
