"""Values that data, models and tasks must agree on, kept in one neutral place."""

from __future__ import annotations

# The normalisation every ImageNet-pretrained backbone here expects (torchvision's and timm's defaults).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Segmentation label of pixels left out of loss and metrics (VOC's "void" border).
IGNORE_INDEX = 255
