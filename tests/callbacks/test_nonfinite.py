"""NonFiniteGuard: stop at the first read after a bad step, gradients too, skip mode, no non-finite checkpoint."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lit_vision.callbacks import NonFiniteGuard, NonFiniteLossError
from lit_vision.tasks.base import VisionTask
from tests.callbacks._cb_helpers import clone_state, loader, trainer_kwargs

NAN = float("nan")


class TinyTask(VisionTask):
    """A VisionTask with detection-like named loss terms; ``poison`` maps a global step to what goes wrong there:
    ``"loss"`` (loss_classifier is NaN), ``"image"`` (a NaN input: every term, and BatchNorm statistics) or
    ``"grad"`` (a finite loss whose backward pass yields NaN gradients)."""

    def __init__(self, poison: dict[int, str] | None = None, **kwargs: Any) -> None:
        super().__init__(class_names=["a", "b", "c"], **kwargs)
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
        self.poison = poison or {}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        how = self.poison.get(self.global_step)
        x = batch["image"]
        if how == "image":
            x = x.clone()
            x[0] = NAN
        hidden = self.net[0](x)
        if how == "grad":
            hidden.register_hook(lambda g: g * NAN)
        logits = self.net[1:](hidden)
        loss_classifier = F.cross_entropy(logits, batch["label"])
        if how == "loss":
            loss_classifier = loss_classifier * NAN
        loss_box_reg = 0.01 * logits.pow(2).mean()
        loss = loss_classifier + loss_box_reg
        self.loss_terms = {"loss": loss.detach(), "loss_classifier": loss_classifier.detach(),
                           "loss_box_reg": loss_box_reg.detach()}
        return loss


class StepRecorder(pl.Callback):
    """Global steps started, and (optionally) the weights before and after each batch."""

    def __init__(self, keep_weights: bool = False) -> None:
        self.started: list[int] = []
        self.keep_weights = keep_weights
        self.before: dict[int, dict[str, torch.Tensor]] = {}
        self.after: dict[int, dict[str, torch.Tensor]] = {}
        self.adam_steps: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.started.append(trainer.global_step)
        if self.keep_weights:
            self.before[trainer.global_step] = clone_state(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if self.keep_weights:
            step = self.started[-1]
            self.after[step] = clone_state(pl_module)
            state = trainer.optimizers[0].state
            self.adam_steps[step] = float(next(iter(state.values()))["step"]) if state else 0.0


def fit(model: pl.LightningModule, steps: int, callbacks: list | None = None, **kw: Any) -> pl.Trainer:
    trainer = pl.Trainer(**trainer_kwargs(max_steps=steps, limit_val_batches=0, callbacks=callbacks or [], **kw))
    trainer.fit(model, loader(256, 8))
    return trainer


def guards(trainer: pl.Trainer) -> list[NonFiniteGuard]:
    return [c for c in trainer.callbacks if isinstance(c, NonFiniteGuard)]


def test_every_task_gets_the_guard_unless_off_and_a_configured_one_is_kept() -> None:
    trainer = fit(TinyTask(), 2)
    assert [g.mode for g in guards(trainer)] == ["stop"]
    assert guards(fit(TinyTask(nonfinite="skip", max_nonfinite_skips=4), 2))[0].max_skips == 4
    assert guards(fit(TinyTask(nonfinite="off"), 2)) == []
    mine = NonFiniteGuard(read_every_n_steps=3)
    assert guards(fit(TinyTask(), 2, callbacks=[mine])) == [mine]
    with pytest.raises(ValueError, match="nonfinite must be"):
        TinyTask(nonfinite="ignore")


def test_stop_raises_at_the_first_read_after_the_bad_step_naming_step_terms_and_samples() -> None:
    recorder = StepRecorder()
    with pytest.raises(NonFiniteLossError) as err:
        fit(TinyTask(poison={7: "loss"}), 40, callbacks=[recorder], log_every_n_steps=5)
    message = str(err.value)
    assert "non-finite loss at global step 7 (epoch 0, batch 7)" in message
    assert ": loss=nan, loss_classifier=nan, loss_box_reg=" in message
    assert "loss_box_reg=nan" not in message  # the finite term shows its value
    # The batch of step 7 holds samples 56..63 (batch size 8, no shuffling).
    assert "batch samples: img_56.png, img_57.png" in message and "img_63.png" in message
    assert "no checkpoint was written after global step 7 (none was written)" in message
    # The flags are read every log_every_n_steps batches (no sync per step): the run ends at the read after
    # batch 10, not at step 7 itself and not later.
    assert recorder.started[-1] == 9


def test_stop_mode_reads_the_device_flags_only_every_log_every_n_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from lit_vision.callbacks import nonfinite

    windows: list[int] = []  # steps read per host read (each read is one device-to-host transfer)

    def counting(steps: list) -> Any:
        windows.append(len(steps))
        return first_bad(steps)

    first_bad = nonfinite._first_bad
    monkeypatch.setattr(nonfinite, "_first_bad", counting)
    fit(TinyTask(), 12, log_every_n_steps=5)
    assert windows[:2] == [5, 5] and sum(windows) == 12  # then the epoch/training end reads the last 2


def test_a_nonfinite_gradient_with_a_finite_loss_is_detected() -> None:
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient \(with a finite loss\) at global step 3 "):
        fit(TinyTask(poison={3: "grad"}), 40, log_every_n_steps=5)


def test_check_gradients_false_leaves_the_gradients_to_the_next_loss() -> None:
    # The NaN gradient poisons the weights; the next step's loss is then NaN.
    with pytest.raises(NonFiniteLossError, match="non-finite loss at global step 4 "):
        fit(TinyTask(poison={3: "grad"}, nonfinite="off"), 40, log_every_n_steps=5,
            callbacks=[NonFiniteGuard(check_gradients=False)])


def test_skip_drops_bad_steps_leaving_weights_untouched_then_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    from lit_vision.callbacks import nonfinite

    looked_up: list[int] = []  # naming the last checkpoint waits for background writes: only when stopping
    last_checkpoint = nonfinite._last_checkpoint
    monkeypatch.setattr(nonfinite, "_last_checkpoint",
                        lambda t: (looked_up.append(t.global_step), last_checkpoint(t))[1])
    recorder = StepRecorder(keep_weights=True)
    model = TinyTask(poison={3: "image", 5: "loss", 6: "grad", 9: "loss"}, nonfinite="skip", max_nonfinite_skips=3,
                     optimizer=functools.partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.1))
    with warnings.catch_warnings(record=True) as caught, pytest.raises(NonFiniteLossError) as err:
        warnings.simplefilter("always")
        fit(model, 40, callbacks=[recorder], log_every_n_steps=5)
    skipped = [str(w.message) for w in caught if "skipped non-finite step" in str(w.message)]
    assert len(skipped) == 3
    assert skipped[0].startswith("skipped non-finite step 1 of at most 3: non-finite loss at global step 3 ")
    assert "skipped non-finite step 2 of at most 3: non-finite loss at global step 5 " in skipped[1]
    assert "non-finite gradient (with a finite loss) at global step 6 " in skipped[2]
    assert "3 bad steps were skipped already" in str(err.value) and "global step 9 " in str(err.value)
    assert looked_up == [9] and "training stopped" not in skipped[0]
    for step in (3, 5, 6):  # parameters, BatchNorm statistics and AdamW's state as before the bad batch
        for key, value in recorder.before[step].items():
            assert torch.equal(value, recorder.after[step][key]), (step, key)
        assert recorder.adam_steps[step] == recorder.adam_steps[step - 1]
    for step in (4, 7, 8):  # good steps still train
        assert not torch.equal(recorder.before[step]["net.0.weight"], recorder.after[step]["net.0.weight"])
        assert recorder.adam_steps[step] == recorder.adam_steps[step - 1] + 1
    assert all(torch.isfinite(v).all() for v in recorder.after[8].values())


def test_skip_leaves_a_run_without_bad_steps_identical_to_stop() -> None:
    stopped, skipping = TinyTask(), TinyTask(nonfinite="skip")
    fit(stopped, 6)
    fit(skipping, 6)
    for key, value in stopped.state_dict().items():
        assert torch.equal(value, skipping.state_dict()[key]), key


def ckpt_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.ckpt"))


def assert_all_finite(paths: list[Path]) -> None:
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        assert not bad, (path.name, bad)


def test_no_checkpoint_is_written_after_a_bad_step(tmp_path: Path) -> None:
    every_step = ModelCheckpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=1, save_top_k=-1)
    with pytest.raises(NonFiniteLossError, match="training stopped instead of writing a checkpoint") as err:
        fit(TinyTask(poison={4: "loss"}), 40, callbacks=[every_step], log_every_n_steps=50,
            enable_checkpointing=True)
    assert f"(the last one written: {tmp_path / 'step=4.ckpt'})" in str(err.value)
    # Written after steps 0-3 (global step 1-4); the save after the bad step 4 was refused, nothing partial left.
    assert [p.name for p in sorted(tmp_path.iterdir())] == [f"step={i}.ckpt" for i in range(1, 5)]
    assert_all_finite(ckpt_files(tmp_path))


class PoisonWeights(pl.Callback):
    """NaN into a weight after one optimizer step, behind every loss and gradient check."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == self.step:
            pl_module.net[3].weight.data[0, 0] = NAN


