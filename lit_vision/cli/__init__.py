"""``lit-vision``: the command line. Starts fast: only the subcommand that runs imports what it needs.

    lit-vision fit --config experiments/classification/quickstart.yaml
    lit-vision fit --model ImageClassifier --model.backbone tv/resnet50 \\
        --data ImageFolderDataModule --data.root /data/imagenette --trainer.callbacks+=EMA
    lit-vision predict --config recipe.yaml --ckpt_path runs/.../best.ckpt --data.predict_paths photos/
    lit-vision eval-coco --gt instances_val.json --results detections.json [--iou-type segm]

``lit-vision --help`` is answered without importing torch or Lightning. ``fit``/``validate``/``test``/
``predict`` are LightningCLI subcommands (:mod:`lit_vision.cli.lightning_cli`); a bad argument or a data
check failure prints one clear message (``--debug`` or ``LIT_VISION_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import atexit
import difflib
import gc
import os
import sys
from typing import Any

LIGHTNING_SUBCOMMANDS: dict[str, str] = {
    "fit": "train a model (and validate it every epoch)",
    "validate": "evaluate a model on the validation split",
    "test": "evaluate a model on the test split (the validation split when there is none)",
    "predict": "write predictions (JSON lines; masks as PNGs; COCO results with CocoResultsWriter)",
}
OTHER_SUBCOMMANDS: dict[str, str] = {
    "eval-coco": "COCO AP/AR of a results file against ground truth (identical to pycocotools)",
    "browse-data": "draw augmented training samples and dataset statistics (PNG + text) before training",
    "plot": "draw training/validation curves of runs (metrics.csv) to a PNG",
    "export": "export a checkpoint to ONNX, TorchScript or a torch.export program, checked against the model",
    "optimize-data": "write an ImageFolder, COCO or VOC set into LitData shards for the streaming DataModules",
}
DEBUG_ENV = "LIT_VISION_DEBUG"


def top_level_help() -> str:
    commands = {**LIGHTNING_SUBCOMMANDS, **OTHER_SUBCOMMANDS}
    width = max(len(name) for name in commands) + 1
    rows = "\n".join(f"    {name:<{width}} {text}" for name, text in commands.items())
    return f"""usage: lit-vision <command> [options]

A PyTorch Lightning research framework for computer vision: classification, detection and
segmentation from YAML recipes.

commands:
{rows}

options:
    -h, --help   show this message; `lit-vision <command> --help` lists a command's options
    --version    print the versions of lit_vision, torch and Lightning
    --debug      on an error, show the full traceback (or set {DEBUG_ENV}=1)

examples:
    lit-vision fit --config experiments/classification/quickstart.yaml
    lit-vision fit --config experiments/detection/quickstart.yaml --model.architecture FCOS
    lit-vision predict --config experiments/classification/quickstart.yaml --ckpt_path best.ckpt \\
        --data.predict_paths photos/
    lit-vision eval-coco --gt instances_val.json --results results.json
    lit-vision browse-data --config experiments/detection/quickstart.yaml --num_images 25
    lit-vision plot runs/quickstart --metrics val/acc1 train/loss_step -o curves.png
    lit-vision export --ckpt_path best.ckpt --format onnx
    lit-vision optimize-data --format voc --root VOCdevkit/VOC2012 --output shards/voc"""


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("lit_vision", "torch", "torchvision", "lightning", "timm"):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            out.append(f"{name} (not installed)")
    return ", ".join(out)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lit-vision`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(top_level_help())
        sys.exit(0 if argv else 2)
    if argv[0] == "--version":
        print(_versions())
        sys.exit(0)
    command = argv[0]
    if command == "eval-coco":
        from lit_vision.cli.eval_coco import eval_coco

        sys.exit(eval_coco(argv[1:], debug=debug))
    if command == "browse-data":
        from lit_vision.cli.browse_data import browse_data

        sys.exit(browse_data(argv[1:], debug=debug))
    if command == "plot":
        from lit_vision.cli.plot import plot

        sys.exit(plot(argv[1:], debug=debug))
    if command == "export":
        from lit_vision.cli.export import export

        sys.exit(export(argv[1:], debug=debug))
    if command == "optimize-data":
        from lit_vision.cli.optimize_data import optimize_data_command

        sys.exit(optimize_data_command(argv[1:], debug=debug))
    if command not in LIGHTNING_SUBCOMMANDS:
        known = [*LIGHTNING_SUBCOMMANDS, *OTHER_SUBCOMMANDS]
        close = difflib.get_close_matches(command, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"usage: lit-vision <command> [options]   (commands: {', '.join(known)})\n"
              f"lit-vision: error: unknown command '{command}'.{hint}", file=sys.stderr)
        sys.exit(2)
    from lit_vision.cli.lightning_cli import run_main

    sys.argv = [sys.argv[0], *argv]  # LightningCLI also reads sys.argv; without --debug, it sees what it parses
    # At exit (after non-daemon threads are joined, before Python's last garbage collections), freeze the heap:
    # those collections would traverse every object torch, dynamo and Lightning created, ~1 s on 2 cores
    # (benchmarks/README.md, "framework tax"). All that is skipped is collecting reference cycles the operating
    # system frees with the process anyway; atexit and weakref.finalize callbacks (temporary directories) still
    # run. Registered at exit, not done now: main() called in a long-lived process (tests, a notebook) must not
    # keep its garbage. Unregistered first: main() called again in the same process adds it once, not per call.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    # During the run, too, the objects the imports just created (~470,000: torch, dynamo, sympy, Lightning) are set
    # aside from the collector: otherwise each full collection traverses them all (one took 0.22 s of the digits
    # quickstart's start-up; 0.02 s frozen). They live as long as their modules anyway. Undone when main() returns
    # (a test or notebook keeps a collectable heap), and left alone when the caller froze its own heap.
    froze = gc.get_freeze_count() == 0
    if froze:
        gc.freeze()
    try:
        code = run_main(argv, debug=debug)
    finally:
        if froze:
            gc.unfreeze()
    sys.exit(code)


def run_cli(args: list[str] | dict | None = None, run: bool = True) -> Any:
    """Build (and by default run) the LightningCLI; ``args`` as on the command line (see
    :func:`lit_vision.cli.lightning_cli.run_cli`). Errors are raised, not condensed: for tests and notebooks."""
    from lit_vision.cli.lightning_cli import run_cli as _run_cli

    return _run_cli(args, run=run)


__all__ = ["main", "run_cli", "top_level_help"]
