"""``lit-vision browse-data``: look at the data, as training will see it, before training on it.

    lit-vision browse-data --config experiments/detection/quickstart.yaml [--split val] [--num_images 25]

Takes the same ``--config`` / ``--data`` arguments as ``fit`` (the recipe is parsed by the very parser ``fit``
uses, so a recipe that trains is a recipe that browses, and a typo reads the same) but only builds the
DataModule, never the model or the trainer. It runs the data checks of ``setup`` (a failure is one message
and exit code 2), then writes to ``--out`` (default ``runs/browse/<DataModule>``):

* ``samples.png``: ``--num_images`` samples after augmentation with their labels, boxes or masks drawn, picked
  and augmented under ``--seed`` (same seed, same picture);
* ``statistics.txt`` / ``statistics.json``: counts from the untransformed annotations
  (:func:`~lit_vision.data.statistics.dataset_statistics`) and what the drawn samples showed (boxes outside
  the image, degenerate boxes, unknown labels);
* ``class_counts.png``, and per task ``box_sizes.png`` / ``box_aspect.png`` or ``mask_classes.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal, Optional

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser

from lit_vision.cli.errors import CLIError, root_cause, short_exception
from lit_vision.cli.lightning_cli import LitVisionCLI, _cli_kwargs
from lit_vision.data.checks import DataError

PROG = "lit-vision browse-data"
USAGE = (f"usage: {PROG} [--config RECIPE.yaml] [--data ...] [--split train|val] [--num_images N] [--seed S] "
         f"[--out DIR]\n       ({PROG} --help lists every option)")


class BrowseDataCLI(LitVisionCLI):
    """The ``fit`` parser (recipe, ``--data``, ``--model``, ``--trainer``) plus browse-data's options; only the
    DataModule is instantiated (``self.datamodule``)."""

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """fit's ``--trainer`` / ``--model`` / ``--data``, with the model optional: ``--data`` alone is enough."""
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=True, required=False)
        parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=True)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=Optional[str], default=None,
                            help="Ignored: accepted so that a fit/validate command line works unchanged.")
        parser.add_argument("--split", type=Literal["train", "val"], default="train",
                            help="Which split to draw and count.")
        parser.add_argument("--num_images", type=int, default=16, help="How many augmented samples to draw.")
        parser.add_argument("--seed", type=int, default=0,
                            help="Picks and augments the samples: the same seed draws the same picture.")
        parser.add_argument("--max_images", type=Optional[int], default=None,
                            help="Segmentation: read at most this many masks for the statistics (evenly spaced).")
        parser.add_argument("--out", type=Optional[str], default=None,
                            help="Output folder (default runs/browse/<DataModule class>).")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self.raw_args = args
        self.config = parser.parse_args(args)  # args are always explicit here: no sys.argv warning

    def _parse_ckpt_path(self) -> None:
        pass  # no model is built, so a checkpoint is neither read nor checked

    def _set_seed(self) -> None:
        pass  # --seed picks the samples; the recipe's seed_everything is for training

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        """Only the DataModule: a parser of ``data`` alone instantiates the resolved ``{class_path, init_args}``."""
        data_parser = LightningArgumentParser(exit_on_error=False)
        data_parser.add_lightning_class_args(LightningDataModule, "data", subclass_mode=True)
        data_config = data_parser.parse_object({"data": self.config["data"].as_dict()})
        self.datamodule = data_parser.instantiate_classes(data_config)["data"]
        self.model = self.trainer = None

    def after_instantiate_classes(self) -> None:
        pass


def _fail(message: str, usage: bool = False) -> int:
    print(f"{USAGE}\n{PROG}: error: {message}" if usage else f"{PROG}: error: {message}\n"
          "(run with --debug, or LIT_VISION_DEBUG=1, for the traceback)", file=sys.stderr)
    return 2


