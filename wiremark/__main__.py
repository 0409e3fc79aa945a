"""`python -m wiremark`: the same as the `wiremark` command."""

import sys

from wiremark.cli import main

sys.exit(main())
