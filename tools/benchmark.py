"""`resdet benchmark` in a checkout; its code: detection/cli/benchmark.py."""

import sys

from detection.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
