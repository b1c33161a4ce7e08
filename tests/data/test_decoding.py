"""Images decode as their viewers see them: EXIF orientation, 16-bit and float pixels, every colour mode.

Each case writes its file in ``tmp_path`` and compares :func:`load_rgb` with a reference decode: Pillow's
own ``ImageOps.exif_transpose`` for orientation, numpy arithmetic written out here for bit depths
(16-bit: ``v >> 8``, i.e. ``floor(v / 256)``; float: ``floor(v * 255 + 0.5)``; see docs/images.md).
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from lit_vision.data.checks import (
    DataError,
    check_image,
    load_rgb,
    oriented_size,
    to_rgb,
    verify_images,
)
from lit_vision.data.classification.imagefolder import ImageFolderDataset
from lit_vision.data.detection.base import ImagePathsDataset
from lit_vision.data.segmentation.base import SegmentationDataset

W, H = 40, 24  # not square: a rotation shows in the size


def pattern(width: int = W, height: int = H) -> np.ndarray:
    """An RGB image whose every row and column differs, so any flip or rotation changes the pixels."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x * 7 + y * 13) % 256], axis=-1).astype(np.uint8)


def save_with_orientation(path: Path, orientation: int, pixels: np.ndarray | None = None) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pattern() if pixels is None else pixels).save(path, exif=exif, quality=95)
    return path


