"""Semantic segmentation data: VOC and COCO layouts, the embedded shapes, plain images, mask-aware presets."""

from lit_vision.data.segmentation.base import (
    SegmentationDataModule,
    SegmentationDataset,
)
from lit_vision.data.segmentation.coco import (
    COCO_VOC_CATEGORIES,
    COCOSegmentationDataModule,
    CocoSegmentationDataset,
)
from lit_vision.data.segmentation.images import SegmentationImagesDataModule
from lit_vision.data.segmentation.shapes import (
    SHAPES_SEGMENTATION_CLASSES,
    ShapesSegmentationDataModule,
)
from lit_vision.data.segmentation.transforms import (
    SegmentationTransform,
    segmentation_collate,
    segmentation_eval_transforms,
    segmentation_train_transforms,
)
from lit_vision.data.segmentation.voc import (
    VOC_SEGMENTATION_CLASSES,
    VOCSegmentationDataModule,
)

__all__ = ["COCOSegmentationDataModule", "COCO_VOC_CATEGORIES", "CocoSegmentationDataset", "SHAPES_SEGMENTATION_CLASSES",
           "SegmentationDataModule", "SegmentationDataset", "SegmentationImagesDataModule", "SegmentationTransform",
           "ShapesSegmentationDataModule", "VOCSegmentationDataModule", "VOC_SEGMENTATION_CLASSES",
           "segmentation_collate", "segmentation_eval_transforms", "segmentation_train_transforms"]
