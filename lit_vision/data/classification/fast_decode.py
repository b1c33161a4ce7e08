"""Decode only what the crop keeps: JPEG DCT scaling for the classification presets' first step.

A 224-px crop of a 2048x1536 photo throws away most of the decoded pixels, and decoding them is most of the
loader's time. libjpeg can decode at 1/2, 1/4 or 1/8 scale for a fraction of the cost (Pillow's ``Image.draft``;
``torchvision.io.decode_jpeg`` has no scaling). These steps take the image *path*, draw the crop on the full
(shown) size exactly as ``v2.RandomResizedCrop`` does (same RNG calls, so the same crops for the same seed), pick
the largest reduction that still leaves the crop at least as many pixels as the output on both axes (no resolution
is lost: the final resize still shrinks), decode at that scale and resample the crop box, mapped into the reduced
image, with Pillow's antialiased bilinear filter (the filter torchvision's uint8 resize copies). The result differs
from a full decode by resampling noise only (``tests/data/classification/test_fast_decode.py`` bounds it).

When no reduction applies (a PNG, a small image, a crop under twice the output size) the file is decoded in full,
as :func:`~lit_vision.data.checks.load_rgb` decodes it, and cropped and resized as torchvision does. EXIF orientation
is applied as :func:`load_rgb` applies it (the box is mapped onto the stored image, the small result transposed).

:class:`RandomResizedCropDecode` returns a PIL image, so the training preset's colour jitter runs on 8-bit PIL
pixels as in torchvision's classic pipeline and timm's (~1.5x cheaper than on a tensor);
:class:`ResizeCenterCropDecode` returns a uint8 tensor (nothing follows it but the normalisation).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from lit_vision.data.checks import (
    EXIF_TRANSPOSE,
    IMAGE_READ_ERRORS,
    DataError,
    exif_orientation,
    to_rgb,
)

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), continuous pixel coordinates
Size = tuple[int, int]  # (w, h)
Plan = Callable[[Size], tuple[Box, Size]]  # shown image size -> (crop box, output size)
Finish = Callable[[Image.Image, Box, Size], Any]  # full decode, crop box, output size -> the crop
REDUCTIONS = (8, 4, 2)  # the DCT scales libjpeg decodes at (Pillow's draft picks among 1/8, 1/4, 1/2)


def stored_box(box: Box, orientation: int, stored: Size) -> Box:
    """``box`` on the image as shown (EXIF ``orientation`` applied) mapped onto the image as stored ``(W, H)``."""
    w, h = stored
    maps = {  # shown point (x, y) -> stored point, the inverse of checks.EXIF_TRANSPOSE
        1: lambda x, y: (x, y), 2: lambda x, y: (w - x, y), 3: lambda x, y: (w - x, h - y),
        4: lambda x, y: (x, h - y), 5: lambda x, y: (y, x), 6: lambda x, y: (y, h - x),
        7: lambda x, y: (w - y, h - x), 8: lambda x, y: (w - y, x),
    }
    (ax, ay), (bx, by) = maps[orientation](box[0], box[1]), maps[orientation](box[2], box[3])
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


def choose_reduction(box_size: tuple[float, float], out_size: Size) -> int:
    """The largest DCT reduction that leaves a ``box_size`` region at least ``out_size`` pixels on both axes."""
    for s in REDUCTIONS:
        if box_size[0] / s >= out_size[0] and box_size[1] / s >= out_size[1]:
            return s
    return 1


def resample(image: Image.Image, box: Box, out_size: Size, crop_first: bool) -> Image.Image:
    """``box`` of ``image`` resized to ``out_size`` (antialiased bilinear).

    ``crop_first`` (RandomResizedCrop): the crop is cut out before resizing, so its border pixels are not blended
    with pixels outside it, as torchvision's crop-then-resize does; otherwise (resize + centre crop) the filter reads
    across the box edges, as resizing the whole image and then cropping does.
    """
    if crop_first:
        w, h = image.size
        env = (max(0, math.floor(box[0])), max(0, math.floor(box[1])), min(w, math.ceil(box[2])),
               min(h, math.ceil(box[3])))
        image = image.crop(env)
        box = (box[0] - env[0], box[1] - env[1], box[2] - env[0], box[3] - env[1])
    box = (max(0.0, box[0]), max(0.0, box[1]), min(float(image.width), box[2]), min(float(image.height), box[3]))
    return image.resize(out_size, Image.Resampling.BILINEAR, box=box)


def decode_crop(path: str | Path, plan: Plan, crop_first: bool, full: Finish | None = None) -> Any:
    """Open ``path`` once, ask ``plan`` for the crop box and output size on the shown image, and return the crop.

    When a reduction applies, the JPEG is decoded at that scale and the box resampled (a PIL image, as shown).
    Otherwise the file is decoded in full as :func:`load_rgb` decodes it (mode conversion, EXIF orientation) and
    ``full(image, box, out_size)`` makes the crop (default: :func:`resample`). Unreadable files raise
    :class:`DataError` naming the file, as ``load_rgb`` does.
    """
    try:
        im = Image.open(path)
    except IMAGE_READ_ERRORS as err:
        raise DataError(f"cannot read image {path}: {err}") from err
    with im:
        try:
            orientation = exif_orientation(im)
            width, height = im.size
            box, out_size = plan((height, width) if orientation >= 5 else (width, height))
            sbox = stored_box(box, orientation, im.size)
            sout = (out_size[1], out_size[0]) if orientation >= 5 else out_size
            s = choose_reduction((sbox[2] - sbox[0], sbox[3] - sbox[1]), sout) if im.format == "JPEG" else 1
            drafted = im.draft("RGB", (width // s, height // s)) if s > 1 else None  # None: Pillow declined
            im.load()
            rgb = im if im.mode == "RGB" else to_rgb(im)  # no copy of what is RGB already
            if drafted is None and orientation != 1:
                rgb = rgb.transpose(EXIF_TRANSPOSE[orientation])
        except IMAGE_READ_ERRORS as err:  # incl. to_rgb's DataError, which does not name the file
            raise DataError(f"cannot read image {path}: {err}") from err
        if drafted is None:
            return (full or _resample_full(crop_first))(rgb, box, out_size)
        scale = width / drafted[1][2]  # draft returns (mode, box of the original in reduced units)
        # Reduced pixel i covers full pixels [i*scale, (i+1)*scale): the box maps by plain division.
        out = resample(rgb, tuple(v / scale for v in sbox), sout, crop_first)
    return out.transpose(EXIF_TRANSPOSE[orientation]) if orientation != 1 else out


def _resample_full(crop_first: bool) -> Finish:
    return lambda image, box, out_size: resample(image, box, out_size, crop_first)


def decode_box(path: str | Path, box: Box, out_size: Size, crop_first: bool = False) -> Image.Image | None:
    """The reduced-scale crop of :func:`decode_crop` for a known ``box`` on the shown image; ``None`` when no
    reduction applies."""
    return decode_crop(path, lambda _: (box, out_size), crop_first, full=lambda *_: None)


def shown_size(path: str | Path) -> Size:
    """``(w, h)`` of the image as :func:`load_rgb` returns it (EXIF orientation applied), from the header."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            return (h, w) if exif_orientation(im) >= 5 else (w, h)
    except IMAGE_READ_ERRORS as err:
        raise DataError(f"cannot read image {path}: {err}") from err


