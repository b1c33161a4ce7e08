"""Startup cost of the ``lit-vision`` CLI, for one or more versions of the code, in the same run.

    .venv/bin/python benchmarks/cli_startup.py --refs HEAD WORKTREE --output benchmarks/results/cli_startup.json
    .venv/bin/python benchmarks/cli_startup.py --refs HEAD~3 HEAD --repeats 2

Measured per ref, each in a fresh child process run with the venv's python:

* ``lit-vision --help``: wall time of the whole process (median and min of ``--help-repeats``), next to
  ``python -c "import torch"`` as the floor no CLI on top of torch can go under.
* ``lit-vision fit`` on the classification quickstart for one optimizer step (no validation, logger,
  checkpoint or progress bar): wall time from just before the child is started until the first
  ``on_train_batch_end`` (the optimizer step is done), and wall time of the whole process (median of
  ``--fit-repeats``). The first-step time comes from a callback in a temporary module that replaces
  the quickstart's callbacks; the package itself is not touched.

A ref is a git revision, exported with ``git worktree add --detach`` to a temporary directory (removed
at the end) and run with ``PYTHONPATH`` and cwd set to it, or ``WORKTREE``: the checkout as it is now.
Each ref gets one untimed warm-up (bytecode compilation, the digits cache in a temporary
``$LIT_VISION_CACHE`` shared by all refs); timed runs interleave the refs so machine noise hits all alike.
Prints a Markdown table; ``--output`` also writes every raw timing as JSON.
Results are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKTREE = "WORKTREE"
PROBE_MODULE = "_cli_startup_probe"
PROBE_ENV = "CLI_STARTUP_FIRST_STEP_FILE"
PROBE_SOURCE = f'''import os, time
from lightning.pytorch import Callback


class FirstStepTimer(Callback):
    """Writes time.time() to ${PROBE_ENV} when the first training batch (optimizer step) has ended."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0 and trainer.global_step == 1:
            with open(os.environ["{PROBE_ENV}"], "w") as f:
                f.write(repr(time.time()))
