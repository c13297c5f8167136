"""`resdet convert-yolo` in a checkout; its code: detection/cli/convert_yolo.py."""

import sys

from detection.cli.convert_yolo import main

if __name__ == "__main__":
    sys.exit(main())
