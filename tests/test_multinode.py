"""Multi-node through Lightning, on one machine: two ``torchrun`` launches (2 nodes x 1 process, gloo, static
rendezvous on 127.0.0.1) of ``lit-vision fit``; SLURM's requeue signal with a fake ``scontrol``; concurrent
writes of the embedded data caches (docs/multi_node.md)."""

from __future__ import annotations

import csv
import hashlib
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lit_vision.cli.lightning_cli import run_cli
from lit_vision.data.embedded import write_digits, write_once, write_shapes
from lit_vision.distributed import launch_mismatch
from tests.cli.test_detection import MODEL as DETECTOR
from tests.cli.test_detection import shapes_data
from tests.cli.test_resume import tensors_equal

BIN = Path(sys.executable).parent / "lit-vision"
TORCHRUN = Path(sys.executable).parent / "torchrun"
REPO = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.accelerator", "cpu", "--trainer.enable_model_summary", "false",
         "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1", "--seed_everything", "0"]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **extra}
    for key in [k for k in env if k.startswith(("SLURM_", "TORCHELASTIC_"))]:
        env.pop(key)
    return {**env, **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(args: list[str], cwd: list[Path], check: bool = True) -> list[subprocess.CompletedProcess]:
    """``torchrun --nnodes 2 --nproc-per-node 1 --node-rank {0,1}`` of ``lit-vision fit``, as two machines would
    (each launch in its own working directory ``cwd[node]``; absolute paths are the shared filesystem)."""
    port = str(_free_port())
    procs = [subprocess.Popen([str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node),
                               "--master-addr", "127.0.0.1", "--master-port", port, str(BIN), "fit", *args,
                               "--trainer.num_nodes", "2", "--trainer.devices", "1", "--trainer.strategy", "ddp"],
                              cwd=cwd[node], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for node in (0, 1)]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, ""))
    for node, p in enumerate(out if check else []):
        assert p.returncode == 0, f"node {node} exit {p.returncode}:\n{p.stdout[-4000:]}"
    return out


def last_val_row(run_dir: Path) -> dict[str, float]:
    rows = [{k: float(v) for k, v in r.items() if k.startswith("val/") and v}
            for r in csv.DictReader((run_dir / "metrics.csv").open())]
    return [r for r in rows if r][-1]


