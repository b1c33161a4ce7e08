"""Segmentation architectures: one class per file, registered by being defined (see :mod:`.base`).

    fcn.py             FCN             FCN-8s/16s/32s skip fusion
    unet.py            UNet            U-Net decoder over any backbone, or the classic U-Net (backbone=None)
    deeplabv3.py       DeepLabV3       ASPP
    deeplabv3plus.py   DeepLabV3Plus   separable ASPP + stride-4 decoder

:func:`build_segmenter` is the one-call form (``build_segmenter("deeplabv3", "tv/resnet50", 21, output_stride=8)``).
"""

from lit_vision.models.segmentation.base import (
    SegmentationArchitecture,
    Segmenter,
    build_segmenter,
)
from lit_vision.models.segmentation.deeplabv3 import DeepLabV3
from lit_vision.models.segmentation.deeplabv3plus import DeepLabV3Plus
from lit_vision.models.segmentation.fcn import FCN
from lit_vision.models.segmentation.unet import UNet

__all__ = ["FCN", "DeepLabV3", "DeepLabV3Plus", "SegmentationArchitecture", "Segmenter", "UNet", "build_segmenter"]
