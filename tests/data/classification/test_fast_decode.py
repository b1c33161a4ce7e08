"""Reduced-scale JPEG decoding (fast_decode): the same crops as torchvision, the same pixels as a full decode.

The reference for every pixel comparison is a full decode (:func:`load_rgb`) cropped and resized by torchvision
(``v2`` resized_crop / resize + centre crop, antialiased bilinear); for whole training presets, torchvision's ops
in the fast preset's order (crop, jitter on the PIL image, tensor, flip, normalise) on the full decode.

Bound on the difference, and why: the two paths low-pass the crop with different filters (libjpeg's reduced IDCT
keeps each 8x8 block's low frequencies, at 1/8 its mean; the full path's antialiased bilinear averages over a wider
triangle), so they differ where the image has detail near the reduced image's resolution. The test photo (a random
colour field with edges every ~20 px plus sensor-like noise, sigma 4, saved at quality 95) has such detail on
purpose. Measured over the 96-px crops below: mean absolute error 0.5-2.2 / 255 per crop (largest at 1/8 scale),
largest single-pixel error 22; on 224-px crops of 2048x1536 upscaled real photos 0.45-1.2, single pixels up to 28
(at sharp edges). Bounds: ``MEAN_BOUND`` 3.0 per crop, ``MAX_BOUND`` 32 per pixel, and on average the reduced
decode must be closer to the full-decode bilinear crop than a bicubic crop of the same full decode is (the
"resampling noise" yardstick: two standard filters, one decode). A box mapped one reduced pixel off gives a mean
error of 8+ (asserted below to exceed twice the bound), so the bounds catch wrong coordinates, a wrong scale or a
missed EXIF rotation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from lit_vision.data.checks import DataError, load_rgb
from lit_vision.data.classification import (
    ImageFolderDataModule,
    classification_eval_transforms,
    classification_train_transforms,
)
from lit_vision.data.classification.fast_decode import (
    RandomResizedCropDecode,
    ResizeCenterCropDecode,
    choose_reduction,
    decode_box,
    shown_size,
)

MEAN_BOUND, MAX_BOUND = 3.0, 32
PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # presets without normalisation: values in [0, 1]


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Photo-like uint8 pixels: a smooth random colour field (edges every ~20 px) plus noise."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (height // 20, width // 20, 3), dtype=np.uint8))
    smooth = np.asarray(field.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float64)
    return np.clip(smooth + rng.normal(0, 4, smooth.shape), 0, 255).astype(np.uint8)


def save(path: Path, pixels: np.ndarray, mode: str = "RGB", orientation: int = 1) -> Path:
    image = Image.fromarray(pixels).convert(mode)
    kwargs = {"quality": 95} if path.suffix == ".jpg" else {}
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    image.save(path, **kwargs)
    return path


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(tmp_path_factory.mktemp("fast_decode") / "big.jpg", photo(1600, 1200))


def errors(a: torch.Tensor, b: torch.Tensor) -> tuple[float, int]:
    d = (a.int() - b.int()).abs()
    return d.float().mean().item(), int(d.max())


def reference_crop(path: Path, p: dict[str, int], size: tuple[int, int]) -> torch.Tensor:
    full = F.pil_to_tensor(load_rgb(path))
    return F.resized_crop(full, p["top"], p["left"], p["height"], p["width"], list(size), antialias=True)


def box_of(p: dict[str, int]) -> tuple[int, int, int, int]:
    return p["left"], p["top"], p["left"] + p["width"], p["top"] + p["height"]


def test_reduced_decode_matches_the_full_decode_within_resampling_noise(big_jpeg: Path) -> None:
    decoder = RandomResizedCropDecode(96)
    full = F.pil_to_tensor(load_rgb(big_jpeg))
    used, ours, yardstick = set(), [], []
    for seed in range(40):
        torch.manual_seed(seed)
        p = decoder.params(shown_size(big_jpeg))
        out = decode_box(big_jpeg, box_of(p), (96, 96), crop_first=True)
        s = choose_reduction((p["width"], p["height"]), (96, 96))
        assert (out is None) == (s == 1)
        if out is None:
            continue
        used.add(s)
        crop = (full, p["top"], p["left"], p["height"], p["width"], [96, 96])
        ref = F.resized_crop(*crop, antialias=True)
        mean, worst = errors(F.pil_to_tensor(out), ref)
        assert mean <= MEAN_BOUND and worst <= MAX_BOUND, (seed, s, mean, worst)
        ours.append(mean)
        yardstick.append(errors(F.resized_crop(*crop, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                                ref)[0])
        if len(used) == 1 and len(ours) == 1:  # the bounds see a box one reduced pixel off
            x0, y0, x1, y1 = box_of(p)
            shift = s if x1 + s <= 1600 else -s
            off = decode_box(big_jpeg, (x0 + shift, y0, x1 + shift, y1), (96, 96), crop_first=True)
            assert errors(F.pil_to_tensor(off), ref)[0] > 2 * MEAN_BOUND
    assert used == {2, 4, 8}  # every DCT scale was exercised
    assert np.mean(ours) < np.mean(yardstick)


@pytest.mark.parametrize("shown", [(2048, 1536), (1536, 2048), (500, 37), (224, 224)])
def test_crops_are_torchvisions_for_the_same_seed(shown: tuple[int, int]) -> None:
    """Same RNG calls as ``v2.RandomResizedCrop``: the same crop for the same seed, so the same distribution."""
    ours, theirs = RandomResizedCropDecode(224, (0.08, 1.0)), v2.RandomResizedCrop(224, (0.08, 1.0))
    probe = Image.new("RGB", shown)
    for seed in range(50):
        torch.manual_seed(seed)
        a = ours.params(shown)
        torch.manual_seed(seed)
        b = theirs.make_params([probe]) if hasattr(theirs, "make_params") else theirs._get_params([probe])
        assert a == b


def torchvision_train_reference(image_size: int) -> v2.Compose:
    """The fast training preset's ops, all torchvision's, on a full-decode PIL image (crop, jitter on PIL as in
    torchvision's classic pipeline, then tensor, flip, normalise)."""
    return v2.Compose([v2.RandomResizedCrop(image_size, antialias=True), v2.ColorJitter(0.4, 0.4, 0.4), v2.ToImage(),
                       v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(**PLAIN)])


def test_fast_presets_are_torchvisions_ops_on_a_full_decode(big_jpeg: Path) -> None:
    """Whole presets, same seed: same crop, jitter and flip draws; pixels within the (jitter-amplified) bound."""
    for fast, reference in (
        (classification_train_transforms(128, **PLAIN, fast_decode=True), torchvision_train_reference(128)),
        (classification_eval_transforms(128, **PLAIN, fast_decode=True), classification_eval_transforms(128, **PLAIN)),
    ):
        for seed in range(10):
            torch.manual_seed(seed)
            a = fast(str(big_jpeg))
            torch.manual_seed(seed)
            b = reference(load_rgb(big_jpeg))
            assert a.shape == b.shape == (3, 128, 128) and a.dtype == b.dtype == torch.float32
            diff = (a - b).abs() * 255  # contrast and brightness factors up to 1.4 scale the decode difference
            assert diff.mean() <= 1.5 * MEAN_BOUND and diff.max() <= 1.5 * MAX_BOUND, (seed, diff.mean(), diff.max())


@pytest.mark.parametrize("name, size, image_size", [("small.jpg", (300, 200), 224), ("big.png", (800, 600), 64)])
def test_small_images_and_pngs_are_decoded_in_full(tmp_path: Path, name: str, size: tuple[int, int],
                                                   image_size: int) -> None:
    """No reduction possible (a 300x200 JPEG for a 224 crop) or no DCT (PNG): torchvision's ops on a full decode,
    exactly; and within one grey level of the plain (tensor) presets."""
    path = save(tmp_path / name, photo(*size))
    train_fast = classification_train_transforms(image_size, **PLAIN, fast_decode=True)
    no_jitter = (classification_train_transforms(image_size, **PLAIN, color_jitter=0, fast_decode=True),
                 classification_train_transforms(image_size, **PLAIN, color_jitter=0))
    eval_fast = classification_eval_transforms(image_size, **PLAIN, fast_decode=True)
    for seed in range(5):
        torch.manual_seed(seed)
        a = train_fast(path)
        torch.manual_seed(seed)
        assert torch.equal(a, torchvision_train_reference(image_size)(load_rgb(path)))
        torch.manual_seed(seed)
        a = no_jitter[0](path)
        torch.manual_seed(seed)
        assert (a - no_jitter[1](load_rgb(path))).abs().max() <= 1 / 255 + 1e-6  # PIL's and torch's resize rounding
        assert torch.equal(eval_fast(path), classification_eval_transforms(image_size, **PLAIN)(load_rgb(path)))
    if name.endswith(".png"):  # a JPEG this size would be decoded at 1/8 for this box
        assert decode_box(path, (0, 0, *size), (64, 64)) is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_load_rgb_applies_it(tmp_path: Path, orientation: int) -> None:
    """Odd, non-square stored size and a non-square output: any wrong axis or flip shows."""
    path = save(tmp_path / "phone.jpg", photo(962, 641, seed=orientation), orientation=orientation)
    assert shown_size(path) == load_rgb(path).size
    decoder = RandomResizedCropDecode((48, 80))  # (h, w)
    reduced = 0
    for seed in range(6):
        torch.manual_seed(seed)
        p = decoder.params(shown_size(path))
        torch.manual_seed(seed)
        out = F.pil_to_tensor(decoder(path))
        assert out.shape == (3, 48, 80)
        mean, worst = errors(out, reference_crop(path, p, (48, 80)))
        assert mean <= MEAN_BOUND and worst <= MAX_BOUND, (seed, mean, worst)
        reduced += decode_box(path, box_of(p), (80, 48), crop_first=True) is not None
    assert reduced >= 3  # the reduced path was the one tested
    # Full decodes (no reduction for these sizes) are torchvision's ops on load_rgb's image, exactly.
    torch.manual_seed(0)
    a = F.pil_to_tensor(RandomResizedCropDecode(400)(path))
    torch.manual_seed(0)
    assert torch.equal(a, F.pil_to_tensor(v2.RandomResizedCrop(400, antialias=True)(load_rgb(path))))
    plain_eval = v2.Compose([v2.ToImage(), v2.Resize(600, antialias=True), v2.CenterCrop(500)])
    assert torch.equal(ResizeCenterCropDecode(600, 500)(path), plain_eval(load_rgb(path)))


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grey_and_cmyk_jpegs_become_rgb_as_load_rgb_makes_them(tmp_path: Path, mode: str) -> None:
    path = save(tmp_path / f"{mode}.jpg", photo(800, 600), mode=mode)
    decoder = ResizeCenterCropDecode(146, 128)
    out = decoder(path)
    ref = F.center_crop(F.resize(F.pil_to_tensor(load_rgb(path)), [146], antialias=True), [128])
    assert decode_box(path, *decoder.plan(shown_size(path))) is not None
    mean, worst = errors(out, ref)
    assert out.shape == (3, 128, 128) and mean <= MEAN_BOUND and worst <= MAX_BOUND


@pytest.mark.parametrize("shown", [(1600, 700), (700, 1600), (1001, 999), (640, 480)])
def test_eval_box_is_torchvisions_resize_and_centre_crop(tmp_path: Path, shown: tuple[int, int]) -> None:
    path = save(tmp_path / "eval.jpg", photo(*shown))
    out = ResizeCenterCropDecode(256, 224)(path)
    ref = F.center_crop(F.resize(F.pil_to_tensor(load_rgb(path)), [256], antialias=True), [224])
    mean, worst = errors(out, ref)
    assert mean <= MEAN_BOUND and worst <= MAX_BOUND


def test_unreadable_jpeg_names_the_file(tmp_path: Path, big_jpeg: Path) -> None:
    path = tmp_path / "cut.jpg"
    path.write_bytes(big_jpeg.read_bytes()[:20_000])
    with pytest.raises(DataError, match="cut.jpg"):
        RandomResizedCropDecode(64, scale=(1.0, 1.0))(path)


def test_datamodule_decodes_fast_by_default_and_serves_the_same_batches(tmp_path: Path) -> None:
    for cls, n in (("a", 3), ("b", 3)):
        for split in ("train", "val"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                save(tmp_path / split / cls / f"{i}.jpg", photo(640, 480, seed=i + 10 * n))
    assert ImageFolderDataModule(root=str(tmp_path)).hparams.fast_decode
    batches = {}
    for fast in (True, False):
        # Without jitter both presets draw crop then flip: the same augmentation for the same data seed.
        data = ImageFolderDataModule(root=str(tmp_path), image_size=64, batch_size=4, num_workers=0,
                                     fast_decode=fast, color_jitter=0.0, **PLAIN)
        data.data_seed = 0
        data.setup("fit")
        assert (data.datasets["train"].load is load_rgb) is not fast
        batches[fast] = next(iter(data.train_dataloader())), next(iter(data.val_dataloader()))
    for fast_batch, plain_batch in zip(batches[True], batches[False]):
        assert fast_batch["image"].shape == (4, 3, 64, 64) and fast_batch["image"].dtype == torch.float32
        assert fast_batch["path"] == plain_batch["path"]
        diff = (fast_batch["image"] - plain_batch["image"]).abs() * 255
        assert diff.mean() <= MEAN_BOUND and diff.max() <= MAX_BOUND


def test_fast_training_preset_splits_for_normalize_on_device() -> None:
    """The flip comes last before the normalisation, so ``normalize_on_device`` can move both to the device."""
    gpu_augment = pytest.importorskip("lit_vision.data.gpu_augment")
    cpu, device_op = gpu_augment.split_for_device(classification_train_transforms(32, fast_decode=True))
    assert device_op.hflip == 0.5
    assert not any(isinstance(op, v2.RandomHorizontalFlip) for op in cpu.transforms)
