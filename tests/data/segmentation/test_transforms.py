"""Segmentation transforms: image and mask stay aligned under every augmentation, padding is ignore,
evaluation sizes are recorded and invertible, batches stack."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from lit_vision.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from lit_vision.data.segmentation.transforms import (
    SegmentationTransform,
    segmentation_collate,
    segmentation_eval_transforms,
    segmentation_train_transforms,
)
from lit_vision.geometry import restore_size
from lit_vision.palette import pil_mask, voc_palette

# Class c is drawn in COLOURS[c]: the mask can be recomputed from the pixels alone.
COLOURS = np.array([(0, 0, 0), (230, 20, 20), (20, 210, 20), (20, 20, 230)], dtype=np.float64)


def scene(width: int = 64, height: int = 48) -> tuple[Image.Image, np.ndarray]:
    """An asymmetric scene (red square top-left, green disc right, blue triangle bottom) and its class map."""
    labels = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(labels)
    draw.rectangle([4, 3, 21, 20], fill=1)
    draw.ellipse([38, 8, 58, 28], fill=2)
    draw.polygon([(10, 44), (30, 26), (36, 45)], fill=3)
    mask = np.array(labels)
    return Image.fromarray(COLOURS[mask].astype(np.uint8)), mask


def classes_from_pixels(image: torch.Tensor) -> np.ndarray:
    """Un-normalise and give each pixel the class of the nearest drawing colour."""
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    rgb = ((image * std + mean) * 255).permute(1, 2, 0).numpy()
    return np.linalg.norm(rgb[:, :, None, :] - COLOURS[None, None], axis=-1).argmin(-1)


def interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose whole 3x3 neighbourhood has their label (away from edges, where interpolation blends).

    The outer frame never counts: a crop may cut right next to an edge."""
    padded = np.pad(mask.astype(np.int64), 1, constant_values=-1)
    same = np.ones(mask.shape, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            same &= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]] == mask
    return same


def centroid(pixels: np.ndarray) -> np.ndarray:
    return np.argwhere(pixels).mean(0)


def test_train_transform_keeps_mask_on_the_pixels_it_labels() -> None:
    image, mask = scene()
    transform = segmentation_train_transforms(base_size=64, crop_size=(40, 48), scale_range=(0.5, 2.0),
                                              hflip=True, color_jitter=0.0)
    seen_pad = seen_crop = 0
    shifts = []  # centroid of a class in the mask minus its centroid in the pixels
    for seed in range(30):
        torch.manual_seed(seed)
        out_image, out_mask, (h2, w2) = transform(image, torch.from_numpy(mask))
        assert out_image.shape == (3, 40, 48) and out_mask.shape == (40, 48) and out_mask.dtype == torch.uint8
        m = out_mask.numpy()
        # Padding: bottom/right only, mask 255 and image 0 exactly there, nowhere else.
        pad = np.ones(m.shape, dtype=bool)
        pad[:h2, :w2] = False
        assert (m[pad] == IGNORE_INDEX).all() and (out_image[:, torch.from_numpy(pad)] == 0).all()
        assert (m[~pad] != IGNORE_INDEX).all()
        seen_pad += bool(pad.any())
        seen_crop += h2 == 40 and w2 == 48
        # Content: the mask says what the pixels show.
        content, from_pixels = m[:h2, :w2], classes_from_pixels(out_image[:, :h2, :w2])
        inner = interior(content)
        assert (from_pixels[inner] == content[inner]).all(), f"seed {seed}: interior pixels disagree"
        assert (from_pixels != content).mean() < 0.08, f"seed {seed}: too many edge pixels disagree"
        for c in (1, 2, 3):
            if (content == c).sum() >= 30 and (from_pixels == c).sum() >= 30:
                shifts.append(centroid(content == c) - centroid(from_pixels == c))
    assert seen_pad >= 3 and seen_crop >= 3  # both regimes were exercised
    # Sub-pixel alignment: nearest sampling moves a centroid by up to ~0.7 px either way (thin triangle tips),
    # but on average by nothing; a mask shifted by one pixel would average ~1.
    shifts_px = np.array(shifts)
    assert len(shifts_px) > 40 and np.abs(shifts_px).max() < 0.85
    assert np.abs(shifts_px.mean(0)).max() < 0.15


