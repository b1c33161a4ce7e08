"""Plain ``nn.Module`` compositions (no Lightning imports): usable in any training loop."""

from lit_vision.models.classifier import Classifier

__all__ = ["Classifier"]
