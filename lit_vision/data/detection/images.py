"""Detection on a folder of plain images, with nothing but a checkpoint: the predict-only DataModule.

The COCO and VOC DataModules need annotation files even to predict, because they read the class list
from them. A trained detector already carries its class names (they are hyper-parameters of the
checkpoint), so this DataModule takes them as ``class_names`` and the CLI fills them from ``--ckpt_path``:

    lit-vision predict --config recipe.yaml --data DetectionImagesDataModule \\
        --data.predict_paths photos/ --ckpt_path best.ckpt
"""

from __future__ import annotations

from typing import Any

from lit_vision.data.base import PredictOnlyDataModule
from lit_vision.data.detection.base import ImagePathsDataset
from lit_vision.data.detection.transforms import (
    detection_collate,
    detection_eval_transforms,
)


class DetectionImagesDataModule(PredictOnlyDataModule):
    """Images to detect objects in (``predict`` only), resized as the evaluation preset does.

    Items follow the detection contract with empty targets and ``image_id = -1``; predictions map back
    to each image's original pixels. Use the image size (and ``letterbox``) the model was trained with.

    Args:
        predict_paths: folders (searched recursively) or image files.
        image_size: longer side after resizing (side of the square canvas with ``letterbox``).
        letterbox: pad to a square canvas, as YOLO-style training does.
        batch_size: images per batch (per device).
        **kwargs: ``class_names``, ``verify_images`` and loader arguments (see
            :class:`~lit_vision.data.base.PredictOnlyDataModule`).
    """

    collate_fn = staticmethod(detection_collate)
    alternatives = "COCODetectionDataModule or VOCDetectionDataModule"

    def __init__(self, predict_paths: str | list[str], image_size: int = 640, letterbox: bool = False,
                 batch_size: int = 8, **kwargs: Any) -> None:
        super().__init__(predict_paths=predict_paths, batch_size=batch_size, **kwargs)
        self.save_hyperparameters(ignore=["class_names"])

    def predict_dataset(self, paths: list[str]) -> ImagePathsDataset:
        return ImagePathsDataset(paths, detection_eval_transforms(self.hparams.image_size, self.hparams.letterbox))
