"""AtomicCheckpointIO's background writes: a point-in-time snapshot, written off the calling thread, in call order."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_vision.callbacks.checkpoint import LastCheckpoint
from lit_vision.callbacks.checkpoint_io import AtomicCheckpointIO, _Snapshot
from tests.callbacks.test_checkpoint import Tiny


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def test_a_background_save_holds_the_state_at_the_call_not_at_the_write(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[bool] = []
    real_save = torch.save
    release = threading.Event()

    def slow_save(obj: object, f: object) -> None:  # the write waits until the caller has changed the tensors
        threads.append(threading.current_thread() is threading.main_thread())
        release.wait(10)
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", slow_save)
    io, target = AtomicCheckpointIO(background_writes=True), tmp_path / "last.ckpt"
    w = torch.arange(12.0).reshape(3, 4)
    state = {"global_step": 3, "w": w, "nested": {"m": [w * 2]}, "rng": torch.get_rng_state()}
    io.save_checkpoint(state, target)
    assert not target.exists() and io.holds(target)  # queued, not yet written
    w.add_(100.0)  # training goes on and changes the weights in place
    state["nested"]["m"][0].zero_()
    release.set()
    io.wait()
    loaded = load(target)
    assert threads == [False]
    assert torch.equal(loaded["w"], torch.arange(12.0).reshape(3, 4))
    assert torch.equal(loaded["nested"]["m"][0], torch.arange(12.0).reshape(3, 4) * 2)
    assert loaded["global_step"] == 3 and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_the_snapshot_reuses_the_previous_buffers_and_keeps_strides_and_sharing() -> None:
    snap = _Snapshot()
    conv = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    expanded = torch.ones(3, 1).expand(3, 4)  # overlapping memory
    base = torch.arange(10.0)
    # tied weights arrive from a state_dict as different detached tensors over one storage; a slice at an offset
    state = {"a": conv, "tied": [conv.detach(), conv.detach()], "b": torch.zeros(7), "e": expanded,
             "view": base[3:7], "base": base, "step": 1}
    copy, buffers = snap.take(state)
    assert copy["a"].data_ptr() == copy["tied"][0].data_ptr() == copy["tied"][1].data_ptr()  # still one storage
    assert copy["view"].untyped_storage().data_ptr() == copy["base"].untyped_storage().data_ptr()
    assert copy["view"].storage_offset() == 3 and torch.equal(copy["view"], base[3:7])
    assert copy["a"].stride() == conv.stride() and torch.equal(copy["a"], conv)
    assert copy["a"].data_ptr() != conv.data_ptr() and torch.equal(copy["e"], expanded)
    assert copy["e"].stride() == expanded.stride()  # a view of its 3-value storage, as torch.save writes it
    assert copy["step"] == 1 and len(buffers) == 4  # one per storage: conv, b, the expanded ones, base
    snap.give_back(buffers)
    conv.mul_(2)
    again, buffers2 = snap.take(state)
    assert again["a"].data_ptr() == copy["a"].data_ptr() and torch.equal(again["a"], conv)  # reused, new values
    snap.give_back(buffers2)
    other, _ = snap.take({"a": torch.zeros(3), "b": torch.zeros(7)})  # another size: a fresh buffer
    assert other["a"].data_ptr() != copy["a"].data_ptr() and other["a"].shape == (3,)


def test_tied_weights_and_module_versions_are_kept_in_a_background_written_file(tmp_path: Path) -> None:
    class TiedLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(500, 64)
            self.head = torch.nn.Linear(64, 500, bias=False)
            self.head.weight = self.embed.weight

    state = {"state_dict": TiedLM().state_dict()}
    sizes = {}
    for background in (False, True):
        io, target = AtomicCheckpointIO(background_writes=background), tmp_path / str(background) / "t.ckpt"
        io.save_checkpoint(state, target)
        io.teardown()
        loaded = load(target)["state_dict"]
        assert loaded["embed.weight"].data_ptr() == loaded["head.weight"].data_ptr()
        assert torch.equal(loaded["head.weight"], state["state_dict"]["embed.weight"])
        assert loaded._metadata == state["state_dict"]._metadata  # the module versions load_state_dict reads
        sizes[background] = target.stat().st_size
    assert sizes[True] == sizes[False]  # 128 KB once, not twice


def test_queued_writes_links_and_removals_happen_in_call_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: (obj["global_step"] < 2 or release.wait(10), real_save(obj, f)))
    io = AtomicCheckpointIO(background_writes=True)
    best, last, old = tmp_path / "best.ckpt", tmp_path / "last.ckpt", tmp_path / "old.ckpt"
    io.save_checkpoint({"global_step": 1}, old)
    io.save_checkpoint({"global_step": 2, "optimizer_states": []}, best)
    io.link_checkpoint(best, last)  # the source is still a queued write
    io.remove_checkpoint(old)  # queued behind it too
    assert io.last_written.path == str(best) and io.last_written.full
    release.set()
    io.teardown()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert best.stat().st_ino == last.stat().st_ino and load(last)["global_step"] == 2


def test_a_failed_background_write_is_raised_at_the_next_save_and_leaves_the_previous_file(tmp_path: Path) -> None:
    io, target = AtomicCheckpointIO(background_writes=True), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, target)
    io.wait()

    class Unpicklable:
        def __reduce__(self) -> tuple:
            raise RuntimeError("disk full")

    io.save_checkpoint({"global_step": 2, "bad": Unpicklable()}, target)
    for future in list(io._pending):
        future.exception()  # let the write finish
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"global_step": 3}, target)
    assert load(target)["global_step"] == 1 and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_waiting_without_raising_keeps_the_error_for_teardown(tmp_path: Path) -> None:
    class Unpicklable:
        def __reduce__(self) -> tuple:
            raise RuntimeError("disk full")

    io = AtomicCheckpointIO(background_writes=True)
    io.save_checkpoint({"global_step": 1}, tmp_path / "a.ckpt")
    io.save_checkpoint({"global_step": 2, "bad": Unpicklable()}, tmp_path / "b.ckpt")
    io.wait(raise_errors=False)  # what the non-finite guard does before naming the last file: all work done
    assert (tmp_path / "a.ckpt").is_file() and not (tmp_path / "b.ckpt").exists()
    assert isinstance(io.first_error(), RuntimeError)
    with pytest.raises(RuntimeError, match="disk full"):
        io.teardown()


def test_a_link_queued_behind_a_failed_write_does_not_name_the_older_file(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    io, best, last = AtomicCheckpointIO(background_writes=True), tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, best)
    io.wait()
    release = threading.Event()
    real_save = torch.save

    def failing_save(obj: dict, f: object) -> None:
        release.wait(10)
        if obj["global_step"] == 2:
            raise OSError(28, "No space left on device")
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", failing_save)
    io.save_checkpoint({"global_step": 2, "optimizer_states": []}, best)  # fails in the background
    io.link_checkpoint(best, last)  # queued behind it: best.ckpt still holds step 1 when it runs
    release.set()
    with pytest.raises(OSError, match="No space left"):
        io.teardown()
    assert not last.exists() and load(best)["global_step"] == 1


class Seen(Callback):
    def __init__(self) -> None:
        self.background: list[bool] = []

    def on_train_batch_start(self, trainer: Trainer, *args: object) -> None:
        self.background.append(trainer.strategy.checkpoint_io.background_writes)


def fit_states(tmp_path: Path, background: bool, logger: object = False) -> tuple[dict, dict, list[bool], Trainer]:
    torch.manual_seed(0)
    seen = Seen()
    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max", filename="best")
    trainer = Trainer(default_root_dir=tmp_path, max_epochs=3, logger=logger, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu",
                      callbacks=[best, LastCheckpoint(dirpath=str(tmp_path), every_n_train_steps=2,
                                                      background_writes=background), seen])
    trainer.fit(Tiny())
    return load(tmp_path / "last.ckpt"), load(tmp_path / "best.ckpt"), seen.background, trainer


def test_a_fit_writes_the_same_files_with_and_without_background_writes(tmp_path: Path) -> None:
    last_bg, best_bg, seen_bg, trainer = fit_states(tmp_path / "bg", True)
    last_fg, best_fg, seen_fg, _ = fit_states(tmp_path / "fg", False)
    assert set(seen_bg) == {True} and set(seen_fg) == {False}
    assert not trainer.strategy.checkpoint_io.background_writes  # a save after the fit is complete at return
    for a, b in ((last_bg, last_fg), (best_bg, best_fg)):
        assert a["global_step"] == b["global_step"] and a["loops"] == b["loops"]
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])
        assert a["optimizer_states"][0]["state"].keys() == b["optimizer_states"][0]["state"].keys()
    assert last_bg["global_step"] == 15 and best_bg["global_step"] == 5


def test_a_logger_that_uploads_each_save_keeps_the_writes_on_the_calling_thread(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    class Uploading(CSVLogger):
        _log_model = "all"  # what W&B's log_model="all" sets: it reads each file right after the save

    _, _, seen, _ = fit_states(tmp_path, True, logger=Uploading(tmp_path))
    assert set(seen) == {False}


def test_a_channels_last_model_resumes_from_a_background_written_file(tmp_path: Path) -> None:
    class Conv(Tiny):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 1).to(memory_format=torch.channels_last)

    io = AtomicCheckpointIO(background_writes=True)
    model = Conv()
    io.save_checkpoint({"state_dict": model.state_dict()}, tmp_path / "c.ckpt")
    io.teardown()
    fresh = Conv()
    fresh.load_state_dict(load(tmp_path / "c.ckpt")["state_dict"])
    assert torch.equal(fresh.conv.weight, model.conv.weight)
    assert fresh.conv.weight.is_contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class Frozen:  # apply_to_collection refuses frozen dataclasses
    w: torch.Tensor


def test_a_state_that_cannot_be_copied_is_written_on_the_calling_thread(tmp_path: Path) -> None:
    io, target = AtomicCheckpointIO(background_writes=True), tmp_path / "last.ckpt"
    with pytest.warns(UserWarning, match="written on the training thread"):
        io.save_checkpoint({"global_step": 1, "x": Frozen(torch.ones(2))}, target)
    assert target.is_file()  # complete at return
    assert torch.equal(torch.load(target, weights_only=False)["x"].w, torch.ones(2))
    io.teardown()


def test_an_interrupted_fit_leaves_later_saves_synchronous(tmp_path: Path) -> None:
    class Interrupt(Callback):
        def on_train_batch_end(self, trainer: Trainer, *args: object) -> None:
            if trainer.global_step == 3:
                raise RuntimeError("bad batch")

    trainer = Trainer(default_root_dir=tmp_path, max_epochs=3, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu",
                      callbacks=[LastCheckpoint(dirpath=str(tmp_path), every_n_train_steps=1), Interrupt()])
    with pytest.raises(RuntimeError, match="bad batch"):
        trainer.fit(Tiny())
    assert not trainer.strategy.checkpoint_io.background_writes
    assert load(tmp_path / "last.ckpt")["global_step"] == 2  # the write queued before the stop is on disk
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    assert (tmp_path / "after.ckpt").is_file()


def test_a_top_k_removal_queued_behind_a_failed_write_keeps_the_old_best(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    io, old, new = AtomicCheckpointIO(background_writes=True), tmp_path / "best-1.ckpt", tmp_path / "best-2.ckpt"
    io.save_checkpoint({"global_step": 1}, old)
    io.wait()
    release = threading.Event()

    def failing_save(obj: dict, f: object) -> None:
        release.wait(10)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    io.save_checkpoint({"global_step": 2}, new)  # ModelCheckpoint's top-k: save the new best ...
    io.remove_checkpoint(old)  # ... then remove the old one, queued behind the write
    release.set()
    with pytest.raises(OSError, match="No space left"):
        io.teardown()
    assert [p.name for p in tmp_path.iterdir()] == ["best-1.ckpt"] and load(old)["global_step"] == 1


def test_a_save_waits_for_the_previous_write_and_reuses_its_buffers(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real_save, release, returned = torch.save, threading.Event(), threading.Event()
    monkeypatch.setattr(torch, "save", lambda obj, f: (release.wait(10), real_save(obj, f)))
    io, w = AtomicCheckpointIO(background_writes=True), torch.zeros(1000)
    given_back: list[int] = []
    give_back = io._snapshot.give_back
    monkeypatch.setattr(io._snapshot, "give_back", lambda b: (given_back.extend(t.data_ptr() for t in b), give_back(b)))
    io.save_checkpoint({"global_step": 1, "w": w}, tmp_path / "a.ckpt")
    second = threading.Thread(target=lambda: (io.save_checkpoint({"global_step": 2, "w": w}, tmp_path / "b.ckpt"),
                                              returned.set()))
    second.start()
    assert not returned.wait(0.3)  # blocked behind the first write: no second snapshot is taken meanwhile
    release.set()
    second.join(10)
    assert returned.is_set()
    io.wait()
    assert len(given_back) == 2 and given_back[0] == given_back[1]  # one copy in host memory, reused by each save
    assert load(tmp_path / "b.ckpt")["global_step"] == 2


def test_loading_a_queued_file_waits_for_its_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: (threading.Event().wait(0.3), real_save(obj, f)))
    io, target = AtomicCheckpointIO(background_writes=True), tmp_path / ".lr_find.ckpt"
    io.save_checkpoint({"global_step": 7}, target)  # what Lightning's tuners do inside a fit: save, then restore
    assert not target.exists()
    assert io.load_checkpoint(target)["global_step"] == 7
    io.teardown()


def test_version_counter_names_see_queued_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Logged(Tiny):
        def training_step(self, batch: object, batch_idx: int) -> object:
            self.log("m", float(self.global_step))
            return super().training_step(batch, batch_idx)

    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: (threading.Event().wait(0.05), real_save(obj, f)))
    names = {}
    for background in (False, True):
        d = tmp_path / str(background)
        every = ModelCheckpoint(dirpath=d / "every", filename="{epoch}", monitor="m", mode="max", save_top_k=-1,
                                every_n_train_steps=2)
        trainer = Trainer(default_root_dir=d, max_epochs=1, logger=False, enable_progress_bar=False,
                          enable_model_summary=False, accelerator="cpu",
                          callbacks=[every, LastCheckpoint(dirpath=str(d), background_writes=background)])
        trainer.fit(Logged())
        names[background] = sorted(p.name for p in (d / "every").iterdir())
        assert sorted(Path(p).name for p in every.best_k_models) == names[background]
        assert "file_exists" not in vars(every)  # Lightning's own check again after the fit
    assert names[True] == names[False] == ["epoch=0-v1.ckpt", "epoch=0.ckpt"]


@pytest.mark.ddp
def test_every_ddp_rank_finds_the_files_complete_when_fit_returns(tmp_path: Path) -> None:
    """Only rank 0 writes: the other ranks must not return from fit (and read best_model_path) before it has."""
    import json
    import os
    import subprocess
    import sys

    probe = Path(__file__).resolve().parents[1] / "ddp_checkpoint_probe.py"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(probe), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seen = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in seen) == [0, 1]
    assert all(r["last_step"] == r["final_step"] > 0 for r in seen), seen
