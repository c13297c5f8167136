"""`resdet convert-weights` in a checkout; its code: detection/cli/convert_weights.py."""

import sys

from detection.cli.convert_weights import main

if __name__ == "__main__":
    sys.exit(main())
