"""`resdet ablation` in a checkout; its code: detection/cli/ablation.py."""

import sys

from detection.cli.ablation import main

if __name__ == "__main__":
    sys.exit(main())