'''
CLI_CODE = "import sys; from lit_vision.cli import main; sys.argv = ['lit-vision', *sys.argv[1:]]; main()"
FIT_ARGS = [
    "fit", "--config", "experiments/classification/quickstart.yaml",
    "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
    "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
    "--trainer.enable_progress_bar", "false",
    # Replaces the quickstart's ModelCheckpoint (rejected with enable_checkpointing false) and
    # LearningRateMonitor (rejected without a logger) by the probe alone.
    f'--trainer.callbacks=[{{"class_path": "{PROBE_MODULE}.FirstStepTimer"}}]',
]


@dataclass
class Ref:
    name: str
    commit: str
    root: Path
    added_worktree: bool
    lit_vision_file: str = ""
    timings: dict[str, list[float]] = field(default_factory=lambda: {
        "help_s": [], "import_torch_s": [], "fit_first_step_s": [], "fit_total_s": []})


class ChildError(RuntimeError):
    pass


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def run_child(ref: Ref, argv: list[str], env: dict[str, str], timeout: float, what: str) -> float:
    """Run ``argv`` in ``ref``'s directory and return its wall time; raise ChildError on failure."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, cwd=ref.root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ChildError(f"[{ref.name}] {what}: no exit after {timeout:.0f} s (killed)") from None
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise ChildError(f"[{ref.name}] {what}: exit status {proc.returncode}\n  cwd: {ref.root}\n"
                         f"  command: {shlex.join(argv)}\n--- output tail ---\n{tail}")
    return elapsed


class Bench:
    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.python: str = args.python
        self.timeout: float = args.timeout
        self.scratch = scratch
        self.probe_dir = scratch / "probe"
        self.probe_dir.mkdir()
        (self.probe_dir / f"{PROBE_MODULE}.py").write_text(PROBE_SOURCE)
        (scratch / "cache").mkdir()
        self.refs: list[Ref] = []

    def add_ref(self, rev: str) -> Ref:
        if rev == WORKTREE:
            dirty = "+dirty" if git("status", "--porcelain") else ""
            ref = Ref(rev, git("rev-parse", "--short", "HEAD") + dirty, REPO, added_worktree=False)
        else:
            try:
                sha = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
            except subprocess.CalledProcessError:
                raise SystemExit(f"error: {rev!r} is not a git revision of {REPO} (nor {WORKTREE})") from None
            root = self.scratch / f"ref{len(self.refs)}"
            git("worktree", "add", "--detach", str(root), sha)
            ref = Ref(rev, git("rev-parse", "--short", sha), root, added_worktree=True)
        self.refs.append(ref)
        return ref

    def env(self, ref: Ref, **extra: str) -> dict[str, str]:
        env = dict(os.environ)  # OMP_NUM_THREADS and the rest as they are
        env.update(PYTHONPATH=os.pathsep.join([str(ref.root), str(self.probe_dir)]),
                   LIT_VISION_CACHE=str(self.scratch / "cache"), WANDB_MODE="offline", **extra)
        return env

    def verify(self, ref: Ref) -> None:
        """Fail loudly unless the child imports ``lit_vision`` from ``ref.root`` (not the editable install)."""
        out = subprocess.run([self.python, "-c", "import lit_vision; print(lit_vision.__file__)"],
                             cwd=ref.root, env=self.env(ref), capture_output=True, text=True, timeout=self.timeout)
        if out.returncode != 0:
            raise ChildError(f"[{ref.name}] cannot import lit_vision:\n{out.stderr.strip()[-2000:]}")
        ref.lit_vision_file = out.stdout.strip().splitlines()[-1]
        if not Path(ref.lit_vision_file).resolve().is_relative_to(ref.root.resolve()):
            raise ChildError(f"[{ref.name}] lit_vision imported from {ref.lit_vision_file}, not under {ref.root}")
        print(f"# {ref.name} ({ref.commit}): lit_vision from {ref.lit_vision_file}", file=sys.stderr)

    def time_help(self, ref: Ref) -> None:
        ref.timings["import_torch_s"].append(
            run_child(ref, [self.python, "-c", "import torch"], self.env(ref), self.timeout, "import torch"))
        ref.timings["help_s"].append(
            run_child(ref, [self.python, "-c", CLI_CODE, "--help"], self.env(ref), self.timeout, "--help"))

    def time_fit(self, ref: Ref, record: bool = True) -> None:
        stamp = self.scratch / "first_step.txt"
        stamp.unlink(missing_ok=True)
        root_dir = tempfile.mkdtemp(prefix="fit_", dir=self.scratch)  # config.yaml lands here, not in cwd
        argv = [self.python, "-c", CLI_CODE, *FIT_ARGS, "--trainer.default_root_dir", root_dir]
        t0 = time.time()
        total = run_child(ref, argv, self.env(ref, **{PROBE_ENV: str(stamp)}), self.timeout, "fit")
        if not stamp.exists():
            raise ChildError(f"[{ref.name}] fit exited without completing an optimizer step")
        if record:
            ref.timings["fit_first_step_s"].append(float(stamp.read_text()) - t0)
            ref.timings["fit_total_s"].append(total)

    def run(self, help_repeats: int, fit_repeats: int) -> None:
        for ref in self.refs:  # untimed warm-up: bytecode, page cache, digits cache
            self.verify(ref)
            run_child(ref, [self.python, "-c", CLI_CODE, "--help"], self.env(ref), self.timeout, "--help (warm-up)")
            self.time_fit(ref, record=False)
        for i in range(help_repeats):
            for ref in self.refs:
                print(f"# --help {i + 1}/{help_repeats} {ref.name}", file=sys.stderr)
                self.time_help(ref)
        for i in range(fit_repeats):
            for ref in self.refs:
                print(f"# fit {i + 1}/{fit_repeats} {ref.name}", file=sys.stderr)
                self.time_fit(ref)

    def cleanup(self) -> None:
        for ref in self.refs:
            if ref.added_worktree:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(ref.root)],
                               capture_output=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)
        shutil.rmtree(self.scratch, ignore_errors=True)


def table(refs: list[Ref]) -> str:
    med, lo = statistics.median, min
    rows = ["| ref | commit | --help median s | --help min s | import torch median s "
            "| fit first step median s | fit total median s |", "|---|---|---|---|---|---|---|"]
    for r in refs:
        t = r.timings
        rows.append(f"| {r.name} | {r.commit} | {med(t['help_s']):.2f} | {lo(t['help_s']):.2f} "
                    f"| {med(t['import_torch_s']):.2f} | {med(t['fit_first_step_s']):.2f} "
                    f"| {med(t['fit_total_s']):.2f} |")
    return "\n".join(rows)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "lightning", "jsonargparse", "torchvision", "timm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--refs", nargs="+", default=["HEAD", WORKTREE], help=f"git revisions or {WORKTREE}")
    p.add_argument("--help-repeats", type=int, default=5)
    p.add_argument("--fit-repeats", type=int, default=3)
    p.add_argument("--repeats", type=int, help="sets both --help-repeats and --fit-repeats")
    p.add_argument("--python", default=sys.executable, help="interpreter of the children")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per child process")
    p.add_argument("--output", type=Path, help="also write all raw timings to this JSON file")
    args = p.parse_args()
    if args.repeats is not None:
        args.help_repeats = args.fit_repeats = args.repeats
    if min(args.help_repeats, args.fit_repeats) < 1:
        p.error("repeats must be at least 1")

    bench = Bench(args, Path(tempfile.mkdtemp(prefix="cli_startup_")))
    try:
        for rev in args.refs:
            bench.add_ref(rev)
        bench.run(args.help_repeats, args.fit_repeats)
    except ChildError as err:
        print(f"cli_startup: error: {err}", file=sys.stderr)
        return 1
    finally:
        bench.cleanup()

    print(table(bench.refs))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "versions": versions(), "python_exe": args.python, "fit_args": FIT_ARGS,
            "help_repeats": args.help_repeats, "fit_repeats": args.fit_repeats,
            "refs": [{"ref": r.name, "commit": r.commit, "lit_vision_file": r.lit_vision_file, **r.timings}
                     for r in bench.refs],
        }, indent=2) + "\n")
        print(f"\nRaw timings written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
