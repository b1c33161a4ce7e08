"""Plain ``nn.Module`` compositions (no Lightning imports): usable in any training loop."""

from lit_vision.models.classifier import Classifier
from lit_vision.models.detectors import build_detector

__all__ = ["Classifier", "build_detector"]
