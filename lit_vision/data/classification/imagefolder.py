"""ImageFolder classification data: ``root/{train,val[,test]}/<class>/<image>`` or one class tree split by seed.

The folder structure is scanned in ``__init__`` because ``num_classes`` and ``class_names`` must be
known when the CLI links them into the model; every structural problem (missing ``train/``, empty class
folder, non-image file, a validation class unknown to training) is therefore raised before any model
is built. Image contents are decoded and checked in ``setup`` (once per run, before the first step).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch.utils.data import Dataset

from lit_vision.contracts import DataInfo
from lit_vision.data.base import SplitDataModule
from lit_vision.data.checks import (
    DataError,
    OnBad,
    list_image_files,
    load_all_rgb,
    load_rgb,
    resolve_image_paths,
    should_verify,
    verify_images,
)
from lit_vision.data.classification.transforms import (
    classification_eval_transforms,
    classification_train_transforms,
)

Sample = tuple[str, int]


def _identity(path: str) -> str:  # a module-level function: datasets are pickled into loader workers
    return path


def scan_class_tree(folder: Path, skip: bool = False) -> dict[str, list[Path]]:
    """Map each class sub-folder of ``folder`` to its sorted image files, those in its own sub-folders included
    (as torchvision's ``ImageFolder``, whose ``make_dataset`` walks each class folder; hidden folders are skipped).

    Raises :class:`DataError` for a missing folder, no class folders, an empty class folder or (unless
    ``skip``) a non-image file; with ``skip`` those files are skipped with one warning.
    """
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist or is not a directory")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{folder} holds no class folders (expected {folder}/<class_name>/<image files>)")
    tree: dict[str, list[Path]] = {}
    skipped: list[Path] = []
    for d in class_dirs:
        images, others = list_image_files(d, skip=skip, recursive=True)
        skipped += others
        if not images:
            raise DataError(f"class folder {d} holds no image files")
        tree[d.name] = images
    if skipped:
        warnings.warn(f"Skipped {len(skipped)} non-image file(s) under {folder}, e.g. {skipped[0]}", stacklevel=2)
    return tree


class ImageFolderDataset(Dataset):
    """``(path, label)`` pairs decoded with PIL to RGB; items are ``{"image", "label", "path"}`` dicts.

    Dict items keep batches self-describing, so callbacks (Mixup/CutMix) can replace ``label`` in
    place and prediction writers can read ``path``. ``load``: how a path becomes the transform's input;
    ``None`` hands the transform the path itself (the ``fast_decode`` presets decode only the pixels they keep).
    ``cache``: decode every image once, here, and keep it in memory; that decode verifies the files too (one
    :class:`DataError` listing the bad ones, ``what`` naming the set).
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable | None = None, cache: bool = False,
                 load: Callable[[str], Any] | None = load_rgb, what: str = "the dataset") -> None:
        self.samples = list(samples)
        self.transform = transform
        self.load = load if load is not None else _identity
        self._cache: list[Image.Image] | None = load_all_rgb([p for p, _ in self.samples], what) if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        image = self._cache[index] if self._cache is not None else self.load(path)
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "label": label, "path": path}


