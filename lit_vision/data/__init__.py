"""LightningDataModules, datasets, transform presets and embedded sample data."""

from lit_vision.data.checks import DataError
from lit_vision.data.coco import COCODetectionDataModule, CocoDetectionDataset
from lit_vision.data.detection_images import DetectionImagesDataModule
from lit_vision.data.detection_transforms import detection_collate
from lit_vision.data.imagefolder import ImageFolderDataModule, ImageFolderDataset
from lit_vision.data.samples import DigitsDataModule, write_digits
from lit_vision.data.voc import VOC_CLASSES, VOCDetectionDataModule, VOCDetectionDataset
from lit_vision.data.shapes import SHAPES_CLASSES, ShapesDetectionDataModule, shapes_paths, write_shapes

__all__ = [
    "COCODetectionDataModule",
    "CocoDetectionDataset",
    "DataError",
    "DetectionImagesDataModule",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "ImageFolderDataset",
    "SHAPES_CLASSES",
    "ShapesDetectionDataModule",
    "VOC_CLASSES",
    "VOCDetectionDataModule",
    "VOCDetectionDataset",
    "detection_collate",
    "shapes_paths",
    "write_digits",
    "write_shapes",
]

# Semantic segmentation (issue 4).
from lit_vision.data.coco_segmentation import COCO_VOC_CATEGORIES, COCOSegmentationDataModule  # noqa: E402
from lit_vision.data.segmentation import (  # noqa: E402
    SHAPES_SEGMENTATION_CLASSES,
    VOC_SEGMENTATION_CLASSES,
    SegmentationImagesDataModule,
    ShapesSegmentationDataModule,
    VOCSegmentationDataModule,
)
from lit_vision.data.segmentation_base import SegmentationDataModule, SegmentationDataset  # noqa: E402
from lit_vision.data.segmentation_transforms import (  # noqa: E402
    restore_size,
    segmentation_collate,
    segmentation_eval_transforms,
    segmentation_train_transforms,
)

__all__ += [
    "COCO_VOC_CATEGORIES",
    "COCOSegmentationDataModule",
    "SHAPES_SEGMENTATION_CLASSES",
    "SegmentationDataModule",
    "SegmentationDataset",
    "SegmentationImagesDataModule",
    "ShapesSegmentationDataModule",
    "VOCSegmentationDataModule",
    "VOC_SEGMENTATION_CLASSES",
    "restore_size",
    "segmentation_collate",
    "segmentation_eval_transforms",
    "segmentation_train_transforms",
]
