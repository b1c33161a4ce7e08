"""Necks: turn a backbone's list of feature maps into what a detection or segmentation head expects.

    necks/fpn.py   BackboneWithFPN: torchvision's FPN over registry backbone stages, in torchvision's detector format
    necks/pan.py   PAN: the YOLOv8-style path-aggregation neck (top-down + bottom-up, C2f blocks)
"""

from lit_vision.necks.fpn import BackboneWithFPN
from lit_vision.necks.pan import PAN

__all__ = ["PAN", "BackboneWithFPN"]
