"""`resdet train-classifier` in a checkout; its code: detection/cli/train_classifier.py."""

import sys

from detection.cli.train_classifier import main

if __name__ == "__main__":
    sys.exit(main())
