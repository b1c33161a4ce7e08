"""The contract between data and tasks: what a DataModule tells the task, once, at ``setup``.

A task needs more from its data than batches: the class names (also linked into its constructor by the
CLI, so a checkpoint carries them), the COCO category id of each label (for COCO results files), the
ground truth to evaluate against, the palette to write masks with. The DataModule describes all of that
in one :class:`DataInfo` and hands it to the task (:meth:`DataConsumer.connect_data`) at the end of its
``setup``, before the first batch. The task never reaches into ``trainer.datamodule``, and a DataModule of
your own only has to return a ``DataInfo`` to work with every task and writer.

One thing flows the other way, also once, at the start of ``setup``: the input normalisation the model's
pretrained weights expect (:class:`NormalizationSource`; e.g. ``mean = std = 0.5`` for many timm ViTs), which a
DataModule not given ``mean``/``std`` normalises with. It is the model's property, not the data's, and must be
known before the first transform is built. The DataModule reports what it used back in ``DataInfo.extra["normalize"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class DataInfo:
    """What a DataModule tells its task.

    Attributes:
        class_names: names of labels ``0..K-1``.
        label_to_category_id: detection: the COCO category id of each label (COCO files may number
            categories sparsely, 1..90); ``None``: ``label + 1``.
        ground_truth: detection: ``split -> COCO instances dict`` of that split (crowd and difficult regions
            kept), what the COCO evaluation compares predictions with; ``None``: no evaluation possible
            (e.g. predict-only data).
        palette: segmentation: flat ``[r, g, b] * 256`` palette for writing predicted masks.
        ignore_index: segmentation: label of pixels that carry no class.
        extra: anything a task or callback of your own wants to pass along.
    """

    class_names: list[str]
    label_to_category_id: dict[int, int] | None = None
    ground_truth: Callable[[str], dict[str, Any]] | None = None
    palette: list[int] | None = None
    ignore_index: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def fill_from(self, known: DataInfo) -> DataInfo:
        """Take the category ids, palette and ignore index from ``known`` where this one has none (predict-only
        data cannot know them; the checkpoint of the model that was trained on the real data can)."""
        self.label_to_category_id = self.label_to_category_id or known.label_to_category_id
        self.palette = self.palette or known.palette
        self.ignore_index = self.ignore_index if self.ignore_index is not None else known.ignore_index
        return self


@runtime_checkable
class DataConsumer(Protocol):
    """A LightningModule that wants to know its data: every lit_vision task is one."""

    def connect_data(self, info: DataInfo) -> None: ...


@runtime_checkable
class NormalizationSource(Protocol):
    """A LightningModule that knows the ``(mean, std)`` its model's pretrained weights expect (``None``: no
    preference, ImageNet's is used): every lit_vision task is one (:func:`~lit_vision.backbones.pretrained_config`)."""

    def input_normalization(self) -> tuple[Sequence[float], Sequence[float]] | None: ...
