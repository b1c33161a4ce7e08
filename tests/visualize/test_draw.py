"""The drawing primitives put the right pixels where the boxes, masks and captions say."""

from __future__ import annotations

import torch

from lit_vision.constants import IMAGENET_MEAN, IMAGENET_STD
from lit_vision.visualize.draw import (
    BLACK,
    BRIGHT,
    class_colors,
    draw_boxes,
    draw_mask,
    grid,
    load_png,
    save_png,
    side_by_side,
    to_uint8,
    upscale,
)


def test_to_uint8_undoes_the_normalisation() -> None:
    pixels = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    normalised = (pixels.float() / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.equal(to_uint8(normalised, IMAGENET_MEAN, IMAGENET_STD), pixels)
    assert torch.equal(to_uint8(pixels.float() / 255), pixels)  # [0, 1] input (detection)
    assert to_uint8(torch.zeros(1, 4, 4)).shape == (3, 4, 4)  # grey -> RGB


def test_a_known_box_is_drawn_on_its_edges_only() -> None:
    image = torch.zeros(3, 40, 50, dtype=torch.uint8)
    color = (255, 0, 0)
    out = draw_boxes(image, torch.tensor([[10.0, 5.0, 30.0, 25.0]]), labels=None, colors=[color], width=1)
    red = torch.tensor(color, dtype=torch.uint8)
    for y, x in [(5, 10), (5, 30), (25, 10), (25, 30), (5, 20), (15, 10), (15, 30), (25, 20)]:  # corners and edges
        assert torch.equal(out[:, y, x], red), (y, x)
    assert out[:, 15, 20].sum() == 0 and out[:, 2, 2].sum() == 0 and out[:, 30, 40].sum() == 0  # inside / outside
    assert torch.equal(draw_boxes(image, torch.zeros(0, 4), [], []), image)  # nothing to draw: unchanged


def test_mask_blends_each_class_in_its_colour_and_leaves_black_classes_out() -> None:
    image = torch.full((3, 4, 4), 100, dtype=torch.uint8)
    mask = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]])
    colors = [BLACK, (200, 0, 0), (0, 200, 0)]
    out = draw_mask(image, mask, colors, alpha=0.5, ignore_index=255)
    assert torch.equal(out[:, 0, 0], image[:, 0, 0])  # background (black) undrawn
    # torchvision blends as image * (1 - alpha) + colour * alpha
    assert torch.allclose(out[:, 0, 2].float(), torch.tensor([150.0, 50.0, 50.0]), atol=1)
    assert torch.allclose(out[:, 2, 0].float(), torch.tensor([50.0, 150.0, 50.0]), atol=1)
    assert torch.allclose(out[:, 3, 3].float(), torch.tensor([177.5, 177.5, 177.5]), atol=1)  # ignore: white


def test_colours_follow_the_palette_or_the_bright_list() -> None:
    assert class_colors(3) == list(BRIGHT[:3])
    assert class_colors(2, [0, 0, 0, 128, 0, 0] + [0] * 762) == [(0, 0, 0), (128, 0, 0)]


def test_upscale_grid_side_by_side_and_png_roundtrip(tmp_path) -> None:
    small = torch.randint(0, 256, (3, 8, 6), dtype=torch.uint8)
    big = upscale(small, 32)
    assert big.shape == (3, 48, 36) and torch.equal(big[:, ::6, ::6], small)  # nearest, integer factor 6
    row = side_by_side([small, torch.zeros(3, 4, 5, dtype=torch.uint8)], gap=2)
    assert row.shape == (3, 8, 6 + 2 + 5)
    tiles = grid([small] * 5, ncol=3, padding=1)
    assert tiles.shape == (3, 1 + 2 * (8 + 1), 1 + 3 * (6 + 1))
    assert torch.equal(load_png(save_png(tiles, tmp_path / "a" / "g.png")), tiles)
