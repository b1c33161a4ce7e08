"""Where pictures and reports go: W&B media, TensorBoard images, PNG/CSV files in the run directory.

Each logger gets the form its dashboard understands: W&B ``wandb.Image`` lists (box groups and mask layers
with class labels), a ``wandb.Table`` per class, the confusion matrix and PR curves as W&B charts;
TensorBoard the rendered panel as an image and the table as markdown text; and every run its files on disk
(``<run dir>/pictures``, ``<run dir>/analysis``), whatever the logger. Called on rank 0 only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torch import Tensor

from lit_vision.visualize.report import EvalReport


def run_directory(trainer: Trainer) -> Path:
    """The folder a run's pictures and analysis files go to: the CSV/TensorBoard version folder, the W&B run's
    files folder (so they sync to the dashboard's Files tab) or the Trainer's root folder without a logger."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            return Path(logger.experiment.dir)
        if getattr(logger, "log_dir", None):
            return Path(logger.log_dir)
    return Path(trainer.default_root_dir)


def log_panel(trainer: Trainer, key: str, panel: Tensor | None, pictures: Sequence[Any], class_names: Sequence[str],
              captions: Sequence[str | None] | None = None) -> None:
    """A rendered panel to TensorBoard (``None``: not now), the pictures as W&B media (``key`` such as
    ``val/pictures``)."""
    step = trainer.global_step
    captions = list(captions) if captions is not None else [None] * len(pictures)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_metrics({key: [p.to_wandb(class_names, caption=c) for p, c in zip(pictures, captions)]},
                               step=step)
        elif isinstance(logger, TensorBoardLogger) and panel is not None:
            logger.experiment.add_image(key, panel, global_step=step)


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not np.isfinite(value) else value


def log_report(trainer: Trainer, report: EvalReport) -> None:
    """The per-class table, confusion matrix and PR curves to W&B (cheap: tables, no rendering) and the table
    as markdown text to TensorBoard."""
    step, stage = trainer.global_step, report.stage
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            _log_wandb_report(logger, report, step)
        elif isinstance(logger, TensorBoardLogger):
            header = "| " + " | ".join(report.columns) + " |\n|" + "---|" * len(report.columns) + "\n"
            rows = "".join("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r) + " |\n"
                           for r in report.rows)
            logger.experiment.add_text(f"{stage}/per_class", header + rows, global_step=step)


def _log_wandb_report(logger: WandbLogger, report: EvalReport, step: int) -> None:
    import wandb

    stage = report.stage
    media: dict[str, Any] = {
        f"{stage}/per_class": wandb.Table(columns=report.columns, data=[[_finite(v) for v in r] for r in report.rows])}
    if report.confusion is not None:
        names, cm = report.class_names, report.confusion.tolist()
        data = [[names[i], names[j], cm[i][j]] for i in range(len(names)) for j in range(len(names))]
        # wandb.plot.confusion_matrix wants every prediction (millions of pixels for segmentation): the same
        # chart from the counts we already have.
        media[f"{stage}/confusion_matrix"] = wandb.plot_table(
            "wandb/confusion_matrix/v1", wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=data),
            {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
            {"title": f"{stage} confusion matrix"})
    if report.pr_precision is not None and report.pr_recall is not None:
        shown = [k for k in range(len(report.class_names)) if (report.pr_precision[k] > -1).any()]
        if shown:
            media[f"{stage}/pr_curves"] = wandb.plot.line_series(
                xs=report.pr_recall.tolist(), ys=[report.pr_precision[k].tolist() for k in shown],
                keys=[report.class_names[k] for k in shown], title=f"{stage} precision-recall (IoU 0.50)",
                xname="recall")
    logger.log_metrics(media, step=step)


def log_files_to_loggers(trainer: Trainer, images: dict[str, Tensor], to_wandb: bool = True) -> None:
    """Rendered figures (``key -> uint8 [3, H, W]``) to TensorBoard and (``wandb``) W&B as images."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and to_wandb:
            import wandb

            logger.log_metrics({k: wandb.Image(v.permute(1, 2, 0).numpy()) for k, v in images.items()},
                               step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            for k, v in images.items():
                logger.experiment.add_image(k, v, global_step=trainer.global_step)
