"""Writes segmentation predictions as palette PNG masks plus one JSON line per image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from PIL import Image

from lit_vision.callbacks.prediction_writer import JsonlPredictionWriter
from lit_vision.palette import pil_mask, voc_palette


class SegmentationMaskWriter(JsonlPredictionWriter):
    """``<output_dir>/masks/<image stem>.png`` (palette PNG of class indices at the original image size)
    and ``predictions.jsonl`` lines ``{"path", "mask", "classes", "pixels"}`` (``mask`` = the PNG's path).

    The palette is the one the data handed the task (:attr:`~lit_vision.contracts.DataInfo.palette`; VOC's by
    default), so the PNGs open in any viewer with
    the dataset's usual colours and read back as class indices (``np.array(Image.open(png))``). More than
    256 classes do not fit a palette: those masks are written as 16-bit greyscale PNGs. Two images with
    the same stem get ``_1``, ``_2``, ... suffixes, in dataset order; the names are given out from the dataset's
    list of images when it has one (``image_paths``), so under DDP, where each rank writes its own share, two
    ranks never pick the same name.

    Args:
        output_dir: folder for ``masks/`` and the JSON lines; default: the run directory.
        filename: name of the JSON-lines file.
    """

    def __init__(self, output_dir: str | None = None, filename: str = "predictions.jsonl") -> None:
        super().__init__(output_dir, filename)
        self.mask_dir: Path | None = None
        self._palette: list[int] | None = None
        self._used: set[str] = set()
        self._names: dict[tuple[int, int], str] = {}  # (dataloader, dataset index) -> mask name

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        assert self.path is not None
        self.mask_dir = self.path.parent / "masks"
        self.mask_dir.mkdir(parents=True, exist_ok=True)
        self._used, self._names = set(), {}
        for loader_idx, loader in enumerate(_as_list(trainer.predict_dataloaders)):
            paths = getattr(getattr(loader, "dataset", None), "image_paths", None)
            if isinstance(paths, (list, tuple)):  # every rank names every image the same way, in dataset order
                for index, path in enumerate(paths):
                    self._names[(loader_idx, index)] = self._unique(Path(path).stem)
        # The palette reaches the task through the data contract (DataInfo), or from its checkpoint.
        info = getattr(pl_module, "data_info", None)
        palette = info.palette if info is not None and info.palette is not None else voc_palette()
        self._palette = [int(v) for v in palette]

    def _unique(self, stem: str) -> str:
        name, n = stem, 0
        while name in self._used:
            n += 1
            name = f"{stem}_{n}"
        self._used.add(name)
        return name

    def _mask_path(self, image_path: str | None, index: int, dataloader_idx: int = 0) -> Path:
        assert self.mask_dir is not None
        name = self._names.get((dataloader_idx, index))
        if name is None:
            name = self._unique(Path(image_path).stem if image_path else f"image_{index:06d}")
        return self.mask_dir / f"{name}.png"

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any, batch_indices: Any,
                           batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        assert self.path is not None
        rows = prediction if isinstance(prediction, list) else [prediction]
        indices = list(batch_indices) if batch_indices else [batch_idx * len(rows) + i for i in range(len(rows))]
        lines = []
        for index, row in zip(indices, rows):
            mask = np.asarray(row["mask"])
            target = self._mask_path(row.get("path"), int(index), dataloader_idx)
            if mask.max(initial=0) < 256:
                image = pil_mask(torch.from_numpy(mask), self._palette)
            else:
                image = Image.fromarray(mask.astype(np.uint16))
            image.save(target)
            lines.append({k: v for k, v in row.items() if k != "mask"} | {"mask": str(target)})
        with self.path.open("a") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")


def _as_list(loaders: Any) -> list[Any]:
    if loaders is None:
        return []
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
