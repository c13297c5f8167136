"""`resdet browse` in a checkout; its code: detection/cli/browse.py."""

import sys

from detection.cli.browse import main

if __name__ == "__main__":
    sys.exit(main())