def png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG of ``uint16 [H, W]`` (grey) or ``[H, W, 3]`` (RGB) pixels.

    Written by hand: Pillow has no 16-bit RGB mode, so it cannot write such a file (it only reads one).
    """
    data = np.asarray(pixels, dtype=">u2")
    height, width = data.shape[:2]
    colour_type = 0 if data.ndim == 2 else 2
    raw = b"".join(b"\x00" + data[row].tobytes() for row in range(height))  # filter 0 (None) on every row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------- EXIF
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_exif_transpose_does(tmp_path: Path, orientation: int, suffix: str) -> None:
    path = save_with_orientation(tmp_path / f"photo{suffix}", orientation)
    with Image.open(path) as im:
        reference = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    decoded = np.asarray(load_rgb(path))
    assert decoded.shape == reference.shape
    assert (decoded == reference).all()
    expected = (H, W) if orientation >= 5 else (W, H)
    assert oriented_size(path) == (expected, (W, H), orientation)


def test_phone_photo_trains_and_predicts_upright(tmp_path: Path) -> None:
    """Orientation 6 (the usual portrait phone photo): classification and predict-only folders see it upright."""
    path = save_with_orientation(tmp_path / "phone.jpg", 6)
    with Image.open(path) as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    item = ImageFolderDataset([(str(path), 0)])[0]
    assert (np.asarray(item["image"]) == upright).all()
    detect = ImagePathsDataset([str(path)])[0]
    assert detect["target"]["orig_size"] == (W, H)  # (h, w) of the rotated image
    assert (np.asarray(detect["image"].permute(1, 2, 0) * 255).round() == upright).all()
    segment = SegmentationDataset([str(path)], None, num_classes=2)[0]
    assert segment["meta"]["orig_size"] == (W, H)


def test_broken_exif_block_does_not_make_the_image_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "odd.jpg"
    Image.fromarray(pattern()).save(path, exif=b"Exif\x00\x00garbage-not-tiff")
    assert check_image(path) is None
    assert load_rgb(path).size == (W, H)


# ---------------------------------------------------------------------------------------------- bit depth
def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.random.default_rng(0).integers(0, 65536, (H, W), dtype=np.uint16)
    values[0, :4] = [0, 255, 256, 65535]  # the edges of the scaling
    path = tmp_path / "grey16.png"
    path.write_bytes(png16(values))
    with Image.open(path) as im:
        assert im.mode == "I;16"  # what Pillow 13 opens it as
    decoded = np.asarray(load_rgb(path))
    expected = (values >> 8).astype(np.uint8)  # floor(v / 256): exact for v = x * 257 and for v = x << 8
    assert (decoded == expected[..., None]).all()
    assert list(decoded[0, :4, 0]) == [0, 0, 1, 255]
    assert len(np.unique(decoded)) > 200  # not binary (every non-zero pixel 255), as plain convert("RGB") made it


def test_16_bit_rgb_png_keeps_the_high_byte_as_grey_does(tmp_path: Path) -> None:
    """Pillow reads 16-bit RGB as 8-bit RGB itself (the high byte): the same rule as 16-bit grey."""
    values = np.random.default_rng(1).integers(0, 65536, (H, W, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(png16(values))
    assert (np.asarray(load_rgb(path)) == (values >> 8).astype(np.uint8)).all()


def test_32_bit_integer_image_in_16_bit_range_is_scaled(tmp_path: Path) -> None:
    values = np.random.default_rng(2).integers(0, 65536, (H, W)).astype(np.int32)
    path = tmp_path / "int32.tif"
    Image.fromarray(values).save(path)
    assert (np.asarray(load_rgb(path))[..., 1] == (values >> 8).astype(np.uint8)).all()


def test_32_bit_integer_image_out_of_16_bit_range_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "int32.tif"
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(path)
    problem = check_image(path)
    assert problem is not None and "mode 'I'" in problem and "0..70000" in problem
    with pytest.raises(DataError, match=rf"^cannot read image {path}: 32-bit integer image .*0\.\.70000") as info:
        load_rgb(path)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match=rf"{path}: 32-bit integer image"):
        verify_images([path], "the test split")


def test_float_image_in_0_1_is_rounded_half_up(tmp_path: Path) -> None:
    values = np.random.default_rng(3).random((H, W)).astype(np.float32)
    values[0, :4] = [0.0, 0.5 / 255, 0.49 / 255, 1.0]
    path = tmp_path / "float.tif"
    Image.fromarray(values).save(path)
    decoded = np.asarray(load_rgb(path))[..., 0]
    assert (decoded == np.floor(values * 255 + 0.5).astype(np.uint8)).all()
    assert list(decoded[0, :4]) == [0, 1, 0, 255]


@pytest.mark.parametrize("bad", [2.0, -0.1, float("nan")])
def test_float_image_outside_0_1_is_a_clear_error(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, bad]], dtype=np.float32)).save(path)
    with pytest.raises(DataError, match=rf"^cannot read image {path}: float image \(mode 'F'\)"):
        load_rgb(path)
    assert "mode 'F'" in (check_image(path) or "")


# ---------------------------------------------------------------------------------------------- colour modes
def test_alpha_is_dropped_not_composited(tmp_path: Path) -> None:
    rgba = np.concatenate([pattern(), np.full((H, W, 1), 0, np.uint8)], axis=-1)  # fully transparent
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert (np.asarray(load_rgb(tmp_path / "rgba.png")) == pattern()).all()
    grey = pattern()[..., 0]
    Image.fromarray(np.stack([grey, 255 - grey], axis=-1)).save(tmp_path / "la.png")
    with Image.open(tmp_path / "la.png") as im:
        assert im.mode == "LA"
    assert (np.asarray(load_rgb(tmp_path / "la.png")) == grey[..., None]).all()


def test_palette_with_transparency_looks_colours_up_without_warnings(tmp_path: Path) -> None:
    indices = (np.arange(W * H).reshape(H, W) % 3).astype(np.uint8)
    im = Image.frombytes("P", (W, H), indices.tobytes())
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    im.save(tmp_path / "p.png", transparency=b"\x00\x80\xff")
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoded = np.asarray(load_rgb(tmp_path / "p.png"))
    assert (decoded == colours[indices]).all()


def test_bilevel_grey_and_cmyk_use_pillows_conversion(tmp_path: Path) -> None:
    grey = pattern()[..., 0]
    Image.fromarray(grey).convert("1").save(tmp_path / "bw.png")
    assert set(np.unique(np.asarray(load_rgb(tmp_path / "bw.png")))) <= {0, 255}
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert (np.asarray(load_rgb(tmp_path / "grey.png")) == grey[..., None]).all()
    Image.new("CMYK", (W, H), (0, 255, 0, 0)).save(tmp_path / "cmyk.tif")
    assert np.asarray(load_rgb(tmp_path / "cmyk.tif"))[0, 0].tolist() == [255, 0, 255]  # magenta, no ICC


def test_unconvertible_mode_is_named() -> None:
    with pytest.raises(DataError, match="image mode 'La' cannot be converted to RGB"):
        to_rgb(Image.new("La", (2, 2)))


@pytest.mark.parametrize("threaded", [False, True])
def test_load_all_rgb_in_turn_or_on_threads_gives_the_same_images_and_names_bad_files(
        tmp_path: Path, threaded: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_all_rgb`` decodes tiny files in turn and slow ones on threads (timed on the first files): both ways
    return every image as :func:`load_rgb` does, in order, and name a bad file among them."""
    import lit_vision.data.checks as checks

    monkeypatch.setattr(checks, "THREADED_DECODE_MIN_S", 0.0 if threaded else float("inf"))
    calls: list[int] = []
    real_pool = checks.ThreadPoolExecutor

    def counting_pool(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(checks, "ThreadPoolExecutor", counting_pool)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(40):  # more than the files timed in turn first
        path = tmp_path / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (6 + i % 5, 7, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    images = checks.load_all_rgb(paths, "the test split")
    assert bool(calls) == threaded
    assert [np.asarray(im).tolist() for im in images] == [np.asarray(load_rgb(p)).tolist() for p in paths]
    bad = tmp_path / "30.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"(?s)1 unreadable image.*30\.png"):
        checks.load_all_rgb(paths, "the test split")


def test_an_image_over_pillows_pixel_limit_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's DecompressionBombError (images over ``Image.MAX_IMAGE_PIXELS``, ~179 MP; lowered here) is an
    ``Exception``, not an ``OSError``: it used to escape every check and loader without naming the file."""
    from lit_vision.data.classification.fast_decode import RandomResizedCropDecode

    path = tmp_path / "scan.jpg"
    Image.new("RGB", (200, 150), (90, 120, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 30,000 pixels: over twice the limit, an error
    assert "exceeds limit" in check_image(path)
    for read in (load_rgb, oriented_size, RandomResizedCropDecode(32)):
        with pytest.raises(DataError, match=f"cannot read image {path}"):
            read(path)
