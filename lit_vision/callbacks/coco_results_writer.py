"""Writes a detector's predictions over the predict epoch as one COCO results file.

A COCO results file is a JSON list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` in
original image pixels: what ``lit-vision eval-coco`` (and pycocotools' ``loadRes``) read. The rows come
from :meth:`~lit_vision.tasks.ObjectDetector.predict_step` (``image_id``, ``boxes`` XYXY, ``label_ids``,
``scores``), unrounded, so predicting a COCO validation split and evaluating the file gives exactly the
numbers ``validate`` logs.

Plain images (``image_id == -1``, e.g. ``--data.predict_paths photos/``) have no COCO id. They get ids
``1, 2, ...`` in dataset order (after the largest real id, if any), and a sidecar
``<results stem>.images.json`` lists ``{"id", "file_name"}`` for each, so the ids can be joined back to
files (or to a ground-truth file built for those images).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_warn

from lit_vision import distributed


def sidecar_path(results_path: Path) -> Path:
    """``results.json`` -> ``results.images.json``: where the ids given to plain images are listed."""
    return results_path.with_name(f"{results_path.stem}.images.json")


class CocoResultsWriter(BasePredictionWriter):
    """Collects detections during ``predict`` and writes them as a COCO results JSON list on rank 0.

    Category ids come from the task's :attr:`~lit_vision.contracts.DataInfo.label_to_category_id` (handed over
    by the COCO and VOC DataModules, and saved in the checkpoint), so a model trained on COCO's sparse ids
    1..90 writes those ids, also when predicting plain images from a checkpoint alone. Without any mapping
    the category id is ``label + 1``, with one warning saying so. Under DDP every rank's rows are gathered with
    ``all_gather_object``; images the sampler padded in twice are kept once.

    Args:
        output_path: the results file; default ``<run dir>/results.json``. Plain images also get the
            sidecar ``<stem>.images.json`` next to it (see the module docstring).
    """

    def __init__(self, output_path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_path = output_path
        self.path: Path | None = None
        self.images_path: Path | None = None
        self._rows: list[tuple[tuple[int, int], dict[str, Any]]] = []  # ((loader, dataset index), row)
        self._seen = 0

    # ------------------------------------------------------------------ collecting
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        self.path = Path(self.output_path) if self.output_path else folder / "results.json"
        self.images_path = None
        self._rows, self._seen = [], 0

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        rows = prediction if isinstance(prediction, list) else [prediction]
        indices = list(batch_indices) if batch_indices else [None] * len(rows)
        for index, row in zip(indices, rows):
            missing = {"image_id", "boxes", "label_ids", "scores"} - set(row)
            if missing:
                raise KeyError(f"CocoResultsWriter needs ObjectDetector.predict_step rows; these lack {sorted(missing)}")
            # Without the sampler's indices (a non-DataLoader), order of arrival stands in for the dataset order.
            self._rows.append(((dataloader_idx, self._seen if index is None else int(index)), row))
            self._seen += 1

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rows = self._rows
        if distributed.is_distributed():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        if not distributed.is_distributed() or dist.get_rank() == 0:
            info = getattr(pl_module, "data_info", None)  # the data contract (or the checkpoint's copy of it)
            self._write(rows, info.label_to_category_id if info is not None else None)
        self._rows = []

    # ------------------------------------------------------------------ converting
    def _category_ids(self, mapping: dict[int, int] | None) -> dict[int, int] | None:
        if mapping is None:
            rank_zero_warn("CocoResultsWriter: neither the data nor the checkpoint gives label_to_category_id; writing "
                           "category_id = "
                           "label + 1 (the contiguous label order, 1-based). Map them back if your categories differ.")
        return None if mapping is None else {int(k): int(v) for k, v in dict(mapping).items()}

    def to_results(
        self, rows: list[tuple[tuple[int, int], dict[str, Any]]], label_to_category_id: dict[int, int] | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """COCO results and the ``{"id", "file_name"}`` list of plain images.

        ``rows`` are ``((dataloader index, dataset index), predict_step row)`` pairs.

        Rows are deduplicated (by image id, or by path for plain images: DDP pads with repeats) and put in
        dataset order before plain images are numbered, so the ids do not depend on the number of ranks.
        """
        mapping = self._category_ids(label_to_category_id)
        unique: dict[tuple[str, Any], dict[str, Any]] = {}
        for index, row in sorted(rows, key=lambda r: r[0]):
            if int(row["image_id"]) >= 0:
                key: tuple[str, Any] = ("id", int(row["image_id"]))
            else:
                key = ("path", row["path"]) if row.get("path") is not None else ("index", index)
            unique.setdefault(key, row)
        real_ids = [int(row["image_id"]) for row in unique.values() if int(row["image_id"]) >= 0]
        next_id = max(real_ids, default=0) + 1
        results: list[dict[str, Any]] = []
        images: list[dict[str, Any]] = []
        for row in unique.values():
            image_id = int(row["image_id"])
            if image_id < 0:
                image_id, next_id = next_id, next_id + 1
                images.append({"id": image_id, "file_name": row.get("path")})
            for (x0, y0, x1, y1), label, score in zip(row["boxes"], row["label_ids"], row["scores"]):
                category = mapping[int(label)] if mapping is not None else int(label) + 1
                results.append({"image_id": image_id, "category_id": category,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
        return results, images

    def _write(self, rows: list[tuple[tuple[int, int], dict[str, Any]]], mapping: dict[int, int] | None) -> None:
        assert self.path is not None
        results, images = self.to_results(rows, mapping)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(results))
        sidecar = sidecar_path(self.path)
        if images:
            sidecar.write_text(json.dumps(images, indent=1))
            self.images_path = sidecar
        elif sidecar.is_file():
            sidecar.unlink()  # left by an earlier run on plain images: its ids would not match this file
