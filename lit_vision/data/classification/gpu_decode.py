"""JPEG decoding on the training device, for when the CPU workers' decoding is the bottleneck.

An H100 trains ResNet-50 at ~4,000+ images/s; decoding 500x375 JPEGs and cropping them costs a CPU core
~2-3 ms each, so a 16-core host cannot keep up. :class:`DeviceDecodeImageFolderDataModule` has its loader
workers only read the files' bytes; each batch is decoded by ``torchvision.io.decode_jpeg(list, device="cuda")``
(nvJPEG, one batched call), then cropped, flipped and normalised on the device by the very preset the CPU
pipeline uses (:func:`~lit_vision.data.gpu_augment.split_for_device`), so both modes train on the same
augmentation. On a CPU device the same code path decodes with libjpeg-turbo (what the tests run).

Files nvJPEG should not get are decoded in the worker as :func:`~lit_vision.data.checks.load_rgb` decodes them and
travel as uint8 images: other formats (PNG...), CMYK JPEGs, and JPEGs with an EXIF orientation (``decode_jpeg``
ignores EXIF on CUDA; the CPU pipeline applies it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms.v2 import functional as F

from lit_vision.data.checks import DataError, load_rgb
from lit_vision.data.classification.imagefolder import ImageFolderDataModule
from lit_vision.data.gpu_augment import DeviceNormalizeFlip, split_for_device

__all__ = ["DecodeOnDevice", "DeviceDecodeImageFolderDataModule", "EncodedImageDataset", "encoded_collate",
           "read_for_device"]

_EXIF_ORIENTATION = 0x0112


def read_for_device(path: str) -> Tensor:
    """The file's bytes (``uint8 [n]``) when nvJPEG can decode them as the CPU pipeline would, else the decoded
    ``uint8 [3, H, W]`` image (non-JPEG, CMYK, or EXIF-rotated files)."""
    with Image.open(path) as im:  # reads the header only
        plain_jpeg = (im.format == "JPEG" and im.mode in ("RGB", "L")
                      and im.getexif().get(_EXIF_ORIENTATION, 1) == 1)
    return read_file(path) if plain_jpeg else F.pil_to_tensor(load_rgb(path))


class EncodedImageDataset(Dataset):
    """``(path, label)`` pairs served as ``{"data": bytes or image (read_for_device), "label", "path"}``."""

    def __init__(self, samples: Sequence[tuple[str, int]]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        return {"data": read_for_device(path), "label": label, "path": path}


def encoded_collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"data": [Tensor], "label": LongTensor[B], "path": [str]}``: the encoded files differ in length, so a list."""
    return {"data": [it["data"] for it in items], "label": torch.tensor([it["label"] for it in items]),
            "path": [it["path"] for it in items]}


class DecodeOnDevice:
    """Device transform: decode ``batch["data"]`` on ``device``, apply ``per_image`` (the preset's crop and colour
    ops) to each image there, stack, then flip and normalise (``finish``); the result replaces ``data`` as ``image``.
    """

    def __init__(self, per_image: Callable[[Tensor], Tensor], finish: DeviceNormalizeFlip) -> None:
        self.per_image, self.finish = per_image, finish

    def decode(self, data: list[Tensor], device: torch.device, paths: Sequence[str] | None = None) -> list[Tensor]:
        """``uint8 [3, H, W]`` images on ``device``: the encoded ones in one batched ``decode_jpeg`` call.

        A file the decoder refuses (PIL, which checked the files, accepts some corrupt JPEGs that libjpeg-turbo
        and nvJPEG do not) raises :class:`~lit_vision.data.checks.DataError` naming it.
        """
        images: list[Tensor] = [d.to(device, non_blocking=True) if d.ndim == 3 else d for d in data]
        encoded = [i for i, d in enumerate(data) if d.ndim == 1]
        if encoded:
            try:
                decoded = decode_jpeg([data[i] for i in encoded], mode=ImageReadMode.RGB, device=device)
            except RuntimeError as err:
                raise _name_the_bad_file(data, encoded, paths, device, err) from err
            for i, image in zip(encoded, decoded):
                images[i] = image
        return images

    def __call__(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        images = self.decode(batch.pop("data"), device, batch.get("path"))
        batch["image"] = self.finish(torch.stack([torch.as_tensor(self.per_image(im)) for im in images]))
        return batch

    def __repr__(self) -> str:
        return f"DecodeOnDevice(per_image={self.per_image}, finish={self.finish})"


def _name_the_bad_file(data: list[Tensor], encoded: list[int], paths: Sequence[str] | None, device: torch.device,
                       err: RuntimeError) -> Exception:
    """The batched decode failed: decode the files one by one to name the first one the decoder refuses."""
    for i in encoded:
        try:
            decode_jpeg(data[i], mode=ImageReadMode.RGB, device=device)
        except RuntimeError as one:
            name = paths[i] if paths is not None else f"image {i} of the batch"
            return DataError(f"cannot decode {name} on {device}: {one} (the file passed the data checks, which "
                             "decode with Pillow; re-encode or remove it)")
    return err  # no single file fails alone: the decoder's own error


class DeviceDecodeImageFolderDataModule(ImageFolderDataModule):
    """:class:`ImageFolderDataModule` that decodes and augments on the training device (see the module's docstring).

    Same arguments and presets as :class:`ImageFolderDataModule` (the crop, jitter, flip and normalisation are cut off
    its presets and run on the device); ``cache_images`` and ``fast_decode`` default to off and are refused when on
    (both decode on the CPU, which is what this module avoids; declared here so that a recipe or the CLI, which
    fills in every argument, gets these defaults and not the parent's), and ``pin_memory`` defaults to off (the
    workers hand over small byte buffers; images are decoded straight into device memory).
    """

    collate_fn = staticmethod(encoded_collate)

    def __init__(self, pin_memory: bool | None = False, cache_images: bool = False, fast_decode: bool = False,
                 **kwargs: Any) -> None:
        for option, on in (("cache_images", cache_images), ("fast_decode", fast_decode)):
            if on:  # both decode on the CPU, which is what this module avoids
                raise ValueError(f"DeviceDecodeImageFolderDataModule decodes on the device: {option} has no use here")
        super().__init__(pin_memory=pin_memory, fast_decode=False, **kwargs)
        self.normalize_on_device = False  # implied: build_dataset sets this module's device transforms itself

    def build_dataset(self, split: str) -> EncodedImageDataset:
        dataset = super().build_dataset(split)  # the checked samples, and the preset this split would use
        per_image, finish = split_for_device(dataset.transform, f"the {split} transform of {type(self).__name__}")
        self.device_transforms[split] = DecodeOnDevice(per_image, finish)
        return EncodedImageDataset(dataset.samples)
