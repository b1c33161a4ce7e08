"""ValidationPictures: what the model does, drawn at every validation (and after ``test``), for every logger.

Two panels per evaluation: a fixed, seeded choice of ``num_images`` images (the same ones every epoch, so
progress is visible) and the ``worst_k`` images by the task's per-item error (loss), each with ground truth
and prediction side by side (:mod:`lit_vision.visualize.pictures`); plus the task's per-class report
(:mod:`lit_vision.visualize.report`). They go to W&B as media and tables, to TensorBoard as images, and to
``<run dir>/pictures`` and ``<run dir>/analysis`` as PNG/CSV files (:mod:`lit_vision.visualize.sinks`).

Bounded cost: the pictures are built from what ``validation_step`` already returned (no second forward pass,
and with the weights validation used, EMA included); only the chosen and worst-so-far items are copied to the
CPU; matplotlib figures are drawn once, at the end of ``fit`` / ``validate`` / ``test``
(``benchmarks/pictures_overhead.py``). Under DDP each rank keeps its shard's pictures; rank 0 gathers and logs.
"""

from __future__ import annotations

import heapq
import traceback
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from lit_vision import distributed
from lit_vision.visualize.draw import (
    WHITE,
    caption,
    class_colors,
    grid,
    load_png,
    save_png,
)
from lit_vision.visualize.report import write_report_files
from lit_vision.visualize.sinks import (
    log_files_to_loggers,
    log_panel,
    log_report,
    run_directory,
)


