"""Semantic segmentation DataModules: PASCAL VOC layout, the embedded shapes, and plain images to predict.

All of them serve the item contract of :mod:`lit_vision.data.segmentation.base` (normalised image, long
mask with 255 = ignore, ``path``, ``meta`` with ``orig_size``/``content_size``) in batches of
:func:`~lit_vision.data.segmentation.transforms.segmentation_collate`, and expose ``num_classes``,
``class_names`` (class 0 = ``"background"``), ``ignore_index`` (255) and ``palette``. COCO instances files
are served by :class:`~lit_vision.data.segmentation.coco.COCOSegmentationDataModule`.

A VOC year folder holds ``ImageSets/Segmentation/<split>.txt`` (one id per line), ``JPEGImages/<id>.jpg``
and ``SegmentationClass/<id>.png``: palette PNGs whose pixel values are the class indices (the palette only
colours them), 255 on object borders and "void" regions. Those files are checked in ``__init__`` (split file,
an image and a mask for every id); their contents in ``setup`` (see :class:`SegmentationDataset`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_vision.data.checks import DataError
from lit_vision.data.readers.voc import VOC_CLASSES, read_split_ids
from lit_vision.data.segmentation.base import (
    SegmentationDataModule,
    SegmentationDataset,
)
from lit_vision.data.segmentation.transforms import SegmentationTransform

VOC_SEGMENTATION_CLASSES: tuple[str, ...] = ("background", *VOC_CLASSES)


def voc_segmentation_dataset(
    root: str | Path, split: str, num_classes: int, transforms: SegmentationTransform | None = None
) -> SegmentationDataset:
    """The images and masks listed in ``<root>/ImageSets/Segmentation/<split>.txt``; missing files raise
    one :class:`DataError` naming the split file and every id without its JPEG or PNG."""
    root = Path(root).expanduser()
    split_file, ids = read_split_ids(root, "Segmentation", split)
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
        **kwargs: transforms, checks, caching and loaders: see
            :class:`~lit_vision.data.segmentation.base.SegmentationDataModule` (``image_size``, ``crop_size``,
            ``scale_range``, ``batch_size``, ...).
    """

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = None,
        class_names: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._set_class_names(class_names if class_names is not None else VOC_SEGMENTATION_CLASSES)
        for split, name in {"train": train_split, "val": val_split, "test": test_split}.items():
            if name is None:
                if split != "test":
                    raise DataError(f"{split}_split is required")
                continue
            self.sources[split] = voc_segmentation_dataset(root, name, self.num_classes or 0)