def single_process_validate(args: list[str], ckpt: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """``lit-vision validate`` of ``ckpt`` in this process (one device) on the same data."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["lit-vision"])
    cli = run_cli(["validate", *args, "--trainer.devices", "1", "--trainer.logger", "false", "--pictures", "false",
                   "--ckpt_path", str(ckpt)])
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}


def check_one_writer(node0: Path, node1: Path) -> Path:
    """Only rank 0 wrote: one run directory with one last.ckpt and one best file, no temporaries; node 1 nothing."""
    assert not list(node1.iterdir()), f"rank 1 wrote {list(node1.rglob('*'))}"
    [run_dir] = (node0 / "runs" / "lightning_logs").iterdir()
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert len(ckpts) == 2 and "last.ckpt" in ckpts and ckpts[0].startswith("best-"), ckpts
    assert not [p for p in node0.rglob("*") if ".tmp-" in p.name]
    return run_dir


@pytest.mark.slow
@pytest.mark.ddp
def test_two_nodes_classifier_with_ema(imagefolder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    node0.mkdir(), node1.mkdir()
    args = ["--model", "ImageClassifier", "--model.backbone", "tv/resnet18", "--data", "ImageFolderDataModule",
            "--data.root", str(imagefolder_root), "--data.image_size", "32", "--data.batch_size", "4",
            "--data.num_workers", "0", *QUIET, "--trainer.max_epochs", "2"]
    dump = tmp_path / "dump"
    out = two_nodes([*args, "--trainer.callbacks+=EMA", "--trainer.callbacks.decay", "0.8",
                     "--trainer.callbacks+=tests.ddp_probe.RankDump", f"--trainer.callbacks.out_dir={dump}"],
                    [node0, node1])
    assert "Validation summary" in out[0].stdout and "Validation summary" not in out[1].stdout  # rank 0 prints
    run_dir = check_one_writer(node0, node1)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    # The checkpoint holds the EMA weights once (state_dict, what validation used) and the live ones
    # (current_model_state); validating its state_dict in one process gives the 2-node run's numbers.
    assert "current_model_state" in ckpt and ckpt["state_dict"].keys() == ckpt["current_model_state"].keys()
    # Both nodes end with bit-identical EMA weights, and those are what the checkpoint holds.
    r0, r1 = (torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    tensors_equal(r0["state_dict"], r1["state_dict"], "rank1")
    tensors_equal(r0["state_dict"], ckpt["state_dict"], "checkpoint")
    distributed = last_val_row(run_dir)
    single = single_process_validate(args, run_dir / "checkpoints" / "last.ckpt", tmp_path, monkeypatch)
    for key in ("val/acc1", "val/loss"):
        # Up to float32 rounding: the ranks' sums are reduced in another order than one process adds them, and with
        # the default lr 0.1 this tiny run's loss can reach ~1e5, where one ulp alone is ~0.01.
        assert distributed[key] == pytest.approx(single[key], rel=1e-5, abs=1e-5), key

    # Resuming with the run directory on node 0's disk only: node 1 would start from scratch; both stop at once.
    out = two_nodes([*args, "--ckpt_path", "last"], [node0, node1], check=False)
    for p in out:
        assert p.returncode != 0 and "do not resume from the same checkpoint (rank 0: runs/" in p.stdout, p.stdout[-3000:]
        assert "rank 1: nothing (a new run)" in p.stdout


@pytest.mark.slow
@pytest.mark.ddp
def test_two_nodes_detector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    node0.mkdir(), node1.mkdir()
    args = [*DETECTOR, *shapes_data(tmp_path / "shapes"), *QUIET, "--trainer.max_epochs", "1",
            "--model.optimizer", "torch.optim.Adam", "--model.optimizer.lr", "1e-3"]
    out = two_nodes(args, [node0, node1])
    assert "Validation summary" in out[0].stdout and "Validation summary" not in out[1].stdout
    run_dir = check_one_writer(node0, node1)
    distributed = last_val_row(run_dir)
    single = single_process_validate(args, run_dir / "checkpoints" / "last.ckpt", tmp_path, monkeypatch)
    assert "val/map" in distributed
    for key in distributed:
        if key in single:
            assert distributed[key] == pytest.approx(single[key], rel=1e-5, abs=1e-5), key


def test_torchrun_world_size_must_match_num_nodes_and_devices() -> None:
    env = {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}
    assert launch_mismatch(2, 2, env) is None and launch_mismatch(2, "2", env) is None
    assert launch_mismatch(1, "auto", env) is None  # left to Lightning
    assert launch_mismatch(None, 2, env) == (
        "torchrun started 2 node(s) x 2 process(es) (WORLD_SIZE=4, LOCAL_WORLD_SIZE=2) but the trainer is set for "
        "num_nodes=1 x devices=2: pass --trainer.num_nodes 2 --trainer.devices 2")
    assert launch_mismatch(1, 1, {}) is None  # not under torchrun


# ---------------------------------------------------------------------------------------------- SLURM requeue

FAKE_SLURM = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "litvision", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
              "SLURM_NNODES": "1", "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
              "SLURM_NODELIST": "127.0.0.1"}


def _fake_scontrol(tmp_path: Path) -> tuple[Path, Path]:
    """A ``bin`` folder (for ``PATH``) whose ``scontrol`` appends its arguments to the returned file."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol_calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    return bin_dir, calls


def _slurm_fit(args: list[str], cwd: Path, bin_dir: Path) -> subprocess.CompletedProcess:
    env = _env(**FAKE_SLURM, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([str(BIN), "fit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          check=False)


@pytest.mark.slow
@pytest.mark.ddp
def test_slurm_requeue_signal_writes_last_requeues_and_resumes_exactly(imagefolder_root: Path, tmp_path: Path) -> None:
    bin_dir, calls = _fake_scontrol(tmp_path)
    # 24 images / 4 = 6 steps; with EMA and MixUp/CutMix (random state in the resume).
    args = ["--model", "ImageClassifier", "--model.backbone", "tv/resnet18", "--data", "ImageFolderDataModule",
            "--data.root", str(imagefolder_root), "--data.image_size", "32", "--data.batch_size", "4",
            "--data.num_workers", "0", *QUIET, "--trainer.max_epochs", "1", "--trainer.devices", "1",
            "--trainer.callbacks+=EMA", "--trainer.callbacks.decay", "0.9", "--trainer.callbacks+=MixupCutmix",
            "--pictures", "false"]
    whole, job = tmp_path / "whole", tmp_path / "job"
    whole.mkdir(), job.mkdir()
    first = _slurm_fit(args, whole, bin_dir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert not calls.exists()  # no signal, no requeue

    stopped = _slurm_fit([*args, "--trainer.callbacks+=tests.multinode_probe.SignalAt", "--trainer.callbacks.step=3",
                          "--ckpt_path", "last"], job, bin_dir)
    assert stopped.returncode == 0, stopped.stdout[-3000:] + stopped.stderr[-3000:]
    assert "SIGUSR1 received: stopped at step 3" in stopped.stdout + stopped.stderr
    assert calls.read_text().split() == ["requeue", "4242"]
    run_dir = job / "runs" / "lightning_logs" / "version_0"
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 3  # written at the step the signal came in, not at an epoch end
    assert not list(job.rglob("hpc_ckpt_*"))  # Lightning's own mid-step checkpoint is not written

    resumed = _slurm_fit([*args, "--ckpt_path", "last"], job, bin_dir)  # the requeued job: the same command
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Restored all states" in resumed.stdout + resumed.stderr
    assert [p.name for p in (job / "runs" / "lightning_logs").iterdir()] == ["version_0"]
    expected = torch.load(whole / "runs/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == expected["global_step"] == 6
    for key in ("state_dict", "current_model_state", "optimizer_states"):
        tensors_equal(expected[key], final[key], key)
    assert (run_dir / "metrics.csv").read_text() == (whole / "runs/lightning_logs/version_0/metrics.csv").read_text()
    assert calls.read_text().split() == ["requeue", "4242"]  # once


@pytest.mark.slow
@pytest.mark.ddp
def test_slurm_requeue_signal_on_one_rank_stops_every_rank_at_the_same_step(imagefolder_root: Path,
                                                                           tmp_path: Path) -> None:
    """2 SLURM tasks (fake srun: both processes started here); only rank 1 gets SIGUSR1, after step 3: the ranks
    agree at the next check (every step here: log_every_n_steps 1), rank 0 writes last.ckpt and requeues."""
    bin_dir, calls = _fake_scontrol(tmp_path)
    args = ["--model", "ImageClassifier", "--model.backbone", "tv/resnet18", "--data", "ImageFolderDataModule",
            "--data.root", str(imagefolder_root), "--data.image_size", "32", "--data.batch_size", "4",
            "--data.num_workers", "0", *QUIET, "--trainer.max_epochs", "2", "--trainer.devices", "2",
            "--trainer.strategy", "ddp", "--pictures", "false", "--trainer.callbacks+=tests.multinode_probe.SignalAt",
            "--trainer.callbacks.step=3", "--trainer.callbacks.rank=1"]
    slurm = {**FAKE_SLURM, "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "MASTER_PORT": str(_free_port())}
    procs = [subprocess.Popen([str(BIN), "fit", *args], cwd=tmp_path,
                              env=_env(**{**slurm, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
                                       PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    assert "SIGUSR1 received: stopped at step 3" in outs[0]
    saved = torch.load(tmp_path / "runs/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    assert saved["global_step"] == 3 and saved["lit_vision_resume"]["world_size"] == 2
    assert calls.read_text().split() == ["requeue", "4242"]  # rank 0 only, once


@pytest.mark.parametrize(("signal_at", "in_validation", "requeued"), [(2, True, True), (4, False, False)])
def test_slurm_requeue_signal_during_validation_or_at_the_last_step(
        signal_at: int, in_validation: bool, requeued: bool, imagefolder_root: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """2 epochs of 2 steps. A signal during epoch 0's validation: the epoch-end last.ckpt (step 2) is the resume
    point, and the job stops before epoch 1's first batch. A signal at the very last step: the run just ends."""
    bin_dir, calls = _fake_scontrol(tmp_path)
    for key, value in FAKE_SLURM.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lit-vision"])
    args = ["fit", "--model", "ImageClassifier", "--model.backbone", "tv/resnet18", "--data", "ImageFolderDataModule",
            "--data.root", str(imagefolder_root), "--data.image_size", "32", "--data.batch_size", "4",
            "--data.num_workers", "0", *QUIET, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1", "--trainer.devices", "1", "--pictures", "false",
            "--trainer.callbacks+=tests.multinode_probe.SignalAt", f"--trainer.callbacks.step={signal_at}",
            f"--trainer.callbacks.in_validation={str(in_validation).lower()}"]
    if requeued:
        with pytest.raises(SystemExit) as stop:
            run_cli(args)
        assert stop.value.code == 0 and "stopped at step 2" in str(stop.value)
        assert calls.read_text().split() == ["requeue", "4242"]
    else:
        run_cli(args)
        assert not calls.exists()
    saved = torch.load(tmp_path / "runs/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    assert saved["global_step"] == (2 if requeued else 4)
    assert saved["epoch"] == (0 if requeued else 1)  # (requeued) the epoch-end state: epoch 1 starts on resume


# ---------------------------------------------------------------------------------------------- caches

def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _write_both(cache: str, barrier: object | None) -> None:
    if barrier is not None:
        barrier.wait()  # type: ignore[attr-defined]  # every process starts writing at the same moment
    write_digits(cache)
    write_shapes(cache, num_train=6, num_val=3, image_size=64, seed=1)


@pytest.mark.slow
def test_concurrent_cache_writers_make_one_complete_identical_tree(tmp_path: Path) -> None:
    reference, shared = tmp_path / "reference", tmp_path / "shared"
    _write_both(str(reference), None)
    ctx = multiprocessing.get_context("fork")  # no re-import per process; the writers start no threads
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_write_both, args=(str(shared), barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert sorted(p.name for p in shared.iterdir()) == sorted(p.name for p in reference.iterdir())  # no temporaries
    for tree in reference.iterdir():
        assert (shared / tree.name / ".complete").is_file()
        assert _tree_digest(shared / tree.name) == _tree_digest(tree), tree.name


def test_write_once_refuses_an_incomplete_tree_and_removes_stale_temporaries(tmp_path: Path) -> None:
    def write(tmp: Path) -> None:
        (tmp / "a.txt").write_text("a")

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "x").write_text("half")
    with pytest.raises(FileExistsError, match="incomplete"):
        write_once(partial, write)
    stale, fresh = tmp_path / ".tree-killed", tmp_path / ".tree-running"
    stale.mkdir(), fresh.mkdir()
    os.utime(stale, (0, 0))  # a killed writer's folder, long ago; `fresh` is a writer still at work
    assert (write_once(tmp_path / "tree", write) / "a.txt").read_text() == "a"
    assert not stale.exists() and fresh.exists()


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_multinode_override_layers_on_a_recipe(task: str, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["lit-vision"])
    recipe = REPO / "experiments" / task / "quickstart.yaml"
    with pytest.raises(SystemExit):
        run_cli(["fit", "--config", str(recipe),
                 "--config", str(REPO / "experiments" / "multinode" / f"{task}.yaml"),
                 "--trainer.num_nodes", "4", "--print_config"])
    printed = capsys.readouterr().out
    assert "num_nodes: 4" in printed and "strategy: ddp" in printed
    assert f"sync_batchnorm: {'false' if task == 'classification' else 'true'}" in printed
    for callback in yaml.safe_load(recipe.read_text())["trainer"].get("callbacks") or []:
        assert callback["class_path"] in printed  # the recipe's callbacks are kept