def test_hflip_moves_image_and_mask_together() -> None:
    image, mask = scene()
    transform = SegmentationTransform(64, (48, 64), hflip=True)
    reference = classes_from_pixels(SegmentationTransform(64, (48, 64))(image)[0])  # no resize, no flip
    flips = 0
    for seed in range(12):
        torch.manual_seed(seed)
        out_image, out_mask, _ = transform(image, torch.from_numpy(mask))
        flipped = bool((out_mask.numpy() == mask[:, ::-1]).all())
        assert flipped or (out_mask.numpy() == mask).all()
        expected = reference[:, ::-1] if flipped else reference
        assert (classes_from_pixels(out_image) == expected).all()
        flips += flipped
    assert 0 < flips < 12


def test_color_jitter_changes_pixels_only() -> None:
    image, mask = scene()
    plain = segmentation_train_transforms(64, 48, (0.5, 2.0), True, color_jitter=0.0)
    jittered = segmentation_train_transforms(64, 48, (0.5, 2.0), True, color_jitter=0.5)
    changed = 0
    for seed in range(8):
        torch.manual_seed(seed)
        a_image, a_mask, a_size = plain(image, torch.from_numpy(mask))
        torch.manual_seed(seed)
        b_image, b_mask, b_size = jittered(image, torch.from_numpy(mask))
        assert a_size == b_size and torch.equal(a_mask, b_mask)  # jitter runs last among the random steps
        changed += not torch.allclose(a_image, b_image)
    assert changed == 8


def test_eval_transform_resizes_longer_side_and_pads_bottom_right() -> None:
    image, mask = scene(64, 48)
    out_image, out_mask, content = segmentation_eval_transforms(32)(image, torch.from_numpy(mask))
    assert out_image.shape == (3, 32, 32) and content == (24, 32)
    assert (out_mask[24:] == IGNORE_INDEX).all() and (out_image[:, 24:] == 0).all()
    assert set(out_mask[:24].unique().tolist()) <= {0, 1, 2, 3}
    # NEAREST_EXACT is PIL's NEAREST (pixel centres): an independent reference for the mask.
    reference = np.array(Image.fromarray(mask.astype(np.uint8)).resize((32, 24), Image.NEAREST))
    assert (out_mask[:24].numpy() == reference).all()
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    expected = torch.from_numpy(np.array(image.resize((32, 24), Image.BILINEAR))).permute(2, 0, 1) / 255
    assert ((out_image[:, :24] * std + mean) - expected).abs().mean() < 0.03


def test_predictions_map_back_to_the_original_pixels() -> None:
    image, mask = scene(64, 48)
    same_size = segmentation_eval_transforms(64)
    _, out_mask, content = same_size(image, torch.from_numpy(mask))
    meta = {"orig_size": (48, 64), "content_size": content}
    assert torch.equal(restore_size(out_mask, meta), torch.from_numpy(mask))  # padding only: exact
    _, small, content = segmentation_eval_transforms(32)(image, torch.from_numpy(mask))
    restored = restore_size(small, {"orig_size": (48, 64), "content_size": content})
    assert restored.shape == (48, 64) and (restored.numpy() == mask).mean() > 0.95
    logits = torch.nn.functional.one_hot(small.long().clamp(max=3), 4).permute(2, 0, 1).float()
    restored_logits = restore_size(logits[None], {"orig_size": (48, 64), "content_size": content})
    assert restored_logits.shape == (1, 4, 48, 64)
    assert (restored_logits[0].argmax(0).numpy() == mask).mean() > 0.95


def test_collate_stacks_and_omits_missing_masks() -> None:
    meta = {"orig_size": (5, 6), "content_size": (4, 4)}
    items = [{"image": torch.zeros(3, 4, 4), "mask": torch.zeros(4, 4, dtype=torch.long), "path": f"{i}.png",
              "meta": meta} for i in range(3)]
    batch = segmentation_collate(items)
    assert batch["image"].shape == (3, 3, 4, 4) and batch["mask"].shape == (3, 4, 4)
    assert batch["path"] == ["0.png", "1.png", "2.png"] and batch["meta"] == [meta] * 3
    assert "mask" not in segmentation_collate([{k: v for k, v in item.items() if k != "mask"} for item in items])
    with pytest.raises(ValueError, match="different sizes"):
        segmentation_collate([items[0], {**items[1], "image": torch.zeros(3, 5, 4)}])


def test_bad_transform_arguments_and_palette_png(tmp_path) -> None:
    with pytest.raises(ValueError, match="scale_range"):
        segmentation_train_transforms(64, 64, (2.0, 1.0))
    with pytest.raises(ValueError, match="differs"):
        segmentation_eval_transforms(32)(scene()[0], torch.zeros(5, 5, dtype=torch.uint8))
    mask = torch.tensor([[0, 1], [15, 255]])
    pil_mask(mask, voc_palette()).save(tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "P" and (np.array(im) == mask.numpy()).all()
