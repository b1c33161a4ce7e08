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
