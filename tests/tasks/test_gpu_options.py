"""The GPU-path task options, checked on the CPU: channels_last, torch.compile (clean checkpoint keys); fused optimizers: tests/tasks/test_optim.py."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch._dynamo.utils import counters
from torch.utils.data import DataLoader

from lit_vision.tasks import ImageClassifier, SemanticSegmenter


def _fit_one_step(model: pl.LightningModule, tmp_path: Path) -> pl.Trainer:
    torch.manual_seed(0)
    items = [{"image": torch.randn(3, 32, 32), "label": label} for label in (0, 1, 2, 0)]
    batches = DataLoader(items, batch_size=4)  # one {"image", "label"} batch
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, train_dataloaders=batches)
    return trainer


class SmallClassifier(ImageClassifier):
    """A few layers instead of a ResNet: dynamo traces it in a second on two cores."""

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(8, self.num_classes))


def test_channels_last_converts_the_weights_once_and_computes_nhwc(tmp_path: Path) -> None:
    fitted = SmallClassifier(num_classes=3, channels_last=True)
    _fit_one_step(fitted, tmp_path)  # the Trainer calls configure_model; the optimizer step keeps the format
    assert fitted.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not fitted.model[0].weight.is_contiguous()
    torch.manual_seed(0)
    model = ImageClassifier(backbone="tv/resnet18", num_classes=3, channels_last=True).eval()
    reference = ImageClassifier(backbone="tv/resnet18", num_classes=3).eval()
    reference.load_state_dict(model.state_dict())
    model.configure_model()
    convs = [p for p in model.model.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert all(not p.is_contiguous() for p in convs if p.shape[-1] > 1)  # (a 1x1 kernel is both)
    # An NCHW batch: the first convolution takes the weights' format, so every stage computes in NHWC...
    x = torch.randn(2, 3, 64, 64)  # (64 px: no 1x1 map, which is both formats)
    features = model.model.backbone(x)
    assert all(f.is_contiguous(memory_format=torch.channels_last) and not f.is_contiguous() for f in features)
    # ... and gives the NCHW model's numbers.
    assert torch.allclose(model(x), reference(x), atol=1e-5)
    assert reference.hparams.channels_last is False and model.hparams.channels_last is True


def test_compile_keeps_state_dict_keys_and_checkpoints_load_without_it(tmp_path: Path) -> None:
    counters.clear()
    compiled = SmallClassifier(num_classes=3, compile={"backend": "eager"})
    trainer = _fit_one_step(compiled, tmp_path)
    assert counters["stats"]["unique_graphs"] > 0  # dynamo really traced the network
    plain = SmallClassifier(num_classes=3)
    assert list(compiled.state_dict()) == list(plain.state_dict())
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    restored = SmallClassifier.load_from_checkpoint(tmp_path / "c.ckpt", compile=False)
    for key, value in compiled.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    assert compiled.hparams.compile == {"backend": "eager"} and restored.compile_options is None
    compiled.configure_model()  # a second fit/validate: compiled once, not wrapped again
    assert compiled.model._compiled_call_impl is not None


def test_options_reach_every_task() -> None:
    segmenter = SemanticSegmenter(architecture="fcn", backbone="tv/resnet18", num_classes=3, channels_last=True,
                                  compile=True)
    assert segmenter.channels_last and segmenter.compile_options == {}
    segmenter.configure_model()
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in segmenter.model.parameters() if p.ndim == 4)