def test_non_finite_weights_are_never_written_whatever_the_flags_say(tmp_path: Path) -> None:
    every_step = ModelCheckpoint(dirpath=tmp_path / "a", filename="{step}", every_n_train_steps=1, save_top_k=-1)
    with pytest.raises(NonFiniteLossError, match=r"refusing to write a checkpoint at global step 3: 1 tensors .*"
                                                 r"\(net\.3\.weight\); no checkpoint was written"):
        fit(TinyTask(), 40, callbacks=[PoisonWeights(3), every_step], log_every_n_steps=50, enable_checkpointing=True)
    assert [p.name for p in ckpt_files(tmp_path / "a")] == ["step=1.ckpt", "step=2.ckpt"]
    assert_all_finite(ckpt_files(tmp_path / "a"))

    # Trainer.save_checkpoint by hand, after a clean fit: refused too, no file left behind.
    model = TinyTask()
    trainer = fit(model, 2)
    trainer.save_checkpoint(tmp_path / "ok.ckpt")
    model.net[0].bias.data[1] = float("inf")
    with pytest.raises(NonFiniteLossError, match=r"net\.0\.bias"):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["ok.ckpt"]


@pytest.mark.slow  # a real (tiny) Faster R-CNN: ~20 s on 2 cores
def test_detection_message_names_its_loss_terms_and_sample_paths(tmp_path: Path) -> None:
    from lit_vision.data.detection.coco import COCODetectionDataModule
    from lit_vision.data.embedded.shapes import shapes_paths, write_shapes
    from lit_vision.tasks import ObjectDetector

    class Poisoned(ObjectDetector):
        """loss_classifier is NaN at global step 1 (the detector's own loss dict, as logged and summed)."""

        def compute_loss(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
            if self.global_step == 1:
                losses["loss_classifier"] = losses["loss_classifier"] * NAN
            return super().compute_loss(losses)

    paths = shapes_paths(write_shapes(tmp_path, num_train=4, num_val=2, image_size=64))
    dm = COCODetectionDataModule(str(paths["coco_train_images"]), str(paths["coco_train_json"]),
                                 str(paths["coco_val_images"]), str(paths["coco_val_json"]), image_size=64,
                                 batch_size=2, num_workers=0, hflip=False, scale_range=None)
    model = Poisoned("faster_rcnn", "tv/resnet18", class_names=["circle", "square", "triangle"], image_size=64,
                     optimizer=functools.partial(torch.optim.SGD, lr=1e-3))
    trainer = pl.Trainer(**trainer_kwargs(max_steps=10, limit_val_batches=0, log_every_n_steps=2))
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit(model, datamodule=dm)
    message = str(err.value)
    assert "non-finite loss at global step 1 (epoch 0, batch 1): loss=nan, loss_classifier=nan, loss_box_reg=" in message
    assert "loss_objectness=" in message and "loss_box_reg=nan" not in message
    samples = message.split("batch samples: ")[1].split(";")[0].split(", ")
    assert len(samples) == 2 and all(s.startswith(str(paths["coco_train_images"])) for s in samples)


def test_segmentation_training_step_hands_its_loss_terms_to_the_guard() -> None:
    from lit_vision.tasks import SemanticSegmenter

    model = SemanticSegmenter("fcn", "tv/resnet18", num_classes=3, aux_loss=True, dice_weight=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        loss = model.training_step({"image": torch.randn(2, 3, 64, 64), "mask": torch.randint(0, 3, (2, 64, 64))}, 0)
    assert set(model.loss_terms) == {"loss", "loss_ce", "loss_aux", "loss_dice"}
    assert torch.equal(model.loss_terms["loss"], loss.detach()) and not model.loss_terms["loss"].requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_gradient_flag_equals_an_elementwise_isfinite_check(dtype: torch.dtype) -> None:
    """The per-step gradient check (per-tensor sums on the CPU in fp32/fp64, torch's fused norms otherwise) is set
    exactly when some gradient element is inf or NaN, against ``isfinite`` element by element: one bad element
    among many, +inf and -inf in different tensors (whose sums would cancel to NaN), and large finite gradients
    whose squared norm overflows fp32 (not flagged by the sums; the norms flag those)."""
    from lit_vision.callbacks.nonfinite import _gradients_bad

    torch.manual_seed(0)
    params = [nn.Parameter(torch.zeros(shape, dtype=dtype)) for shape in [(64, 3, 3, 3), (64,), (10, 64), (10,)]]
    opt = torch.optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1)

    def flag(grads: list[torch.Tensor | None]) -> bool:
        for p, g in zip(params, grads):
            p.grad = g
        out = _gradients_bad(opt)
        assert out is not None and out.dtype == torch.bool and out.ndim == 0
        return bool(out)

    def reference(grads: list[torch.Tensor | None]) -> bool:
        return any(not bool(torch.isfinite(g).all()) for g in grads if g is not None)

    clean = [torch.randn(p.shape, dtype=dtype) for p in params]
    cases = {"clean": clean}
    for value in (NAN, float("inf"), float("-inf")):
        for i in range(len(params)):
            grads = [g.clone() for g in clean]
            grads[i].view(-1)[torch.randint(grads[i].numel(), ()).item()] = value
            cases[f"{value} in {i}"] = grads
    both = [g.clone() for g in clean]
    both[0].view(-1)[5], both[2].view(-1)[7] = float("inf"), float("-inf")
    cases["+inf and -inf"] = both
    cases["one missing gradient"] = [None, *clean[1:]]
    for name, grads in cases.items():
        assert flag(grads) == reference(grads), name
    assert flag(clean) is False and flag(both) is True
    if dtype != torch.bfloat16:  # |g| = 1e20: its square overflows fp32, a sum of them does not
        assert flag([g.sign() * 1e20 for g in clean]) is False
    for p in params:
        p.grad = None
    assert _gradients_bad(opt) is None
