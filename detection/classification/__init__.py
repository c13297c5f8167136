"""Image classification: pretraining backbones (the paper's ImageNet recipe on an ImageFolder
layout), the CIFAR-10 experiments of its section 4.2, and the embedded shapes set.

`tools/train_classifier.py` is the command line; a run's model_final.pth is usable as
`model.backbone.weights` in every detection config.
"""

from .config import ClassifierConfig, load_classifier_config
from .engine import ClassifierTrainer, train_classifier

__all__ = ["ClassifierConfig", "ClassifierTrainer", "load_classifier_config", "train_classifier"]
