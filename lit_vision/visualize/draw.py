"""Drawing primitives shared by the validation pictures, ``lit-vision browse-data`` and the notebooks.

Boxes, masks and grids come from ``torchvision.utils`` (``draw_bounding_boxes``, ``draw_segmentation_masks``,
``make_grid``); what is ours is only the glue none of them provides: undoing the input normalisation, one
colour per class that stays the same in every picture, nearest-neighbour upscaling of tiny images (8x8
digits are invisible at their size) and caption strips with coloured text (Pillow's embedded font, so no
font file is needed). Every function takes and returns ``uint8 [3, H, W]`` tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks, make_grid

Color = tuple[int, int, int]
GREEN: Color = (46, 204, 64)
RED: Color = (255, 65, 54)
WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)


def to_uint8(image: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Tensor:
    """``uint8 [3, H, W]`` from a model input: ``x * std + mean`` first when the input was normalised.

    A float image without ``mean``/``std`` is taken to be in ``[0, 1]``; a grey ``[1, H, W]`` image is
    repeated to three channels.
    """
    image = image.detach().cpu()
    if image.dtype != torch.uint8:
        image = image.float()
        if mean is not None and std is not None:
            image = image * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return image.contiguous()


# Saturated, mutually distinct colours for boxes and labels (VOC's palette is too dark to read text on).
BRIGHT: tuple[Color, ...] = (
    (255, 56, 56), (0, 194, 255), (72, 249, 10), (255, 178, 29), (203, 56, 255), (0, 212, 187), (255, 112, 31),
    (255, 55, 199), (146, 204, 23), (100, 115, 255), (207, 210, 49), (61, 219, 134), (255, 157, 151),
    (132, 56, 255), (26, 147, 52), (44, 153, 168), (255, 149, 200), (82, 0, 133), (52, 69, 147), (0, 24, 236))


def class_colors(num_classes: int, palette: Sequence[int] | None = None) -> list[Color]:
    """One colour per class, the same in every picture of a run.

    Segmentation passes its data's palette (the colours its masks are written with; VOC's has class 0,
    the background, black, which :func:`draw_mask` leaves undrawn); without one, :data:`BRIGHT` repeats.
    """
    if palette is None:
        return [BRIGHT[k % len(BRIGHT)] for k in range(num_classes)]
    flat = list(palette)
    return [tuple(int(c) for c in flat[3 * (k % (len(flat) // 3)):3 * (k % (len(flat) // 3)) + 3])
            for k in range(num_classes)]  # type: ignore[misc]


def upscale(image: Tensor, min_side: int) -> Tensor:
    """Nearest-neighbour upscaling by an integer factor until the shorter side is at least ``min_side``
    (pixels stay visible as pixels; boxes must be scaled by :func:`upscale_factor` too)."""
    factor = upscale_factor(image, min_side)
    if factor == 1:
        return image
    return F.interpolate(image[None].float(), scale_factor=factor, mode="nearest")[0].to(torch.uint8)


def upscale_factor(image: Tensor, min_side: int) -> int:
    return max(1, -(-min_side // max(1, min(image.shape[-2:]))))


def downscale(image: Tensor, max_side: int) -> tuple[Tensor, float]:
    """Shrink (antialiased) so the longer side is at most ``max_side``; returns the image and the factor."""
    h, w = image.shape[-2:]
    if max(h, w) <= max_side:
        return image, 1.0
    s = max_side / max(h, w)
    out = F.interpolate(image[None].float(), size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                        antialias=True, align_corners=False)[0]
    return out.round().clamp(0, 255).to(torch.uint8), s


def draw_boxes(image: Tensor, boxes: Tensor, labels: Sequence[str] | None, colors: Sequence[Color] | Color,
               width: int = 2, fill: bool = False) -> Tensor:
    """XYXY pixel boxes with their labels (``torchvision.utils.draw_bounding_boxes``); nothing to draw: a copy."""
    if boxes.numel() == 0:
        return image.clone()
    boxes = boxes.detach().cpu().float().reshape(-1, 4)
    if not isinstance(colors, tuple):
        colors = list(colors)
    labels = list(labels) if labels is not None else None
    try:  # labels on a filled tag in the box colour (torchvision >= 0.23) stay readable on any background
        return draw_bounding_boxes(image, boxes, labels=labels, colors=colors, width=width, fill=fill,
                                   fill_labels=True, label_colors=BLACK)
    except TypeError:
        return draw_bounding_boxes(image, boxes, labels=labels, colors=colors, width=width, fill=fill)


def draw_mask(image: Tensor, mask: Tensor, colors: Sequence[Color], alpha: float = 0.5,
              ignore_index: int | None = None, ignore_color: Color = WHITE) -> Tensor:
    """Blend a class-index mask ``[H, W]`` over the image, class ``k`` in ``colors[k]``; ``ignore_index`` pixels
    in ``ignore_color``. A class coloured black (VOC's background) is left undrawn, so the image shows through."""
    mask = mask.detach().cpu().long()
    present = [int(k) for k in mask.unique().tolist()]
    layers, layer_colors = [], []
    for k in present:
        if ignore_index is not None and k == ignore_index:
            layers.append(mask == k)
            layer_colors.append(ignore_color)
        elif 0 <= k < len(colors) and tuple(colors[k]) != BLACK:
            layers.append(mask == k)
            layer_colors.append(tuple(colors[k]))
    if not layers:
        return image.clone()
    return draw_segmentation_masks(image, torch.stack(layers), alpha=alpha, colors=layer_colors)


def font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's embedded font (FreeType when available): nothing to install or download."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def caption(image: Tensor, lines: Sequence[tuple[str, Color]], font_size: int = 12, background: Color = BLACK) -> Tensor:
    """The image with a strip of text lines under it, each line in its colour (e.g. green right, red wrong)."""
    f = font(font_size)
    line_h = font_size + 4
    h, w = image.shape[-2:]
    canvas = Image.new("RGB", (w, h + line_h * len(lines) + 2), background)
    canvas.paste(Image.fromarray(image.permute(1, 2, 0).numpy()), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (text, color) in enumerate(lines):
        draw.text((2, h + 1 + i * line_h), fit_text(draw, text, f, w - 4), fill=color, font=f)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()


def fit_text(draw: ImageDraw.ImageDraw, text: str, f: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """``text`` cut with an ellipsis so it fits in ``width`` pixels."""
    if draw.textlength(text, font=f) <= width:
        return text
    while text and draw.textlength(text + "…", font=f) > width:
        text = text[:-1]
    return text + "…"


def side_by_side(images: Sequence[Tensor], gap: int = 2, background: int = 0) -> Tensor:
    """Images of possibly different heights in one row (bottom-padded), ``gap`` pixels apart."""
    h = max(int(im.shape[-2]) for im in images)
    parts = []
    for i, im in enumerate(images):
        parts.append(F.pad(im, (0, 0, 0, h - im.shape[-2]), value=background))
        if i < len(images) - 1:
            parts.append(torch.full((3, h, gap), background, dtype=torch.uint8))
    return torch.cat(parts, dim=2)


def labelled_row(images: Sequence[Tensor], labels: Sequence[str], gap: int = 4, font_size: int = 11) -> Tensor:
    """Images side by side, each with its label under it: one text strip (one Pillow round trip, not one per
    image: this runs for every picture of every validation)."""
    row = side_by_side(images, gap=gap)
    f = font(font_size)
    h, w = row.shape[-2:]
    canvas = Image.new("RGB", (w, h + font_size + 6), BLACK)
    canvas.paste(to_pil(row), (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for image, text in zip(images, labels):
        width = int(image.shape[-1])
        draw.text((x + 2, h + 1), fit_text(draw, text, f, width - 4), fill=WHITE, font=f)
        x += width + gap
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()


def grid(images: Sequence[Tensor], ncol: int | None = None, padding: int = 4, background: int = 32) -> Tensor:
    """``make_grid`` of images of any sizes: each is padded (bottom/right) to the largest, then tiled."""
    if not images:
        raise ValueError("no images to put in a grid")
    h = max(int(im.shape[-2]) for im in images)
    w = max(int(im.shape[-1]) for im in images)
    padded = [F.pad(im, (0, w - im.shape[-1], 0, h - im.shape[-2]), value=background) for im in images]
    ncol = ncol or max(1, round(len(images) ** 0.5))
    return make_grid(torch.stack(padded), nrow=ncol, padding=padding, pad_value=background)


def to_pil(image: Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy())


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write a ``uint8 [3, H, W]`` image as PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(image).save(path, optimize=False, compress_level=1)  # fast: a panel is written every validation
    return path


def load_png(path: str | Path) -> Tensor:
    """An image file as ``uint8 [3, H, W]`` RGB."""
    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).contiguous()
