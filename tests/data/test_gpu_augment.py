"""normalize_on_device: the preset cut at uint8 plus the device half gives the CPU pipeline's pixels exactly."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torchvision.transforms import v2

from lit_vision.data import ImageFolderDataModule
from lit_vision.data.classification.transforms import (
    classification_eval_transforms,
    classification_train_transforms,
)
from lit_vision.data.gpu_augment import DeviceNormalizeFlip, split_for_device
from lit_vision.tasks import ImageClassifier

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def test_device_half_equals_the_cpu_preset_for_the_same_flip_decisions() -> None:
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    preset = classification_train_transforms(32, MEAN, STD, hflip=True, color_jitter=0.0)
    cpu, device_op = split_for_device(preset)
    assert device_op.hflip == 0.5 and device_op.mean == list(MEAN) and device_op.std == list(STD)
    decisions = set()
    for seed in range(8):
        torch.manual_seed(seed)
        expected = preset(image)
        torch.manual_seed(seed)
        part = cpu(image)
        assert part.dtype == torch.uint8
        flip = bool(torch.rand(1) < 0.5)  # the draw RandomHorizontalFlip made next in the full preset
        decisions.add(flip)
        assert torch.equal(device_op(part[None], flips=torch.tensor([flip]))[0], expected)
    assert decisions == {True, False}  # both branches were compared


def test_eval_preset_moves_only_the_normalisation() -> None:
    image = torch.randint(0, 256, (3, 45, 37), dtype=torch.uint8)
    preset = classification_eval_transforms(32, MEAN, STD)
    cpu, device_op = split_for_device(preset)
    assert device_op.hflip == 0.0
    assert torch.equal(device_op(cpu(image)[None])[0], preset(image))


def test_a_flip_commutes_with_colour_jitter_so_it_may_move_after_it() -> None:
    """What split_for_device relies on when a flip sits before ColorJitter in the preset."""
    image = torch.randint(0, 256, (3, 24, 31), dtype=torch.uint8)
    jitter = v2.ColorJitter(0.4, 0.4, 0.4, 0.1)
    torch.manual_seed(3)
    a = v2.functional.horizontal_flip(jitter(image))
    torch.manual_seed(3)
    b = jitter(v2.functional.horizontal_flip(image))
    assert torch.equal(a, b)
    _, device_op = split_for_device(classification_train_transforms(16, hflip=True, color_jitter=0.4))
    assert device_op.hflip == 0.5


def test_random_flips_are_drawn_per_image() -> None:
    torch.manual_seed(0)
    images = torch.arange(6, dtype=torch.uint8).view(1, 1, 1, 6).repeat(64, 3, 2, 1)
    out = DeviceNormalizeFlip([0.0] * 3, [1 / 255] * 3, hflip=0.5)(images)  # = the pixel values, as float
    flipped = out[:, 0, 0, 0] == 5
    assert torch.equal(out[~flipped], images[~flipped].float())
    assert torch.equal(out[flipped], images[flipped].flip(-1).float())
    assert 10 < int(flipped.sum()) < 54


@pytest.mark.parametrize("ops, message", [
    ([v2.ToImage(), v2.RandomHorizontalFlip(), v2.RandomResizedCrop(8), v2.ToDtype(torch.float32, scale=True),
      v2.Normalize(MEAN, STD)], "does not commute with"),
    ([v2.ToImage(), v2.RandomResizedCrop(8), v2.ToDtype(torch.float32, scale=True)], "does not end with"),
    ([v2.ToImage(), v2.ToDtype(torch.float32, scale=False), v2.Normalize(MEAN, STD)], "does not end with"),
])
def test_presets_that_cannot_be_split_are_refused(ops: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_for_device(v2.Compose(ops))
    with pytest.raises(ValueError, match="not a torchvision v2.Compose"):
        split_for_device(lambda x: x)


class _Capture(Callback):
    """The batches training_step and validation_step receive (after every transfer hook)."""

    def __init__(self) -> None:
        self.seen: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.setdefault("train", batch["image"].clone())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.seen.setdefault("val", batch["image"].clone())


def _first_batches(root: Path, tmp_path: Path, **data_kw) -> dict[str, torch.Tensor]:
    pl.seed_everything(0)
    data = ImageFolderDataModule(root=str(root), image_size=24, batch_size=6, num_workers=0, hflip=False,
                                 color_jitter=0.4, **data_kw)
    capture = _Capture()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                         num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, callbacks=[capture])
    trainer.fit(ImageClassifier(backbone="tv/resnet18", class_names=data.class_names), datamodule=data)
    return capture.seen


def test_training_with_normalize_on_device_sees_the_same_batches(imagefolder_root: Path, tmp_path: Path) -> None:
    """Through a Trainer: the DataModule hands the device halves to the task, which runs them per split."""
    on_cpu = _first_batches(imagefolder_root, tmp_path)
    on_device = _first_batches(imagefolder_root, tmp_path, normalize_on_device=True)
    for split in ("train", "val"):
        assert on_device[split].dtype == torch.float32
        assert torch.equal(on_device[split], on_cpu[split]), split


def test_a_task_subclass_keeps_its_own_before_transfer_hook(imagefolder_root: Path, tmp_path: Path) -> None:
    """Lightning calls only the DataModule's ``on_before_batch_transfer`` when both define one; ours forwards to
    the task's own override, so a researcher's subclass hook still runs (after the device step)."""
    seen: list[torch.dtype] = []

    class Tagged(ImageClassifier):
        def on_before_batch_transfer(self, batch, dataloader_idx):
            seen.append(batch["image"].dtype)
            batch["image"] = batch["image"] * 0.0
            return batch

        def training_step(self, batch, batch_idx):
            assert float(batch["image"].abs().sum()) == 0.0
            return super().training_step(batch, batch_idx)

    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=4, num_workers=0,
                                 normalize_on_device=True)
    model = Tagged(backbone="tv/resnet18", class_names=data.class_names)
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(model, data)
    assert seen and seen[0] == torch.float32  # normalised on the device first, then the task's hook
