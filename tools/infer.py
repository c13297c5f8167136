"""`resdet infer` in a checkout; its code: detection/cli/infer.py."""

import sys

from detection.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
