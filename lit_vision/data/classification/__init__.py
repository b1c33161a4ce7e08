"""Image classification data: ImageFolder trees, the embedded digits, and the ImageNet-style presets."""

from lit_vision.data.classification.digits import DigitsDataModule
from lit_vision.data.classification.gpu_decode import DeviceDecodeImageFolderDataModule
from lit_vision.data.classification.imagefolder import (
           ImageFolderDataModule,
           ImageFolderDataset,
)
from lit_vision.data.classification.transforms import (
           classification_eval_transforms,
           classification_train_transforms,
)

__all__ = ["DeviceDecodeImageFolderDataModule", "DigitsDataModule", "ImageFolderDataModule", "ImageFolderDataset",
           "classification_eval_transforms", "classification_train_transforms"]
