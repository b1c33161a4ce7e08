"""Detection on a folder of plain images, with nothing but a checkpoint: the predict-only DataModule.

The COCO and VOC DataModules need annotation files even to predict, because they read the class list
from them. A trained detector already carries its class names (they are hyper-parameters of the
checkpoint), so this DataModule takes them as ``class_names`` and the CLI fills them from ``--ckpt_path``:

    lit-vision predict --model ObjectDetector --data DetectionImagesDataModule \\
        --data.predict_paths photos/ --data.image_size 640 --ckpt_path best.ckpt
"""

from __future__ import annotations

from collections.abc import Callable

from lit_vision.data.base import SplitDataModule
from lit_vision.data.checks import checkpoint_class_names, predict_only_paths
from lit_vision.data.detection_base import ImagePathsDataset
from lit_vision.data.detection_transforms import detection_collate, detection_eval_transforms


class DetectionImagesDataModule(SplitDataModule):
    """Images to detect objects in (``predict`` only), resized as the evaluation preset does.

    Items follow the detection contract with empty targets and ``image_id = -1``; predictions map back
    to each image's original pixels. Use the image size (and ``letterbox``) the model was trained with.

    Args:
        predict_paths: folders (searched recursively) or image files.
        image_size: longer side after resizing (side of the square canvas with ``letterbox``).
        letterbox: pad to a square canvas, as YOLO-style training does.
        class_names: the detector's classes in label order; filled from the checkpoint by ``lit-vision``.
        batch_size: images per batch (per device); ``eval_batch_size`` overrides it.
        verify_images: decode every image in ``setup``; ``None`` = only up to 20,000 files.
    """

    collate_fn = staticmethod(detection_collate)

    def __init__(
        self,
        predict_paths: str | list[str],
        image_size: int = 640,
        letterbox: bool = False,
        class_names: list[str] | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        verify_images: bool | None = None,
    ) -> None:
        super().__init__()
        # class_names belongs to the model's hyper-parameters (linked by the CLI), as for ImageFolderDataModule.
        self.save_hyperparameters(ignore=["class_names"])
        self._class_names = checkpoint_class_names(type(self).__name__, class_names)

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self._class_names)

    def eval_transform(self) -> Callable:
        return detection_eval_transforms(self.hparams.image_size, self.hparams.letterbox)

    def setup(self, stage: str | None = None) -> None:
        paths = predict_only_paths(type(self).__name__, stage, self.hparams.predict_paths, self.hparams.verify_images,
                                   "COCODetectionDataModule or VOCDetectionDataModule")
        if "predict" not in self.datasets:
            self.datasets["predict"] = ImagePathsDataset(paths, self.eval_transform())
