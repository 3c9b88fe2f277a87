"""``python -m anygen``: the ``anygen`` command (also what ``accelerate launch -m anygen`` runs)."""

import sys

from .cli import main

sys.exit(main())
