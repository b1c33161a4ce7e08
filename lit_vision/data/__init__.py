"""Data for the three tasks: one sub-package per task, shared base, checks, readers and embedded samples.

    data/base.py            SplitDataModule (loader arguments, the one setup loop), PredictOnlyDataModule
    data/checks.py          up-front checks that name the bad file (DataError)
    data/readers/           the COCO and VOC formats, read and checked once for every task
    data/embedded/          the embedded sample data: digits (classification), shapes (detection, segmentation)
    data/classification/    ImageFolderDataModule, DigitsDataModule, classification transforms
    data/detection/         COCO / VOC / shapes / plain-image DataModules, box-aware transforms
    data/segmentation/      VOC / COCO / shapes / plain-image DataModules, mask-aware transforms
    data/streaming/         LitData shards: optimize_data (writer) and the Streaming*DataModules (optional litdata)

Every DataModule is importable from here (``lit_vision.data.ImageFolderDataModule``) and from its task's
package (``lit_vision.data.classification.ImageFolderDataModule``, the path recipes use).
"""

from lit_vision.data.base import PredictOnlyDataModule, SplitDataModule
from lit_vision.data.checks import DataError
from lit_vision.data.classification import (
    DeviceDecodeImageFolderDataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    ImageFolderDataset,
)
from lit_vision.data.detection import (
    COCODetectionDataModule,
    CocoDetectionDataset,
    DetectionDataModule,
    DetectionImagesDataModule,
    ShapesDetectionDataModule,
    VOCDetectionDataModule,
    VOCDetectionDataset,
    detection_collate,
)
from lit_vision.data.embedded import (
    SHAPES_CLASSES,
    shapes_paths,
    write_digits,
    write_shapes,
)
from lit_vision.data.packing import PackedBatch
from lit_vision.data.readers.voc import VOC_CLASSES
from lit_vision.data.segmentation import (
    COCO_VOC_CATEGORIES,
    SHAPES_SEGMENTATION_CLASSES,
    VOC_SEGMENTATION_CLASSES,
    COCOSegmentationDataModule,
    SegmentationDataModule,
    SegmentationDataset,
    SegmentationImagesDataModule,
    ShapesSegmentationDataModule,
    VOCSegmentationDataModule,
    segmentation_collate,
)
from lit_vision.data.streaming import (
    StreamingDetectionDataModule,
    StreamingImageFolderDataModule,
    StreamingSegmentationDataModule,
)

__all__ = [
    "COCODetectionDataModule",
    "COCOSegmentationDataModule",
    "COCO_VOC_CATEGORIES",
    "CocoDetectionDataset",
    "DataError",
    "DetectionDataModule",
    "DetectionImagesDataModule",
    "DeviceDecodeImageFolderDataModule",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "ImageFolderDataset",
    "PackedBatch",
    "PredictOnlyDataModule",
    "SHAPES_CLASSES",
    "SHAPES_SEGMENTATION_CLASSES",
    "SegmentationDataModule",
    "SegmentationDataset",
    "SegmentationImagesDataModule",
    "ShapesDetectionDataModule",
    "ShapesSegmentationDataModule",
    "SplitDataModule",
    "StreamingDetectionDataModule",
    "StreamingImageFolderDataModule",
    "StreamingSegmentationDataModule",
    "VOCDetectionDataModule",
    "VOCDetectionDataset",
    "VOCSegmentationDataModule",
    "VOC_CLASSES",
    "VOC_SEGMENTATION_CLASSES",
    "detection_collate",
    "segmentation_collate",
    "shapes_paths",
    "write_digits",
    "write_shapes",
]
