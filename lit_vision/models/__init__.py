"""Plain ``nn.Module`` compositions (no Lightning imports): usable in any training loop.

    models/classifier.py     Classifier = backbone + ClassificationHead
    models/detection/        FasterRCNN, RetinaNet, FCOS (torchvision's), YOLO (ours); build_detector
    models/segmentation/     FCN, UNet, DeepLabV3, DeepLabV3Plus; Segmenter, build_segmenter
"""

from lit_vision.models.classifier import Classifier
from lit_vision.models.detection import DetectorArchitecture, build_detector
from lit_vision.models.segmentation import (
           SegmentationArchitecture,
           Segmenter,
           build_segmenter,
)

__all__ = ["Classifier", "DetectorArchitecture", "SegmentationArchitecture", "Segmenter", "build_detector",
           "build_segmenter"]
