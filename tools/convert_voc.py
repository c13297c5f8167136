"""`resdet convert-voc` in a checkout; its code: detection/cli/convert_voc.py."""

import sys

from detection.cli.convert_voc import main

if __name__ == "__main__":
    sys.exit(main())
