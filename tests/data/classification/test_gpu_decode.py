"""Decoding on the training device (DeviceDecodeImageFolderDataModule), run on the CPU: same code path as on a GPU
(``decode_jpeg(list, device=...)``), checked against PIL's decode and the plain ImageFolder pipeline."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image
from torchvision.io import read_file
from torchvision.transforms.v2 import functional as F

from lit_vision.data import DeviceDecodeImageFolderDataModule, ImageFolderDataModule
from lit_vision.data.checks import DataError, load_rgb
from lit_vision.data.classification.gpu_decode import DecodeOnDevice, read_for_device
from lit_vision.data.gpu_augment import DeviceNormalizeFlip
from lit_vision.tasks import ImageClassifier
from tests.data.test_decoding import save_with_orientation

CPU = torch.device("cpu")


def photo(seed: int, size: tuple[int, int] = (48, 36)) -> np.ndarray:
    """Smooth colour gradients plus noise: JPEG-like content, so decoders are compared on realistic blocks."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1) + rng.integers(0, 80, 3)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def jpeg_tree(root: Path) -> Path:
    """``root/{train,val}/{a,b}/*``: JPEGs, plus one PNG, one grey JPEG and one EXIF-rotated JPEG in train."""
    for split, n in (("train", 4), ("val", 3)):
        for c, name in enumerate("ab"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(photo(100 * c + 10 * (split == "val") + i)).save(folder / f"{i}.jpg", quality=90)
    Image.fromarray(photo(7)).save(root / "train" / "a" / "png.png")
    Image.fromarray(photo(8)).convert("L").save(root / "val" / "b" / "grey.jpg", quality=90)
    save_with_orientation(root / "val" / "a" / "rotated.jpg", 6, photo(9))
    return root


def test_plain_jpegs_travel_encoded_others_decoded_as_load_rgb(tmp_path: Path) -> None:
    root = jpeg_tree(tmp_path)
    jpeg, grey = root / "val" / "a" / "0.jpg", root / "val" / "b" / "grey.jpg"
    for path in (jpeg, grey):
        data = read_for_device(str(path))
        assert data.ndim == 1 and torch.equal(data, read_file(str(path)))
    for path in (root / "train" / "a" / "png.png", root / "val" / "a" / "rotated.jpg"):
        image = read_for_device(str(path))
        assert torch.equal(image, F.pil_to_tensor(load_rgb(path)))
    # Stored 48 wide x 36 high; EXIF orientation 6 shows it 36 wide x 48 high.
    assert read_for_device(str(root / "val" / "a" / "rotated.jpg")).shape[1:] == (48, 36)


def test_batched_decode_gives_pils_pixels(tmp_path: Path) -> None:
    root = jpeg_tree(tmp_path)
    paths = [root / "val" / "a" / "0.jpg", root / "val" / "b" / "grey.jpg", root / "val" / "a" / "rotated.jpg",
             root / "train" / "a" / "png.png"]
    stage = DecodeOnDevice(lambda x: x, DeviceNormalizeFlip([0.0] * 3, [1.0] * 3))
    decoded = stage.decode([read_for_device(str(p)) for p in paths], CPU)
    for path, image in zip(paths, decoded):
        reference = torch.from_numpy(np.asarray(load_rgb(path))).permute(2, 0, 1)
        assert image.shape == reference.shape and image.dtype == torch.uint8
        # libjpeg-turbo in both: at most rounding of the colour conversion apart.
        assert (image.int() - reference.int()).abs().max() <= 1, path


def test_eval_batches_equal_the_cpu_pipelines_and_a_fit_step_trains(tmp_path: Path) -> None:
    root = jpeg_tree(tmp_path)
    kw = dict(root=str(root), image_size=24, batch_size=4, eval_batch_size=7, num_workers=0)
    # The reference decodes every file in full (fast_decode would decode large JPEGs at a reduced scale).
    cpu_data, device_data = ImageFolderDataModule(fast_decode=False, **kw), DeviceDecodeImageFolderDataModule(**kw)
    for data in (cpu_data, device_data):
        data.setup("fit")
    expected = next(iter(cpu_data.val_dataloader()))
    batch = next(iter(device_data.val_dataloader()))
    assert isinstance(batch["data"], list) and "image" not in batch
    batch = device_data.device_transforms["val"](batch, CPU)
    assert batch["path"] == expected["path"] and torch.equal(batch["label"], expected["label"])
    assert batch["image"].shape == expected["image"].shape == (7, 3, 24, 24)
    # Same decoded pixels up to one level (previous test), then the same resize/crop/normalise ops.
    assert (batch["image"] - expected["image"]).abs().max() <= 1.5 / 255 / min(cpu_data.normalization[1])

    seen: list[torch.Tensor] = []

    class Capture(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            seen.append(batch["image"])

    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, callbacks=[Capture()])
    model = ImageClassifier(backbone="tv/resnet18", class_names=device_data.class_names)
    trainer.fit(model, datamodule=DeviceDecodeImageFolderDataModule(**kw))
    assert seen[0].shape == (4, 3, 24, 24) and seen[0].dtype == torch.float32
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def test_decoding_on_the_cpu_is_refused(tmp_path: Path) -> None:
    root = str(jpeg_tree(tmp_path))
    for option in ("cache_images", "fast_decode"):
        with pytest.raises(ValueError, match=f"{option} has no use"):
            DeviceDecodeImageFolderDataModule(root=root, **{option: True})


def test_a_recipe_or_the_cli_builds_it_with_its_own_defaults(tmp_path: Path) -> None:
    """LightningCLI fills in every argument: it used to pass the parent's ``fast_decode: true``, which was refused."""
    from lit_vision.cli import run_cli

    cli = run_cli(["--model", "ImageClassifier", "--model.backbone", "tv/resnet18",
                   "--data", "lit_vision.data.DeviceDecodeImageFolderDataModule",
                   "--data.root", str(jpeg_tree(tmp_path)),
                   "--trainer.accelerator", "cpu", "--trainer.logger", "false"], run=False)
    assert type(cli.datamodule) is DeviceDecodeImageFolderDataModule


def test_a_jpeg_the_decoder_refuses_is_named(tmp_path: Path) -> None:
    """Pillow (the data checks) accepts a JPEG whose scan data is zeroed; libjpeg-turbo and nvJPEG do not."""
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(good, quality=95)
    data = good.read_bytes()
    bad = tmp_path / "zeroed.jpg"
    bad.write_bytes(data[:700] + bytes(len(data) - 700))
    load_rgb(bad)  # passes the checks
    step = DecodeOnDevice(lambda im: im[:, :32, :32], DeviceNormalizeFlip([0.5] * 3, [0.5] * 3))
    batch = {"data": [read_for_device(str(good)), read_for_device(str(bad))], "label": torch.tensor([0, 1]),
             "path": [str(good), str(bad)]}
    with pytest.raises(DataError, match=f"cannot decode {bad} on cpu"):
        step(batch, torch.device("cpu"))
