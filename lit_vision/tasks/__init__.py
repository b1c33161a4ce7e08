"""LightningModules: thin wrappers that own losses, metrics and optimizers, not architecture."""

from lit_vision.tasks.base import VisionTask
from lit_vision.tasks.classification import ImageClassifier

__all__ = ["ImageClassifier", "VisionTask"]
