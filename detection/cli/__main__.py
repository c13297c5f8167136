"""`python -m detection.cli COMMAND ...` (and `torchrun ... -m detection.cli train ...`)."""

import sys

from .main import main

sys.exit(main())
