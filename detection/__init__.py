"""Faster R-CNN on top of the `backbones` package: config, modeling, data, engine, evaluation."""

from .config import load_config
from .modeling import build_model, load_model
from .predictor import Predictor

__all__ = ["Predictor", "build_model", "load_config", "load_model"]
