"""LightningModules: thin wrappers that own losses, metrics and optimizers, not architecture."""

from lit_vision.tasks.base import VisionTask
from lit_vision.tasks.classification import ImageClassifier
from lit_vision.tasks.detection import ObjectDetector
from lit_vision.tasks.segmentation import SemanticSegmenter

__all__ = ["ImageClassifier", "ObjectDetector", "SemanticSegmenter", "VisionTask"]