class ImageFolderDataModule(SplitDataModule):
    """Classification data from an ImageFolder tree.

    Args:
        root: folder with ``train/`` and ``val/`` (optional ``test/``) class trees; or, with
            ``val_fraction``, a single class tree split per class by ``split_seed``. May be ``None``
            for prediction only (then ``class_names`` must be given, e.g. from a checkpoint).
        val_fraction: fraction of each class held out for validation when ``root`` has no ``val/``.
        image_size, mean, std, scale_range, crop_ratio, hflip, color_jitter, crop_pct: transform presets
            (see :mod:`lit_vision.data.classification.transforms`; ``scale_range`` is the fraction of the image
            area a random crop covers); set ``hflip=False`` for digits and text. ``mean``/``std`` ``None``: what
            the model's pretrained weights expect (:func:`~lit_vision.backbones.pretrained_config`, told by the
            task in ``setup``; ImageNet's for ``tv/`` backbones, 0.5/0.5 for many timm ViTs), ImageNet's without
            a model.
        drop_last: drop a short last training batch. Loader arguments (``batch_size``, ``eval_batch_size``,
            ``num_workers``, ...): see :class:`~lit_vision.data.base.SplitDataModule`.
        predict_paths: folders (searched recursively) or image files to predict; default: the
            validation split.
        class_names: explicit class list; with a ``root`` it must equal the folder classes.
        verify_images: decode every image in ``setup``; ``None`` = only up to 20,000 files per split.
        on_bad: ``"error"`` raises on a non-image file in a class folder; ``"skip"`` skips such files with a
            warning and a count.
        cache_images: keep decoded images in memory (tiny datasets: removes decode cost per epoch); decoding
            them in ``setup`` verifies them too, whatever ``verify_images`` says.
        fast_decode: the loaders hand the transforms paths, and JPEGs are decoded at 1/2, 1/4 or 1/8 scale when the
            crop (training) or the resize (evaluation) still gets at least its output's pixels from that: same crops
            for the same seed, same pixels up to resampling noise, about a quarter of the work per image on
            2048x1536 photos (:mod:`lit_vision.data.classification.fast_decode`, docs/classification.md). Other
            files, and crops that need every pixel, are decoded in full. ``False`` (or ``cache_images``, whose cache
            holds decoded images): the plain tensor presets.
    """

    def __init__(
        self,
        root: str | None = None,
        val_fraction: float | None = None,
        split_seed: int = 0,
        image_size: int = 224,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        scale_range: Sequence[float] = (0.08, 1.0),
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: bool = True,
        color_jitter: float = 0.4,
        crop_pct: float = 0.875,
        drop_last: bool = True,
        predict_paths: str | list[str] | None = None,
        class_names: list[str] | None = None,
        verify_images: bool | None = None,
        on_bad: OnBad = "error",
        cache_images: bool = False,
        fast_decode: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(drop_last=drop_last, **kwargs)
        if on_bad not in ("error", "skip"):
            raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
        # class_names is the model's hyper-parameter (linked by the CLI); keeping it here too would make
        # Lightning's hparams merge fail whenever the data derives it from the folders.
        self.save_hyperparameters(ignore=["class_names"])
        self.root = Path(root).expanduser() if root is not None else None
        self.split: dict[str, list[Sample]] = {}
        self._class_names = list(class_names) if class_names is not None else None
        if self.root is not None:
            self._scan()
        elif self._class_names is None:
            raise DataError("ImageFolderDataModule needs a root (or, for prediction only, class_names)")

    @classmethod
    def wants_checkpoint_classes(cls, init_args: dict[str, Any]) -> bool:
        """Without a ``root`` (prediction only) the class names come from the checkpoint."""
        return init_args.get("root") is None and init_args.get("class_names") is None

    # ------------------------------------------------------------------ structure
    def _scan(self) -> None:
        assert self.root is not None
        hp = self.hparams
        if not self.root.is_dir():
            raise DataError(f"data root {self.root} does not exist or is not a directory")
        train_dir = self.root / "train"
        if train_dir.is_dir():
            train = scan_class_tree(train_dir, hp.on_bad == "skip")
            names = sorted(train)
            if (self.root / "val").is_dir():
                val = scan_class_tree(self.root / "val", hp.on_bad == "skip")
            elif hp.val_fraction:
                train, val = self._split(train, hp.val_fraction, hp.split_seed)
            else:
                raise DataError(f"{self.root} has train/ but no val/; add val/ or set val_fraction")
        elif hp.val_fraction:
            train, val = self._split(scan_class_tree(self.root, hp.on_bad == "skip"), hp.val_fraction, hp.split_seed)
            names = sorted(train)
        else:
            raise DataError(
                f"data root {self.root} has no train/ folder. Expected {self.root}/train/<class>/... and "
                f"{self.root}/val/<class>/..., or set val_fraction to split a single class tree."
            )
        if len(names) < 2:  # a softmax over one class is 1 whatever the image: nothing to learn, accuracy always 1
            raise DataError(f"{self.root} has one class folder ({names[0]!r}): classification needs at least two")
        self._check_known(val, names, self.root / "val")
        index = {n: i for i, n in enumerate(names)}
        self.split["train"] = [(str(p), index[c]) for c in names for p in train[c]]
        self.split["val"] = [(str(p), index[c]) for c in sorted(val) for p in val[c]]
        if (self.root / "test").is_dir():
            test = scan_class_tree(self.root / "test", hp.on_bad == "skip")
            self._check_known(test, names, self.root / "test")
            self.split["test"] = [(str(p), index[c]) for c in sorted(test) for p in test[c]]
        if self._class_names is not None and self._class_names != names:
            raise DataError(f"class_names {self._class_names} differ from the class folders of {self.root}: {names}")
        self._class_names = names

    @staticmethod
    def _check_known(tree: dict[str, list[Path]], names: list[str], where: Path) -> None:
        unknown = sorted(set(tree) - set(names))
        if unknown:
            raise DataError(f"class folder(s) {unknown} in {where} have no counterpart in train/: {names}")

    @staticmethod
    def _split(tree: dict[str, list[Path]], fraction: float, seed: int) -> tuple[dict, dict]:
        """Per-class (stratified) seeded split, so the validation set has every class in proportion.

        Every class keeps at least one training image (a class of one image is not validated): a rounded fraction
        near 1 would otherwise move a small class, or all of them, out of training without a word.
        """
        if not 0 < fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
        rng = random.Random(seed)
        train, val = {}, {}
        for name, files in tree.items():
            files = list(files)
            rng.shuffle(files)
            n_val = min(len(files) - 1, max(1, round(len(files) * fraction)))
            val_files, train_files = sorted(files[:n_val]), sorted(files[n_val:])
            train[name] = train_files
            if val_files:
                val[name] = val_files
        return train, val

    # ------------------------------------------------------------------ datasets
    @property
    def normalization(self) -> tuple[list[float], list[float]]:
        """The ``(mean, std)`` images are normalised with (given, else the model's, else ImageNet's)."""
        return self.resolve_normalization(self.hparams.mean, self.hparams.std)

    def data_info(self) -> DataInfo:
        info = super().data_info()
        info.extra["normalize"] = self.normalization  # what display_image undoes
        return info

    @property
    def _fast_decode(self) -> bool:
        return self.hparams.fast_decode and not self.hparams.cache_images  # a cache holds decoded images

    def train_transform(self) -> Callable:
        hp = self.hparams
        mean, std = self.normalization
        return classification_train_transforms(
            hp.image_size, mean, std, hp.scale_range, hp.hflip, hp.color_jitter, hp.crop_ratio,
            fast_decode=self._fast_decode,
        )

    def eval_transform(self) -> Callable:
        hp = self.hparams
        mean, std = self.normalization
        return classification_eval_transforms(hp.image_size, mean, std, hp.crop_pct,
                                              fast_decode=self._fast_decode)

    def _predict_samples(self) -> list[Sample]:
        paths = self.hparams.predict_paths
        if paths is None:
            if "val" not in self.split:
                raise DataError("nothing to predict: give predict_paths (folders or image files) or a root with val/")
            return self.split["val"]
        return [(path, -1) for path in resolve_image_paths(paths)]

    def build_dataset(self, split: str) -> ImageFolderDataset:
        if split == "predict":
            samples = self._predict_samples()
        elif split == "test" and "test" not in self.split:
            rank_zero_warn(f"{self.root} has no test/ folder: testing on the validation split")
            samples = self.split["val"]
        else:
            samples = self.split[split]
        paths = [p for p, _ in samples]
        what = f"the {split} split of {self.root or 'predict_paths'}"
        transform = self.train_transform() if split == "train" else self.eval_transform()
        # The fast_decode presets take paths and decode them themselves.
        load = None if self._fast_decode else load_rgb
        # A cache decodes every file into memory, which verifies it too: one pass over the files, not two.
        if not self.hparams.cache_images and should_verify(self.hparams.verify_images, len(paths)):
            verify_images(paths, what)
        return ImageFolderDataset(samples, transform, cache=self.hparams.cache_images, load=load, what=what)
