"""What every DataModule shares: the loader arguments, the one ``setup`` loop, and the hand-over to the task.

A DataModule here is a :class:`SplitDataModule` that knows how to build the dataset of one split
(:meth:`~SplitDataModule.build_dataset`). Everything else is done once, in this file:

* the loader arguments (``batch_size`` ... ``drop_last``) are this class's constructor arguments; subclasses
  take ``**kwargs`` and pass them on, and LightningCLI (jsonargparse) follows ``**kwargs`` into this
  signature, so ``--data.batch_size`` is typed and documented for every DataModule;
* ``setup(stage)`` builds each split the stage needs, once;
* after ``setup`` the task receives a :class:`~lit_vision.contracts.DataInfo` (class names, category ids,
  ground truth for evaluation, palette) through :meth:`~lit_vision.contracts.DataConsumer.connect_data`:
  data flows one way, from the DataModule to the task, and nothing probes ``trainer.datamodule``;
* the one exception, before the first transform is built: the task tells the DataModule the ``(mean, std)`` its
  pretrained weights expect (:class:`~lit_vision.contracts.NormalizationSource`), which a DataModule not given
  ``mean``/``std`` normalises with (:meth:`~SplitDataModule.resolve_normalization`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import DataLoader, Dataset

from lit_vision.constants import IMAGENET_MEAN, IMAGENET_STD
from lit_vision.contracts import DataConsumer, DataInfo, NormalizationSource
from lit_vision.data.checks import (
    DataError,
    checked_predict_paths,
    checkpoint_class_names,
)
from lit_vision.data.gpu_augment import (
    DeviceTransform,
    NormalizeOnDevice,
    split_for_device,
)
from lit_vision.data.resumable import (
    ResumableDataLoader,
    ResumableSampler,
    default_data_seed,
)

STAGE_SPLITS: dict[str, tuple[str, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("predict",),
}
# The split whose batches each running stage sees (device_transforms are keyed by split).
_SPLIT_OF_STAGE = {RunningStage.TRAINING: "train", RunningStage.SANITY_CHECKING: "val", RunningStage.VALIDATING: "val",
                   RunningStage.TESTING: "test", RunningStage.PREDICTING: "predict"}


class SplitDataModule(LightningDataModule):
    """Serves ``self.datasets[split]`` for train/val/test/predict with one ``DataLoader`` recipe.

    Subclasses implement :meth:`build_dataset` (and, when they read annotation files, fill
    ``self.sources[split]`` with checked, untransformed datasets in ``__init__``, so structural problems
    surface before a model is built), and describe their data in :meth:`data_info`.

    Args:
        batch_size: per-device training batch size.
        eval_batch_size: per-device batch size of validation, test and predict (default ``batch_size``).
        num_workers: loader worker processes.
        pin_memory: ``None``: on when CUDA is available.
        persistent_workers: keep workers alive between epochs (when ``num_workers > 0``).
        drop_last: drop a short last training batch (BatchNorm fails on a batch of one).
        normalize_on_device: serve uint8 batches and flip + normalise them on the training device
            (:mod:`lit_vision.data.gpu_augment`; image-only presets, i.e. classification): 4x fewer bytes through the
            loader and the host-to-device copy, and less CPU work per image. Off: batches arrive normalised.
    """

    collate_fn: ClassVar[Callable[[list[Any]], Any] | None] = None

    def __init__(
        self,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        drop_last: bool = False,
        normalize_on_device: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(f"batch sizes must be positive, got {batch_size} and {eval_batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.persistent_workers, self.drop_last = persistent_workers, drop_last
        self.normalize_on_device = normalize_on_device
        # split -> what finishes its batches on the training device (on_before_batch_transfer), set as splits are built.
        self.device_transforms: dict[str, DeviceTransform] = {}
        self.data_seed: int | None = None  # the training order's seed: seed_everything's, else random (see state_dict)
        self.datasets: dict[str, Dataset] = {}
        self.sources: dict[str, Any] = {}  # split -> checked, untransformed dataset (annotation-backed modules)
        self._class_names: list[str] | None = None  # set by the subclass's __init__ (the CLI links it to the model)
        # The (mean, std) the model's pretrained weights expect, told by the task at the start of setup.
        self.model_normalization: tuple[Sequence[float], Sequence[float]] | None = None

    @property
    def class_names(self) -> list[str] | None:
        return self._class_names

    @property
    def num_classes(self) -> int | None:
        return len(self._class_names) if self._class_names is not None else None

    # ------------------------------------------------------------------ what subclasses provide
    @classmethod
    def wants_checkpoint_classes(cls, init_args: dict[str, Any]) -> bool:
        """Whether these arguments leave the class names to a checkpoint (``lit-vision predict --ckpt_path``
        then hands them over): DataModules without labels say yes."""
        return False

    def build_dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (``train``, ``val``, ``test`` or ``predict``), transforms included."""
        raise NotImplementedError

    def data_info(self) -> DataInfo:
        """What the task needs to know about this data (see :class:`~lit_vision.contracts.DataInfo`)."""
        return DataInfo(class_names=list(self.class_names or []))

    def resolve_normalization(self, mean: Sequence[float] | None,
                              std: Sequence[float] | None) -> tuple[list[float], list[float]]:
        """The ``(mean, std)`` a normalising DataModule uses: values it was given win, then what the model's
        pretrained weights expect (:attr:`model_normalization`, known from ``setup`` on), then ImageNet's."""
        model_mean, model_std = self.model_normalization or (IMAGENET_MEAN, IMAGENET_STD)
        return ([float(m) for m in (mean if mean is not None else model_mean)],
                [float(s) for s in (std if std is not None else model_std)])

    # ------------------------------------------------------------------ the one setup loop
    def setup(self, stage: str | None = None) -> None:
        trainer = self.trainer  # None when used without a Trainer (tests, notebooks)
        task = trainer.lightning_module if trainer is not None else None
        if isinstance(task, NormalizationSource):  # before the first transform is built (contracts.py)
            self.model_normalization = task.input_normalization()
        for split in STAGE_SPLITS[stage or "fit"]:
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)
                if self.normalize_on_device:
                    self._move_normalization_to_device(split)
        if isinstance(task, DataConsumer):
            task.connect_data(self.data_info())

    def _move_normalization_to_device(self, split: str) -> None:
        """Cut the split's preset at uint8; its flip and normalisation become the split's device transform."""
        dataset = self.datasets[split]
        where = f"the {split} transform of {type(self).__name__}"
        cpu, device_op = split_for_device(getattr(dataset, "transform", None), where)
        dataset.transform = cpu
        self.device_transforms[split] = NormalizeOnDevice(device_op)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Run the split's device transform (:attr:`device_transforms`), which moves the images itself; Lightning then
        moves the rest of the batch (non-blocking from pinned memory: ``lightning.fabric``'s ``move_data_to_device``).

        A DataModule hook, not the task's: the data knows its presets. Lightning calls only one owner's
        ``*_batch_transfer`` hooks (the DataModule's when both have them), so a task subclass's own
        ``on_before_batch_transfer`` is called from here, after the device step. A DataModule subclass overriding it
        calls ``super()``.
        """
        trainer = self.trainer
        if trainer is None:
            return batch
        transform = self.device_transforms.get(_SPLIT_OF_STAGE.get(trainer.state.stage, ""))
        if transform is not None:
            batch = transform(batch, trainer.strategy.root_device)
        module = trainer.lightning_module
        if module is not None and is_overridden("on_before_batch_transfer", module, LightningModule):
            batch = module.on_before_batch_transfer(batch, dataloader_idx)
        return batch

    def _split_source(self, split: str) -> Any:
        """The checked source of ``split``; ``test`` falls back to ``val`` (with a warning) when not configured."""
        if split == "test" and "test" not in self.sources:
            rank_zero_warn("no test data configured: testing on the validation split")
            split = "val"
        if split not in self.sources:
            raise DataError(f"no {split} data was configured")
        return self.sources[split]

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, train: bool = False) -> DataLoader:
        dataset = self.datasets[split]
        batch_size = self.batch_size if train else (self.eval_batch_size or self.batch_size)
        kwargs: dict[str, Any] = dict(
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available() if self.pin_memory is None else self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=type(self).collate_fn,
        )
        if not train:
            return DataLoader(dataset, shuffle=False, **kwargs)
        # Order and augmentation from (seed, epoch, position): resumable mid-epoch, bit for bit (data/resumable.py).
        trainer = self.trainer
        if self.data_seed is None:
            self.data_seed = default_data_seed()
        sampler = ResumableSampler(dataset, num_replicas=trainer.world_size if trainer else 1,
                                   rank=trainer.global_rank if trainer else 0, seed=self.data_seed)
        # A shard of at most one batch keeps its short batch: dropping it would leave an epoch of no steps. The
        # shard (this rank's share), not the dataset: 30 images in batches of 16 on 2 devices are 15 per rank.
        return ResumableDataLoader(
            dataset, sampler=sampler, drop_last=self.drop_last and len(sampler) > batch_size,
            epoch_length=(lambda: trainer.num_training_batches) if trainer is not None else None, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """The training data seed (saved in checkpoints, so even an unseeded run resumes with the same order)."""
        return {"data_seed": self.data_seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.data_seed = state_dict.get("data_seed", self.data_seed)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")


class PredictOnlyDataModule(SplitDataModule):
    """Base of the DataModules that serve plain images to a trained model (``predict`` only, no labels).

    A trained model carries its class names (checkpoint hyper-parameters); ``lit-vision predict --ckpt_path``
    fills ``class_names`` from it. Subclasses turn the verified paths into a dataset in
    :meth:`predict_dataset` and name the annotated DataModules to use instead in ``alternatives``.

    Args:
        predict_paths: folders (searched recursively) or image files.
        class_names: the model's classes in label order (filled from the checkpoint by ``lit-vision``).
        verify_images: decode every image in ``setup``; ``None`` = only up to 20,000 files.
        **kwargs: loader arguments (see :class:`SplitDataModule`).
    """

    alternatives: ClassVar[str] = "an annotated DataModule"
    _stage_of = {"train": "fit", "val": "validate", "test": "test"}

    def __init__(
        self,
        predict_paths: str | list[str],
        class_names: list[str] | None = None,
        verify_images: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.predict_paths, self.verify_images = predict_paths, verify_images
        self._class_names = checkpoint_class_names(type(self).__name__, class_names)

    @classmethod
    def wants_checkpoint_classes(cls, init_args: dict[str, Any]) -> bool:
        return init_args.get("class_names") is None

    def predict_dataset(self, paths: list[str]) -> Dataset:
        raise NotImplementedError

    def build_dataset(self, split: str) -> Dataset:
        if split != "predict":
            raise DataError(f"{type(self).__name__} only predicts (it has no labels), so it cannot "
                            f"{self._stage_of.get(split, split)}: use {self.alternatives} for fit/validate/test")
        return self.predict_dataset(checked_predict_paths(self.predict_paths, self.verify_images))
