"""`python -m poolbench` is the `poolbench` command."""

import sys

from poolbench.cli import main

sys.exit(main())
