"""``python -m vlpt ...``: the `vlpt` command."""
import sys

from vlpt.cli import main

sys.exit(main())
