"""The ``fit`` / ``validate`` / ``test`` / ``predict`` subcommands: LightningCLI with lit_vision's links and defaults.

* ``num_classes``/``class_names`` link from the data to the model at instantiation (never typed twice), and
  the data's ``image_size`` reaches a model that takes one (detection) unless the model sets its own.
* ``predict --ckpt_path`` hands the checkpoint's class names to a DataModule that asks for them
  (:meth:`~lit_vision.data.base.SplitDataModule.wants_checkpoint_classes`).
* ``--ckpt_path`` is checked before any work (ours, same task, network and classes) and settings given with it
  win over the checkpoint's (:mod:`lit_vision.cli.checkpoints`, ``docs/checkpoints.md``).
* Without a configured ``ModelCheckpoint``, the best epoch by the task's ``monitor_metric`` is kept (plus
  ``last.ckpt``); ``predict`` adds the task's ``prediction_writer`` class.
* Every run writes ``config.yaml`` and ``run_info.yaml`` (git commit, versions, command line) to its log dir; a
  W&B logger gets the full resolved config and the run info in its config (:mod:`lit_vision.cli.run_info`).
* Errors before training (bad argument, unknown option, missing data, data check) print one short
  message and the usage line; ``--debug`` shows the traceback.
* Multi-node (docs/multi_node.md): a torchrun launch that disagrees with ``trainer.num_nodes``/``devices`` is one
  message before any work; under SLURM the requeue signal writes ``last.ckpt`` at a step boundary and requeues
  (instead of Lightning's mid-step ``hpc_ckpt``); ranks that would resume from different checkpoints stop at setup.
* A non-finite loss or gradient during training (:class:`~lit_vision.callbacks.NonFiniteGuard`) is one
  message too, with exit code 3 (``docs/nonfinite.md``).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

# Imported for their side effect: LightningCLI resolves short class names among imported subclasses.
import lit_vision.callbacks  # noqa: F401
import lit_vision.data  # noqa: F401
import lit_vision.loggers  # noqa: F401
import lit_vision.tasks  # noqa: F401
from lit_vision.callbacks.checkpoint import LastCheckpoint
from lit_vision.callbacks.coco_results_writer import CocoResultsWriter
from lit_vision.callbacks.nonfinite import NonFiniteLossError
from lit_vision.callbacks.pictures import ValidationPictures
from lit_vision.callbacks.prediction_writer import JsonlPredictionWriter
from lit_vision.cli.errors import CLIError, condense_parser_error, short_exception
from lit_vision.cli.resume import (
    SameResumePointOnEveryRank,
    continue_csv_logs,
    find_resume_target,
    point_logger_at,
)
from lit_vision.cli.run_info import RunConfigCallback
from lit_vision.data.base import SplitDataModule
from lit_vision.data.checks import DataError
from lit_vision.distributed import launch_mismatch
from lit_vision.introspection import import_dotted


class LitVisionParser(LightningArgumentParser):
    """A parser whose errors are one readable message (see :func:`~lit_vision.cli.errors.condense_parser_error`)."""

    debug = False

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if self.debug or not self.exit_on_error:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        raise CLIError(condense_parser_error(message, parser), usage=short_usage(parser.prog))


def short_usage(prog: str) -> str:
    prog = prog.replace(" [options]", "")
    return (f"usage: {prog} [--config RECIPE.yaml] [--model ...] [--data ...] [--trainer ...] [--ckpt_path ...]\n"
            f"       ({prog} --help lists every option)")


def _class_of(config: Any) -> type | None:
    """The class named by a ``{class_path, init_args}`` config, if it can be imported."""
    path = config.get("class_path") if isinstance(config, Mapping) or hasattr(config, "get") else None
    if not path:
        return None
    try:
        return import_dotted(str(path))
    except (ImportError, AttributeError):
        return None


class LitVisionCLI(LightningCLI):
    """LightningCLI that links ``num_classes``/``class_names`` (and ``image_size``) from the data into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The user never types num_classes: the DataModule knows it once it has scanned its data.
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")
        parser.add_argument("--pictures", type=bool, default=True,
                            help="fit/validate/test: draw validation pictures and per-class analysis for every logger "
                                 "(ValidationPictures; a configured one is used as is). false: none.")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self.raw_args = args  # re-read without defaults to tell what the user gave (cli/checkpoints.py)
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """``--ckpt_path``: checked, and merged under what the user gave (Lightning's puts it over; see
        :mod:`lit_vision.cli.checkpoints`)."""
        from lit_vision.cli.checkpoints import apply_checkpoint

        subcommand = self.config.get("subcommand")
        if subcommand:  # `last` / a run folder -> the newest last.ckpt first, so it is checked like any file
            self._resume_into_existing_dir = self._resolve_resume(self.config[subcommand], subcommand)
        apply_checkpoint(self)

    def after_instantiate_classes(self) -> None:
        from lit_vision.cli.checkpoints import check_data_classes

        check_data_classes(self)  # the data's classes (linked into the model) must be the checkpoint's

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        trainer_cfg = cfg.get("trainer")
        if trainer_cfg is not None and (mismatch := launch_mismatch(trainer_cfg.get("num_nodes"),
                                                                    trainer_cfg.get("devices"))):
            raise CLIError(mismatch)
        data_cfg, model_cfg = cfg.get("data"), cfg.get("model")
        data_args = data_cfg.get("init_args") if data_cfg else None
        model_args = model_cfg.get("init_args") if model_cfg else None
        if data_args is None or model_args is None:
            return
        # image_size: the data's presets resize to it, and a model that needs it (detection) takes the same.
        if "image_size" in model_args and model_args.get("image_size") is None and data_args.get("image_size"):
            model_args["image_size"] = data_args["image_size"]
        from lit_vision.geometry import size_hw  # here, not at import: `lit-vision --help` imports no torch

        model_size, data_size = model_args.get("image_size"), data_args.get("image_size")
        if model_size is not None and data_size is not None and size_hw(model_size) != size_hw(data_size):
            # Both are saved as hyper-parameters; Lightning would stop with a traceback on the clash.
            raise CLIError(f"--model.image_size {model_size} (the recipe's or the checkpoint's) and --data.image_size "
                           f"{data_size} differ: the model sees the data's images, so give the same size to both "
                           "(--model.image_size N --data.image_size N)")
        # Prediction from a checkpoint alone: Lightning has already put the checkpoint's hyper-parameters
        # into the model's arguments (--ckpt_path), so that is where the class names are.
        data_class = _class_of(data_cfg)
        if (isinstance(data_class, type) and issubclass(data_class, SplitDataModule)
                and data_class.wants_checkpoint_classes(dict(data_args)) and model_args.get("class_names") is not None):
            data_args["class_names"] = list(model_args["class_names"])

    _resume_into_existing_dir = False

    def _resolve_resume(self, cfg: Any, subcommand: str) -> bool:
        """``--ckpt_path last`` / a run directory -> the newest ``last.ckpt``, its logger version (cli/resume.py)."""
        ckpt = cfg.get("ckpt_path")
        if ckpt == "best" and subcommand != "fit":  # Lightning's "best" is the best file of a fit in this process
            raise CLIError(f"{subcommand} --ckpt_path best: 'best' names the best checkpoint of a fit run in the same "
                           "process, and this one runs no fit: give the file (runs/<name>/version_N/checkpoints/...)")
        if not isinstance(ckpt, str) or not (ckpt == "last" or Path(ckpt).is_dir()):
            return False
        target = find_resume_target(ckpt, cfg.get("trainer"))
        cfg["ckpt_path"] = str(target.checkpoint) if target is not None else None
        if target is None or target.version_dir is None or subcommand != "fit":
            return False
        return point_logger_at(cfg.get("trainer"), target.version_dir)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        self._monitor_best_checkpoint(trainer)
        self._add_last_checkpoint(trainer)
        self._take_over_slurm_requeue(trainer)
        if self.subcommand == "fit":
            trainer.callbacks.append(SameResumePointOnEveryRank(self.config["fit"].get("ckpt_path")))
        self._add_pictures(trainer)
        if self._resume_into_existing_dir:
            continue_csv_logs(trainer.loggers)
        writer_class = getattr(self.model, "prediction_writer", JsonlPredictionWriter)
        if self.subcommand == "predict" and not any(isinstance(c, (writer_class, JsonlPredictionWriter))
                                                    for c in trainer.callbacks):
            trainer.callbacks.append(writer_class())
        return trainer

    @staticmethod
    def _add_last_checkpoint(trainer: Trainer) -> None:
        """Every run that checkpoints keeps ``last.ckpt`` = its latest state (a recipe's LastCheckpoint sets the cadence).

        A ``ModelCheckpoint(save_last=True)`` would only refresh it when it saves a checkpoint of its own, and
        would race ours for the file name, so its ``save_last`` is turned off.
        """
        checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
        if not checkpoints:
            return  # checkpointing disabled
        for c in checkpoints:
            if not isinstance(c, LastCheckpoint) and c.save_last:
                c.save_last = False
        if not any(isinstance(c, LastCheckpoint) for c in checkpoints):
            trainer.callbacks.append(LastCheckpoint())

    def _take_over_slurm_requeue(self, trainer: Trainer) -> None:
        """Under SLURM (``auto_requeue``), the requeue signal writes ``last.ckpt`` at a step boundary and requeues.

        Lightning's own handler writes ``hpc_ckpt_N.ckpt`` from inside the signal handler, in the middle of a step
        and with collectives that other ranks may not be at; that state does not resume exactly, and
        ``--ckpt_path last`` would not find it. So the handler is ours (:meth:`LastCheckpoint.requeue_on`), and
        Lightning's is turned off (docs/multi_node.md).
        """
        env = trainer._accelerator_connector.cluster_environment
        last = [c for c in trainer.callbacks if isinstance(c, LastCheckpoint)]
        if self.subcommand != "fit" or not isinstance(env, SLURMEnvironment) or not env.auto_requeue or not last:
            return
        array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = (f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job and "SLURM_ARRAY_TASK_ID" in os.environ
               else os.environ.get("SLURM_JOB_ID"))
        env.auto_requeue = False  # Lightning registers no SIGUSR1 handler of its own then
        for c in last:
            c.requeue_on(env.requeue_signal or signal.SIGUSR1, ["scontrol", "requeue", job] if job else None)

    def _add_pictures(self, trainer: Trainer) -> None:
        """Every fit/validate/test draws what the model does (callbacks/pictures.py) unless ``--pictures false``."""
        cfg = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        if self.subcommand not in ("fit", "validate", "test") or not cfg.get("pictures", True):
            return
        if not any(isinstance(c, ValidationPictures) for c in trainer.callbacks):
            trainer.callbacks.append(ValidationPictures())

    def _monitor_best_checkpoint(self, trainer: Trainer) -> None:
        """Without a configured ModelCheckpoint, keep the best epoch by the task's metric (plus ``last.ckpt``).

        Lightning's default checkpoint only keeps the latest epoch, which is rarely the one a researcher
        wants to evaluate or predict with.
        """
        monitor = getattr(self.model, "monitor_metric", None)
        every = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
        if monitor is None or not every:
            return  # no metric to keep the best by, or checkpointing disabled
        checkpoints = [c for c in every if not isinstance(c, LastCheckpoint)]
        if len(checkpoints) > 1 or (checkpoints and checkpoints[0].monitor is not None):
            return
        configured = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        if any("ModelCheckpoint" in str(c.get("class_path", "")) for c in (configured.trainer.callbacks or [])):
            return  # the user asked for an unmonitored checkpoint explicitly
        best = ModelCheckpoint(monitor=monitor, mode="max", save_top_k=1,
                               filename="best-epoch{epoch:03d}-" + monitor.replace("/", "_") + "={" + monitor + ":.4f}",
                               auto_insert_metric_name=False)
        if checkpoints:  # Lightning's default, unmonitored one
            trainer.callbacks[trainer.callbacks.index(checkpoints[0])] = best
        else:  # only a configured LastCheckpoint (so Lightning added no default): best goes first
            trainer.callbacks.insert(trainer.callbacks.index(every[0]), best)

    def after_fit(self) -> None:
        """Print the final validation metrics and where the best checkpoint is."""
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if metrics:
            print("\nValidation summary (last epoch):")
            for k in sorted(metrics):
                print(f"  {k:<16} {metrics[k]:.4f}")
        ckpt = trainer.checkpoint_callback
        if isinstance(ckpt, ModelCheckpoint) and ckpt.best_model_path:
            score = f"{float(ckpt.best_model_score):.4f}" if ckpt.best_model_score is not None else "n/a"
            print(f"  best {ckpt.monitor or 'checkpoint'}: {score}  ->  {ckpt.best_model_path}")
        self._print_pictures()

    def after_validate(self) -> None:
        if self.trainer.is_global_zero:
            self._print_pictures()

    def after_test(self) -> None:
        if self.trainer.is_global_zero:
            self._print_pictures()

    def _print_pictures(self) -> None:
        """Where the validation pictures and the per-class analysis went (callbacks/pictures.py)."""
        folders = sorted({str(Path(f).parent) for c in self.trainer.callbacks if isinstance(c, ValidationPictures)
                          for f in c.written})
        if folders:
            print(f"  pictures and per-class analysis in {', '.join(folders)}")

    def after_predict(self) -> None:
        """Print where the prediction writers put their files (JSON lines; COCO results when asked for)."""
        if not self.trainer.is_global_zero:
            return
        for c in self.trainer.callbacks:
            if isinstance(c, JsonlPredictionWriter) and c.path is not None:
                print(f"Predictions written to {c.path}")
                if getattr(c, "mask_dir", None) is not None:
                    print(f"  masks (palette PNGs) in {c.mask_dir}")
        for c in self.trainer.callbacks:
            if isinstance(c, CocoResultsWriter) and c.path is not None:
                print(f"COCO results written to {c.path}")
                if c.images_path is not None:
                    print(f"  image ids of the plain images listed in {c.images_path}")


