"""`resdet export` in a checkout; its code: detection/cli/export.py."""

import sys

from detection.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
