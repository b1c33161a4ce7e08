"""The detection quickstart's DataModule: COCO-layout detection over the embedded shapes."""

from __future__ import annotations

from typing import Any

from lit_vision.data.detection.coco import COCODetectionDataModule
from lit_vision.data.embedded.shapes import shapes_paths, write_shapes


class ShapesDetectionDataModule(COCODetectionDataModule):
    """:class:`~lit_vision.data.detection.coco.COCODetectionDataModule` over the embedded shapes (written on first use).

    The detection quickstart's data: no download, real boxes and masks, 3 classes. Arguments other than
    the generator's (``cache_dir``, ``num_train``, ``num_val``, ``scene_size``, ``seed``) are those of
    ``COCODetectionDataModule``; keep ``image_size`` equal to ``scene_size`` to train without resizing.
    """

    def __init__(
        self,
        cache_dir: str | None = None,
        num_train: int = 200,
        num_val: int = 50,
        scene_size: int = 128,
        seed: int = 0,
        image_size: int = 128,
        scale_range: tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> None:
        paths = shapes_paths(write_shapes(cache_dir, num_train, num_val, scene_size, seed))
        super().__init__(
            train_images=str(paths["coco_train_images"]),
            train_annotations=str(paths["coco_train_json"]),
            val_images=str(paths["coco_val_images"]),
            val_annotations=str(paths["coco_val_json"]),
            image_size=image_size,
            scale_range=scale_range,
            **kwargs,
        )
