"""Semantic segmentation DataModules: PASCAL VOC layout, the embedded shapes, and plain images to predict.

All of them serve the item contract of :mod:`lit_vision.data.segmentation_base` (normalised image, long
mask with 255 = ignore, ``path``, ``meta`` with ``orig_size``/``content_size``) in batches of
:func:`~lit_vision.data.segmentation_transforms.segmentation_collate`, and expose ``num_classes``,
``class_names`` (class 0 = ``"background"``), ``ignore_index`` (255) and ``palette``. COCO instances files
are served by :class:`~lit_vision.data.coco_segmentation.COCOSegmentationDataModule`.

A VOC year folder holds ``ImageSets/Segmentation/<split>.txt`` (one id per line), ``JPEGImages/<id>.jpg``
and ``SegmentationClass/<id>.png``: palette PNGs whose pixel values are the class indices (the palette only
colours them), 255 on object borders and "void" regions. Those files are checked in ``__init__`` (split file,
an image and a mask for every id); their contents in ``setup`` (see :class:`SegmentationDataset`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from lit_vision.data.checks import DataError, checkpoint_class_names, predict_only_paths
from lit_vision.data.segmentation_base import SegmentationDataModule, SegmentationDataset
from lit_vision.data.segmentation_transforms import SegmentationTransform
from lit_vision.data.shapes import SHAPES_CLASSES, shapes_paths, write_shapes
from lit_vision.data.voc import VOC_CLASSES

VOC_SEGMENTATION_CLASSES: tuple[str, ...] = ("background", *VOC_CLASSES)
SHAPES_SEGMENTATION_CLASSES: tuple[str, ...] = ("background", *SHAPES_CLASSES)  # write_shapes: class i -> i + 1


def voc_segmentation_dataset(
    root: str | Path, split: str, num_classes: int, transforms: SegmentationTransform | None = None
) -> SegmentationDataset:
    """The images and masks listed in ``<root>/ImageSets/Segmentation/<split>.txt``; missing files raise
    one :class:`DataError` naming the split file and every id without its JPEG or PNG."""
    root = Path(root).expanduser()
    split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not root.is_dir():
        raise DataError(f"VOC folder {root} does not exist")
    if not split_file.is_file():
        raise DataError(f"split file {split_file} does not exist (split {split!r} of {root})")
    ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"split file {split_file} lists no image ids")
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise DataError(f"split file {split_file} lists ids more than once: {duplicates[:10]}")
    images = [root / "JPEGImages" / f"{i}.jpg" for i in ids]
    masks = [root / "SegmentationClass" / f"{i}.png" for i in ids]
    missing = [f"  id {i!r}: no {what} {p}" for i, jpg, png in zip(ids, images, masks)
               for what, p in (("image", jpg), ("mask", png)) if not p.is_file()]
    if missing:
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise DataError(f"{split_file}: {len(missing)} missing file(s):\n" + "\n".join(missing[:10]) + more)
    return SegmentationDataset(images, masks, num_classes, transforms, describe=str(split_file))


class VOCSegmentationDataModule(SegmentationDataModule):
    """Semantic segmentation from a VOC-layout folder (``ImageSets/Segmentation`` splits, ``SegmentationClass``).

    Args:
        root: the year folder (``VOCdevkit/VOC2012``).
        train_split, val_split, test_split: id lists in ``ImageSets/Segmentation``; ``test_split=None`` tests on val.
        class_names: names of mask values ``0..K-1``; default :data:`VOC_SEGMENTATION_CLASSES` (21, background first).
        image_size: evaluation: longer side, padded to a square; training: the longer side at scale 1.
        crop_size: training crop (default ``image_size``); padded bottom/right with ignore where smaller.
        scale_range: training scale factors of ``image_size`` (``None``: no random scaling).
        hflip, color_jitter: training augmentation (see :func:`segmentation_train_transforms`).
        batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers: loaders (``pin_memory=None``:
            on with CUDA). ``drop_last`` drops a short last training batch (BatchNorm in ASPP pooling fails on 1).
        palette: flat ``[r, g, b] * 256`` list for writing predicted masks; default the VOC palette.
        cache_images: keep decoded images and masks in memory after ``setup`` (small data only).
        verify_images: decode and check every image and mask in ``setup``; ``None`` = up to 20,000 per split.
        predict_paths: folders (searched recursively) or image files; default the val split's images (no masks).
    """

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = None,
        class_names: list[str] | None = None,
        image_size: int = 512,
        crop_size: int | None = None,
        scale_range: tuple[float, float] | None = (0.5, 2.0),
        hflip: bool = True,
        color_jitter: float = 0.3,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        drop_last: bool = True,
        palette: list[int] | None = None,
        cache_images: bool = False,
        verify_images: bool | None = None,
        predict_paths: str | list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["class_names"])  # the model holds them (the CLI links them)
        self._set_class_names(class_names if class_names is not None else VOC_SEGMENTATION_CLASSES)
        for split, name in {"train": train_split, "val": val_split, "test": test_split}.items():
            if name is None:
                if split != "test":
                    raise DataError(f"{split}_split is required")
                continue
            self.sources[split] = voc_segmentation_dataset(root, name, self.num_classes)


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


class SegmentationImagesDataModule(SegmentationDataModule):
    """Images to segment (``predict`` only), resized and padded as the evaluation preset does.

    The VOC/COCO DataModules need annotations even to predict; a trained segmenter carries its class names
    (checkpoint hyper-parameters), and ``lit-vision predict --ckpt_path`` fills ``class_names`` from it:

        lit-vision predict --model SemanticSegmenter --data SegmentationImagesDataModule \\
            --data.predict_paths photos/ --data.image_size 512 --ckpt_path best.ckpt

    Items have no ``"mask"``; ``meta`` maps each prediction back to its image. Use the model's ``image_size``.

    Args:
        predict_paths: folders (searched recursively) or image files.
        image_size: longer side after resizing; the image is padded bottom/right to a square.
        class_names: the segmenter's classes in index order (filled from the checkpoint by ``lit-vision``).
        palette: flat ``[r, g, b] * 256`` list for writing predicted masks; default the VOC palette.
        batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers: loaders.
        verify_images: decode every image in ``setup``; ``None`` = only up to 20,000 files.
    """

    def __init__(
        self,
        predict_paths: str | list[str],
        image_size: int = 512,
        class_names: list[str] | None = None,
        palette: list[int] | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        verify_images: bool | None = None,
    ) -> None:
        super().__init__()
        # class_names belongs to the model's hyper-parameters (linked by the CLI), as for DetectionImagesDataModule.
        self.save_hyperparameters(ignore=["class_names"])
        self._set_class_names(checkpoint_class_names(type(self).__name__, class_names))

    def setup(self, stage: str | None = None) -> None:
        paths = predict_only_paths(type(self).__name__, stage, self.hparams.predict_paths, self.hparams.verify_images,
                                   "VOCSegmentationDataModule or COCOSegmentationDataModule")
        if "predict" not in self.datasets:
            self.datasets["predict"] = SegmentationDataset(paths, None, self.num_classes, self.eval_transform(),
                                                           "predict_paths")
