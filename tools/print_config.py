"""`resdet print-config` in a checkout; its code: detection/cli/print_config.py."""

import sys

from detection.cli.print_config import main

if __name__ == "__main__":
    sys.exit(main())
