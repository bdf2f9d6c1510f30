"""`python -m tidemark` is the `tidemark` console script."""

import sys

from tidemark.cli import main

sys.exit(main())
