"""Object detection data: COCO and VOC layouts, the embedded shapes, plain images, box-aware presets."""

from lit_vision.data.detection.base import (
    DetectionDataModule,
    DetectionSource,
    ImagePathsDataset,
)
from lit_vision.data.detection.coco import COCODetectionDataModule, CocoDetectionDataset
from lit_vision.data.detection.images import DetectionImagesDataModule
from lit_vision.data.detection.mosaic import Mosaic, MosaicDataset
from lit_vision.data.detection.shapes import ShapesDetectionDataModule
from lit_vision.data.detection.transforms import (
    DetectionTransform,
    detection_collate,
    detection_eval_transforms,
    detection_train_transforms,
)
from lit_vision.data.detection.voc import VOCDetectionDataModule, VOCDetectionDataset

__all__ = ["COCODetectionDataModule", "CocoDetectionDataset", "DetectionDataModule", "DetectionImagesDataModule",
           "DetectionSource", "DetectionTransform", "ImagePathsDataset", "Mosaic", "MosaicDataset",
           "ShapesDetectionDataModule", "VOCDetectionDataModule", "VOCDetectionDataset", "detection_collate",
           "detection_eval_transforms", "detection_train_transforms"]
