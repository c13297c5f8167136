"""`resdet benchmark-real` in a checkout; its code: detection/cli/benchmark_real.py."""

import sys

from detection.cli.benchmark_real import main

if __name__ == "__main__":
    sys.exit(main())
