"""`resdet evaluate` in a checkout; its code: detection/cli/evaluate.py."""

import sys

from detection.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
