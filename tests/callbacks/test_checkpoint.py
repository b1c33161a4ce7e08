"""LastCheckpoint cadence (every epoch end, every N steps) and atomic writes that survive a failed write."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lit_vision.callbacks.checkpoint import (
    AtomicCheckpointIO,
    LastCheckpoint,
    remove_stale_temporaries,
)


class Tiny(LightningModule):
    """A linear model whose validation metric never improves after epoch 0 (so a monitored save_last would stall)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val/score", -float(self.current_epoch))  # best at epoch 0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(20, 4)), batch_size=4)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(4, 4)), batch_size=4)


class RecordLastWrites(Callback):
    """Reads last.ckpt's global step after every batch and at every epoch end."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, []

    def on_train_batch_end(self, trainer: Trainer, *args: object) -> None:
        trainer.strategy.checkpoint_io.wait()  # the background writes queued so far are on disk
        if self.path.exists():
            step = torch.load(self.path, weights_only=True, map_location="cpu")["global_step"]
            if not self.seen or self.seen[-1] != step:
                self.seen.append(step)


def fit(tmp_path: Path, *callbacks: Callback, epochs: int = 3, log_every_n_steps: int = 50) -> Trainer:
    trainer = Trainer(default_root_dir=tmp_path, max_epochs=epochs, callbacks=list(callbacks), logger=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                      log_every_n_steps=log_every_n_steps)
    trainer.fit(Tiny())
    return trainer


def test_last_checkpoint_is_the_latest_epoch_even_when_the_monitored_metric_does_not_improve(tmp_path: Path) -> None:
    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max", filename="best")
    trainer = fit(tmp_path, best, LastCheckpoint(dirpath=str(tmp_path)))
    last = torch.load(tmp_path / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["epoch"] == 2 and last["global_step"] == 15  # 3 epochs x 5 steps
    assert torch.load(tmp_path / "best.ckpt", weights_only=True, map_location="cpu")["global_step"] == 5
    assert trainer.checkpoint_callback is best  # `ckpt_path="best"` still means the monitored one
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporaries left


def test_last_checkpoint_names_the_best_file_when_it_holds_the_same_state(tmp_path: Path) -> None:
    # val/score improves at epochs 0 and 1 only, so last.ckpt is a second name of the best
    # file exactly when the best callback wrote at that same moment, and a file of its own otherwise.
    class Links(Callback):
        def __init__(self) -> None:
            self.same_inode: list[bool] = []

        def check(self, trainer: Trainer) -> None:  # after the previous epoch's writes (they end the epoch)
            trainer.strategy.checkpoint_io.wait()
            best = Path(trainer.checkpoint_callback.best_model_path)
            self.same_inode.append(best.stat().st_ino == (tmp_path / "last.ckpt").stat().st_ino)

        def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
            if trainer.current_epoch > 0:
                self.check(trainer)

        def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
            self.check(trainer)

    class Improving(Tiny):
        def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
            self.log("val/score", float(min(self.current_epoch, 1)))  # better at epochs 0 and 1, then equal

    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max", filename="best-{epoch}")
    links = Links()
    trainer = Trainer(default_root_dir=tmp_path, max_epochs=4, callbacks=[best, LastCheckpoint(dirpath=str(tmp_path)),
                                                                          links],
                      logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(Improving())
    assert links.same_inode == [True, True, False, False]
    last = torch.load(tmp_path / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["global_step"] == 20 and last["epoch"] == 3 and "optimizer_states" in last
    linked = torch.load(tmp_path / "best-epoch=1.ckpt", weights_only=True, map_location="cpu")
    assert linked["global_step"] == 10 and linked["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-epoch=1.ckpt", "last.ckpt"]


def test_a_weights_only_best_file_is_never_linked_as_last(tmp_path: Path) -> None:
    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max", filename="best", save_weights_only=True)
    fit(tmp_path, best, LastCheckpoint(dirpath=str(tmp_path)), epochs=1)
    assert (tmp_path / "best.ckpt").stat().st_ino != (tmp_path / "last.ckpt").stat().st_ino
    assert "optimizer_states" in torch.load(tmp_path / "last.ckpt", weights_only=True, map_location="cpu")


def test_step_cadence_writes_mid_epoch_and_at_each_epoch_end(tmp_path: Path) -> None:
    record = RecordLastWrites(tmp_path / "last.ckpt")
    fit(tmp_path, LastCheckpoint(dirpath=str(tmp_path), every_n_train_steps=2), record, epochs=2)
    # steps 2 and 4 mid-epoch; epoch ends at 5 and 10 (step 10's batch is an epoch's last: no extra write there).
    # The recorder runs before the checkpoint callbacks, so a write at step s is seen one batch later.
    assert record.seen == [2, 4, 5, 6, 8]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True, map_location="cpu")["global_step"] == 10


def test_time_cadence_reads_the_clock_at_the_logging_interval(tmp_path: Path) -> None:
    record = RecordLastWrites(tmp_path / "last.ckpt")
    # A due time at every read: writes at steps 2, 4, 6, 8 (log_every_n_steps=2) and at the epoch ends 5 and 10.
    fit(tmp_path, LastCheckpoint(dirpath=str(tmp_path), every_n_minutes=1e-9), record, epochs=2, log_every_n_steps=2)
    assert record.seen == [2, 4, 5, 6, 8]


def test_a_failed_write_leaves_the_previous_file_intact_and_no_temporary(tmp_path: Path) -> None:
    io, target = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, target)

    class Unpicklable:
        def __reduce__(self) -> tuple:
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        io.save_checkpoint({"global_step": 2, "bad": Unpicklable()}, target)
    assert torch.load(target, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_the_file_is_complete_at_return_and_the_disk_work_runs_off_the_calling_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), threading.current_thread() is threading.main_thread()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    io, target = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    for step in (1, 2, 3):  # the 2nd and 3rd replace a file: its blocks are freed through a hidden hard link
        io.save_checkpoint({"global_step": step, "w": torch.full((1000,), float(step))}, target)
        loaded = torch.load(target, weights_only=True)  # readable in full right away, the newest state
        assert loaded["global_step"] == step and torch.equal(loaded["w"], torch.full((1000,), float(step)))
    io.save_checkpoint({"global_step": 9}, tmp_path / "best.ckpt")
    io.remove_checkpoint(tmp_path / "best.ckpt")
    assert not (tmp_path / "best.ckpt").exists()  # gone under its name at return
    io.teardown()
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no hidden names left behind
    assert synced and not any(on_main for _, on_main in synced)
    files = [path for path, _ in synced]  # the file as written (its hidden name, then renamed) and the folder
    assert len(files) == 8 and files.count(str(tmp_path)) == 4


def test_an_error_of_the_background_work_is_raised_at_teardown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, tmp_path / "last.ckpt")
    with pytest.raises(OSError, match="Input/output error"):
        io.teardown()


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".last.ckpt.tmp-4242").write_bytes(b"partial")
    (tmp_path / "best.ckpt").write_bytes(b"keep")
    assert remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]


def test_negative_cadence_is_refused() -> None:
    with pytest.raises(ValueError, match="every_n_train_steps=-1"):
        LastCheckpoint(every_n_train_steps=-1)
