"""``lit-vision``: LightningCLI with short class names, data-to-model links and task-aware outputs.

    lit-vision fit --config experiments/classification/quickstart.yaml
    lit-vision fit --model ImageClassifier --model.backbone tv/resnet50 \
        --data ImageFolderDataModule --data.root /data/imagenette --trainer.callbacks+=EMA
    lit-vision predict --config recipe.yaml --ckpt_path runs/.../best.ckpt --data.predict_paths photos/
    lit-vision predict --config det.yaml --ckpt_path best.ckpt --trainer.callbacks+=CocoResultsWriter
    lit-vision eval-coco --gt instances_val.json --results detections.json [--iou-type segm]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

# Imported for their side effect: LightningCLI resolves short class names among imported subclasses.
import lit_vision.callbacks  # noqa: F401
import lit_vision.data  # noqa: F401
import lit_vision.loggers  # noqa: F401
import lit_vision.tasks  # noqa: F401
from lit_vision.callbacks.coco_results_writer import CocoResultsWriter
from lit_vision.callbacks.prediction_writer import JsonlPredictionWriter
from lit_vision.evaluation.coco import IOU_TYPES, CocoEvaluationError, evaluate_coco, format_stats


class LitVisionCLI(LightningCLI):
    """LightningCLI that links ``num_classes``/``class_names`` from the data into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The user never types num_classes: the DataModule knows it once it has scanned its data.
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Prediction from a checkpoint alone: hand the checkpoint's class names to a DataModule without labels.

        Applies to any DataModule that takes ``class_names`` but got none and has no annotation source
        (``root`` or ``*annotations`` unset): ``ImageFolderDataModule(root=None)``,
        ``DetectionImagesDataModule``. Lightning has already put the checkpoint's hyper-parameters into
        the model's arguments (``--ckpt_path``), so that is where the names are.
        """
        if self.subcommand is None:
            return
        cfg = self.config[self.subcommand]
        data_args = cfg.get("data", {}).get("init_args") if cfg.get("data") else None
        model_args = cfg.get("model", {}).get("init_args") if cfg.get("model") else None
        if data_args is None or model_args is None:
            return
        wants_names = "class_names" in data_args and data_args.get("class_names") is None
        has_source = any(value is not None for key, value in data_args.items()
                         if key == "root" or key.endswith("annotations"))
        if wants_names and not has_source and model_args.get("class_names") is not None:
            data_args["class_names"] = list(model_args["class_names"])

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        callbacks = trainer.callbacks
        self._monitor_best_checkpoint(trainer)
        if self.subcommand == "predict" and not any(isinstance(c, JsonlPredictionWriter) for c in callbacks):
            callbacks.append(self._default_prediction_writer())
        return trainer

    def _default_prediction_writer(self) -> JsonlPredictionWriter:
        """The task's own writer (``prediction_writer``, e.g. masks as PNGs), else JSON lines."""
        target = getattr(self.model, "prediction_writer", None)
        if target is None:
            return JsonlPredictionWriter()
        module, _, name = target.rpartition(".")
        return getattr(importlib.import_module(module), name)()

    def _monitor_best_checkpoint(self, trainer: Trainer) -> None:
        """Without a configured ModelCheckpoint, keep the best epoch by the task's metric (plus ``last.ckpt``).

        Lightning's default checkpoint only keeps the latest epoch, which is rarely the one a researcher
        wants to evaluate or predict with.
        """
        monitor = getattr(self.model, "monitor_metric", None)
        checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
        if monitor is None or len(checkpoints) != 1 or checkpoints[0].monitor is not None:
            return
        configured = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        if any("ModelCheckpoint" in str(c.get("class_path", "")) for c in (configured.trainer.callbacks or [])):
            return  # the user asked for an unmonitored checkpoint explicitly
        best = ModelCheckpoint(monitor=monitor, mode="max", save_top_k=1, save_last=True,
                               filename="best-epoch{epoch:03d}-" + monitor.replace("/", "_") + "={" + monitor + ":.4f}",
                               auto_insert_metric_name=False)
        trainer.callbacks[trainer.callbacks.index(checkpoints[0])] = best

    def after_fit(self) -> None:
        """Print the final validation metrics and where the best checkpoint is."""
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if metrics:
            print("\nValidation summary (last epoch):")
            for k in sorted(metrics):
                print(f"  {k:<16} {metrics[k]:.4f}")
        ckpt = trainer.checkpoint_callback
        if isinstance(ckpt, ModelCheckpoint) and ckpt.best_model_path:
            score = f"{float(ckpt.best_model_score):.4f}" if ckpt.best_model_score is not None else "n/a"
            print(f"  best {ckpt.monitor or 'checkpoint'}: {score}  ->  {ckpt.best_model_path}")

    def after_predict(self) -> None:
        """Print where the prediction writers put their files (JSON lines; COCO results when asked for)."""
        if not self.trainer.is_global_zero:
            return
        for c in self.trainer.callbacks:
            if isinstance(c, JsonlPredictionWriter) and c.path is not None:
                print(f"Predictions written to {c.path}")
                if getattr(c, "mask_dir", None) is not None:
                    print(f"  masks (palette PNGs) in {c.mask_dir}")
        for c in self.trainer.callbacks:
            if isinstance(c, CocoResultsWriter) and c.path is not None:
                print(f"COCO results written to {c.path}")
                if c.images_path is not None:
                    print(f"  image ids of the plain images listed in {c.images_path}")


def run_cli(args: list[str] | dict | None = None, run: bool = True) -> LitVisionCLI:
    """Build (and by default run) the CLI; ``args`` as on the command line, or ``None`` for ``sys.argv``."""
    return LitVisionCLI(
        args=args,
        trainer_defaults={
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
        },
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf"},
        auto_configure_optimizers=False,
        run=run,
    )


def eval_coco(argv: list[str]) -> int:
    """``lit-vision eval-coco``: evaluate any COCO results file with the code the detection task uses."""
    parser = argparse.ArgumentParser(
        prog="lit-vision eval-coco",
        description="COCO AP/AR of a results file against ground truth (identical to pycocotools).",
    )
    parser.add_argument("--gt", required=True, help="COCO instances JSON (ground truth)")
    parser.add_argument("--results", required=True, help="COCO results JSON (list of detections)")
    parser.add_argument("--iou-type", choices=IOU_TYPES, default="bbox")
    parser.add_argument("--per-class", action="store_true", help="also print AP per category")
    parser.add_argument("--output", help="write the statistics as JSON to this file")
    args = parser.parse_args(argv)
    try:
        stats = evaluate_coco(args.gt, args.results, iou_type=args.iou_type, per_class=args.per_class)
    except (FileNotFoundError, CocoEvaluationError) as err:
        print(f"lit-vision eval-coco: error: {err}", file=sys.stderr)
        return 2
    print(format_stats(stats))
    for name, ap in stats.get("per_class", {}).items():
        print(f"  AP {name:<24} {ap:.3f}")
    if args.output:
        Path(args.output).write_text(json.dumps({"iou_type": args.iou_type, **stats}, indent=2))
        print(f"Statistics written to {args.output}")
    return 0


def main() -> None:
    """Entry point of the ``lit-vision`` console script: ``eval-coco`` or a LightningCLI subcommand."""
    if len(sys.argv) > 1 and sys.argv[1] == "eval-coco":
        sys.exit(eval_coco(sys.argv[2:]))
    run_cli()


if __name__ == "__main__":
    main()
