"""Datasets, transforms and samplers for COCO-format data."""