def to_chw(inpt: Image.Image | torch.Tensor) -> torch.Tensor:
    """A PIL image (or an image tensor) as a contiguous ``[C, H, W]`` tensor of the same dtype.

    Why not ``v2.ToImage``: it returns the PIL buffer, ``[H, W, C]`` in memory, viewed as ``[C, H, W]``; torch's
    per-channel broadcasting in ``Normalize`` runs ~2.5x slower on that layout (0.8 against 0.3 ms per 224-px image
    here), more than this one copy costs. A pure tensor is what v2 ops take as the image.
    """
    return (F.pil_to_tensor(inpt) if isinstance(inpt, Image.Image) else inpt.as_subclass(torch.Tensor)).contiguous()


class ToCHW:
    """Transform step of :func:`to_chw`: the fast training preset's conversion after the colour jitter on PIL."""

    def __call__(self, inpt: Image.Image | torch.Tensor) -> torch.Tensor:
        return to_chw(inpt)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _is_path(inpt: Any) -> bool:
    return isinstance(inpt, (str, os.PathLike))


class RandomResizedCropDecode:
    """``v2.RandomResizedCrop(size, scale, ratio)`` (bilinear, antialiased) that also decodes.

    Given a path it returns the crop as a PIL image, decoded at reduced JPEG scale when the crop allows it; given
    a PIL image (cached) it crops and resizes it with PIL as torchvision does for PIL images; given a tensor (e.g.
    decoded on a device) it is torchvision's tensor op.
    """

    def __init__(self, size: int | Sequence[int], scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3)) -> None:
        # torchvision's own transform draws the crops, so their distribution is its by construction.
        self.crop = v2.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(ratio), antialias=True)
        self.size = tuple(self.crop.size)  # (h, w)

    def params(self, shown: Size) -> dict[str, int]:
        """Crop ``{top, left, height, width}`` for an image of shown size ``(w, h)``, drawn from torch's RNG
        with the very calls ``v2.RandomResizedCrop`` makes."""
        probe = torch.empty((0, shown[1], shown[0]))  # only its shape is read
        make = getattr(self.crop, "make_params", None) or self.crop._get_params  # torchvision < 0.21
        return make([probe])

    def plan(self, shown: Size) -> tuple[Box, Size]:
        p = self.params(shown)
        return (p["left"], p["top"], p["left"] + p["width"], p["top"] + p["height"]), (self.size[1], self.size[0])

    def __call__(self, inpt: Any) -> Any:
        if _is_path(inpt):
            return decode_crop(inpt, self.plan, crop_first=True)
        if isinstance(inpt, Image.Image):
            box, out_size = self.plan(inpt.size)
            return resample(inpt, box, out_size, crop_first=True)
        image = inpt if isinstance(inpt, tv_tensors.Image) else F.to_image(inpt)
        h, w = F.get_size(image)
        p = self.params((w, h))
        return F.resized_crop(image, p["top"], p["left"], p["height"], p["width"], list(self.size), antialias=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, scale={self.crop.scale}, ratio={self.crop.ratio})"


