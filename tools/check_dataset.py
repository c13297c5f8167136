"""`resdet check` in a checkout; its code: detection/cli/check.py."""

import sys

from detection.cli.check import main

if __name__ == "__main__":
    sys.exit(main())
