"""``python -m kitobs`` runs the ``kitobs`` command."""

import sys

from kitobs.cli import main

sys.exit(main())
