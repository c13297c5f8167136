"""`resdet train` in a checkout; its code: detection/cli/train.py."""

import sys

from detection.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
