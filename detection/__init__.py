"""Faster R-CNN on top of the `backbones` package: config, modeling, data, engine, evaluation."""
