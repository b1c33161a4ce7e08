"""The segmentation quickstart's DataModule: VOC-layout semantic segmentation over the embedded shapes."""

from __future__ import annotations

from typing import Any

from lit_vision.data.embedded.shapes import SHAPES_CLASSES, shapes_paths, write_shapes
from lit_vision.data.segmentation.voc import VOCSegmentationDataModule

SHAPES_SEGMENTATION_CLASSES: tuple[str, ...] = ("background", *SHAPES_CLASSES)  # write_shapes: class i -> i + 1


class ShapesSegmentationDataModule(VOCSegmentationDataModule):
    """The embedded shapes (written on first use by :func:`write_shapes`) as semantic segmentation.

    The segmentation quickstart's data: no download, exact masks, classes ``background, circle, square,
    triangle`` (255 on the 2-px band where two labels meet, as in VOC). Decoded images are cached in
    memory (a few MB) so an epoch costs only the augmentation. Arguments other than the generator's
    (``cache_dir``, ``num_train``, ``num_val``, ``scene_size``, ``seed``) are those of
    :class:`VOCSegmentationDataModule`; ``image_size`` defaults to ``scene_size``.
    """

    def __init__(
        self,
        cache_dir: str | None = None,
        num_train: int = 200,
        num_val: int = 50,
        scene_size: int = 128,
        seed: int = 0,
        image_size: int | None = None,
        scale_range: tuple[float, float] | None = (0.75, 1.5),
        cache_images: bool = True,
        **kwargs: Any,
    ) -> None:
        root = shapes_paths(write_shapes(cache_dir, num_train, num_val, scene_size, seed))["voc_dir"]
        # Rebind before super().__init__: Lightning's save_hyperparameters reads this frame's locals too.
        image_size = image_size or scene_size
        super().__init__(
            root=str(root),
            class_names=list(SHAPES_SEGMENTATION_CLASSES),
            image_size=image_size,
            scale_range=scale_range,
            cache_images=cache_images,
            **kwargs,
        )
        self.hparams["image_size"] = image_size  # the resolved size, whichever frame Lightning read last
