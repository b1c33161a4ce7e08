"""Segmentation decoders, one architecture a file: FCN, U-Net, DeepLabv3 / v3+ (ASPP), and shared blocks."""

from lit_vision.heads.segmentation.common import (
    BilinearConvTranspose2d,
    FCNHead,
    SeparableConvBNReLU,
    bilinear_kernel,
    pad_to,
    resize_to,
)
from lit_vision.heads.segmentation.deeplab import (
    ASPP,
    DeepLabV3Head,
    DeepLabV3PlusHead,
    TorchvisionDeepLabHead,
    default_atrous_rates,
)
from lit_vision.heads.segmentation.fcn import FCN_VARIANTS, FCNDecoder
from lit_vision.heads.segmentation.unet import UNetDecoder

__all__ = ["ASPP", "BilinearConvTranspose2d", "DeepLabV3Head", "DeepLabV3PlusHead", "FCNDecoder",
           "FCNHead", "FCN_VARIANTS", "SeparableConvBNReLU", "TorchvisionDeepLabHead", "UNetDecoder", "bilinear_kernel", "default_atrous_rates",
           "pad_to", "resize_to"]
