"""`resdet split` in a checkout; its code: detection/cli/split.py."""

import sys

from detection.cli.split import main

if __name__ == "__main__":
    sys.exit(main())
