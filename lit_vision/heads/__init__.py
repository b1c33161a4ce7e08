"""Task heads: plain ``nn.Module`` s that map backbone features to task outputs."""

from lit_vision.heads.classification import ClassificationHead
from lit_vision.heads.deeplab import ASPP, DeepLabV3Head, DeepLabV3PlusHead
from lit_vision.heads.segmentation import FCN, FCNHead, BilinearConvTranspose2d, SeparableConvBNReLU
from lit_vision.heads.unet import UNetDecoder

__all__ = [
    "ClassificationHead",
    "ASPP",
    "BilinearConvTranspose2d",
    "DeepLabV3Head",
    "DeepLabV3PlusHead",
    "FCN",
    "FCNHead",
    "SeparableConvBNReLU",
    "UNetDecoder",
]
