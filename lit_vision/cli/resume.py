"""``--ckpt_path last`` (or a run directory): continue the newest run of the recipe, in its own directory.

Lightning resolves ``last`` inside the *new* version directory that the logger is about to create, where no
``last.ckpt`` exists yet, so a restarted job trains from scratch. Here ``last`` means the most recently written
``last.ckpt`` under the logger's ``<save_dir>/<name>/`` (or a configured checkpoint ``dirpath``); the logger is
pointed at that version directory, so curves and checkpoints stay in one place, and a CSV log keeps its rows
(those after the checkpoint's step are dropped: the resumed run logs them again).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lit_vision.cli.errors import CLIError
from lit_vision.distributed import is_distributed

# Loggers whose directory is <save_dir>/<name>/<version> (Lightning's CSV and TensorBoard loggers).
_VERSIONED_LOGGERS = ("CSVLogger", "TensorBoardLogger")
# W&B: checkpoints go to <save_dir>/<project>/<run id>/checkpoints (Lightning's ModelCheckpoint directory).
_WANDB_LOGGERS = ("WandbLogger", "WandB")


@dataclass
class ResumeTarget:
    checkpoint: Path
    version_dir: Path | None  # the run directory the logger continues in (None: the logger's own choice)


def _first_logger(trainer_cfg: Any) -> Any:
    logger = trainer_cfg.get("logger") if trainer_cfg is not None else None
    if isinstance(logger, list):
        logger = logger[0] if logger else None
    return logger


def _logger_kind(logger: Any) -> str:
    """``versioned`` (CSV/TensorBoard), ``wandb``, ``none`` (``logger: false``), ``default`` (unset or ``true``:
    Lightning's own) or ``other``."""
    if logger is False:
        return "none"
    if logger is None or logger is True:
        return "default"
    name = str(logger.get("class_path", "")).rsplit(".", 1)[-1] if hasattr(logger, "get") else ""
    return "versioned" if name in _VERSIONED_LOGGERS else "wandb" if name in _WANDB_LOGGERS else "other"


def _logger_config(trainer_cfg: Any) -> Any | None:
    """The first logger's config when the resumed run can be pointed at its directory (CSV/TensorBoard, W&B)."""
    logger = _first_logger(trainer_cfg)
    return logger if _logger_kind(logger) in ("versioned", "wandb") else None


def _run_root(logger_cfg: Any) -> Path | None:
    args = logger_cfg.get("init_args") or {}
    if _logger_kind(logger_cfg) == "wandb":  # <save_dir>/<project>: lit_vision's WandB saves under runs/ by default
        default_dir = "runs" if str(logger_cfg.get("class_path", "")).endswith(".WandB") else "."
        project = args.get("project") or os.environ.get("WANDB_PROJECT") or "lightning_logs"
        return Path(args.get("save_dir") or default_dir) / project
    save_dir = args.get("save_dir") or args.get("root_dir") or "."
    name = args.get("name")
    name = "lightning_logs" if name is None else name
    return Path(save_dir) / name if name else Path(save_dir)


def _default_root(trainer_cfg: Any) -> Path:
    return Path((trainer_cfg.get("default_root_dir") if trainer_cfg is not None else None) or ".")


def _configured_dirpaths(trainer_cfg: Any) -> list[Path]:
    paths = []
    for cb in (trainer_cfg.get("callbacks") or []) if trainer_cfg is not None else []:
        args = cb.get("init_args") if hasattr(cb, "get") else None
        if args and args.get("dirpath"):
            paths.append(Path(args["dirpath"]))
    return paths


def _last_in(directory: Path) -> Path | None:
    for candidate in (directory / "checkpoints" / "last.ckpt", directory / "last.ckpt"):
        if candidate.is_file():
            return candidate
    return None


def find_resume_target(ckpt_path: str, trainer_cfg: Any) -> ResumeTarget | None:
    """Where ``--ckpt_path last`` / ``--ckpt_path RUN_DIR`` resumes from; ``None`` for ``last`` with nothing yet."""
    logger_cfg = _logger_config(trainer_cfg)
    if ckpt_path != "last":
        run_dir = Path(ckpt_path)
        found = _last_in(run_dir)
        if found is None:
            raise CLIError(f"--ckpt_path {ckpt_path}: no last.ckpt in that directory (nor in its checkpoints/)")
        if run_dir.name == "checkpoints" and found.parent == run_dir:  # RUN/version_N/checkpoints: the run is above
            run_dir = run_dir.parent
        return ResumeTarget(found, run_dir if found.parent.name == "checkpoints" or found.parent == run_dir else None)
    candidates: list[tuple[Path, Path | None]] = [(p / "last.ckpt", None) for p in _configured_dirpaths(trainer_cfg)]
    kind = _logger_kind(_first_logger(trainer_cfg))
    root = _run_root(logger_cfg) if logger_cfg is not None else None
    if kind == "default":  # Lightning's own logger: <default_root_dir>/lightning_logs/version_N
        root = _default_root(trainer_cfg) / "lightning_logs"
    unlogged = _default_root(trainer_cfg) / "checkpoints" if kind == "none" else None
    if unlogged is not None:  # no logger: ModelCheckpoint writes to <default_root_dir>/checkpoints
        candidates.append((unlogged / "last.ckpt", None))
    if root is not None and root.is_dir():
        candidates += [(d / "checkpoints" / "last.ckpt", d if kind != "default" else None)
                       for d in root.iterdir() if d.is_dir()]
    existing = [(c, d) for c, d in candidates if c.is_file()]
    if not existing:
        if kind == "other":
            rank_zero_warn("--ckpt_path last: the first logger is neither CSV, TensorBoard nor W&B, so only the "
                           "checkpoint dirpaths the recipe sets are searched for last.ckpt; give --ckpt_path "
                           "RUN_DIR (or a file) to resume a run written elsewhere")
        searched = [root, *_configured_dirpaths(trainer_cfg), unlogged]
        where = ", ".join(str(p) for p in searched if p is not None) or "the run"
        rank_zero_info(f"--ckpt_path last: no last.ckpt under {where} yet: starting a new run")
        return None
    checkpoint, version_dir = max(existing, key=lambda cd: cd[0].stat().st_mtime)
    return ResumeTarget(checkpoint, version_dir)


def point_logger_at(trainer_cfg: Any, version_dir: Path) -> bool:
    """Make the configured CSV/TensorBoard logger write into ``version_dir`` (``<save_dir>/<name>/<version>``), or
    the W&B logger continue the run whose id names it (Lightning's ``WandbLogger`` resumes an id with
    ``resume="allow"``)."""
    logger_cfg = _logger_config(trainer_cfg)
    if logger_cfg is None:
        return False
    args = logger_cfg.get("init_args")
    if args is None:
        return False
    if _logger_kind(logger_cfg) == "wandb":
        args["id"] = version_dir.name
        return True
    match = re.fullmatch(r"version_(\d+)", version_dir.name)
    args["save_dir"] = str(version_dir.parent.parent)
    args["name"] = version_dir.parent.name
    args["version"] = int(match.group(1)) if match else version_dir.name
    return True


class _ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is continued rather than deleted.

    Rows at or after the first step the resumed run logs are dropped (they were logged after the checkpoint
    was written and are logged again), so the file reads as one uninterrupted run.
    """

    def _check_log_dir_exists(self) -> None:
        self._previous: list[dict[str, str]] = []
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                reader = csv.DictReader(f)
                self._previous = list(reader)
                self.metrics_keys = sorted(reader.fieldnames or [])

    def save(self) -> None:
        if self._previous is not None and self.metrics:
            first = min(float(m["step"]) for m in self.metrics if m.get("step") is not None)
            kept = [row for row in self._previous if row.get("step") in (None, "") or float(row["step"]) < first]
            self._record_new_keys()
            with self._fs.open(self.metrics_file_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)
            self._previous = None
        super().save()


def continue_csv_logs(loggers: list[Any]) -> None:
    """Give each CSV logger (about to continue an existing version directory) the continuing writer."""
    for logger in loggers:
        if isinstance(logger, CSVLogger) and logger._experiment is None:
            logger._fs.makedirs(logger.root_dir, exist_ok=True)
            logger._experiment = _ContinuingWriter(log_dir=logger.log_dir)


class SameResumePointOnEveryRank(Callback):
    """Under DDP, every process must resume from the same checkpoint (each resolves ``--ckpt_path`` and loads
    the file itself): stop every rank with one message before any work when they disagree.

    Happens when the run directory is on a node-local disk: node 0 finds ``last.ckpt``, the others find nothing
    and would start from scratch beside it (docs/multi_node.md).
    """

    def __init__(self, ckpt_path: str | None) -> None:
        self.ckpt_path = str(ckpt_path) if ckpt_path else ""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or not is_distributed() or self.ckpt_path in ("best", "hpc", "registry"):
            return
        mine = self.ckpt_path if not self.ckpt_path or Path(self.ckpt_path).is_file() else f"{self.ckpt_path} (missing)"
        seen: list[str] = [""] * dist.get_world_size()
        dist.all_gather_object(seen, mine)
        if len(set(seen)) > 1:
            views = ", ".join(f"rank {r}: {p or 'nothing (a new run)'}" for r, p in enumerate(seen) if p != seen[0])
            raise CLIError(f"the processes do not resume from the same checkpoint (rank 0: {seen[0] or 'nothing (a new run)'}"
                           f", {views}): put the run directory (the logger's save_dir, a checkpoint dirpath) on a "
                           "filesystem every node sees (docs/multi_node.md)")
