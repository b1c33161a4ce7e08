"""Training callbacks: weight EMA, batch MixUp/CutMix, lr warm-up on top of any scheduler, the non-finite
guard, validation pictures, prediction writers, backbone unfreezing."""

from lit_vision.callbacks.checkpoint import LastCheckpoint
from lit_vision.callbacks.coco_results_writer import CocoResultsWriter
from lit_vision.callbacks.ema import EMA
from lit_vision.callbacks.finetuning import BackboneUnfreezing
from lit_vision.callbacks.mask_writer import SegmentationMaskWriter
from lit_vision.callbacks.mixup import MixupCutmix
from lit_vision.callbacks.nonfinite import NonFiniteGuard, NonFiniteLossError
from lit_vision.callbacks.pictures import ValidationPictures
from lit_vision.callbacks.prediction_writer import JsonlPredictionWriter
from lit_vision.callbacks.warmup import LRWarmup

__all__ = ["EMA", "BackboneUnfreezing", "CocoResultsWriter", "JsonlPredictionWriter", "LRWarmup", "LastCheckpoint",
           "MixupCutmix", "NonFiniteGuard", "NonFiniteLossError", "SegmentationMaskWriter", "ValidationPictures"]
