"""ImageClassifier: loss, metrics, optimizer groups, prediction, checkpoints, subclassing, bf16."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_vision.data import ImageFolderDataModule
from lit_vision.tasks import ImageClassifier
from lit_vision.tasks.base import split_decay_parameters

NAMES = ["cat", "dog", "eel", "fox", "gnu", "hen", "ibis"]


def tiny(**kw) -> ImageClassifier:
    kw.setdefault("class_names", NAMES)
    return ImageClassifier(backbone="tv/resnet18", **kw)


def trainer(tmp_path: Path, **kw) -> pl.Trainer:
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return pl.Trainer(accelerator="cpu", default_root_dir=tmp_path, enable_progress_bar=False,
                      enable_model_summary=False, **kw)


def test_num_classes_comes_from_class_names_and_mismatch_is_an_error() -> None:
    assert tiny().num_classes == 7
    with pytest.raises(ValueError, match="num_classes=3 but 7 class_names"):
        tiny(num_classes=3)
    with pytest.raises(ValueError, match="needs num_classes or class_names"):
        ImageClassifier()


def test_one_class_or_no_top_k_is_refused_with_a_clear_message() -> None:
    """One class trained to accuracy 1 with nothing learned (torchmetrics refused it naming its own argument);
    top_k=0 predicted empty lists."""
    with pytest.raises(ValueError, match=r"at least 2 classes, got \['only'\]"):
        ImageClassifier(backbone="tv/resnet18", class_names=["only"])
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        tiny(top_k=0)


def test_loss_is_label_smoothed_cross_entropy_computed_by_hand() -> None:
    torch.manual_seed(0)
    model = tiny(label_smoothing=0.1).eval()
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 5])
    logits = model(images)
    logp = logits.log_softmax(1)
    target = torch.full_like(logp, 0.1 / 7)
    target[torch.arange(6), labels] += 0.9
    expected = -(target * logp).sum(1).mean()
    assert torch.allclose(model.compute_loss(logits, labels), expected, atol=1e-6)
    soft = torch.softmax(torch.randn(6, 7), 1)  # Mixup/CutMix targets: smoothing applies on top
    expected_soft = -((soft * 0.9 + 0.1 / 7) * logp).sum(1).mean()
    assert torch.allclose(model.compute_loss(logits, soft), expected_soft, atol=1e-6)


def test_shared_step_metrics_equal_top1_and_top5_by_hand() -> None:
    torch.manual_seed(0)
    model = tiny().eval()
    batches = [{"image": torch.randn(5, 3, 32, 32), "label": torch.randint(0, 7, (5,))} for _ in range(3)]
    hits1 = hits5 = 0
    with torch.no_grad():
        for b in batches:
            logits = model(b["image"])
            top5 = logits.topk(5, 1).indices
            hits1 += (top5[:, 0] == b["label"]).sum().item()
            hits5 += (top5 == b["label"][:, None]).any(1).sum().item()
            model.val_metrics.update(logits, b["label"])
    out = model.val_metrics.compute()
    assert out["val/acc1"].item() == pytest.approx(hits1 / 15)
    assert out["val/acc5"].item() == pytest.approx(hits5 / 15)


class _EpochMetrics(pl.Callback):
    """The logged train accuracy of every epoch, and the top-1 hits the model scored on each training batch (the
    eval-mode logits of the trained-on batch are not the same; the train-mode ones are read in the step)."""

    def __init__(self) -> None:
        self.logged: list[float] = []
        self.hits: list[list[tuple[int, int]]] = []
        self.val: list[tuple[float, float]] = []  # (logged, by hand) per validation run
        self.val_batches: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.hits.append([])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.logged.append(float(trainer.callback_metrics["train/acc1"]))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            hits = sum(int((pl_module(b["image"]).argmax(1) == b["label"]).sum()) for b in self.val_batches)
        pl_module.train(training)
        n = sum(len(b["label"]) for b in self.val_batches)
        self.val.append((float(trainer.callback_metrics["val/acc1"]), hits / n))


class _RecordingClassifier(ImageClassifier):
    probe: _EpochMetrics

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            logits = self(batch["image"])  # train mode, lr 0: the same logits the step scores
        self.probe.hits[-1].append((int((logits.argmax(1) == batch["label"]).sum()), len(batch["label"])))
        return super().training_step(batch, batch_idx)


def test_epoch_accuracy_is_logged_per_epoch_over_that_epoch_only(tmp_path: Path) -> None:
    """train/acc1 and val/acc1 are each epoch's own accuracy over all its batches (computed once at the epoch
    end), by hand; nothing carries over from the epoch before, nor from one validate() call to the next."""
    torch.manual_seed(0)
    images, labels = torch.randn(24, 3, 32, 32), torch.arange(24) % 7
    samples = [{"image": x, "label": y} for x, y in zip(images, labels)]
    loader = torch.utils.data.DataLoader(samples, batch_size=8)
    batches = list(loader)
    probe = _EpochMetrics()
    model = _RecordingClassifier(backbone="tv/resnet18", class_names=NAMES,
                                 optimizer=lambda params: torch.optim.SGD(params, lr=0.0))
    model.probe = probe
    probe.val_batches = batches[1:]
    # Validation after every training batch, after a sanity check on one batch: each run reports its own batches.
    trainer(tmp_path, max_epochs=2, val_check_interval=1, num_sanity_val_steps=1, callbacks=[probe]).fit(
        model, loader, torch.utils.data.DataLoader(batches[1:], batch_size=None))
    assert len(probe.logged) == 2 and len(probe.val) == 6
    for logged, hits in zip(probe.logged, probe.hits):
        assert logged == pytest.approx(sum(h for h, _ in hits) / sum(n for _, n in hits), abs=1e-6)
    for logged, by_hand in probe.val:
        assert logged == pytest.approx(by_hand, abs=1e-6)
    model.eval()
    for subset in (batches[:1], batches[1:]):  # validate twice: the second result is the second subset's alone
        [result] = trainer(tmp_path).validate(model, torch.utils.data.DataLoader(subset, batch_size=None),
                                              verbose=False)
        with torch.no_grad():
            hits = sum(int((model(b["image"]).argmax(1) == b["label"]).sum()) for b in subset)
            top5 = sum(int((model(b["image"]).topk(5, 1).indices == b["label"][:, None]).any(1).sum()) for b in subset)
        n = sum(len(b["label"]) for b in subset)
        assert result["val/acc1"] == pytest.approx(hits / n, abs=1e-6)
        assert result["val/acc5"] == pytest.approx(top5 / n, abs=1e-6)


def test_soft_targets_count_as_their_argmax_for_accuracy() -> None:
    model = tiny().eval()
    hard = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0])
    batch = {"image": torch.randn(8, 3, 32, 32), "label": F.one_hot(hard, 7).float() * 0.7 + 0.3 / 7}
    with torch.no_grad():
        model._shared_step(batch, "train")
        expected = (model(batch["image"]).argmax(1) == hard).float().mean().item()
    assert model.train_metrics.compute()["train/acc1"].item() == pytest.approx(expected)


def test_norm_and_bias_parameters_get_no_weight_decay() -> None:
    model = tiny()
    decay, no_decay = split_decay_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay} == {n for n, p in model.named_parameters() if p.ndim > 1}
    assert all(n.endswith("bias") or "bn" in n or "downsample.1" in n for n in (names[id(p)] for p in no_decay))
    groups = model.parameter_groups()
    assert groups[1]["weight_decay"] == 0.0 and "weight_decay" not in groups[0]
    assert len(decay) + len(no_decay) == len(list(model.parameters()))


def test_default_optimizer_is_nesterov_sgd_with_per_step_cosine(imagefolder_root: Path, tmp_path: Path) -> None:
    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=4, num_workers=0)
    model = ImageClassifier(backbone="tv/resnet18", class_names=data.class_names)
    t = trainer(tmp_path, max_epochs=2)
    t.fit(model, data)
    opt = t.optimizers[0]
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 1e-4
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    sched = t.lr_scheduler_configs[0]
    assert sched.interval == "step" and sched.scheduler.T_max == 12  # 6 steps/epoch x 2 epochs
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # annealed to zero at the end


def test_yaml_style_optimizer_and_scheduler_are_injected(tmp_path: Path, imagefolder_root: Path) -> None:
    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=4, num_workers=0)
    model = ImageClassifier(
        backbone="tv/resnet18", class_names=data.class_names,
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.05),
        lr_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
        lr_scheduler_interval="epoch",
    )
    t = trainer(tmp_path, max_epochs=2)
    t.fit(model, data)
    opt = t.optimizers[0]
    assert isinstance(opt, torch.optim.AdamW) and [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.25)
    assert "optimizer" not in model.hparams  # a Python callable cannot go into a checkpoint


def test_predict_returns_top_k_names_and_probabilities() -> None:
    model = tiny(top_k=3).eval()
    batch = {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([4, -1]), "path": ["a.png", "b.png"]}
    with torch.no_grad():
        rows = model.predict_step(batch, 0)
        probs = model(batch["image"]).softmax(1)
    assert [r["path"] for r in rows] == ["a.png", "b.png"]
    for r, p in zip(rows, probs):
        order = p.argsort(descending=True)[:3].tolist()
        assert r["top_k"] == [NAMES[i] for i in order]
        assert r["probs"] == pytest.approx(p[order].tolist(), abs=1e-6)
    assert rows[0]["label"] == "gnu" and "label" not in rows[1]


def test_checkpoint_alone_restores_class_names_and_predictions(imagefolder_root: Path, tmp_path: Path) -> None:
    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=4, num_workers=0)
    model = ImageClassifier(backbone="tv/resnet18", class_names=data.class_names, top_k=2)
    t = trainer(tmp_path, max_epochs=1)
    t.fit(model, data)
    ckpt = tmp_path / "m.ckpt"
    t.save_checkpoint(ckpt)
    loaded = ImageClassifier.load_from_checkpoint(ckpt, weights_only=True).eval()
    assert loaded.class_names == ["cat", "dog", "eel"] and loaded.top_k == 2
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-6)


class FocalClassifier(ImageClassifier):
    """The documented subclassing example: a different loss and head, nothing else."""

    def compute_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, reduction="none")
        return ((1 - torch.exp(-ce)) ** 2 * ce).mean()

    def build_head(self, in_channels: int) -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, self.num_classes))


def test_subclass_overrides_loss_and_head(imagefolder_root: Path, tmp_path: Path) -> None:
    class Head(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
            return self.inner(feats[-1])

    class Model(FocalClassifier):
        def build_head(self, in_channels: int) -> nn.Module:
            return Head(super().build_head(in_channels))

    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=4, num_workers=0)
    model = Model(backbone="tv/resnet18", class_names=data.class_names)
    assert isinstance(model.model.head, Head)
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    ce = F.cross_entropy(logits, target, reduction="none")
    assert torch.allclose(model.compute_loss(logits, target), ((1 - torch.exp(-ce)) ** 2 * ce).mean())
    trainer(tmp_path, fast_dev_run=2).fit(model, data)


def test_bf16_mixed_trains_on_cpu(imagefolder_root: Path, tmp_path: Path) -> None:
    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=4, num_workers=0)
    seen = {}

    class Probe(ImageClassifier):
        def training_step(self, batch, batch_idx):
            seen["dtype"] = self(batch["image"]).dtype
            return super().training_step(batch, batch_idx)

    model = Probe(backbone="tv/resnet18", class_names=data.class_names)
    t = trainer(tmp_path, max_steps=3, precision="bf16-mixed")
    t.fit(model, data)
    assert seen["dtype"] == torch.bfloat16
    assert torch.isfinite(t.callback_metrics["train/loss_step"])
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32


def test_freeze_backbone_trains_only_the_head() -> None:
    model = tiny(freeze_backbone=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"model.head.fc.weight", "model.head.fc.bias"}


def test_layer_scales_and_timms_listed_parameters_get_no_weight_decay() -> None:
    """torchvision's ConvNeXt keeps its layer scale as [C, 1, 1] (one value per channel, not 1-D); timm's ViT
    lists pos_embed and cls_token in no_weight_decay(): the ConvNeXt and ViT recipes exclude both from decay."""
    import timm
    import torchvision

    convnext = torchvision.models.convnext_tiny()
    _, no_decay = split_decay_parameters(convnext)
    scales = [p for n, p in convnext.named_parameters() if n.endswith("layer_scale")]
    assert len(scales) == 18 and all(p.shape[1:] == (1, 1) for p in scales)
    assert {id(p) for p in scales} <= {id(p) for p in no_decay}
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    decay, no_decay = split_decay_parameters(vit)
    names = {id(p): n for n, p in vit.named_parameters()}
    assert {"pos_embed", "cls_token"} <= {names[id(p)] for p in no_decay}
    assert {names[id(p)] for p in decay} == {n for n, p in vit.named_parameters() if p.ndim > 1} - {"pos_embed",
                                                                                                    "cls_token"}
