"""LightningDataModules, datasets, transform presets and embedded sample data."""

from lit_vision.data.checks import DataError
from lit_vision.data.imagefolder import ImageFolderDataModule, ImageFolderDataset
from lit_vision.data.samples import DigitsDataModule, write_digits

__all__ = ["DataError", "DigitsDataModule", "ImageFolderDataModule", "ImageFolderDataset", "write_digits"]
