"""Plain ``nn.Module`` compositions (no Lightning imports): usable in any training loop."""

from lit_vision.models.classifier import Classifier
from lit_vision.models.detectors import build_detector
from lit_vision.models.segmenters import SEGMENTATION_ARCHITECTURES, Segmenter, build_segmenter

__all__ = ["Classifier", "build_detector", "SEGMENTATION_ARCHITECTURES", "Segmenter", "build_segmenter"]
