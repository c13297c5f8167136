"""`resdet compare` in a checkout; its code: detection/cli/compare.py."""

import sys

from detection.cli.compare import main

if __name__ == "__main__":
    sys.exit(main())
