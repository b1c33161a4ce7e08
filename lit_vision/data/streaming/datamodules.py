"""DataModules that train from LitData shards (a local folder or an object-store URI such as ``s3://bucket/x``).

Each is a subclass of the file-based DataModule of its task (``ImageFolderDataModule``,
``DetectionDataModule``, ``SegmentationDataModule``): transforms, presets, ``DataInfo`` (class names, category
ids, palette), evaluation and prediction are theirs; only the sources differ
(:mod:`lit_vision.data.streaming.sources`), plus the training loader.

**Two training orders** (``sampler``):

* ``"litdata"`` (default): LitData's ``StreamingDataset`` + ``StreamingDataLoader``: chunk-wise shuffling that
  reads each chunk once per epoch (what an object store needs), DDP and worker sharding, and a resumable
  position (``StreamingDataLoader.state_dict``, saved by Lightning in the checkpoint). The per-sample augmentation
  is seeded by ``(data_seed, epoch, index)`` (:class:`~lit_vision.data.streaming.loader.SeededStreamingDataset`).
* ``"seeded"``: lit_vision's own resumable sampler (:mod:`lit_vision.data.resumable`) over random access to the
  records (``StreamingDataset[i]``). The order and the augmentation are then exactly those of the same
  DataModule reading files with the same seed, which is how a fit from shards is proven equal to a fit from the
  source tree (tests/data/streaming). Random access reads chunks out of order: fine for local shards, slow for
  an object store bigger than the cache. Mosaic (detection) needs random access, so it needs ``"seeded"``.

**Resume exactness** (docs/streaming.md): ``"seeded"`` resumes bit for bit mid-epoch, whatever ``num_workers``
(as the file-based loaders). ``"litdata"`` resumes bit for bit too (LitData's position, lit_vision's per-sample
seeds; :class:`~lit_vision.data.streaming.loader.StreamingTrainLoader`) when ``num_workers``, batch size and world
size are unchanged, not when they change (LitData re-divides the remaining samples). Evaluation loaders always read
in index order.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset

from lit_vision.data.checks import DataError
from lit_vision.data.classification.imagefolder import ImageFolderDataModule
from lit_vision.data.detection.base import DetectionDataModule
from lit_vision.data.resumable import default_data_seed
from lit_vision.data.segmentation.base import SegmentationDataModule
from lit_vision.data.streaming.index import join, read_index, require_litdata
from lit_vision.data.streaming.sources import (
    ShardReader,
    StreamingClassificationSource,
    StreamingDetectionSource,
    StreamingSegmentationSource,
)

Sampler = Literal["litdata", "seeded"]


class StreamingMixin:
    """The shard folder, its index, one :class:`ShardReader` per split and the ``sampler="litdata"`` loader."""

    def _open_shards(self, input_dir: str, task: str, sampler: str, cache_dir: str | None,
                     max_cache_size: int | str) -> dict[str, Any]:
        require_litdata()
        if sampler not in ("litdata", "seeded"):
            raise ValueError(f"sampler must be 'litdata' or 'seeded', got {sampler!r}")
        self.input_dir, self.sampler = str(input_dir), sampler
        self.cache_dir, self.max_cache_size = cache_dir, max_cache_size
        self.index = read_index(self.input_dir, task)
        return self.index

    def reader(self, split: str) -> ShardReader:
        return ShardReader(join(self.input_dir, split), self.cache_dir, self.max_cache_size,
                           self.index["splits"][split].get("record_of"))

    def train_dataloader(self) -> DataLoader:
        if self.sampler == "seeded":
            return super().train_dataloader()  # type: ignore[misc]
        return self._litdata_loader(self.datasets["train"])  # type: ignore[attr-defined]

    def _litdata_loader(self, source: Dataset) -> DataLoader:
        from lit_vision.data.streaming.loader import (
            SeededStreamingDataset,
            StreamingTrainLoader,
        )

        item_fn = getattr(source, "item_from_record", None)
        if item_fn is None:  # MosaicDataset: each sample reads three others at random
            raise DataError(f"{type(source).__name__} needs random access to the records (mosaic): set "
                            "sampler: seeded (lit_vision's resumable sampler over the shards)")
        if self.data_seed is None:  # type: ignore[has-type]
            self.data_seed = default_data_seed()
        dataset = SeededStreamingDataset(source.reader.input_dir, item_fn, self.data_seed, shuffle=True,
                                         cache_dir=self.cache_dir, max_cache_size=self.max_cache_size)
        workers = self.num_workers  # type: ignore[attr-defined]
        return StreamingTrainLoader(
            dataset, batch_size=self.batch_size, num_workers=workers,  # type: ignore[attr-defined]
            collate_fn=type(self).collate_fn, drop_last=self.drop_last,  # type: ignore[attr-defined]
            pin_memory=torch.cuda.is_available() if self.pin_memory is None else self.pin_memory,  # type: ignore
            persistent_workers=self.persistent_workers and workers > 0)  # type: ignore[attr-defined]


class StreamingImageFolderDataModule(StreamingMixin, ImageFolderDataModule):
    """Classification from shards written from an ImageFolder (``lit-vision optimize-data --format imagefolder``).

    Args:
        input_dir: the shard folder (local or ``s3://...``); class names come from its index.
        sampler: ``"litdata"`` or ``"seeded"`` (see the module docstring).
        cache_dir, max_cache_size: where LitData keeps downloaded chunks of a remote folder, and how much.
        **kwargs: the presets and loaders of :class:`ImageFolderDataModule` (``image_size``, ``scale_range``,
            ``hflip``, ``color_jitter``, ``crop_pct``, ``mean``/``std``, ``batch_size``, ``num_workers``, ...). The
            presets are the tensor ones (``fast_decode=False``): the bytes are decoded in memory.
    """

    def __init__(self, input_dir: str, sampler: Sampler = "litdata", cache_dir: str | None = None,
                 max_cache_size: int | str = "50GB", **kwargs: Any) -> None:
        index = self._open_shards(input_dir, "classification", sampler, cache_dir, max_cache_size)
        super().__init__(root=None, class_names=index["class_names"], fast_decode=False, **kwargs)
        self.sources = {split: StreamingClassificationSource(self.reader(split)) for split in index["splits"]}

    @classmethod
    def wants_checkpoint_classes(cls, init_args: dict[str, Any]) -> bool:
        return False  # the index holds them

    def build_dataset(self, split: str) -> Dataset:
        if split == "predict" and self.hparams.predict_paths is not None:
            return super().build_dataset(split)  # image files: ImageFolderDataModule's
        source = self._split_source("val" if split == "predict" else split)
        return source.with_transforms(self.train_transform() if split == "train" else self.eval_transform())


class StreamingDetectionDataModule(StreamingMixin, DetectionDataModule):
    """Detection from shards written from COCO or VOC (``--format coco`` / ``voc``); COCO evaluation against the
    ground truth rebuilt from the streamed annotations (same AP as against the source files). Shards written from
    COCO with ``with_masks`` (``--with-masks``) put instance masks in the targets, as ``COCODetectionDataModule`` does.

    Args:
        input_dir: the shard folder (local or ``s3://...``); classes and category ids come from its index.
        keep_difficult: also train on VOC ``difficult`` objects (stored with a flag; evaluation ignores them).
        sampler, cache_dir, max_cache_size: see :class:`StreamingImageFolderDataModule`.
        **kwargs: transforms and loaders of :class:`DetectionDataModule` (``image_size``, ``scale_range``,
            ``letterbox``, ``mosaic`` (needs ``sampler: seeded``), ``batch_size``, ...).
    """

    def __init__(self, input_dir: str, keep_difficult: bool = False, sampler: Sampler = "litdata",
                 cache_dir: str | None = None, max_cache_size: int | str = "50GB", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        index = self._open_shards(input_dir, "detection", sampler, cache_dir, max_cache_size)
        if self.hparams.mosaic > 0 and sampler != "seeded":
            raise DataError("mosaic reads three other images at random for each sample: use sampler: seeded")
        with_masks = bool(index.get("with_masks", False))  # as written (COCO's with_masks)
        self._set_sources({split: StreamingDetectionSource(self.reader(split), entry, index["categories"],
                                                           keep_difficult, describe=join(self.input_dir, split),
                                                           with_masks=with_masks)
                           for split, entry in index["splits"].items()})


class StreamingSegmentationDataModule(StreamingMixin, SegmentationDataModule):
    """Semantic segmentation from shards written from VOC or COCO (``--format voc-seg`` / ``coco-seg``).

    Args:
        input_dir: the shard folder (local or ``s3://...``); class names come from its index.
        sampler, cache_dir, max_cache_size: see :class:`StreamingImageFolderDataModule`.
        **kwargs: transforms, caching and loaders of :class:`SegmentationDataModule` (``image_size``,
            ``crop_size``, ``scale_range``, ``palette``, ``batch_size``, ...).
    """

    def __init__(self, input_dir: str, sampler: Sampler = "litdata", cache_dir: str | None = None,
                 max_cache_size: int | str = "50GB", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        index = self._open_shards(input_dir, "segmentation", sampler, cache_dir, max_cache_size)
        self._set_class_names(index["class_names"])
        for split, entry in index["splits"].items():
            names = [img["file_name"] for img in entry["images"]]
            self.sources[split] = StreamingSegmentationSource(self.reader(split), names, self.num_classes or 0,
                                                              describe=join(self.input_dir, split))
