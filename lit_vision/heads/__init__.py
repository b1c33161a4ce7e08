"""Task heads: plain ``nn.Module`` s that map backbone features to task outputs."""

from lit_vision.heads.classification import ClassificationHead

__all__ = ["ClassificationHead"]
