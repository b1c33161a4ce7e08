"""Segmentation of plain images with nothing but a checkpoint: the predict-only DataModule.

The VOC/COCO DataModules need annotations even to predict; a trained segmenter carries its class names
(checkpoint hyper-parameters), and ``lit-vision predict --ckpt_path`` fills ``class_names`` from it:

    lit-vision predict --config recipe.yaml --data SegmentationImagesDataModule \\
        --data.predict_paths photos/ --ckpt_path best.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lit_vision.constants import IGNORE_INDEX
from lit_vision.contracts import DataInfo
from lit_vision.data.base import PredictOnlyDataModule
from lit_vision.data.segmentation.base import SegmentationDataset, check_class_names
from lit_vision.data.segmentation.transforms import (
    segmentation_collate,
    segmentation_eval_transforms,
)
from lit_vision.palette import voc_palette


class SegmentationImagesDataModule(PredictOnlyDataModule):
    """Images to segment (``predict`` only), resized and padded as the evaluation preset does.

    Items have no ``"mask"``; ``meta`` maps each prediction back to its image. Use the model's ``image_size``.

    Args:
        predict_paths: folders (searched recursively) or image files.
        image_size: longer side after resizing; the image is padded bottom/right to a square.
        mean, std: normalisation; ``None``: what the model's pretrained weights expect (as in
            :class:`~lit_vision.data.segmentation.base.SegmentationDataModule`).
        palette: flat ``[r, g, b] * 256`` list for writing predicted masks; default the VOC palette.
        **kwargs: ``class_names``, ``verify_images`` and loader arguments (see
            :class:`~lit_vision.data.base.PredictOnlyDataModule`).
    """

    collate_fn = staticmethod(segmentation_collate)
    alternatives = "VOCSegmentationDataModule or COCOSegmentationDataModule"

    ignore_index: int = IGNORE_INDEX

    def __init__(self, predict_paths: str | list[str], image_size: int = 512, palette: list[int] | None = None,
                 batch_size: int = 8, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(predict_paths=predict_paths, batch_size=batch_size, **kwargs)
        self.save_hyperparameters(ignore=["class_names"])
        self._class_names = check_class_names(self._class_names or [])

    def predict_dataset(self, paths: list[str]) -> SegmentationDataset:
        mean, std = self.resolve_normalization(self.hparams.mean, self.hparams.std)
        return SegmentationDataset(paths, None, self.num_classes or 0,
                                   segmentation_eval_transforms(self.hparams.image_size, mean=mean, std=std),
                                   "predict_paths")

    @property
    def palette(self) -> list[int]:
        """Flat ``[r, g, b] * 256`` palette for writing predicted masks (VOC's unless configured)."""
        return list(self.hparams.palette) if self.hparams.palette is not None else voc_palette()

    def data_info(self) -> DataInfo:
        # No palette unless configured: the checkpoint's (the training data's colours) then wins over VOC's.
        palette = list(self.hparams.palette) if self.hparams.palette is not None else None
        return DataInfo(class_names=list(self.class_names or []), ignore_index=IGNORE_INDEX, palette=palette,
                        extra={"normalize": self.resolve_normalization(self.hparams.mean, self.hparams.std)})
