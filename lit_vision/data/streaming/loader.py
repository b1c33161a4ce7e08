"""The LitData training dataset: LitData's order, sharding and resume; lit_vision's per-sample augmentation seed.

Imported only when a ``sampler="litdata"`` training loader is built (``litdata`` is an optional dependency).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litdata import StreamingDataLoader, StreamingDataset

from lit_vision.data.resumable import run_seeded, sample_seed


class SeededStreamingDataset(StreamingDataset):
    """A ``litdata.StreamingDataset`` serving ``item_fn(record)`` under the RNG seed ``(seed, epoch, index)``.

    LitData gives the order (its chunk-wise shuffle of ``seed`` and the epoch), the DDP/worker sharding and the
    resumable position (``StreamingDataLoader.state_dict``, which Lightning saves in the checkpoint); the
    augmentation of a sample is seeded by lit_vision's :func:`~lit_vision.data.resumable.sample_seed` of the seed,
    LitData's epoch and the sample's global index, inside a forked RNG
    (:func:`~lit_vision.data.resumable.run_seeded`), so it depends neither on which worker reads the sample nor on
    the random state the model uses. Written by hand because LitData's ``transform`` hook sees the record only,
    not its index or the epoch.
    """

    def __init__(self, input_dir: str, item_fn: Callable[[dict[str, Any]], Any], seed: int, **kwargs: Any) -> None:
        super().__init__(input_dir, seed=seed, **kwargs)
        self.item_fn, self.data_seed = item_fn, seed

    def __getitem__(self, index: Any) -> Any:
        record = super().__getitem__(index)
        position = int(getattr(index, "index", index))
        return run_seeded(sample_seed(self.data_seed, int(self.current_epoch), position), self.item_fn, record)


class StreamingTrainLoader(StreamingDataLoader):
    """LitData's ``StreamingDataLoader``, whose restored position applies to the first epoch after a resume only.

    Written by hand because of an interaction of LitData 0.2.x with Lightning: ``load_state_dict`` sets
    ``restore``, which LitData clears only when an epoch's iterator runs to its end. Lightning stops taking
    batches after ``len(loader)`` without exhausting the iterator, so ``restore`` stayed set and every later epoch
    replayed the resumed epoch's remainder (same order, same epoch number, same augmentation). Here a new epoch
    after the resumed one starts afresh, as it does in an uninterrupted run (tests/data/streaming).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._restored_epoch_pending = False

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._restored_epoch_pending = True

    def __iter__(self) -> Any:
        if self.restore and not self._restored_epoch_pending:
            self.restore = False  # the restored epoch was served already: this is the next one
        self._restored_epoch_pending = False
        return super().__iter__()
