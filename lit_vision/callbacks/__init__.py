"""Training callbacks: weight EMA, batch MixUp/CutMix, lr warm-up on top of any scheduler, prediction writer."""

from lit_vision.callbacks.ema import EMA
from lit_vision.callbacks.mixup import MixupCutmix
from lit_vision.callbacks.prediction_writer import JsonlPredictionWriter
from lit_vision.callbacks.warmup import LRWarmup

__all__ = ["EMA", "JsonlPredictionWriter", "LRWarmup", "MixupCutmix"]
