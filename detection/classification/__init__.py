"""Image classification: pretraining backbones (the paper's ImageNet recipe on an ImageFolder
layout), the CIFAR-10 experiments of its section 4.2, and the embedded shapes set.

`tools/train_classifier.py` is the command line; a run's model_final.pth is usable as
`model.backbone.weights` in every detection config.
"""

from __future__ import annotations

from ..utils.lazy import lazy_exports

# imported on first use: the config alone does not need the engine's data pipeline
_PUBLIC = {
    "ClassifierConfig": ".config",
    "ClassifierTrainer": ".engine",
    "load_classifier_config": ".config",
    "train_classifier": ".engine",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
