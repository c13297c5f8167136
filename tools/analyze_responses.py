"""`resdet analyze-responses` in a checkout; its code: detection/cli/analyze_responses.py."""

import sys

from detection.cli.analyze_responses import main

if __name__ == "__main__":
    sys.exit(main())
