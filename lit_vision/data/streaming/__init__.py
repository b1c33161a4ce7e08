"""Streaming data with LitData: write a dataset into optimised shards, train from them (local or object store).

    writer.py       optimize_data: ImageFolder / COCO / VOC / VOC-seg / COCO-seg -> shards + lit_vision_index.json
    index.py        the sidecar index (task, class names, category ids, image ids/sizes), byte helpers
    sources.py      datasets over the shards serving the file-based datasets' items
    datamodules.py  StreamingImageFolderDataModule, StreamingDetectionDataModule, StreamingSegmentationDataModule
    loader.py       SeededStreamingDataset (LitData order, lit_vision per-sample seed), StreamingTrainLoader

``litdata`` is optional (``pip install 'lit_vision[streaming]'``): importing this package does not need it;
writing shards or building a streaming DataModule without it raises an ImportError saying what to install.
See docs/streaming.md.
"""

from lit_vision.data.streaming.datamodules import (
    StreamingDetectionDataModule,
    StreamingImageFolderDataModule,
    StreamingSegmentationDataModule,
)
from lit_vision.data.streaming.index import INDEX_FILE, read_index
from lit_vision.data.streaming.writer import FORMATS, optimize_data

__all__ = [
    "FORMATS",
    "INDEX_FILE",
    "StreamingDetectionDataModule",
    "StreamingImageFolderDataModule",
    "StreamingSegmentationDataModule",
    "optimize_data",
    "read_index",
]
