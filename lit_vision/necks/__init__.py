"""Necks: turn a backbone's list of feature maps into what a detection or segmentation head expects."""

from lit_vision.necks.fpn import BackboneWithFPN

__all__ = ["BackboneWithFPN"]