class ResizeCenterCropDecode:
    """``v2.Resize(resize)`` + ``v2.CenterCrop(size)`` that also decodes: given a path, the JPEG is decoded at
    reduced scale when the resize shrinks it by 2x or more; otherwise (and for images) torchvision's tensor ops.
    Returns a uint8 ``tv_tensors.Image``."""

    def __init__(self, resize: int, size: int) -> None:
        if size > resize:
            raise ValueError(f"the centre crop ({size}) must fit in the resized image (short side {resize})")
        self.resize, self.size = resize, size

    def plan(self, shown: Size) -> tuple[Box, Size]:
        """The crop box on the original image (shown size ``(w, h)``) and the output size.

        The sizes follow torchvision's ``Resize`` (short side ``resize``, long side truncated) and ``CenterCrop``
        (offsets rounded); the box shrinks by the whole resize's factor, so the reduction chosen for it suits the
        whole image. Tests compare the result with ``v2``'s.
        """
        w, h = shown
        new_long = int(self.resize * max(w, h) / min(w, h))
        rw, rh = (self.resize, new_long) if w <= h else (new_long, self.resize)
        top, left = int(round((rh - self.size) / 2.0)), int(round((rw - self.size) / 2.0))
        sx, sy = w / rw, h / rh
        return (left * sx, top * sy, (left + self.size) * sx, (top + self.size) * sy), (self.size, self.size)

    def __call__(self, inpt: Any) -> Any:
        if _is_path(inpt):
            out = decode_crop(inpt, self.plan, crop_first=False, full=lambda image, *_: self._plain(image))
            return out if isinstance(out, torch.Tensor) else tv_tensors.Image(to_chw(out))
        return self._plain(inpt)

    def _plain(self, inpt: Any) -> tv_tensors.Image:
        image = inpt if isinstance(inpt, tv_tensors.Image) else F.to_image(inpt)
        return F.center_crop(F.resize(image, [self.resize], antialias=True), [self.size])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(resize={self.resize}, size={self.size})"
