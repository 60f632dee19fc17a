"""Lets `python -m tlkeras ...` run the command line."""

import sys

from tlkeras.cli import main

sys.exit(main())