def browse_data(argv: list[str], debug: bool = False) -> int:
    """``lit-vision browse-data``: draw augmented samples and write dataset statistics (see the module docstring).

    Exit code 0, or 2 with one message on stderr for a bad argument or a data check failure (``debug``: the
    traceback instead).
    """
    kwargs = _cli_kwargs(debug)
    kwargs["parser_kwargs"] = {**kwargs["parser_kwargs"], "prog": PROG,
                               "description": "Draw augmented training samples and dataset statistics."}
    try:
        cli = BrowseDataCLI(args=list(argv), run=False, **kwargs)
        return _browse(cli.datamodule, cli.config)
    except CLIError as err:
        if debug and not err.usage:
            raise
        return _fail(str(err), usage=bool(err.usage))
    except SystemExit as err:  # --help, --print_config
        return err.code if isinstance(err.code, int) else (0 if err.code is None else 2)
    except Exception as err:  # noqa: BLE001 -- a data check failure (in __init__ or setup) is one message
        if debug:
            raise
        cause = root_cause(err)
        return _fail(str(cause) if isinstance(cause, DataError) else short_exception(err))


def _browse(datamodule: Any, config: Any) -> int:
    from lit_vision.data.statistics import dataset_statistics, format_statistics
    from lit_vision.visualize.draw import save_png
    from lit_vision.visualize.samples import draw_samples

    split = config["split"]
    out = Path(config["out"] or Path("runs") / "browse" / type(datamodule).__name__)
    if config["num_images"] < 1:
        raise CLIError(f"--num_images must be at least 1, got {config['num_images']}", usage=USAGE)
    datamodule.setup("fit" if split == "train" else "validate")  # the data checks, as before training
    dataset = datamodule.datasets[split]
    class_names = list(getattr(datamodule, "class_names", None) or [])
    stats = dataset_statistics(datamodule, split, max_images=config["max_images"])
    picture, findings = draw_samples(dataset, class_names, config["num_images"], config["seed"],
                                     palette=getattr(datamodule, "palette", None))
    stats["data"] = type(datamodule).__name__
    stats["augmented_samples"] = {"split": split, "seed": config["seed"], **findings.as_dict()}
    out.mkdir(parents=True, exist_ok=True)
    written = [save_png(picture, out / "samples.png")]
    (out / "statistics.json").write_text(json.dumps(stats, indent=2))
    (out / "statistics.txt").write_text(format_statistics(stats))
    written += [out / "statistics.txt", out / "statistics.json", *write_figures(stats, out)]
    print(format_statistics(stats))
    print(f"Wrote {len(findings.indices)} augmented {split} samples and the statistics of "
          f"{type(datamodule).__name__} to {out}/:")
    for path in written:
        print(f"  {path}")
    return 0


def write_figures(stats: dict[str, Any], out: Path) -> list[Path]:
    """The plots of ``stats`` (class counts; box sizes and aspect ratios, or mask class frequencies)."""
    from lit_vision.data.statistics import histogram_values
    from lit_vision.visualize.plots import counts_figure, histogram_figure, save_figure

    split, task = stats["split"], stats["task"]
    paths = []
    if task == "detection":
        counts, what = stats["instances_per_class"], "instances"
    elif task == "segmentation":
        counts, what = stats["images_per_class"], "images containing the class"
    else:
        counts, what = stats["images_per_class"], "images"
    paths.append(save_figure(counts_figure(counts, f"{what} per class ({split})", what), out / "class_counts.png"))
    if task == "detection":
        for key, name, title, xlabel in (("box_sqrt_area", "box_sizes.png", "box size", "sqrt(box area) (pixels)"),
                                         ("box_aspect", "box_aspect.png", "box aspect ratio", "width / height")):
            hist = stats["histograms"][key]
            figure = histogram_figure(histogram_values(hist), hist["edges"] or 10, f"{title} ({split})", xlabel,
                                      log_x=True)
            paths.append(save_figure(figure, out / name))
    if task == "segmentation":
        pixels = {**stats["pixels_per_class"], "ignore": stats["ignore_pixels"]}
        paths.append(save_figure(counts_figure(pixels, f"mask pixels per class ({split})", "pixels"),
                                 out / "mask_classes.png"))
    return paths
