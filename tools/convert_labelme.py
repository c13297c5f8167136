"""`resdet convert-labelme` in a checkout; its code: detection/cli/convert_labelme.py."""

import sys

from detection.cli.convert_labelme import main

if __name__ == "__main__":
    sys.exit(main())