class ValidationPictures(Callback):
    """Validation/test pictures and per-class analysis for every task and logger (on by default in the CLI).

    Args:
        num_images: how many fixed validation images to draw (chosen once with ``seed``); 0: none.
        worst_k: how many of the worst images by the task's per-item error to draw; 0: none.
        seed: picks the fixed images.
        every_n_epochs: draw at every n-th validation of ``fit`` (``validate``/``test`` always draw).
        max_side: pictures larger than this (longer side, pixels) are shrunk before drawing and gathering.
        analysis: log the per-class table, confusion matrix and PR curves (W&B every validation; PNG/CSV
            files and figures at the end of the run).
        files: also write the panels as PNG files under ``<run dir>/pictures``.
    """

    def __init__(self, num_images: int = 16, worst_k: int = 8, seed: int = 0, every_n_epochs: int = 1,
                 max_side: int = 512, analysis: bool = True, files: bool = True) -> None:
        if num_images < 0 or worst_k < 0 or every_n_epochs < 1 or max_side < 16:
            raise ValueError("num_images and worst_k must be >= 0, every_n_epochs >= 1, max_side >= 16")
        self.num_images, self.worst_k, self.seed = num_images, worst_k, seed
        self.every_n_epochs, self.max_side = every_n_epochs, max_side
        self.analysis, self.files = analysis, files
        self._active = False
        self._failed = False
        self._order: list[int] = []
        self._chosen: set[int] = set()
        self._position = 0
        self._panel: dict[int, Any] = {}
        self._worst: list[tuple[float, int, Any]] = []  # min-heap of (error, index, picture)
        self.last_files: list[Any] = []  # what the last evaluation wrote (paths), for the CLI and tests
        self.written: list[Any] = []  # every file this callback wrote
        self.last_panel: list[int] = []  # dataset indices of the last fixed panel
        self.last_worst: list[tuple[float, int]] = []  # (error, dataset index) of the last worst-k panel, worst first
        self._pending_worst: tuple[Any, ...] | None = None  # the last validation's worst-k, drawn at the end of fit

    # ------------------------------------------------------------------ collecting during the loop
    def _start(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        fitting = trainer.state.fn == "fit"
        self._active = (not self._failed and not trainer.sanity_checking and (self.num_images or self.worst_k)
                        and (not fitting or trainer.current_epoch % self.every_n_epochs == 0)
                        and hasattr(pl_module, "picture"))
        self._panel, self._worst, self._position = {}, [], 0
        if not self._active:
            return
        loaders = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        if loader is None:
            self._active = False
            return
        # The dataset index of each item in loader order (Lightning's DistributedSampler under DDP included).
        batches = loader.batch_sampler if loader.batch_sampler is not None else [[i] for i in loader.sampler]
        self._order = [int(i) for b in batches for i in b]
        n = len(loader.dataset)
        generator = torch.Generator().manual_seed(self.seed)
        self._chosen = set(torch.randperm(n, generator=generator)[:self.num_images].tolist())

    def _collect(self, pl_module: LightningModule, outputs: Any, batch: Any, dataloader_idx: int) -> None:
        if not self._active or dataloader_idx != 0:
            return
        if not isinstance(outputs, dict) or "errors" not in outputs:
            self._warn_once(f"{type(pl_module).__name__}'s evaluation step returns no dict with 'errors': no pictures")
            return
        errors = outputs["errors"].detach().float().cpu().tolist()
        indices = self._order[self._position:self._position + len(errors)]
        self._position += len(errors)
        for j, (index, error) in enumerate(zip(indices, errors)):
            wanted_panel = index in self._chosen and index not in self._panel
            worse = self.worst_k and error == error and (len(self._worst) < self.worst_k or error > self._worst[0][0])
            if not (wanted_panel or worse) or any(i == index for _, i, _ in self._worst):
                continue  # DistributedSampler pads with repeated indices
            picture = pl_module.picture(batch, outputs, j)
            if picture is None:
                self._active = False
                return
            if hasattr(picture, "shrink"):
                picture = picture.shrink(self.max_side)
            if wanted_panel:
                self._panel[index] = picture
            if worse:
                item = (float(error), index, picture)
                (heapq.heapreplace if len(self._worst) >= self.worst_k else heapq.heappush)(self._worst, item)

    # ------------------------------------------------------------------ logging at the end
    def _finish(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        report = getattr(pl_module, "eval_reports", {}).get(stage) if self.analysis else None
        if not self._active and report is None:
            return
        panel, worst = self._gather(trainer) if self._active else ({}, [])
        self._active = False
        if not trainer.is_global_zero:
            return
        try:
            self._log(trainer, pl_module, stage, panel, worst, report)
        except Exception as err:  # noqa: BLE001 - a picture must never end a night's training
            self._failed = True
            rank_zero_warn(f"ValidationPictures failed and is now off for this run: {err!r}\n"
                           f"{''.join(traceback.format_exc(limit=-3))}")

    def _gather(self, trainer: Trainer) -> tuple[dict[int, Any], list[tuple[float, int, Any]]]:
        panel, worst = dict(self._panel), list(self._worst)
        if distributed.is_distributed() and trainer.world_size > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (panel, worst))
            panel, seen, worst = {}, set(), []
            for p, w in parts:
                panel.update(p)
                for item in w:
                    if item[1] not in seen:
                        seen.add(item[1])
                        worst.append(item)
        worst = sorted(worst, key=lambda t: (-t[0], t[1]))[:self.worst_k]
        return panel, worst

    def _log(self, trainer: Trainer, pl_module: LightningModule, stage: str, panel: dict[int, Any],
             worst: list[tuple[float, int, Any]], report: Any) -> None:
        names = list(getattr(pl_module, "class_names", []))
        info = getattr(pl_module, "data_info", None)
        task = type(pl_module).__name__
        palette = info.palette if info is not None and task == "SemanticSegmenter" else None
        colors = class_colors(max(1, len(names)), palette)
        directory = run_directory(trainer)
        fitting = trainer.state.fn == "fit"
        suffix = f"_epoch{trainer.current_epoch:03d}" if fitting else ""
        written: list[Any] = []
        self.last_panel, self.last_worst = sorted(panel), [(e, i) for e, i, _ in worst]
        if panel:
            pictures = [panel[i] for i in sorted(panel)]
            image = grid([p.render(names, colors) for p in pictures])
            log_panel(trainer, f"{stage}/pictures", image, pictures, names)
            if self.files:
                written.append(save_png(image, directory / "pictures" / f"{stage}{suffix}.png"))
        if worst:
            pictures = [p for _, _, p in worst]
            labels = [f"#{i}  error {e:.3f}" for e, i, _ in worst]
            if fitting:  # W&B gets them every epoch (no drawing); the panel is drawn once, at the end of fit
                log_panel(trainer, f"{stage}/worst", None, pictures, names, captions=labels)
                self._pending_worst = (stage, pictures, labels, names, colors, suffix)
            else:
                written += self._draw_worst(trainer, stage, pictures, labels, names, colors, suffix, log=True)
        if report is not None:
            log_report(trainer, report)
            if not fitting:  # validate/test: the figures now; fit draws them once at its end (on_fit_end)
                written += self._write_analysis(trainer, report)
        self.last_files = written
        self.written += written

    def _draw_worst(self, trainer: Trainer, stage: str, pictures: list[Any], labels: list[str], names: list[str],
                    colors: list[Any], suffix: str, log: bool) -> list[Any]:
        image = grid([caption(p.render(names, colors), [(t, WHITE)], font_size=11) for p, t in zip(pictures, labels)])
        if log:
            log_panel(trainer, f"{stage}/worst", image, pictures, names, captions=labels)
        else:
            log_files_to_loggers(trainer, {f"{stage}/worst": image}, to_wandb=False)
        if not self.files:
            return []
        return [save_png(image, run_directory(trainer) / "pictures" / f"{stage}_worst{suffix}.png")]

    def _write_analysis(self, trainer: Trainer, report: Any) -> list[Any]:
        written = write_report_files(report, run_directory(trainer) / "analysis", prefix=report.stage)
        pngs = {f"{report.stage}/analysis/{p.stem.removeprefix(report.stage + '_')}": load_png(p)
                for p in written if p.suffix == ".png"}
        log_files_to_loggers(trainer, pngs)
        return written

    def _warn_once(self, message: str) -> None:
        if not self._failed:
            rank_zero_warn(message)
        self._failed = True
        self._active = False

    # ------------------------------------------------------------------ Lightning hooks
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module, "val")

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(pl_module, outputs, batch, dataloader_idx)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._finish(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module, "test")

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(pl_module, outputs, batch, dataloader_idx)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish(trainer, pl_module, "test")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The worst-k panel and the analysis figures of the last validation, drawn once: rendering them every
        epoch would cost more than the rest of the pictures together (matplotlib, one label per box)."""
        report = getattr(pl_module, "eval_reports", {}).get("val") if self.analysis else None
        pending, self._pending_worst = self._pending_worst, None
        if not trainer.is_global_zero or self._failed:
            return
        try:
            self.last_files = self._draw_worst(trainer, *pending, log=False) if pending else []
            if report is not None:
                self.last_files += self._write_analysis(trainer, report)
            self.written += self.last_files
        except Exception as err:  # noqa: BLE001
            rank_zero_warn(f"ValidationPictures could not draw the end-of-fit pictures and figures: {err!r}")