def _cli_kwargs(debug: bool) -> dict[str, Any]:
    return {
        "parser_class": type("LitVisionParser", (LitVisionParser,), {"debug": debug}),
        "trainer_defaults": {
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
        },
        "save_config_callback": RunConfigCallback,  # config.yaml + run_info.yaml; the full config on W&B
        "save_config_kwargs": {"overwrite": True},
        "parser_kwargs": {"parser_mode": "omegaconf"},
        "auto_configure_optimizers": False,
    }


def run_cli(args: list[str] | dict | None = None, run: bool = True, debug: bool = True) -> LitVisionCLI:
    """Build (and by default run) the CLI; ``args`` as on the command line, or ``None`` for ``sys.argv``.

    With ``run=False`` there is no subcommand (LightningCLI's convention): ``args`` start with the options.
    ``debug=True`` (the default from Python) keeps jsonargparse's own errors; the console script condenses them.
    """
    return LitVisionCLI(args=args, run=run, **_cli_kwargs(debug))


class _MainCLI(LitVisionCLI):
    """The console script's CLI: notes when the subcommand starts, so errors before it can be shown short."""

    started = False

    def _run_subcommand(self, subcommand: str) -> None:
        type(self).started = True
        super()._run_subcommand(subcommand)


def run_main(argv: list[str], debug: bool = False) -> int:
    """``lit-vision <subcommand> ...``: run it; errors before training (and data errors) as one message."""
    prog = f"lit-vision {argv[0]}"
    cli_class = type("MainCLI", (_MainCLI,), {"started": False})
    try:
        # LightningCLI warns when given args that are also in sys.argv: let it read sys.argv when they agree.
        cli_class(args=None if sys.argv[1:] == argv else argv, run=True, **_cli_kwargs(debug))
    except CLIError as err:
        if debug and not err.usage:  # not a usage error (e.g. a checkpoint's): --debug shows where it came from
            raise
        print(f"{err.usage}\n{prog}: error: {err}" if err.usage else f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as err:  # --help, --print_config
        return err.code if isinstance(err.code, int) else (0 if err.code is None else 2)
    except DataError as err:  # found in __init__ or in setup, before the first step: the message names the file
        if debug:
            raise
        print(f"{prog}: error: {err}\n(run with --debug, or LIT_VISION_DEBUG=1, for the traceback)", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:  # the run diverged (docs/nonfinite.md): one message, exit code 3, no traceback
        if debug:
            raise
        print(f"{prog}: error: {err}\n(run with --debug, or LIT_VISION_DEBUG=1, for the traceback)", file=sys.stderr)
        return 3
    except Exception as err:  # noqa: BLE001
        if debug or cli_class.started:  # a failure during the run: the full traceback is what helps
            raise
        print(f"{short_usage(prog)}\n{prog}: error: {short_exception(err)}\n"
              f"(run with --debug, or LIT_VISION_DEBUG=1, for the traceback)", file=sys.stderr)
        return 2
    return 0
