"""`resdet plot` in a checkout; its code: detection/cli/plot.py."""

import sys

from detection.cli.plot import main

if __name__ == "__main__":
    sys.exit(main())
